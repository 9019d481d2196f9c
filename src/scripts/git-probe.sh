# CHECKOUT VERSIONS REF BRANCH: what the checkout runs and what REF (or origin/BRANCH)
# would run, as `key<TAB>value` lines, after a fetch. The alembic configuration of both
# commits comes too (alembic_inis, from migrations.sh, sent above this text), unless
# VERSIONS (deploy.migrate.versions) says where the scripts are.
cd "$1" || exit 1
export GIT_TERMINAL_PROMPT=0 GIT_SSH_COMMAND="ssh -o BatchMode=yes"
git status --porcelain --untracked-files=no | sed 's/^/dirty	/'
out=$(timeout 120 git fetch -q --tags --force origin 2>&1) || printf 'fetch-error\t%s\n' "$out" | tr '\n' ' '
echo
cur=$(git rev-parse HEAD)
printf 'current\t%s\n' "$cur"
t=""
if [ -n "$3" ]; then
    for c in "refs/tags/$3" "refs/remotes/origin/$3" "$3"; do
        t=$(git rev-parse -q --verify "$c^{commit}") && break
        t=""
    done
else
    t=$(git rev-parse -q --verify "refs/remotes/origin/$4^{commit}")
fi
printf 'target\t%s\n' "$t"
printf 'current_version\t%s\n' "$(git show "$cur:VERSION" 2>/dev/null | head -n 1)"
printf 'current_tag\t%s\n' "$(git describe --tags --exact-match "$cur" 2>/dev/null)"
[ -n "$2" ] || alembic_inis "$cur" cur
[ -n "$t" ] || exit 0
printf 'target_version\t%s\n' "$(git show "$t:VERSION" 2>/dev/null | head -n 1)"
printf 'target_tag\t%s\n' "$(git describe --tags --exact-match "$t" 2>/dev/null)"
[ -n "$2" ] || alembic_inis "$t" tgt
