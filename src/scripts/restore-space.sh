# shellcheck shell=sh
# `user database`, run inside the database's container: the live database's size in bytes,
# the KiB free where PostgreSQL keeps its data, and that folder, on one line. A restore
# makes a second copy of the database there, not in backup_dir.
size=$(psql -X -tA -U "$1" -d "$2" -c 'SELECT pg_database_size(current_database())') || exit 1
dir=$(psql -X -tA -U "$1" -d "$2" -c 'SHOW data_directory' 2>/dev/null) || dir=${PGDATA:-}
[ -n "$dir" ] || { echo "cannot tell where PostgreSQL keeps its data (SHOW data_directory failed and PGDATA is not set)" >&2; exit 1; }
avail=$(df -Pk "$dir" | awk 'NR == 2 { print $4 }')
[ -n "$avail" ] || { echo "df could not measure $dir" >&2; exit 1; }
printf '%s %s %s\n' "$size" "$avail" "$dir"
