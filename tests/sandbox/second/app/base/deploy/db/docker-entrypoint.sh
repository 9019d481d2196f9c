#!/bin/sh
# PostgreSQL 15 from the host's /usr/lib/postgresql/15/bin, started the way the official
# postgres image's entrypoint does it: on the first start, initdb with POSTGRES_USER as the
# superuser and the image's pg_hba.conf (trust on the socket and on 127.0.0.1,
# scram-sha-256 for everything else), create POSTGRES_DB, run /docker-entrypoint-initdb.d/*.sh
# against a socket-only server; then exec the command as the postgres user.
# This host listens on loopback only, IPv4 and IPv6: every IPv4 client is 127.0.0.1 (trusted,
# any password works), so the app connects to [::1], where the password is checked.
set -eu
: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}"
POSTGRES_USER=${POSTGRES_USER:-postgres}
POSTGRES_DB=${POSTGRES_DB:-$POSTGRES_USER}
PGDATA=${PGDATA:-/var/lib/postgresql/data}
export PGDATA POSTGRES_USER POSTGRES_DB
uid=$(id -u postgres)
gid=$(id -g postgres)
as_postgres() { setpriv --reuid="$uid" --regid="$gid" --clear-groups "$@"; }

mkdir -p "$PGDATA" /var/run/postgresql
chown "$uid:$gid" "$PGDATA" /var/run/postgresql
chmod 0700 "$PGDATA"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    echo "entrypoint: initialising the database cluster in $PGDATA"
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
    chown "$uid" "$pwfile"
    as_postgres initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pwfile" \
        --auth-local=trust --auth-host=trust --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    rm -f "$pwfile"
    # The official image: initdb's trust lines, then `host all all all scram-sha-256`.
    # (Its ::1 trust lines are dropped here: on this host, ::1 is "another address".)
    sed -i '/::1\/128/d' "$PGDATA/pg_hba.conf"
    printf 'host all all all scram-sha-256\n' >> "$PGDATA/pg_hba.conf"
    cat >> "$PGDATA/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1,::1'
unix_socket_directories = '/var/run/postgresql'
CONF
    as_postgres pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
    echo "CREATE DATABASE \"$POSTGRES_DB\";" |
        psql -X -q -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d postgres
    for f in /docker-entrypoint-initdb.d/*.sh; do
        [ -f "$f" ] || continue
        echo "entrypoint: running $f"
        # shellcheck source=/dev/null
        . "$f"
    done
    as_postgres pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    echo "entrypoint: database $POSTGRES_DB created"
fi

exec setpriv --reuid="$uid" --regid="$gid" --clear-groups "$@"
