# ctops backup verify: `dir workdir service user name format sql`, restores NAME into a
# scratch database (a full read of the archive), prints the row counts, drops the scratch.
set -u
dir=$1; wd=$2; service=$3; user=$4; name=$5; format=$6; sql=$7
# In the database's container, with PGHOST/PGPORT when [backup.db] sets them (DB_HOST and
# DB_PORT, assigned above this text); the container's own environment otherwise.
db_exec() { docker exec ${DB_HOST:+-e "PGHOST=$DB_HOST"} ${DB_PORT:+-e "PGPORT=$DB_PORT"} "$@"; }
cid=$(docker ps -q --filter "label=com.docker.compose.project.working_dir=$wd" --filter "label=com.docker.compose.service=$service" | head -n 1)
[ -n "$cid" ] || { echo "service $service has no running container" >&2; exit 1; }
scratch="ctops_verify_$$"
db_exec "$cid" createdb -U "$user" "$scratch" || exit 1
trap 'db_exec "$cid" dropdb -U "$user" --if-exists "$scratch" >/dev/null 2>&1' EXIT
if [ "$format" = sql ]; then
    db_exec -i "$cid" psql -U "$user" -d "$scratch" -v ON_ERROR_STOP=1 -1 -q < "$dir/$name" >/dev/null
else
    db_exec -i "$cid" pg_restore -U "$user" -d "$scratch" --single-transaction --exit-on-error --no-owner < "$dir/$name"
fi || { echo "the restore into a scratch database failed" >&2; exit 1; }
db_exec "$cid" psql -U "$user" -d "$scratch" -tA -F '	' -c "$sql" || exit 1
date -u +%Y-%m-%dT%H:%M:%SZ > "$dir/$name.verified" 2>/dev/null || true
