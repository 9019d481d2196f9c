# shellcheck shell=sh
# `STATE_DIR TOKEN NAME COMMAND...`: starts COMMAND detached (setsid, no terminal, no
# channel), so an interruption of ctops never kills it part-way, and registers its pid with
# the keeper of lock TOKEN. Its output goes to $D/lock.TOKEN.NAME.log, its exit status to
# .status beside it (see lock-follow.sh). Prints the pid.
D=$1; T=$2; L="$1/lock.$2.$3"; shift 3
rm -f "$L.status"
# shellcheck disable=SC2016 # expanded by the detached shell, not this one
setsid nohup sh -c '"$@"; printf "%s\n" "$?" > "$0.status.tmp" && mv -f "$0.status.tmp" "$0.status"' "$L" "$@" </dev/null >"$L.log" 2>&1 &
p=$!
echo "$p" >> "$D/lock.$T.pids"
echo "$p"
