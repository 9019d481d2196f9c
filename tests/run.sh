#!/usr/bin/env bash
# The whole test suite, on a fresh machine or a used one: provisions the sandbox hosts
# (idempotent: installs Docker, compose v2, sshd and the fixture stack when missing, starts
# what is stopped, waits for health), then runs the unit and integration tests.
set -euo pipefail
cd "$(dirname "$0")/.."

# The host scripts are code: shellcheck them (the runner's tests also check every rendered
# plan variant with it, with dash -n and with sh -u).
command -v shellcheck >/dev/null 2>&1 || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck >/dev/null
}
shellcheck -s sh src/scripts/*.sh

# The terminal tests (tests/terminal.rs, tests/pty.rs) run ctops in tmux panes: what a user
# sees in a real terminal, colour and redraws included.
command -v tmux >/dev/null 2>&1 || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tmux >/dev/null
}

# reset-host does all `up` does (install, start, wait for health), then puts the host back
# to its initial state, whatever an earlier run left.
tests/sandbox/sandbox.sh reset-host
# The second profile (a host laid out differently: tests/sandbox/second/README.md), after the
# first, whose packages, dockerd and registry it uses.
tests/sandbox/sandbox.sh --second reset-host
export CTOPS_SANDBOX="${CTOPS_SANDBOX:-/var/tmp/ctops-sandbox}"
export CTOPS_SANDBOX2="${CTOPS_SANDBOX2:-/var/tmp/ctops-sandbox2}"
cargo test --locked --all-targets -- --test-threads "${CTOPS_TEST_THREADS:-4}"
