# shellcheck shell=sh
# `prune STATE_DIR PROJECT KEEP PREFIX` (see service.rs).
set -u
state=$1; project=$2; keep=$3; prefix=$4
root=$(docker info -f '{{.DockerRootDir}}') || exit 1
free() { df -PB1 "$root" | awk 'NR == 2 { print $4 }'; }
before=$(free)
kept=$(tac "$state/releases.jsonl" 2>/dev/null | sed -n 's/.*"commit":"\([0-9a-f]\{12\}\).*/\1/p' | awk -v p="$prefix" '!seen[$0]++ { print p $0 }' | head -n "$keep")
docker container prune -f --filter "label!=com.docker.compose.project=$project" >/dev/null || exit 1
used=$(docker ps -aq | xargs -r docker inspect -f '{{.Image}}' | sort -u)
docker images --no-trunc --format '{{.ID}} {{.Repository}}:{{.Tag}}' | while read -r id ref; do
    printf '%s\n' "$used" | grep -qx "$id" && continue
    tag=${ref##*:}
    [ -n "$kept" ] && printf '%s\n' "$kept" | grep -qxF "$tag" && continue
    case $ref in *"<none>"*) target=$id ;; *) target=$ref ;; esac
    docker rmi "$target" >/dev/null 2>&1 && printf 'removed\t%s\n' "$ref"
done
docker network prune -f >/dev/null
docker builder prune -af >/dev/null 2>&1
printf 'freed\t%s\n' "$(( $(free) - before ))"
