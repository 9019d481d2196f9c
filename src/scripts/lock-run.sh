# shellcheck shell=sh
# `STATE_DIR TOKEN COMMAND...`: runs COMMAND under lock TOKEN, its pid registered with the
# keeper, which holds the lock as long as it runs (also after ctops went away).
D=$1; T=$2; shift 2
echo "$$" >> "$D/lock.$T.pids"
exec "$@"
