# shellcheck shell=sh
# `sh -c restore-find-env.sh ctops BACKUP_DIR NAME`: the path of env backup NAME (or of the
# newest for `latest`). Exit 66: no such copy.
dir=$1/env; name=$2
if [ "$name" = latest ]; then
    name=$(find "$dir" -maxdepth 1 -name 'env-*' ! -name '*.tmp' 2>/dev/null | sed 's|.*/||' | sort | tail -n 1)
    [ -n "$name" ] || { echo "no .env backups in $dir" >&2; exit 66; }
fi
[ -f "$dir/$name" ] || { echo "no .env backup $name in $dir" >&2; exit 66; }
echo "$dir/$name"
