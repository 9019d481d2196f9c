# shellcheck shell=sh
# `disk`: df, Docker's accounting, then the largest container logs (size TAB name), sections
# split by `--` lines.
df -hP
echo '--'
docker system df
echo '--'
ids=$(docker ps -aq)
[ -n "$ids" ] || exit 0
# shellcheck disable=SC2086 # one argument per container id
docker inspect -f '{{.Name}} {{.LogPath}}' $ids | while read -r name log; do
    size=$(stat -c %s "$log" 2>/dev/null || sudo -n stat -c %s "$log" 2>/dev/null || echo '?')
    printf '%s\t%s\n' "$size" "${name#/}"
done | sort -rn | head -n 10
