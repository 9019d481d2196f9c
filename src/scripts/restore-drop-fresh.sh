# shellcheck shell=sh
# The `drop_fresh` undo step of `restore db` (a step body of the runner): the new database
# the `restore` step loaded, dropped when the restore fails before it was swapped in. After a
# swap that name no longer exists (it became the live database, then the failed copy), so
# `--if-exists` makes this a no-op there. It never fails the undo: a copy it cannot drop is
# listed by `ctops restore list-kept`.
# Set by the plan: DB_SERVICE, DB_USER, DB_HOST, DB_PORT, FRESH.
db_exec() { docker exec ${DB_HOST:+-e "PGHOST=$DB_HOST"} ${DB_PORT:+-e "PGPORT=$DB_PORT"} "$@"; }
cid=$(container_of "$DB_SERVICE")
if [ -n "$cid" ] && db_exec "$cid" dropdb --if-exists -U "$DB_USER" "$FRESH"; then
    echo "dropped $FRESH (if it was there)"
else
    echo "could not drop $FRESH: see ctops restore list-kept"
fi
true
