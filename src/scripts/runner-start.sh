# shellcheck shell=sh
# Starts a runner detached: `sh -c runner-start.sh ctops STATE_DIR OP_ID FORMAT`, the script
# on stdin. Exit 65 (the version on stdout) when the last operation's journal has a format
# this ctops does not know: a newer ctops ran there, and this one must not change the host.
D=$1; O="$1/ops/$2"
if [ -f "$D/last" ]; then
    v=$(awk -F '\t' '$3 == "format" { print $4; exit }' "$D/ops/$(cat "$D/last")/journal" 2>/dev/null)
    if [ -n "$v" ] && [ "$v" != "$3" ]; then echo "$v"; exit 65; fi
fi
mkdir -p "$O" 2>/dev/null || { echo "state dir $D is not writable by $(id -un)" >&2; exit 77; }
# Shared with the state dir's group (setgid, from `ctops setup`): the next operator's runner
# writes beside ours. ops/ is changed only by its owner (the first runner, or setup).
chmod 2770 "$O" 2>/dev/null
if [ -O "$D/ops" ]; then chmod 2770 "$D/ops" 2>/dev/null; fi
# The script and the runner's own log may carry derived secrets: ours alone. (Only they: the
# runner keeps the login's umask, for the lock file and whatever its steps create.)
{ ( umask 077 && cat > "$O/script.sh.tmp" ) && mv -f "$O/script.sh.tmp" "$O/script.sh"; } || exit 1
( umask 077 && : > "$O/runner.log" ) || exit 1
# What ctops follows exists before it follows it (`tail -F` on a missing file says so on
# stderr, which reaches the operator's screen): the journal shared with the group, 0660 as
# the runner makes it; the steps' output ours alone.
{ ( umask 077 && : >> "$O/journal" ) && chmod 0660 "$O/journal"; } || exit 1
( umask 077 && : >> "$O/output.log" ) || exit 1
setsid nohup sh "$O/script.sh" </dev/null >>"$O/runner.log" 2>&1 &
echo $! > "$O/pid"
chmod 0644 "$O/pid"
cat "$O/pid"
