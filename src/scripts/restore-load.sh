# shellcheck shell=sh
# The `restore` step of `restore db` (a step body of the runner, run in a subshell): the
# backup into a new database, in one transaction that stops at the first error. The
# database in use is not touched, and a failed attempt leaves nothing behind. The new
# database gets the live one's owner and its objects the owners the dump names: restored as
# the superuser with --no-owner, every table would belong to the superuser, and an
# application that logs in as its own role would lose access to its data.
# Set by the plan: DB, DB_SERVICE, DB_USER, DB_HOST, DB_PORT, FRESH, BACKUP_FILE, BACKUP_SHA,
# BACKUP_FORMAT.
# In the database's container, with PGHOST/PGPORT when [backup.db] sets them.
db_exec() { docker exec ${DB_HOST:+-e "PGHOST=$DB_HOST"} ${DB_PORT:+-e "PGPORT=$DB_PORT"} "$@"; }
cid=$(container_of "$DB_SERVICE")
[ -n "$cid" ] || { echo "no running $DB_SERVICE container"; exit 1; }
printf '%s  %s\n' "$BACKUP_SHA" "$BACKUP_FILE" | sha256sum -c - || exit 1
owner=$(printf '%s\n' "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = :'live';" |
    db_exec -i "$cid" psql -X -q -tA -U "$DB_USER" -d postgres -v ON_ERROR_STOP=1 -v live="$DB") || exit 1
[ -n "$owner" ] || { echo "database $DB not found: cannot tell its owner"; exit 1; }
db_exec "$cid" createdb -U "$DB_USER" -O "$owner" "$FRESH" || exit 1
if [ "$BACKUP_FORMAT" = sql ]; then
    db_exec -i "$cid" psql -X -q -U "$DB_USER" -d "$FRESH" -v ON_ERROR_STOP=1 -1 < "$BACKUP_FILE" >/dev/null
else
    db_exec -i "$cid" pg_restore -U "$DB_USER" -d "$FRESH" --single-transaction --exit-on-error < "$BACKUP_FILE"
fi || { db_exec "$cid" dropdb -U "$DB_USER" "$FRESH"; exit 1; }
