# Functions that read a release's alembic configuration and revision scripts from git,
# without running its code. Sourced by git-probe.sh and revisions.sh; the caller has
# `cd`-ed into the checkout.

# alembic_inis REF TAG: every alembic.ini at REF as `TAG_ini<TAB>PATH`, and each of its
# lines as `TAG_inil<TAB>PATH<TAB>LINE` (at most 20 files of 64 KiB).
alembic_inis() {
    git ls-tree -r --name-only "$1" | grep -E '(^|/)alembic\.ini$' | head -n 20 |
        while IFS= read -r ini; do
            printf '%s_ini\t%s\n' "$2" "$ini"
            git show "$1:$ini" | head -c 65536 |
                INI="$ini" TAG="$2_inil" awk '{ print ENVIRON["TAG"] "\t" ENVIRON["INI"] "\t" $0 }'
        done
}

# revisions_at REF TAG DIR...: `TAG_dir<TAB>DIR` for each folder that exists at REF, then
# the revision lines of the scripts in those folders as `TAG_mig<TAB>REF:PATH:LINE`.
revisions_at() {
    ref=$1
    tag=$2
    shift 2
    for dir in "$@"; do
        if [ "$(git cat-file -t "$ref:$dir" 2>/dev/null)" = tree ]; then
            printf '%s_dir\t%s\n' "$tag" "$dir"
        fi
    done
    [ $# -gt 0 ] || return 0
    git --literal-pathspecs grep -E '^(revision|down_revision)' "$ref" -- "$@" |
        TAG="${tag}_mig" awk '{ print ENVIRON["TAG"] "\t" $0 }'
}
