# ctops backup list: `dir`, the host's clock, then each database backup's manifest (one
# line) with a `verified` line when `backup verify` passed, then the dumps runbook 5.2's own
# command made (`db_YYYYMMDD.sql`, no manifest), then the .env copies.
date -u +%s
for m in "$1"/db-*.manifest.json; do
    [ -f "$m" ] || continue
    # One line per manifest, however it was written (a manifest is one JSON line).
    tr -d '\n' < "$m"; echo
    n=${m%.manifest.json}
    [ -f "$n.verified" ] && printf 'verified\t%s\n' "${n##*/}"
done
for f in "$1"/db_*.sql; do
    [ -f "$f" ] || continue
    printf 'runbook\t%s\t%s\t%s\n' "${f##*/}" "$(stat -c %s "$f")" "$(date -u -r "$f" +%Y-%m-%dT%H:%M:%SZ)"
done
for f in "$1"/env/env-*; do
    [ -f "$f" ] || continue
    case $f in
        *.tmp) ;;
        *) printf 'env\t%s\t%s\t%s\n' "${f##*/}" "$(stat -c %s "$f")" "$(date -u -r "$f" +%Y-%m-%dT%H:%M:%SZ)" ;;
    esac
done
true
