# SERVICE CONTAINER ...: prints each SERVICE whose running CONTAINER has an alembic.ini in
# its working directory (where `compose run SERVICE alembic ...` would look for it).
while [ $# -ge 2 ]; do
    if docker exec "$2" test -f alembic.ini 2>/dev/null; then printf '%s\n' "$1"; fi
    shift 2
done
