#!/usr/bin/env bash
# The fault suite (issue 14): runs deploy, rollback, backup db, restore db, rotate and env set
# against the second sandbox profile and, at a seeded random moment of each run, injects one
# fault: the SSH connection cut (sshd's session processes killed), the host-side process
# killed with SIGKILL (the detached runner; for `backup db`, which has no runner, the backup
# script), the Docker engine stopped (and started again), the database container stopped (and
# started again), or the backup dir's filesystem filled (a 64 MiB loop-mounted ext4 mounted on
# the target's backup_dir for the run). After every fault it checks the command's invariant
# (tests/faults/README.md) and counts the faults that landed mid-step: the fault's time falls
# between a step's `start` and its `ok`/`fail` in the host journal (for `backup db`: while the
# backup's temporary files existed in backup_dir).
#
#   tests/faults.sh [--budget 30m] [--batch 9m] [--seed N] [--min 3] [--landed 100]
#                   [--commands deploy,rollback,...] [--kinds ssh,kill,engine,db,disk]
#                   [--plant | --no-plant]
#
# Needs root, the second sandbox profile (`tests/sandbox/sandbox.sh --second up`) and a built
# ctops (CTOPS_BIN, default target/debug/ctops). It takes /var/lock/ctops-itest2.lock for at
# most one batch at a time, and /var/lock/ctops-itest.lock first for a batch that stops the
# engine (the first profile's stack is brought back before that lock is released).
# Exit 0 when every invariant held and the planted violation was caught.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
# shellcheck source=tests/faults/lib.sh
. "$HERE/faults/lib.sh"

BUDGET=30m BATCH=9m SEED=$(( $(date +%s) % 100000 )) MIN=3 WANT_LANDED=100 PLANT=1
COMMANDS=deploy,rollback,backup,restore,rotate,env KINDS=ssh,kill,db,disk,engine
while [ $# -gt 0 ]; do
    case $1 in
        --budget) BUDGET=$2; shift ;;
        --batch) BATCH=$2; shift ;;
        --seed) SEED=$2; shift ;;
        --min) MIN=$2; shift ;;
        --landed) WANT_LANDED=$2; shift ;;
        --commands) COMMANDS=$2; shift ;;
        --kinds) KINDS=$2; shift ;;
        --plant) PLANT=1 ;;
        --no-plant) PLANT=0 ;;
        -h | --help) sed -n '2,/^set -uo/p' "$0" | sed '$d'; exit 0 ;;
        *) echo "faults.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
[ "$(id -u)" = 0 ] || { echo "faults.sh: run as root" >&2; exit 2; }
[ -x "$CTOPS_BIN" ] || { echo "faults.sh: no ctops at $CTOPS_BIN (cargo build)" >&2; exit 2; }
[ -f "$SANDBOX2/ctops.toml" ] || { echo "faults.sh: no second sandbox at $SANDBOX2" >&2; exit 2; }

RANDOM=$SEED
START=$(date +%s)
DEADLINE=$(( START + $(seconds "$BUDGET") ))
BATCH_S=$(seconds "$BATCH")
mkdir -p "$WORK"
write_config
echo "faults: seed $SEED, budget $BUDGET (batches of $BATCH), at least $MIN landed per command and fault, $WANT_LANDED landed in all; log $WORK/log"
: >"$WORK/log"
trap 'teardown_batch; summary; exit 3' INT TERM

IFS=, read -r -a CMDS <<<"$COMMANDS"
IFS=, read -r -a KS <<<"$KINDS"
declare -A LANDED=() TRIED=()
RUNS=0 INJECTED=0 LANDED_ALL=0 HELD=0 VIOLATED=0 PLANTED_CAUGHT=- 

# What still needs faults, engine stops apart (they run in batches holding both locks).
wanted() { # engine|other -> "cmd kind" lines, the least landed first
    local c k
    for c in "${CMDS[@]}"; do for k in "${KS[@]}"; do
        if [ "$1" = engine ] && [ "$k" != engine ]; then continue; fi
        if [ "$1" != engine ] && [ "$k" = engine ]; then continue; fi
        # A pair that keeps missing its steps (MIN * 4 tries) is given up: the summary shows it.
        [ "${TRIED[$c/$k]:-0}" -lt $(( MIN * 4 )) ] || continue
        printf '%s %s %s\n' "${LANDED[$c/$k]:-0}" "$c" "$k"
    done; done | sort -n -s -k1,1 | awk -v min="$MIN" -v total="$LANDED_ALL" -v want="$WANT_LANDED" \
        '$1 < min || total < want { print $2, $3 }'
}

run_batch() { # engine|other
    local end todo c k
    setup_batch "$1" || return
    # The batch's time counts from when it holds the locks.
    end=$(( $(date +%s) + BATCH_S ))
    [ "$end" -le "$DEADLINE" ] || end=$DEADLINE
    while [ "$(date +%s)" -lt $(( end - 40 )) ]; do
        todo=$(wanted "$1" | head -n 1)
        [ -n "$todo" ] || break
        read -r c k <<<"$todo"
        trial "$c" "$k"
    done
    teardown_batch
}

if [ "$PLANT" = 1 ]; then
    setup_batch other && plant_trials
    teardown_batch
fi
while [ "$(date +%s)" -lt $(( DEADLINE - 60 )) ]; do
    did=0
    if [ -n "$(wanted engine)" ]; then
        # Engine stops need the first profile's lock too: when it is busy, another batch of
        # the other faults goes first (if any is wanted), else the suite waits for it.
        WAIT_LOCK1=
        [ -n "$(wanted other)" ] || WAIT_LOCK1=1
        run_batch engine && did=1
    fi
    if [ "$(date +%s)" -lt $(( DEADLINE - 90 )) ] && [ -n "$(wanted other)" ]; then run_batch other; did=1; fi
    [ "$did" = 1 ] || [ -n "$(wanted engine)" ] || break
    # Between batches: the locks are free for a moment, for the other sandbox users.
    sleep 5
done
summary
short=$(for c in "${CMDS[@]}"; do for k in "${KS[@]}"; do [ "${LANDED[$c/$k]:-0}" -ge "$MIN" ] || printf ' %s/%s' "$c" "$k"; done; done)
[ -z "$short" ] || log "fewer than $MIN landed mid-step:$short"
[ "$LANDED_ALL" -ge "$WANT_LANDED" ] || log "fewer than $WANT_LANDED landed mid-step in all"
[ "$VIOLATED" = 0 ] && [ "$PLANTED_CAUGHT" != no ] && [ -z "$short" ] && [ "$LANDED_ALL" -ge "$WANT_LANDED" ]
