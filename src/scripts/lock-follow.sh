# shellcheck shell=sh
# `STATE_DIR TOKEN NAME PID`: streams the output of a command started by lock-detach.sh
# until it ends, then exits with its status (70 when it left none: it was killed).
L="$1/lock.$2.$3"; p=$4
tail -n +1 -f --pid="$p" "$L.log" 2>/dev/null
s=$(cat "$L.status" 2>/dev/null) || { echo "the command left no exit status (killed?); its output: $L.log" >&2; exit 70; }
[ "$s" = 0 ] && rm -f "$L.log" "$L.status"
exit "$s"
