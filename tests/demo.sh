#!/usr/bin/env bash
# The main job against the built-in sandbox host: provisions it (idempotent), builds ctops,
# then does what the on-call engineer and cron do, for real, over SSH: health, deploy of the
# branch head (migrations, health gate), backup, status.
set -euo pipefail
cd "$(dirname "$0")/.."

tests/sandbox/sandbox.sh up
cargo build --release --locked
ctops=target/release/ctops
export CTOPS_CONFIG="${CTOPS_SANDBOX:-/var/tmp/ctops-sandbox}/ctops.toml"

run() { printf '\n$ ctops %s\n' "$*"; "$ctops" "$@"; }
run health
run deploy --skip-preflight --reason "sandbox demo: no local checkout to preflight"
run health
run backup db
run backup minio
run backup list
run releases
run status
run logs bot --tail 5
