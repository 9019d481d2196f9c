# ctops doctor: every fact about the host that a changing command relies on, read-only, in
# one round trip, as `key<TAB>value` lines (src/hostfacts.rs reads them). alembic_inis
# (migrations.sh) and dir_facts (doctor-dirs.sh) are sent above this text. Parameters:
#   $1 checkout   $2 compose file   $3 branch   $4 deploy.migrate.versions (set: no ini read)
#   $5 state_dir  $6 backup_dir     $7 compose working dir (the containers' label)
#   $8 database service ("": not known)  $9 its user  $10 its database  $11 PGHOST  $12 PGPORT
#   $13 psql input that logs in with a wrong password over the application's address ("": none)
#   $14 health_url  $15 seconds an HTTP request may take  $16... the target's sudo prefix
set -u
printf 'now\t%s\n' "$(date -u +%s)"
dir=$1; compose_file=$2; branch=$3; versions=$4; state=$5; backups=$6; wd=$7
service=$8; user=$9; db=${10}; pghost=${11}; pgport=${12}; hba=${13}; url=${14}; secs=${15}
shift 15

# The checkout: HEAD, and (with the branch head) the alembic configuration, every folder and
# every revision line, so that ctops finds the migration head of both without a second trip.
tree_of() {   # REF TAG
    git ls-tree -r -d --name-only "$1" | head -n 50000 | sed "s/^/$2_tree	/"
    git grep -E '^(revision|down_revision)' "$1" -- '*.py' | sed "s/^/$2_mig	/"
    [ -n "$versions" ] || alembic_inis "$1" "$2"
}
if [ ! -d "$dir" ]; then
    printf 'checkout_error\tno such directory\n'
elif ! head=$(cd "$dir" && git rev-parse -q --verify 'HEAD^{commit}' 2>&1); then
    printf 'checkout_error\tnot a git checkout: %s\n' "$(printf '%s' "$head" | tr '\n' ' ')"
else
    cd "$dir" || exit 1
    printf 'checkout\t%s\n' "$head"
    printf 'checkout_branch\t%s\n' "$(git symbolic-ref -q --short HEAD)"
    printf 'checkout_version\t%s\n' "$(git show "$head:VERSION" 2>/dev/null | head -n 1)"
    printf 'checkout_tag\t%s\n' "$(git describe --tags --exact-match "$head" 2>/dev/null)"
    git status --porcelain --untracked-files=no | head -n 20 | sed 's/^/dirty	/'
    tree_of "$head" cur
    # What `deploy` would deploy: origin's branch head (asked, not fetched: doctor changes
    # nothing), read here when it is already fetched, else the last fetched one.
    if remote=$(GIT_TERMINAL_PROMPT=0 GIT_SSH_COMMAND="ssh -o BatchMode=yes" \
        timeout "$secs" git ls-remote origin "refs/heads/$branch" 2>&1); then
        printf 'origin_head\t%s\n' "${remote%%	*}"
    else
        printf 'origin_error\t%s\n' "$(printf '%s' "$remote" | tail -n 3 | tr '\n' ' ')"
    fi
    tip=${remote%%	*}
    git cat-file -e "$tip^{commit}" 2>/dev/null || tip=$(git rev-parse -q --verify "refs/remotes/origin/$branch^{commit}")
    if [ -n "$tip" ]; then
        printf 'branch_head\t%s\n' "$tip"
        printf 'branch_version\t%s\n' "$(git show "$tip:VERSION" 2>/dev/null | head -n 1)"
        tree_of "$tip" tgt
    fi
    [ -f "$compose_file" ] && printf 'compose_file\tfound\n'
fi

