# shellcheck shell=sh
# The keeper: `STATE_DIR TOKEN LEASE EVERY USER HOST PID COMMAND`, after lock-functions.sh,
# run over ctops's SSH connection with the channel's stdin open. Takes the lock (exits as
# lock.sh's acquire does when it cannot), prints `kept`, then renews the lease every EVERY
# seconds while ctops's channel is open or a command started under the lock still runs,
# and releases the lock when both are gone. It stops when the lock is no longer its own
# (ctops released it, or `lock release` broke it after a lapse).
D=$1; T=$2; LEASE=$3; EVERY=$4; shift 4
mkdir -p "$D" 2>/dev/null; chmod g+w "$D" 2>/dev/null || true
if [ ! -w "$D" ]; then echo "state dir $D is not writable by $(id -un)" >&2; exit 77; fi
shared_file "$D/.mutex"
( flock -w 10 9 || { echo "timed out waiting for $D/.mutex" >&2; exit 76; }
  : > "$(lock_pids "$T")"
  lock_take "$T" "$LEASE" "$@"
) 9>>"$D/.mutex" || { s=$?; rm -f "$(lock_pids "$T")"; exit $s; }
echo kept
# No terminal, so sshd sends no SIGHUP; ignore one anyway, and write nowhere once the
# channel may be gone (a write to a closed channel would kill us by SIGPIPE).
trap '' HUP INT
C="$D/lock.$T.channel"
: > "$C"
exec 3<&0
# The channel is open until cat reads EOF: ctops closed it, or the link dropped.
( cat <&3 >/dev/null 2>&1; rm -f "$C" ) &
exec 3<&- </dev/null >/dev/null 2>&1
n=0
while [ -e "$C" ] || lock_busy "$T" >/dev/null; do
    sleep 1
    n=$((n + 1))
    if [ "$n" -ge "$EVERY" ]; then
        n=0
        lock_renew "$T" "$LEASE" || lock_mine "$T" || break
    fi
    lock_mine "$T" || break
done
lock_release "$T"
rm -f "$C" "$(lock_pids "$T")"
