#!/bin/sh
# PostgreSQL 15 from the host's /usr/lib/postgresql/15/bin (the official image's behaviour, in short):
# on first start, initdb with POSTGRES_USER as the superuser and POSTGRES_DB owned by it;
# then run the server as the postgres user on 127.0.0.1:$PGPORT.
set -eu
: "${POSTGRES_USER:?}" "${POSTGRES_PASSWORD:?}" "${POSTGRES_DB:?}"
PGDATA=${PGDATA:-/var/lib/postgresql/data}
PGPORT=${PGPORT:-5432}
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
        --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    rm -f "$pwfile"
    cat > "$PGDATA/pg_hba.conf" <<HBA
# TYPE  DATABASE  USER  ADDRESS       METHOD
local   all       all                 trust
host    all       all   127.0.0.1/32  scram-sha-256
HBA
    cat >> "$PGDATA/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PGPORT
password_encryption = 'scram-sha-256'
unix_socket_directories = '/var/run/postgresql'
CONF
    echo "CREATE DATABASE \"$POSTGRES_DB\" OWNER \"$POSTGRES_USER\";" |
        as_postgres postgres --single -D "$PGDATA" -j postgres >/dev/null
    echo "entrypoint: database $POSTGRES_DB created"
fi

exec setpriv --reuid="$uid" --regid="$gid" --clear-groups postgres -D "$PGDATA"
