#!/usr/bin/env bash
# Builds the fixture application's git history from app/ into a new bare repository.
#
#   make-origin.sh BARE_REPO_PATH
#
# Deterministic: fixed authors, dates and content, so commit ids are the same on every run.
#
#   v1.25.0  initial release (migration 0001: users, messages)
#   v1.26.0  migration 0002 (users.locale)
#   v1.27.0  migration 0003 (sessions)
#   main     v1.27.0 + README, .editorconfig, release 1.27.1 (no migration)
#   broken-api-crash   v1.27.0 + migration 0004 (ok) + API exits at start, VERSION 1.28.0
#   broken-migration   v1.27.0 + migration 0004 (ok) + 0005 (SQL error), VERSION 1.28.0
#   broken-bot         v1.27.0 + bot exits 1 after 2 s, VERSION 1.28.0
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
app=$here/app
out=${1:?usage: make-origin.sh BARE_REPO_PATH}
[ ! -e "$out" ] || { echo "make-origin: $out already exists" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
repo=$work/repo

export GIT_AUTHOR_NAME="CalmTrader Dev" GIT_AUTHOR_EMAIL="dev@calmtrader.invalid"
export GIT_COMMITTER_NAME="CalmTrader Dev" GIT_COMMITTER_EMAIL="dev@calmtrader.invalid"
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
g() { git -C "$repo" -c core.autocrlf=false -c commit.gpgsign=false -c tag.gpgsign=false "$@"; }

overlay() { cp -R "$app/$1/." "$repo/"; }

# release VERSION SECTION_FILE: VERSION file and a new CHANGELOG section on top.
release() {
    local version=$1 section=$app/changelog/$2.md header=$app/changelog/HEADER.md old
    printf '%s\n' "$version" > "$repo/VERSION"
    old=$(mktemp)
    if [ -f "$repo/CHANGELOG.md" ]; then
        tail -n +"$(($(wc -l < "$header") + 1))" "$repo/CHANGELOG.md" > "$old"
    fi
    cat "$header" "$section" "$old" > "$repo/CHANGELOG.md"
    rm -f "$old"
}

# commit DATE MESSAGE
commit() {
    g add -A
    GIT_AUTHOR_DATE="$1" GIT_COMMITTER_DATE="$1" g commit -q -m "$2"
}

# tag NAME DATE
tag() { GIT_COMMITTER_DATE="$2" g tag -a -m "$1" "$1"; }

git init -q -b main "$repo"

overlay base
release 1.25.0 1.25.0
commit "2026-01-05T10:00:00Z" "feat: api, bot and compose stack with users and messages tables"
tag v1.25.0 "2026-01-05T10:00:00Z"

overlay overlays/0002-users-locale
commit "2026-01-12T09:00:00Z" "feat(db): add users.locale (migration 0002)"
release 1.26.0 1.26.0
commit "2026-01-12T10:00:00Z" "chore(release): 1.26.0"
tag v1.26.0 "2026-01-12T10:00:00Z"

overlay overlays/0003-sessions
commit "2026-01-19T09:00:00Z" "feat(db): add sessions table (migration 0003)"
release 1.27.0 1.27.0
commit "2026-01-19T10:00:00Z" "chore(release): 1.27.0"
tag v1.27.0 "2026-01-19T10:00:00Z"

overlay overlays/readme
commit "2026-01-21T09:00:00Z" "docs: describe the local setup in README"
overlay overlays/editorconfig
commit "2026-01-22T09:00:00Z" "chore: add .editorconfig"
release 1.27.1 1.27.1
commit "2026-01-23T10:00:00Z" "chore(release): 1.27.1"

g checkout -q -b tmp-broken-api-crash v1.27.0
overlay overlays/0004-audio-key
commit "2026-01-26T09:00:00Z" "feat(db): add messages.audio_key (migration 0004)"
overlay overlays/api-feature-flags
commit "2026-01-26T10:00:00Z" "feat(api): load feature flags at start"
release 1.28.0 1.28.0-broken-api-crash
commit "2026-01-26T12:00:00Z" "chore(release): 1.28.0"
tag broken-api-crash "2026-01-26T12:00:00Z"

g checkout -q -b tmp-broken-migration v1.27.0
overlay overlays/0004-audio-key
commit "2026-01-26T09:00:00Z" "feat(db): add messages.audio_key (migration 0004)"
overlay overlays/0005-backfill-lang
commit "2026-01-26T11:00:00Z" "feat(db): add messages.lang with a backfill (migration 0005)"
release 1.28.0 1.28.0-broken-migration
commit "2026-01-26T12:00:00Z" "chore(release): 1.28.0"
tag broken-migration "2026-01-26T12:00:00Z"

g checkout -q -b tmp-broken-bot v1.27.0
overlay overlays/bot-broker
commit "2026-01-26T10:00:00Z" "feat(bot): connect to the message broker at start"
release 1.28.0 1.28.0-broken-bot
commit "2026-01-26T12:00:00Z" "chore(release): 1.28.0"
tag broken-bot "2026-01-26T12:00:00Z"

git init -q --bare -b main "$out"
g push -q "$out" refs/heads/main:refs/heads/main 'refs/tags/*:refs/tags/*'
