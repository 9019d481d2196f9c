# ctops backup db: dump, flush, rename, manifest last (see db_backup_command in
# src/ops/backup.rs for the parameters).
set -u
dir=$1; wd=$2; service=$3; user=$4; db=$5; format=$6; label=$7; flock=$8; count_sql=$9; fault=${10:-}
# In the database's container, with PGHOST/PGPORT when [backup.db] sets them (DB_HOST and
# DB_PORT, assigned above this text); the container's own environment otherwise.
db_exec() { docker exec ${DB_HOST:+-e "PGHOST=$DB_HOST"} ${DB_PORT:+-e "PGPORT=$DB_PORT"} "$@"; }
fault() { [ "$fault" = "$1" ] || return 0; echo "fault injected: $1" >&2; kill -KILL 0; }
# A test's pause (`pause-mid-stream`): long enough to see the dump's progress on a terminal.
pause() { [ "$fault" = "pause-$1" ] || return 0; sleep 4; }
umask 027
mkdir -p "$dir" || exit 1
if [ -n "$flock" ]; then
    # Opened read-only (all flock needs), so any operator account can take it.
    # Created 0660 (umask 027 would make it 0640): every operator's runner opens it too.
    mkdir -p "${flock%/*}" && { [ -e "$flock" ] || { : >>"$flock" && chmod 0660 "$flock"; }; } && exec 9<"$flock" || exit 1
    flock -s -n 9 || { echo "waiting for the deploy or restore running on the host" >&2; flock -s 9; }
fi
cid=$(docker ps -q --filter "label=com.docker.compose.project.working_dir=$wd" --filter "label=com.docker.compose.service=$service" | head -n 1)
[ -n "$cid" ] || { echo "service $service has no running container" >&2; exit 1; }
# What interrupted backups left: temporary files of writers that are gone, dumps whose
# manifest was never written.
for f in "$dir"/.tmp-*; do
    [ -e "$f" ] || continue
    pid=${f##*/.tmp-}; pid=${pid%%-*}
    # Alive is "has a /proc entry": kill -0 fails with EPERM on another user's live process,
    # which would make its files look abandoned.
    case $pid in '' | *[!0-9]*) ;; *) [ -d "/proc/$pid" ] && continue ;; esac
    rm -rf "$f"
done
# A dump still linked to a live writer's temporary file is between its link and its manifest.
find "$dir" -maxdepth 1 -name 'db-*' ! -name '*.manifest.json' ! -name '*.verified' | while read -r f; do
    [ -e "$f.manifest.json" ] && continue
    live=
    # shellcheck disable=SC3013 # -ef (same file) is in dash, bash and busybox sh alike
    for t in "$dir"/.tmp-*; do [ "$t" -ef "$f" ] && live=1; done
    [ -n "$live" ] || rm -f "$f"
done
ts=$(date -u +%Y%m%dT%H%M%SZ); created=$(date -u +%Y-%m-%dT%H:%M:%SZ)
case $format in sql) ext=sql; opt=-Fp ;; *) ext=dump; opt=-Fc ;; esac
name="db-$ts${label:+-$label}.$ext"; tmp="$dir/.tmp-$$-$name"
# The dump goes straight to its file; its checksum is read back afterwards, from the page
# cache, while the file is flushed: at 1 GiB on two cores that costs about half of what a tee
# stage in the pipe does (every stage copies every byte). The row counts come from the
# database itself, inside the snapshot the dump reads (exported by a REPEATABLE READ
# transaction that stays open until the dump is done). The same session says how big the
# database is, for the space check.
work="$dir/.tmp-$$-work"; mkdir "$work" || exit 1
mkfifo "$work/sql" || exit 1
{ db_exec -i "$cid" psql -X -q -At -F '	' -v ON_ERROR_STOP=1 -U "$user" -d "$db" < "$work/sql" > "$work/counts" 2> "$work/counts.err"; echo $? > "$work/counts.rc"; } &
exec 7> "$work/sql"
printf '%s\n' 'BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;' 'SELECT pg_export_snapshot(), pg_database_size(current_database());' >&7
opened=; tries=0
until [ -n "$opened" ]; do
    opened=$(head -n 1 "$work/counts" 2>/dev/null)
    [ -s "$work/counts.rc" ] && { cat "$work/counts.err" >&2; echo "cannot open a snapshot of $db" >&2; rm -rf "$work"; exit 1; }
    tries=$((tries + 1)); [ $tries -le 3000 ] || { echo "no snapshot of $db after 30 s" >&2; exec 7>&-; rm -rf "$work"; exit 1; }
    [ -n "$opened" ] || sleep 0.01
