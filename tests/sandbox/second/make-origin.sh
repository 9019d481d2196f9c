#!/usr/bin/env bash
# Builds the second fixture application's git history from app/ into a new bare repository.
#
#   make-origin.sh BARE_REPO_PATH
#
# Deterministic: fixed authors, dates and content, so commit ids are the same on every run.
#
#   r1       3.0.0, migration a1 (notes)
#   r2       3.1.0, migration a2 (notes.mood)
#   r3       3.2.0, no migration
#   trunk    r3 (the default branch: there is no "main")
#   r4-half  r3 + migrations a3 (ok) and a4 (fails; a3 stays applied), 3.3.0
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
app=$here/app
out=${1:?usage: make-origin.sh BARE_REPO_PATH}
[ ! -e "$out" ] || { echo "make-origin: $out already exists" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
repo=$work/repo

export GIT_AUTHOR_NAME="Calm Dev" GIT_AUTHOR_EMAIL="dev@calm-trader.invalid"
export GIT_COMMITTER_NAME="Calm Dev" GIT_COMMITTER_EMAIL="dev@calm-trader.invalid"
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
g() { git -C "$repo" -c core.autocrlf=false -c commit.gpgsign=false -c tag.gpgsign=false "$@"; }

overlay() { cp -R "$app/$1/." "$repo/"; }

# release VERSION: VERSION file and the version's CHANGELOG section on top.
release() {
    local version=$1 header=$app/changelog/HEADER.md old
    printf '%s\n' "$version" > "$repo/VERSION"
    old=$(mktemp)
    if [ -f "$repo/CHANGELOG.md" ]; then
        tail -n +"$(($(wc -l < "$header") + 1))" "$repo/CHANGELOG.md" > "$old"
    fi
    cat "$header" "$app/changelog/$version.md" "$old" > "$repo/CHANGELOG.md"
    rm -f "$old"
}

commit() {   # DATE MESSAGE
    g add -A
    GIT_AUTHOR_DATE="$1" GIT_COMMITTER_DATE="$1" g commit -q -m "$2"
}

tag() { GIT_COMMITTER_DATE="$2" g tag -a -m "release $1" "$1"; }   # NAME DATE

git init -q -b trunk "$repo"

overlay base
release 3.0.0
commit "2026-03-02T10:00:00Z" "feat: notes api, worker and compose stack (migration a1)"
tag r1 "2026-03-02T10:00:00Z"

overlay overlays/a2-mood
commit "2026-03-09T09:00:00Z" "feat(db): add notes.mood (migration a2)"
release 3.1.0
commit "2026-03-09T10:00:00Z" "chore(release): 3.1.0"
tag r2 "2026-03-09T10:00:00Z"

overlay overlays/r3-notes-endpoint
commit "2026-03-16T09:00:00Z" "docs: contributing guide"
release 3.2.0
commit "2026-03-16T10:00:00Z" "chore(release): 3.2.0"
tag r3 "2026-03-16T10:00:00Z"

g checkout -q -b tmp-r4-half r3
overlay overlays/a3-tags
commit "2026-03-23T09:00:00Z" "feat(db): tags on notes (migration a3)"
overlay overlays/a4-score
commit "2026-03-23T11:00:00Z" "feat(db): notes.score from the mood (migration a4)"
release 3.3.0
commit "2026-03-23T12:00:00Z" "chore(release): 3.3.0"
tag r4-half "2026-03-23T12:00:00Z"

git init -q --bare -b trunk "$out"
g push -q "$out" refs/heads/trunk:refs/heads/trunk 'refs/tags/*:refs/tags/*'
