# CHECKOUT REF DIR...: which of the folders exist at REF, and the revision lines of the
# scripts in them (revisions_at, from migrations.sh, which is sent above this text).
cd "$1" || exit 1
ref=$2
shift 2
revisions_at "$ref" rel "$@"
