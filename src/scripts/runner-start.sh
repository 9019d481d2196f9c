# shellcheck shell=sh
# Starts a runner detached: `sh -c runner-start.sh ctops STATE_DIR OP_ID FORMAT`, the script
# on stdin. Exit 65 (the version on stdout) when the last operation's journal has a format
# this ctops does not know: a newer ctops ran there, and this one must not change the host.
D=$1; O="$1/ops/$2"
if [ -f "$D/last" ]; then
    v=$(awk -F '\t' '$3 == "format" { print $4; exit }' "$D/ops/$(cat "$D/last")/journal" 2>/dev/null)
    if [ -n "$v" ] && [ "$v" != "$3" ]; then echo "$v"; exit 65; fi
fi
mkdir -p "$O" || exit 1
chmod g+w "$O" 2>/dev/null
# The script and the runner's own log may carry derived secrets: ours alone. (Only they: the
# runner keeps the login's umask, for the lock file and whatever its steps create.)
{ ( umask 077 && cat > "$O/script.sh.tmp" ) && mv -f "$O/script.sh.tmp" "$O/script.sh"; } || exit 1
( umask 077 && : > "$O/runner.log" ) || exit 1
setsid nohup sh "$O/script.sh" </dev/null >>"$O/runner.log" 2>&1 &
echo $! > "$O/pid"
chmod 0644 "$O/pid"
cat "$O/pid"
