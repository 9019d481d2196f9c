# shellcheck shell=sh
# `sh -c restore-inspect.sh ctops BACKUP_DIR NAME`: the manifest of backup NAME (or of the
# newest for `latest`), then the sha256 of the file as it is now. Exit 66: no such backup.
dir=$1; name=$2
if [ "$name" = latest ]; then
    m=$(find "$dir" -maxdepth 1 -name 'db-*.manifest.json' 2>/dev/null | sort | tail -n 1)
    [ -n "$m" ] || { echo "no backups in $dir" >&2; exit 66; }
    name=$(basename "$m" .manifest.json)
fi
[ -f "$dir/$name.manifest.json" ] || { echo "no backup $name in $dir (or it has no manifest: it never completed)" >&2; exit 66; }
# One line however it was written (as backup-list.sh reads it), the checksum on the next.
tr -d '\n' < "$dir/$name.manifest.json"; echo
sha256sum "$dir/$name" | cut -d' ' -f1
