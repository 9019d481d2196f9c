# shellcheck shell=sh
# `sh -c runner-last.sh ctops STATE_DIR`: the last operation's id, whether its runner is
# alive, whether an operator saw its end, then its journal.
D=$1; [ -f "$D/last" ] || exit 0
op=$(cat "$D/last"); O="$D/ops/$op"
echo "$op"
pid=$(cat "$O/pid" 2>/dev/null)
# /proc, not `kill -0`: another operator's runner answers EPERM, which is not "dead"; a
# zombie nobody reaps is dead.
state=$(sed 's/.*) //' "/proc/${pid:-none}/stat" 2>/dev/null | cut -c1)
case $state in ''|Z|X) echo stopped ;; *) echo running ;; esac
if [ -f "$O/seen" ]; then echo seen; else echo unseen; fi
cat "$O/journal" 2>/dev/null
