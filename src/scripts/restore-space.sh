# shellcheck shell=sh
# `user database`, run inside the database's container: the live database's size in bytes,
# the folder where PostgreSQL keeps its data, then `df -Pk` of that folder (parsed by ctops:
# a database image may have no awk). A restore makes its second copy of the database there,
# not in backup_dir.
size=$(psql -X -tA -U "$1" -d "$2" -c 'SELECT pg_database_size(current_database())') || exit 1
dir=$(psql -X -tA -U "$1" -d "$2" -c 'SHOW data_directory' 2>/dev/null) || dir=${PGDATA:-}
[ -n "$dir" ] || { echo "cannot tell where PostgreSQL keeps its data (SHOW data_directory failed and PGDATA is not set)" >&2; exit 1; }
printf '%s\n%s\n' "$size" "$dir"
df -Pk "$dir"
