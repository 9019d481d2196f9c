# ctops backup env: `dir env_file`, a copy of .env (mode 0600) when it differs from the
# newest copy.
set -u
dir=$1/env; src=$2
umask 077
mkdir -p "$dir" || exit 1
[ -f "$src" ] || { echo "no $src" >&2; exit 1; }
new=$(sha256sum < "$src" | cut -d' ' -f1)
last=
for f in "$dir"/env-*; do
    case $f in *.tmp*) continue ;; esac
    [ -f "$f" ] && last=$f
done
if [ -n "$last" ] && [ "$(sha256sum < "$last" | cut -d' ' -f1)" = "$new" ]; then echo "unchanged $last"; exit 0; fi
stamp=$(date -u +%Y%m%dT%H%M%SZ); name="env-$stamp"; n=1; tmp="$dir/env-$stamp.$$.tmp"
cp "$src" "$tmp" && chmod 0600 "$tmp" && sync "$tmp" 2>/dev/null || exit 1
until ln "$tmp" "$dir/$name" 2>/dev/null; do
    n=$((n + 1)); name=$(printf 'env-%s-%02d' "$stamp" "$n")
    [ "$n" -le 99 ] || { rm -f "$tmp"; echo "cannot name a copy in $dir" >&2; exit 1; }
done
rm -f "$tmp"; echo "created $dir/$name"