done
snapshot=${opened%%	*}; size=${opened#*	}
avail=$(df -PB1 "$dir" | awk 'NR == 2 {print $4}')
need=$(( size + size / 5 + 16777216 ))
if [ "$avail" -lt "$need" ]; then
    exec 7>&-; wait; rm -rf "$work"
    echo "not enough space in $dir: $avail bytes free, $need needed (database $size bytes, 20% and 16 MiB margin)" >&2
    exit 75
fi
fault before-first-byte
dump() { db_exec "$cid" pg_dump -U "$user" --snapshot="$snapshot" $opt "$db"; echo $? > "$work/dump.rc"; }
if [ "$fault" = mid-stream ] || [ "$fault" = pause-mid-stream ]; then
    dump | { head -c 2048; fault mid-stream; pause mid-stream; cat; } > "$tmp"
else
    dump > "$tmp"
fi
written=$?
if [ "$written" != 0 ] || [ "$(cat "$work/dump.rc" 2>/dev/null)" != 0 ]; then
    exec 7>&-; wait
    rm -rf "$tmp" "$work"; echo "pg_dump failed (is $dir full? df -h $dir)" >&2; exit 1
fi
# Three things at once, on what is written: the rows counted in the dump's snapshot (its
# transaction is still open), the file flushed, and its checksum read back.
printf '%s\n' "$count_sql" 'COMMIT;' >&7; exec 7>&-
fault before-flush
{ sync "$tmp" 2>/dev/null || sync; } &
# openssl uses the CPU's SHA instructions (about 3x sha256sum's speed here).
if command -v openssl >/dev/null 2>&1; then sha=$(openssl dgst -sha256 -r < "$tmp"); else sha=$(sha256sum < "$tmp"); fi
hashed=$?
wait; sha=${sha%% *}; bytes=$(stat -c %s "$tmp")
# A backup without its checksum cannot be verified or restored safely: it is no backup.
case $hashed:$sha in
    0:*[!0-9a-f]* | *:) hashed=bad ;;
    0:*) [ ${#sha} -eq 64 ] || hashed=bad ;;
    *) hashed=bad ;;
esac
if [ "$hashed" != 0 ]; then
    exec 7>&-; wait
    rm -rf "$tmp" "$work"; echo "computing the sha256 of the dump failed (openssl or sha256sum on the host)" >&2; exit 1
fi
if [ "$(cat "$work/counts.rc" 2>/dev/null)" != 0 ] || [ "$(tail -n 1 "$work/counts")" != end ]; then
    cat "$work/counts.err" >&2; rm -rf "$tmp" "$work"; echo "counting the rows of $db failed" >&2; exit 1
fi
counts=$(tail -n +2 "$work/counts"); rm -rf "$work"
tables=$(printf '%s\n' "$counts" | awk -F'\t' '$1 == "table" { gsub(/"/, "\\\"", $2); printf "%s\"%s\":%s", sep, $2, $3; sep = "," }')
rev=$(printf '%s\n' "$counts" | awk -F'\t' '$1 == "revision" { print $2 }')
# Linked, never renamed over: a name is never reused. Two backups in one second get _02,
# _03..., which sort after the first, so names sort in the order the backups were made.
n=1
until ln "$tmp" "$dir/$name" 2>/dev/null; do
    n=$((n + 1)); [ $n -le 99 ] || { echo "cannot name the backup in $dir" >&2; exit 1; }
    name="db-${ts}_$(printf %02d $n)${label:+-$label}.$ext"
done
manifest=$(printf '{"kind":"db","name":"%s","format":"%s","sha256":"%s","size":%s,"created":"%s","database":"%s","revision":%s,"label":"%s","tables":{%s}}' \
    "$name" "$format" "$sha" "$bytes" "$created" "$db" "$( [ -n "$rev" ] && printf '"%s"' "$rev" || printf null)" "$label" "$tables")
fault after-rename
printf '%s\n' "$manifest" > "$dir/.tmp-$$-$name.manifest.json" && sync "$dir/.tmp-$$-$name.manifest.json" 2>/dev/null
mv "$dir/.tmp-$$-$name.manifest.json" "$dir/$name.manifest.json" || exit 1
rm -f "$tmp"
sync "$dir" 2>/dev/null || true
printf '%s\n' "$manifest"
