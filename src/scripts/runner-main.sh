# shellcheck shell=sh
# The detached runner's main part, after its functions and the plan's steps (`forward`,
# `back`, `changed`). Set above by `remote::assign`: OP_KIND, DESCRIBE, SUCCESS,
# JOURNAL_FORMAT, RELEASE_FIELDS (empty: no release record), SEED_FIELDS (empty: none),
# AUDIT_FIELDS.

record() { # OUTCOME
    at=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    if [ -n "$RELEASE_FIELDS" ] && [ "$1" = "$SUCCESS" ]; then
        shared_file "$D/releases.jsonl"
        printf '{"at":"%s","result":"%s",%s}\n' "$at" "$1" "$RELEASE_FIELDS" >> "$D/releases.jsonl"
    fi
    shared_file "$D/audit.jsonl"
    printf '{"at":"%s","result":"%s",%s}\n' "$at" "$1" "$AUDIT_FIELDS" >> "$D/audit.jsonl"
}

# The renewer checks the runner's pid, saved here: inside `( ... ) &`, $$ is still the
# runner's, but $PPID would be the runner's parent. It stops when the runner is gone, however
# the runner ended (even `kill -9`), so the lock then lapses within one lease.
RUNNER=$$
RUNNER_STARTED=$(proc_of "$RUNNER" | awk '{ print $2 }')
lock_renew "$TOKEN" "$LEASE" || { echo "the host lock is not this runner's: not starting" >&2; exit 1; }
( while sleep "$RENEW"; do alive "$RUNNER" "$RUNNER_STARTED" || exit 0; lock_renew "$TOKEN" "$LEASE" || exit 0; done ) >/dev/null 2>&1 &
renewer=$!
trap 'kill "$renewer" 2>/dev/null' EXIT
shared_file "$D/last"
printf '%s' "$OP" > "$D/last"
shared_file "$J"
journal format "$JOURNAL_FORMAT"
if [ -n "$SEED_FIELDS" ] && [ ! -s "$D/releases.jsonl" ]; then
    shared_file "$D/releases.jsonl"
    printf '{"at":"%s","result":"found",%s}\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$SEED_FIELDS" >> "$D/releases.jsonl"
fi
journal begin "$OP_KIND" "$DESCRIBE"
# Backups hold this shared while they dump: wait for them, then keep them out until the end.
shared_file "$D/ops.flock"
exec 8<"$D/ops.flock"
flock -x -n 8 || { journal note "waiting for a backup to finish"; flock -x 8; }
if forward; then outcome=$SUCCESS
elif ! changed; then outcome=failed
elif back; then outcome=rolled-back
else outcome=rollback-failed
fi
record "$outcome"
kill "$renewer" 2>/dev/null
lock_release "$TOKEN"
# Last: whoever reads `end` finds the release recorded and the lock free.
journal end "$outcome"
