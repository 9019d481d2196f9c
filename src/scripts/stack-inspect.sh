# The host's clock, then `docker inspect` of every container compose labelled (a JSON array).
# A container removed between the listing and the inspection (a one-off `compose run --rm`
# of any project ending meanwhile) is left out, not an error; any other failure is one.
date -u +%s
ids=$(docker ps -aq --filter label=com.docker.compose.project)
if [ -z "$ids" ]; then
    echo '[]'
    exit 0
fi
# shellcheck disable=SC2086 # one word per container id
{ err=$(docker inspect $ids 2>&1 >&3); rc=$?; } 3>&1
if [ "$rc" -ne 0 ] && printf '%s\n' "$err" | grep -qv '^Error: No such object'; then
    printf '%s\n' "$err" >&2
    exit "$rc"
fi