# The database, as [backup.db] says it answers, and what pg_hba does with a wrong password
# over the application's own address (rotate's proof).
if [ -n "$service" ]; then
    cid=$(docker ps -q --filter "label=com.docker.compose.project.working_dir=$wd" \
        --filter "label=com.docker.compose.service=$service" | head -n 1)
    if [ -z "$cid" ]; then
        printf 'db_error\tservice %s has no running container\n' "$service"
    else
        # psql_in [-i] PSQL_ARGS...: psql as [backup.db] says, stdin passed with -i.
        psql_in() {
            i=; [ "$1" != -i ] || { i=-i; shift; }
            docker exec ${i:+"$i"} ${pghost:+-e "PGHOST=$pghost"} ${pgport:+-e "PGPORT=$pgport"} "$cid" psql -X -q -At -U "$user" -d "$db" "$@"
        }
        if said=$(psql_in -c 'SELECT pg_database_size(current_database())' 2>&1); then
            printf 'db_size\t%s\n' "$said"
            rev=$(psql_in -c 'SELECT version_num FROM alembic_version' 2>&1) &&
                printf 'db_revision\t%s\n' "$(printf '%s' "$rev" | tr '\n' ' ')"
            if [ -n "$hba" ]; then
                # As rotate asks: a failed \connect ends the script (ON_ERROR_STOP).
                said=$(printf '%s\n' "$hba" | psql_in -i -v ON_ERROR_STOP=1 2>&1)
                printf 'hba\t%s\n' "$(printf '%s' "$said" | tail -n 2 | tr '\n' ' ')"
            fi
        else
            printf 'db_error\t%s\n' "$(printf '%s' "$said" | tail -n 2 | tr '\n' ' ')"
        fi
    fi
fi

dir_facts "$state" "$backups"
# Free space where the dumps go, and the size of the newest dump (names sort by time).
if [ -d "$backups" ]; then
    printf 'avail\t%s\n' "$(df -PB1 "$backups" | awk 'NR == 2 {print $4}')"
    last=
    for m in "$backups"/db-*.manifest.json; do [ -f "$m" ] && last=${m%.manifest.json}; done
    if [ -n "$last" ] && [ -f "$last" ]; then
        printf 'last_dump\t%s\t%s\n' "${last##*/}" "$(stat -c %s "$last")"
    fi
fi

# Root where `update system` (the target's prefix, apt-get), `disk` (sudo -n stat, when
# Docker's folder is not readable) and `incident` (sudo -n dmesg, when the kernel log is
# not readable) need it.
if [ "$(id -u)" = 0 ]; then
    printf 'sudo\troot\n'
else
    if [ $# -eq 0 ]; then
        printf 'sudo_apt\tnoprefix\n'
    elif said=$("$@" -l 2>&1 >/dev/null); then
        if "$@" -l apt-get >/dev/null 2>&1; then printf 'sudo_apt\tallowed\n'; else printf 'sudo_apt\tnot-allowed\n'; fi
    else
        printf 'sudo_error\t%s\n' "$(printf '%s' "$said" | tail -n 2 | tr '\n' ' ')"
    fi
    rule() {   # NAME COMMAND: whether `sudo -n` (as disk and incident call it) may run it
        if sudo -n -l "$2" >/dev/null 2>&1; then printf '%s\tallowed\n' "$1"; else printf '%s\tnot-allowed\n' "$1"; fi
    }
    if ls /var/lib/docker/containers >/dev/null 2>&1; then printf 'sudo_stat\tnot-needed\n'; else rule sudo_stat stat; fi
    if dmesg >/dev/null 2>&1; then printf 'sudo_dmesg\tnot-needed\n'; else rule sudo_dmesg dmesg; fi
fi

# health_url as the host sees it.
if command -v curl >/dev/null 2>&1; then
    said=$(curl -sS -o /dev/null -w '%{http_code}' --max-time "$secs" "$url" 2>&1)
    printf 'host_health\t%s\n' "$(printf '%s' "$said" | tr '\n' ' ')"
elif command -v wget >/dev/null 2>&1; then
    if wget -q -O /dev/null -T "$secs" "$url" 2>/dev/null; then printf 'host_health\t200\n'; else printf 'host_health\tfailed (wget)\n'; fi
else
    printf 'host_health\tno-client\n'
fi
printf 'done\t1\n'
