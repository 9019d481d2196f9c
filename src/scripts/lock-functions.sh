# shellcheck shell=sh
# The host lock's shell functions: ctops's own lock calls (lock.sh), the keeper
# (lock-keeper.sh) and the detached runner embed them. $D is the state dir.
#
# LOCK_VERSION is the lock file format this ctops writes and understands. Operators with
# different ctops versions share a host: a file of another version is never changed.
LOCK_VERSION=1
lock_file() { printf '%s/lock' "$D"; }
# A file every operator of the group appends to, locks or replaces (the lock, .mutex,
# ops.flock, journals, *.jsonl): 0660 whatever the umask, so that `ctops setup`'s group
# (the state dir is setgid) can share it. Files that may hold derived secrets stay private.
shared_file() { [ -e "$1" ] || { ( umask 077 && : >> "$1" ) && chmod 0660 "$1"; } 2>/dev/null || true; }
lock_now() { date -u +%s; }
lock_field() { sed -n "s/^$1=//p" "$(lock_file)" 2>/dev/null | head -n 1; }
# True when the lock file is of a format this ctops does not know (a file without a
# version line is version 1: it predates the line).
lock_unknown() {
    [ -f "$(lock_file)" ] || return 1
    case $(lock_field version) in '' | "$LOCK_VERSION") return 1 ;; *) return 0 ;; esac
}
lock_live() { [ -f "$(lock_file)" ] && [ "$(lock_field expires)" -gt "$(lock_now)" ] 2>/dev/null; }
lock_mine() { [ -f "$(lock_file)" ] && ! lock_unknown && [ "$(lock_field token)" = "$1" ]; }
# The pids of the commands started under lock TOKEN (see lock-run.sh, lock-detach.sh).
lock_pids() { printf '%s/lock.%s.pids' "$D" "$1"; }
# Liveness by /proc (kill -0 fails on another user's process, such as a root apt-get); a
# zombie is dead.
lock_alive() {
    [ -d "/proc/$1" ] || return 1
    [ "$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null)" != Z ]
}
# True while any command started under lock TOKEN runs; prints their pids.
lock_busy() {
    busy=1
    [ -f "$(lock_pids "$1")" ] || return 1
    while read -r p; do
        if [ -n "$p" ] && lock_alive "$p"; then printf '%s\n' "$p"; busy=0; fi
    done < "$(lock_pids "$1")"
    return $busy
}
lock_write() { # token lease user host pid command
    t=$(lock_file).tmp.$$
    { printf 'version=%s\ntoken=%s\nuser=%s\nhost=%s\npid=%s\ncommand=%s\n' "$LOCK_VERSION" "$1" "$3" "$4" "$5" "$6"
      printf 'since=%s\nexpires=%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(( $(lock_now) + $2 ))"; } > "$t" &&
    chmod 0660 "$t" && mv -f "$t" "$(lock_file)"
}
# Under the mutex (fd 9): takes the lock, or exits 75 (a live holder) or 78 (a lock file
# of an unknown version), printing the file; a stale file taken over is printed too.
lock_take() { # token lease user host pid command
    if lock_unknown; then cat "$(lock_file)"; return 78; fi
    if lock_live && ! lock_mine "$1"; then cat "$(lock_file)"; return 75; fi
    if [ -f "$(lock_file)" ]; then cat "$(lock_file)"; echo "stale=1"; fi
    lock_write "$@"
}
lock_renew() { # token lease
    shared_file "$D/.mutex"
    ( flock -w 10 9 || exit 1
      lock_mine "$1" || exit 1
      t=$(lock_file).tmp.$$
      sed "s/^expires=.*/expires=$(( $(lock_now) + $2 ))/" "$(lock_file)" > "$t" &&
        chmod 0660 "$t" && mv -f "$t" "$(lock_file)"
    ) 9>>"$D/.mutex"
}
lock_release() { # token
    shared_file "$D/.mutex"
    ( flock -w 10 9 || exit 1; if lock_mine "$1"; then rm -f "$(lock_file)"; fi ) 9>>"$D/.mutex"
}
