#!/bin/sh
# Sourced by the entrypoint on the first start: the app's own role, owner of the database.
: "${APP_DB_PASSWORD:?APP_DB_PASSWORD must be set}"
psql -X -q -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d postgres -v pw="$APP_DB_PASSWORD" -v db="$POSTGRES_DB" <<'SQL'
CREATE ROLE calm_app LOGIN PASSWORD :'pw';
ALTER DATABASE :"db" OWNER TO calm_app;
SQL
