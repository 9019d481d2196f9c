# dir_facts STATE_DIR BACKUP_DIR: `state` and `backups` lines saying whether each folder is
# there and writable by this login, and a `state_readonly` line for each file in STATE_DIR
# this login cannot write (the lock and the journals append to them). Used by doctor-facts.sh
# and, alone, by the check every changing command runs before its first change.
dir_facts() {
    for pair in "state	$1" "backups	$2"; do
        key=${pair%%	*}; d=${pair#*	}
        if [ ! -d "$d" ]; then
            parent=${d%/*}
            if [ -w "${parent:-/}" ]; then printf '%s\tmissing-creatable\n' "$key"; else printf '%s\tmissing\n' "$key"; fi
        elif [ ! -w "$d" ] || [ ! -x "$d" ]; then
            printf '%s\tread-only %s\n' "$key" "$(stat -c '%U:%G %a' "$d")"
        else
            printf '%s\twritable %s\n' "$key" "$(stat -c '%U:%G %a' "$d")"
        fi
    done
    if [ -d "$1" ]; then
        for f in "$1"/* "$1"/.[!.]*; do
            if [ -f "$f" ] && [ ! -w "$f" ]; then
                printf 'state_readonly\t%s %s\n' "${f##*/}" "$(stat -c '%U:%G %a' "$f")"
            fi
        done
    fi
}
