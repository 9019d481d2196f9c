# ctops: the bytes written so far by the database dumps running in backup_dir ($1), for the
# progress bar: the sizes of its temporary dump files (`.tmp-PID-NAME`, written by
# backup-db.sh) added up. Read-only; prints 0 when no dump is running.
set -u
dir=$1
total=0
for f in "$dir"/.tmp-*; do
    [ -f "$f" ] || continue
    case $f in *.manifest.json) continue ;; esac
    size=$(wc -c <"$f" 2>/dev/null) || continue
    total=$((total + size))
done
echo "$total"
