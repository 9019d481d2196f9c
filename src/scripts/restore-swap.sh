# shellcheck shell=sh
# The `swap` and `swap_back` steps of `restore db` (a step body of the runner, run in a
# subshell): database LIVE becomes AWAY and INTO becomes LIVE, both renames in one
# transaction, with no session left on either database. A client outside `writers` (a pool
# that reconnects at once) is kept out by ALLOW_CONNECTIONS false while it happens.
# Set by the plan: DB_SERVICE, DB_USER, DB_HOST, DB_PORT, SWAP_WAIT (seconds); by the step: LIVE, AWAY, INTO.
# In the database's container, with PGHOST/PGPORT when [backup.db] sets them.
db_exec() { docker exec ${DB_HOST:+-e "PGHOST=$DB_HOST"} ${DB_PORT:+-e "PGPORT=$DB_PORT"} "$@"; }
cid=$(container_of "$DB_SERVICE")
[ -n "$cid" ] || { echo "no running $DB_SERVICE container"; exit 1; }
# SQL on stdin, on the maintenance database; the names arrive as psql variables, quoted by
# psql (:"name" as an identifier, :'name' as a literal).
sql() {
    db_exec -i "$cid" psql -X -q -tA -U "$DB_USER" -d postgres -v ON_ERROR_STOP=1 \
        -v live="$LIVE" -v away="$AWAY" -v into="$INTO" "$@"
}
# Both databases take connections again, under the names they have now (nothing renamed).
allow_again() {
    printf '%s\n' 'ALTER DATABASE :"live" ALLOW_CONNECTIONS true;' \
        'ALTER DATABASE :"into" ALLOW_CONNECTIONS true;' | sql -1 ||
        echo "could not allow connections to $LIVE and $INTO again: run ALTER DATABASE ... ALLOW_CONNECTIONS true"
}
printf '%s\n' 'ALTER DATABASE :"live" ALLOW_CONNECTIONS false;' \
    'ALTER DATABASE :"into" ALLOW_CONNECTIONS false;' | sql -1 || { allow_again; exit 1; }
# Terminate every session on either database until none is left (those already signalled
# are counted once more, while they exit), for at most SWAP_WAIT seconds.
end=$(( $(date +%s) + SWAP_WAIT ))
while :; do
    left=$(printf '%s\n' "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname IN (:'live', :'into') AND pid <> pg_backend_pid();" | sql) ||
        { allow_again; exit 1; }
    [ "$left" = 0 ] && break
    if [ "$(date +%s)" -ge "$end" ]; then
        echo "sessions still connected to $LIVE or $INTO after ${SWAP_WAIT}s (SWAP_WAIT), nothing renamed:"
        printf '%s\n' "SELECT datname || ': ' || coalesce(usename, '?') || ' ' || application_name || ' ' || coalesce(client_addr::text, 'local') FROM pg_stat_activity WHERE datname IN (:'live', :'into') AND pid <> pg_backend_pid();" | sql
        allow_again; exit 1
    fi
    sleep 1
done
printf '%s\n' 'ALTER DATABASE :"live" RENAME TO :"away";' \
    'ALTER DATABASE :"into" RENAME TO :"live";' \
    'ALTER DATABASE :"live" ALLOW_CONNECTIONS true;' \
    'ALTER DATABASE :"away" ALLOW_CONNECTIONS true;' | sql -1 || { allow_again; exit 1; }
echo "$LIVE is the former $INTO now; the former $LIVE is kept as $AWAY"
