# shellcheck shell=sh
# `dir name`: a dump runbook 5.2's own command made (`pg_dump ... > db_YYYYMMDD.sql`, no
# manifest), checked for what can be checked without one: it is a regular file, it ends with
# pg_dump's `-- PostgreSQL database dump complete` (a killed dump has none), and it
# has no CRLF line endings (a copy through Windows breaks COPY data). Prints its sha256, its
# size, its time (UTC) and the alembic revision its `alembic_version` data holds (empty when
# it has none), one per line. Exit 66: no such file; 65: not a complete plain dump.
f="$1/$2"
[ -f "$f" ] || { echo "no runbook dump $2 in $1" >&2; exit 66; }
# After the completion line pg_dump writes only `--`, blank lines and, since PostgreSQL 17.6
# and 16.10, `\unrestrict KEY`.
complete=$(awk '$0 == "-- PostgreSQL database dump complete" { done = 1; next }
    $0 != "" && $0 != "--" && $0 !~ /^\\unrestrict / { done = 0 }
    END { print done + 0 }' "$f")
[ "$complete" = 1 ] ||
    { echo "$2 does not end with pg_dump's \"-- PostgreSQL database dump complete\": the dump did not finish" >&2; exit 65; }
if [ "$(tr -dc '\r' < "$f" | wc -c)" -ne 0 ]; then
    echo "$2 has CRLF line endings: its COPY data would not load as it was dumped" >&2
    exit 65
fi
sha256sum "$f" | cut -d' ' -f1
stat -c %s "$f"
date -u -r "$f" +%Y-%m-%dT%H:%M:%SZ
awk '/^COPY ([a-z_]+\.)?alembic_version / { inside = 1; next } inside && /^\\\.$/ { exit } inside { print $1; exit }' "$f"
