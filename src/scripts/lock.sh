# shellcheck shell=sh
# `STATE_DIR acquire|show|release|break TOKEN LEASE USER HOST PID COMMAND`, after
# lock-functions.sh. Exits 75 when another live holder has the lock (its file on stdout),
# 78 when the lock file is of a version this ctops does not know, 0 otherwise (the previous
# holder's file on stdout when a stale lock was taken over). `release` leaves a lock whose
# commands still run to its keeper (exit 75, their pids on stdout).
D=$1; action=$2; shift 2
mkdir -p "$D" 2>/dev/null; chmod g+w "$D" 2>/dev/null || true
if [ ! -w "$D" ]; then echo "state dir $D is not writable by $(id -un)" >&2; exit 77; fi
shared_file "$D/.mutex"
exec 9>>"$D/.mutex"
flock -w 10 9 || { echo "timed out waiting for $D/.mutex" >&2; exit 76; }
case $action in
acquire)
    lock_take "$@" ;;
show)
    if [ -f "$(lock_file)" ]; then cat "$(lock_file)"; echo "now=$(lock_now)"; fi ;;
release)
    if lock_unknown; then cat "$(lock_file)"; exit 78; fi
    if lock_mine "$1"; then
        if lock_busy "$1"; then exit 75; fi
        rm -f "$(lock_file)" "$(lock_pids "$1")"
    fi ;;
break)
    if lock_unknown; then cat "$(lock_file)"; exit 78; fi
    if lock_live; then cat "$(lock_file)"; exit 75; fi
    if [ -f "$(lock_file)" ]; then cat "$(lock_file)"; fi
    rm -f "$(lock_file)" ;;
esac
