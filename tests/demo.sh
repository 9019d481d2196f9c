#!/usr/bin/env bash
# The main job against the built-in sandbox host: provisions it (idempotent), builds ctops,
# then runs what the on-call engineer runs, for real, over SSH.
set -euo pipefail
cd "$(dirname "$0")/.."

tests/sandbox/sandbox.sh up
cargo build --release --locked
ctops=target/release/ctops
export CTOPS_CONFIG="${CTOPS_SANDBOX:-/var/tmp/ctops-sandbox}/ctops.toml"

run() { printf '\n$ ctops %s\n' "$*"; "$ctops" "$@"; }
run health
run status
run logs bot --tail 5
run stats
