# shellcheck shell=sh
# ctops setup, read-only: what the host has, as `key<TAB>value` lines. Set above by
# `remote::assign`: D (state_dir), B (backup_dir), G (the operators' group), C (the
# checkout), REMOTE (1: also try the checkout's git remote). "$@" is the compose command.
# Each value is `ok`, `missing` or a short reason; src/ops/setup.rs decides what to do.
say() { printf '%s\t%s\n' "$1" "$2"; }
me=$(id -un)
say user "$me"
say uid "$(id -u)"
if getent group "$G" >/dev/null 2>&1; then say group ok; else say group missing; fi
# In the group database (takes effect at the next login) and in this session.
case " $(id -Gn "$me" 2>/dev/null) " in *" $G "*) say member ok ;; *) say member missing ;; esac
case " $(id -Gn 2>/dev/null) " in *" $G "*) say session ok ;; *) say session missing ;; esac

# A shared folder: mode 2770 (setgid: what is created inside gets the group), group G.
shared_dir() {
    [ -d "$1" ] || { echo missing; return; }
    m=$(stat -c '%a %G' "$1" 2>/dev/null)
    if [ "$m" != "2770 $G" ]; then echo "mode and group are ${m:-unknown}, not 2770 $G"; return; fi
    if [ ! -r "$1" ] || [ ! -x "$1" ]; then echo "not readable by $me"; return; fi
    echo ok
}
# The state dir's contents: folders group G, setgid and group-writable; the files every
# operator appends to or replaces (lock, .mutex, ops.flock, last, journals, *.jsonl) 0660.
state_contents() {
    bad=$(find "$D" -mindepth 1 \( -type d \( ! -group "$G" -o ! -perm -2070 \) \
        -o -type f ! -group "$G" \
        -o -type f \( -name lock -o -name .mutex -o -name ops.flock -o -name last \
            -o -name journal -o -name '*.jsonl' \) ! -perm -0660 \) -print 2>&1 | head -n 1)
    if [ -n "$bad" ]; then echo "not shared with group $G: $bad"; else echo ok; fi
}
s=$(shared_dir "$D")
if [ "$s" = ok ]; then s=$(state_contents); fi
say state "$s"
b=$(shared_dir "$B")
if [ "$b" = ok ]; then
    f=$(find "$B" -mindepth 1 ! -group "$G" -print 2>&1 | head -n 1)
    if [ -n "$f" ]; then b="not shared with group $G: $f"; fi
fi
say backup "$b"

# The checkout, shared with the group: every folder setgid and group-writable, every file
# group-readable, git creating what it adds the same way (core.sharedRepository).
if [ ! -d "$C/.git" ]; then
    say checkout missing
else
    f=$(find "$C" ! -type l \( ! -group "$G" -o -type d ! -perm -2070 -o ! -type d ! -perm -0040 \) -print 2>&1 | head -n 1)
    shared=$(git config --file "$C/.git/config" core.sharedRepository 2>/dev/null)
    if [ -n "$f" ]; then say checkout "not shared with group $G: $f"
    elif [ "$shared" != group ]; then say checkout "core.sharedRepository is not group"
    else say checkout ok
    fi
fi
# git refuses a checkout another login owns unless the system config says it is safe.
if git config --system --get-all safe.directory 2>/dev/null | grep -qxF -e "$C" -e '*'; then
    say safe ok
else
    say safe missing
fi

if out=$(docker info --format '{{.ServerVersion}}' 2>&1); then say docker ok
else say docker "$(printf '%s' "$out" | tail -n 1)"
fi
if v=$("$@" version --short 2>&1); then
    case $v in 2.* | v2.*) say compose ok ;; *) say compose "version $v, not 2" ;; esac
else
    say compose "$(printf '%s' "$v" | tail -n 1)"
fi
if [ "$REMOTE" = 1 ]; then
    # Non-interactive: no prompt for a password or a host key, bounded in time.
    if out=$(cd "$C" 2>&1 && GIT_TERMINAL_PROMPT=0 GIT_SSH_COMMAND="${GIT_SSH_COMMAND:-ssh -o BatchMode=yes}" \
        timeout 30 git ls-remote --exit-code origin HEAD 2>&1 >/dev/null); then
        say remote ok
    else
        say remote "$(printf '%s' "$out" | tail -n 1 | tr '\t' ' ')"
    fi
fi
