# shellcheck shell=bash
# The fault suite's functions (tests/faults.sh sources this): the sandbox, ctops, the faults,
# the host's state before and after, and the invariants (README.md beside this file).
# ROOT is set by faults.sh.

SANDBOX2=${CTOPS_SANDBOX2:-/var/tmp/ctops-sandbox2}
CTOPS_BIN=${CTOPS_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/ctops}
WORK=${FAULTS_WORK:-/var/tmp/ctops-faults}
DIR2="/srv/calm trader/app"
ENV2="$DIR2/deploy/.env"
BACKUPS2="/srv/calm trader/backups"
STATE_DIR=/var/lib/ctops
DBC=calmstack-db-1
HEALTH2=http://127.0.0.1:28000/health
PSQL=/usr/lib/postgresql/15/bin/psql
DOCKERD_LOG=/var/tmp/ctops-sandbox/dockerd.log
LOCK1=/var/lock/ctops-itest.lock
LOCK2=/var/lock/ctops-itest2.lock
# The lease ctops and its runner take (the CTOPS_LOCK_LEASE test hook): the lock must be free
# within one lease of the runner's (or the fault's) end.
LEASE=6
BATCH_KIND=
FILL="$BACKUPS2/zz-faults-fill"
# How long the backup's dump step lasts here, about (with the ballast rows).
BACKUP_STEP_MS=400

seconds() { # 30m, 90s, 1h, 120 -> seconds
    case $1 in
        *h) echo $(( ${1%h} * 3600 )) ;;
        *m) echo $(( ${1%m} * 60 )) ;;
        *s) echo "${1%s}" ;;
        *) echo "$1" ;;
    esac
}
now_ms() { date +%s%3N; }
log() { printf '%s\n' "$*" | tee -a "$WORK/log"; }
quiet() { "$@" >>"$WORK/log" 2>&1 6>&- 7>&-; }

# The second profile's config with a fast gate (stable_for 2 s).
write_config() {
    sed "s#^ssh_config = \"ssh_config\"#ssh_config = \"$SANDBOX2/ssh_config\"#" "$SANDBOX2/ctops.toml" >"$WORK/ctops.toml"
    printf '\n[deploy]\nstable_for = "2s"\nhealth_interval = "1s"\nhealth_timeout = "30s"\n' >>"$WORK/ctops.toml"
    mkdir -p "$WORK/home"
}

ct() {
    env -i PATH="$PATH" HOME="$WORK/home" NO_COLOR=1 CTOPS_CONFIG="$WORK/ctops.toml" \
        CTOPS_LOCK_LEASE="$LEASE" "$CTOPS_BIN" "$@" 6>&- 7>&-
}

# A read-only look for the checker: right after a fault (sshd's children killed, the engine
# restarted) the first connection may be refused; that is the fault's, not the host's state.
# Retried on exit 3 (connection failure) only, up to 10 times; its stderr is kept.
ct_look() {
    local i out code
    for i in $(seq 1 10); do
        out=$(ct "$@" 2>>"$WORK/ct-errors.log"); code=$?
        [ "$code" = 3 ] || { printf '%s' "$out"; return "$code"; }
        sleep 1
    done
    printf '%s' "$out"; return "$code"
}

# --- the host, looked at directly ---------------------------------------------------------

psql2() { docker exec -i "$DBC" "$PSQL" -X -At -v ON_ERROR_STOP=1 -U calmadmin -d calmdb -c "$1" 2>/dev/null ||
          docker exec -i "$DBC" psql -X -At -v ON_ERROR_STOP=1 -U calmadmin -d calmdb -c "$1"; }
# Every row of every table the app has, as one checksum (notes, and the ballast the backup
# and restore runs add so that their dump takes long enough to be hit).
rows_sum() {
    local i sum ballast
    for i in $(seq 1 30); do
        sum=$(psql2 "SELECT md5(coalesce((SELECT string_agg(row_to_json(n)::text, E'\n' ORDER BY id) FROM notes n), '')
            || coalesce((SELECT string_agg(version_num, ',') FROM alembic_version), ''))") &&
            ballast=$(psql2 "SELECT to_regclass('ballast') IS NOT NULL") &&
            if [ "$ballast" = t ]; then
                ballast=$(psql2 "SELECT count(*)::text || md5(string_agg(pad, '' ORDER BY id)) FROM ballast")
            fi && [ -n "$sum" ] && { echo "$sum-$ballast"; return; }
        sleep 1
    done
    # Unreadable is never equal to anything.
    echo "unreadable-$RANDOM$RANDOM"
}
add_ballast() {
    psql2 "CREATE TABLE IF NOT EXISTS ballast (id serial PRIMARY KEY, pad text);
           INSERT INTO ballast (pad) SELECT md5(i::text) || repeat('x', 200) FROM generate_series(1, 30000) i" >/dev/null
}
add_note() { psql2 "INSERT INTO notes (author, body) VALUES ('faults', '$1')" >/dev/null; }
commit_of() { git -c safe.directory='*' -C "$DIR2" rev-parse "$1^{commit}" 2>/dev/null || echo none; }
host_commit() { commit_of HEAD; }
web_version() { curl -s -m 4 "$HEALTH2" | jq -r '.version // empty' 2>/dev/null || true; }
wait_version() { # up to N seconds for /health to answer a version
    local v i
    for i in $(seq 1 "$1"); do
        v=$(web_version); [ -n "$v" ] && { echo "$v"; return; }
        [ "$i" = "$1" ] || sleep 1
    done
}
env_value() { sed -n "s/^$1=//p" "$ENV2" | tail -n 1; }
env_sum() { sha256sum <"$ENV2" | cut -c1-16; }
env_sum_without() { grep -v -e "^$1=" "$ENV2" | sha256sum | cut -c1-16; }
login() { PGPASSWORD=$1 PGCONNECT_TIMEOUT=5 "$PSQL" -X -w -h ::1 -p 25432 -U calm_app -d calmdb -c 'SELECT 1' >/dev/null 2>&1; }
last_op() { cat "$STATE_DIR/last" 2>/dev/null || echo none; }
ops_list() { find "$STATE_DIR/ops" -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | sort; }
# The operation this run started: a folder under ops/ that was not there before (the
# detached runner writes `last` only once it runs, so `last` may lag behind).
new_op() { ops_list | comm -13 "$WORK/ops.before" - | tail -n 1; }
runner_alive() { # OP
    local pid s
    pid=$(cat "$STATE_DIR/ops/$1/pid" 2>/dev/null) || return 1
    s=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -c1)
    case $s in '' | Z | X) return 1 ;; *) return 0 ;; esac
}
journal_end() { awk -F '\t' '$3 == "end" { print $4 }' "$STATE_DIR/ops/$1/journal" 2>/dev/null; }
# The step a fault at MS landed in: started at or before MS, and ended (ok/fail) at or after
# it or never. Empty: it landed between steps, before the runner began or after it ended.
step_at() { # OP MS
    awk -F '\t' -v t="$2" '
        $3 == "start" { s[$4] = $2; order[++n] = $4 }
        $3 == "ok" || $3 == "fail" { e[$4] = $2 }
        END { for (i = 1; i <= n; i++) { k = order[i]; if (s[k] <= t && (!(k in e) || e[k] >= t)) { print k; exit } } }
    ' "$STATE_DIR/ops/$1/journal" 2>/dev/null
}

# --- the sandbox ------------------------------------------------------------------------

reset2() { quiet "$ROOT/tests/sandbox/sandbox.sh" --second reset-host; }

mount_backups() {
    mountpoint -q "$BACKUPS2" && return 0
    rm -f "$WORK/backups.img"
    truncate -s 64M "$WORK/backups.img" && mkfs.ext4 -q -F -m 0 "$WORK/backups.img" &&
        mount -o loop "$WORK/backups.img" "$BACKUPS2" || return 1
    rmdir "$BACKUPS2/lost+found" 2>/dev/null
    chown calm:calm "$BACKUPS2" && chmod 0755 "$BACKUPS2"
}
umount_backups() {
    mountpoint -q "$BACKUPS2" || return 0
    umount "$BACKUPS2" 2>/dev/null || umount -l "$BACKUPS2"
    rm -f "$WORK/backups.img"
}

# Takes the locks (lock 1 first for engine stops: the engine is shared by both profiles).
# Exit 2: lock 1 is busy and WAIT_LOCK1 says not to wait for it (other batches go first).
setup_batch() { # engine|other
    if [ "$1" = engine ]; then
        log "batch (engine stops): waiting for $LOCK1 then $LOCK2"
        exec 7>"$LOCK1"
        if [ -n "${WAIT_LOCK1:-}" ]; then flock 7
        elif ! flock -w 20 7; then exec 7>&-; log "batch: $LOCK1 is busy, later"; return 2; fi
    else
        log "batch: waiting for $LOCK2"
    fi
    exec 6>"$LOCK2"; flock 6
    BATCH_KIND=$1
    docker ps --format '{{.Names}}' | sort >"$WORK/running"
    mount_backups || { log "cannot mount a loop filesystem on $BACKUPS2"; teardown_batch; return 1; }
    log "batch: locks held, $BACKUPS2 is a 64 MiB loop filesystem"
}

teardown_batch() {
    [ -n "$BATCH_KIND" ] || return 0
    recover
    bring_back_containers
    rm -f "$FILL"
    umount_backups
    reset2 || log "reset-host after the batch failed (see $WORK/log)"
    exec 6>&-
    [ "$BATCH_KIND" != engine ] || exec 7>&-
    log "batch: locks released"
    BATCH_KIND=
}

# --- the faults ---------------------------------------------------------------------------

children_of() { ps -e -o pid=,ppid= | awk -v p="$1" '$2 == p { print $1 }'; }
# One look at the process table (a fault must land fast: a ps per level took long enough
# for a short step to end meanwhile).
descendants_of() {
    ps -e -o pid=,ppid= | awk -v root="$1" '
        { parent[$1] = $2 }
        END { for (p in parent) { q = parent[p]; while (q != "" && q != 1 && q != 0) { if (q == root) { print p; break } q = parent[q] } } }'
}
sshd2() { cat "$SANDBOX2/sshd/sshd.pid"; }
# sshd forks one process per connection: killing those cuts every connection ctops has.
cut_ssh() {
    local p
    for p in $(children_of "$(sshd2)"); do kill -9 "$p" 2>/dev/null; done
}
# `backup db` has no runner: what runs its step is the script under the SSH session.
kill_backup_script() {
    local p
    for p in $(descendants_of "$(sshd2)"); do
        case $(cat "/proc/$p/comm" 2>/dev/null) in sshd* | '') ;; *) kill -9 "$p" 2>/dev/null ;; esac
    done
}
kill_runner() {
    local op pid
    op=$(new_op)
    [ -n "$op" ] || return 0
    pid=$(cat "$STATE_DIR/ops/$op/pid" 2>/dev/null) && kill -9 "$pid" 2>/dev/null
}
dockerd_pid() { cat /var/run/docker.pid 2>/dev/null; }
start_engine() {
    docker info >/dev/null 2>&1 && return 0
    # shellcheck disable=SC2046 # the saved command line, one word per argument
    setsid $(cat "$WORK/dockerd.cmd") </dev/null >>"$DOCKERD_LOG" 2>&1 6>&- 7>&- &
    local i
    for i in $(seq 1 120); do docker info >/dev/null 2>&1 && return 0; sleep 0.5; done
    log "dockerd did not come back within 60 s"
    return 1
}
# Stops the engine, holds it stopped 3 s once it is gone, starts it again (in background:
# the trial goes on watching ctops).
stop_engine() {
    local pid i
    pid=$(dockerd_pid)
    tr '\0' ' ' <"/proc/$pid/cmdline" >"$WORK/dockerd.cmd"
    kill -TERM "$pid"
    for i in $(seq 1 60); do [ -d "/proc/$pid" ] || break; sleep 0.5; done
    sleep 3
    start_engine
}
stop_db() { docker stop -t 3 "$DBC" >/dev/null 2>&1; sleep 3; docker start "$DBC" >/dev/null 2>&1; }
fill_disk() { dd if=/dev/zero of="$FILL" bs=1M 2>/dev/null; true; }

# Whatever a fault left (a stopped engine or database, the filled disk): back.
recover() {
    rm -f "$FILL"
    if ! docker info >/dev/null 2>&1 && [ -s "$WORK/dockerd.cmd" ]; then start_engine; fi
    docker start "$DBC" >/dev/null 2>&1 || true
}
# After an engine stop: every container that ran before the batch runs again (restart
# policies bring most back; the rest are started), the first profile's stack included.
bring_back_containers() {
    local name i missing
    [ -s "$WORK/running" ] || return 0
    for i in $(seq 1 60); do
        missing=$(docker ps --format '{{.Names}}' | sort | comm -13 - "$WORK/running")
        [ -z "$missing" ] && break
        if [ "$i" = 10 ] || [ "$i" = 30 ]; then
            for name in $missing; do docker start "$name" >/dev/null 2>&1; done
        fi
        sleep 1
    done
    [ -z "$missing" ] || log "not running again after the engine stop: $missing"
    for i in $(seq 1 60); do
        docker ps --format '{{.Status}}' | grep -q 'starting' || break
        sleep 1
    done
}

inject() { # KIND CMD: the fault, in background where it lasts
    case $1 in
        ssh) cut_ssh ;;
        kill) if [ "$2" = backup ]; then kill_backup_script; else kill_runner; fi ;;
        engine) stop_engine & FAULT_PID=$! ;;
        db) stop_db & FAULT_PID=$! ;;
        disk) fill_disk ;;
    esac
}

# --- one run: set-up, the fault, the checks -----------------------------------------------

command_of() {
    case $1 in
        deploy) echo "deploy --ref r3 --skip-preflight --reason faults --yes --json" ;;
        rollback) echo "rollback --yes --json" ;;
        backup) echo "backup db --json" ;;
        restore) echo "restore db latest --yes --json" ;;
        rotate) echo "rotate APP_DB_PASSWORD --generate --yes --json" ;;
        env) echo "env set LOG_LEVEL=$NEW_LOG_LEVEL --yes --json" ;;
    esac
}
# The window (ms after ctops starts) the fault is drawn from: about the command's length
# with a fast gate on this machine.
window_of() {
    case $1 in
        deploy | rollback) echo "800 6500" ;;
        backup) echo "0 1" ;;
        restore) echo "800 7500" ;;
        rotate | env) echo "800 7000" ;;
    esac
}

# The host before the command, and what "fully done" is.
prepare() { # CMD
    case $1 in
        rollback) ct deploy --ref r3 --skip-preflight --reason faults --yes >>"$WORK/log" 2>&1 || return 1 ;;
        backup) add_ballast || return 1 ;;
        restore)
            add_ballast || return 1
            ct backup db >>"$WORK/log" 2>&1 || return 1
            AFTER_ROWS=$(rows_sum)
            add_note "written after the backup" ;;
    esac
    BEFORE_COMMIT=$(host_commit); BEFORE_VERSION=$(web_version); BEFORE_ROWS=$(rows_sum)
    BEFORE_ENV=$(env_sum); BEFORE_PW=$(env_value APP_DB_PASSWORD)
    BEFORE_ENV_REST=$(env_sum_without LOG_LEVEL)
    BEFORE_BACKUPS=$(listed_db_backups)
    ops_list >"$WORK/ops.before"
    case $1 in
        deploy) AFTER_COMMIT=$(commit_of r3); AFTER_VERSION=3.2.0 ;;
        rollback) AFTER_COMMIT=$(commit_of r2); AFTER_VERSION=3.1.0 ;;
        *) AFTER_COMMIT=$BEFORE_COMMIT; AFTER_VERSION=$BEFORE_VERSION ;;
    esac
    [ "$1" = restore ] || AFTER_ROWS=$BEFORE_ROWS
}

listed_db_backups() { ct_look backup list --json | jq -r '.backups[]? | select(.kind == "db") | .name' | sort; }

# "before", "after" or "neither": the host as the command found it, or fully changed.
host_class() { # CMD
    local rows commit version pw
    rows=$(rows_sum)
    case $1 in
        deploy | rollback)
            commit=$(host_commit); version=$(wait_version 30)
            if [ "$rows" != "$BEFORE_ROWS" ]; then echo neither
            elif [ "$commit" = "$BEFORE_COMMIT" ] && [ "$version" = "$BEFORE_VERSION" ]; then echo before
            elif [ "$commit" = "$AFTER_COMMIT" ] && [ "$version" = "$AFTER_VERSION" ]; then echo after
            else echo neither; fi ;;
        backup)
            if [ "$rows" != "$BEFORE_ROWS" ]; then echo neither
            elif [ "$(listed_db_backups)" = "$BEFORE_BACKUPS" ]; then echo before
            else echo after; fi ;;
        restore)
            if [ "$rows" = "$BEFORE_ROWS" ]; then echo before
            elif [ "$rows" = "$AFTER_ROWS" ]; then echo after
            else echo neither; fi ;;
        rotate)
            pw=$(env_value APP_DB_PASSWORD)
            if [ "$rows" != "$BEFORE_ROWS" ]; then echo neither
            elif [ "$pw" = "$BEFORE_PW" ] && login "$pw"; then echo before
            elif [ "$pw" != "$BEFORE_PW" ] && login "$pw" && ! login "$BEFORE_PW"; then echo after
            else echo neither; fi ;;
        env)
            if [ "$rows" != "$BEFORE_ROWS" ] || [ "$(env_sum_without LOG_LEVEL)" != "$BEFORE_ENV_REST" ]; then echo neither
            elif [ "$(env_sum)" = "$BEFORE_ENV" ]; then echo before
            elif [ "$(env_value LOG_LEVEL)" = "$NEW_LOG_LEVEL" ]; then echo after
            else echo neither; fi ;;
    esac
}

# Every database backup `backup list` shows is complete: its file is there and has the
# manifest's checksum.
partial_backups() {
    local listed
    # A listing that fails is no evidence that nothing partial is listed.
    listed=$(ct_look backup list --json) || { echo "(backup list failed: see ct-errors.log)"; return; }
    jq -r '.backups[]? | select(.kind == "db" and .place == "host") | "\(.name) \(.sha256)"' <<<"$listed" |
        while read -r name sha; do
            [ "$(sha256sum <"$BACKUPS2/$name" 2>/dev/null | cut -d' ' -f1)" = "$sha" ] || echo "$name"
        done
}

# The keeper keeps the lock while a command started under it still runs on the host (by
# design: a lost link never frees the lock under a running command): wait for those.
wait_lock_commands() {
    local i f p busy
    for i in $(seq 1 240); do
        busy=
        for f in "$STATE_DIR"/lock.*.pids; do
            [ -f "$f" ] || continue
            while read -r p; do [ -n "$p" ] && [ -d "/proc/$p" ] && busy=1; done <"$f"
        done
        [ -n "$busy" ] || return 0
        sleep 0.5
    done
}

# Waits until the lock is free; fails when it is still held LEASE+3 s after SINCE (epoch s).
lock_freed() { # SINCE
    local held
    while :; do
        held=$(ct lock status --json 2>/dev/null | jq -r '.held')
        [ "$held" = false ] && return 0
        [ "$(date +%s)" -le $(( $1 + LEASE + 3 )) ] || return 1
        sleep 1
    done
}

# Checks the invariant; prints the violations, one a line (nothing: it held).
check() { # CMD EXIT OP KIND
    local class state status_json status_state status_commit sc
    class=$(host_class "$1")
    ROWS_NOW=$(rows_sum)
    CLASS=$class
    if [ "$3" != none ]; then
        state=$(journal_end "$3"); [ -n "$state" ] || state=interrupted
        status_json=$(ct_look status --json)
        status_state=$(jq -r '.operation.state // empty' <<<"$status_json")
        status_commit=$(jq -r '.checkout.commit // empty' <<<"$status_json")
        sc=$(jq -r '.operation.id // empty' <<<"$status_json")
        [ "$sc" = "$3" ] || echo "status reports operation ${sc:-none}, not $3"
        [ "$status_state" = "$state" ] || echo "status reports state ${status_state:-none}, the journal $state"
        [ -z "$status_commit" ] || [ "$status_commit" = "$(host_commit)" ] ||
            echo "status reports checkout $status_commit, the host has $(host_commit)"
        case $state in
            failed | rolled-back) [ "$class" = before ] || echo "operation $state but the host is $class" ;;
            rollback-failed | interrupted) [ "$2" != 0 ] || echo "exit 0 but the operation is $state" ;;
            running) echo "the runner still runs" ;;
            *) [ "$class" = after ] || echo "operation $state but the host is $class" ;;
        esac
        OP_STATE=$state
    else
        OP_STATE=-
        # No operation began on the host (or, for backup db, none has a journal).
        if [ "$1" != backup ] && [ "$class" != before ]; then echo "no operation ran but the host is $class"; fi
    fi
    [ "$2" != 0 ] || [ "$class" = after ] || echo "exit 0 but the host is $class"
    local said
    said=$(jq -r '.state // empty' <"$WORK/out.json" 2>/dev/null)
    if [ "$2" = 6 ]; then
        if [ -z "$said" ]; then echo "exit 6 without a state"
        # ctops followed the runner to its end (a cut link aside, where it may say "running"):
        # the state it printed is the one the journal ended with, the one status reports.
        elif [ "$3" != none ] && [ "$said" != "$OP_STATE" ] && { [ "$4" != ssh ] || [ "$said" != running ]; }; then
            echo "exit 6 with state $said, but the operation ended $OP_STATE"
        fi
    fi
    if [ "$class" = neither ]; then
        case $OP_STATE in
            rollback-failed | interrupted)
                [ "$2" = 6 ] || { [ "$4" = ssh ] && [ "$2" = 3 ]; } ||
                    echo "the host is neither as before nor fully changed, and ctops exited $2, not 6" ;;
            *) echo "the host is neither as before nor fully changed" ;;
        esac
    fi
    # Rows: no command but restore changes one, whatever state it ended in; restore swaps
    # the whole database in one transaction, so its rows are the old or the backup's.
    if [ "$1" = restore ]; then
        case $ROWS_NOW in "$BEFORE_ROWS" | "$AFTER_ROWS") ;; *) echo "rows neither as before nor as in the backup" ;; esac
    else
        [ "$ROWS_NOW" = "$BEFORE_ROWS" ] || echo "rows changed"
    fi
    local p
    p=$(partial_backups)
    [ -z "$p" ] || echo "partial backup listed: $p"
}

trial() { # CMD KIND
    local cmd=$1 kind=$2 lo hi delay cpid code fault_ms op step violations since i
    RUNS=$((RUNS + 1))
    : >"$WORK/ct-errors.log"
    NEW_LOG_LEVEL=fault$RANDOM
    FAULT_PID=
    reset2 || { recover; bring_back_containers; reset2; } || { log "run $RUNS: reset-host failed"; return; }
    prepare "$cmd" || { log "run $RUNS $cmd: set-up failed (see $WORK/log)"; return; }
    read -r lo hi <<<"$(window_of "$cmd")"
    delay=$(( lo + (RANDOM * 32768 + RANDOM) % (hi - lo) ))
    # shellcheck disable=SC2046 # the command's words
    ct $(command_of "$cmd") >"$WORK/out.json" 2>"$WORK/err.txt" &
    cpid=$!
    if [ "$cmd" = backup ]; then
        # Its one step (the dump) is short: the moment is drawn within it, from when its
        # temporary files appear.
        for i in $(seq 1 400); do compgen -G "$BACKUPS2/.tmp-*" >/dev/null && break; sleep 0.01; done
        delay=$(( RANDOM % BACKUP_STEP_MS ))
    fi
    sleep "$(printf '%d.%03d' $((delay / 1000)) $((delay % 1000)))"
    local mid_backup=
    if [ "$cmd" = backup ] && compgen -G "$BACKUPS2/.tmp-*" >/dev/null; then mid_backup=1; fi
    fault_ms=$(now_ms)
    inject "$kind" "$cmd"
    # The backup's step was still there once the fault was in (its files outlive a kill).
    if [ -n "$mid_backup" ] && ! compgen -G "$BACKUPS2/.tmp-*" >/dev/null; then mid_backup=; fi
    INJECTED=$((INJECTED + 1))
    for i in $(seq 1 360); do kill -0 "$cpid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$cpid" 2>/dev/null && { kill "$cpid"; sleep 1; }
    wait "$cpid"; code=$?
    [ -z "$FAULT_PID" ] || wait "$FAULT_PID"
    recover
    [ "$kind" != engine ] || bring_back_containers
    sleep 1
    op=$(new_op); [ -n "$op" ] || op=none
    if [ "$op" != none ]; then
        for i in $(seq 1 360); do
            { [ -n "$(journal_end "$op")" ] || ! runner_alive "$op"; } && break
            sleep 0.5
        done
    fi
    wait_lock_commands
    since=$(date +%s)
    # Landed mid-step?
    if [ "$cmd" = backup ]; then step=${mid_backup:+dump}
    elif [ "$op" != none ]; then step=$(step_at "$op" "$fault_ms")
    else step=; fi
    check "$cmd" "$code" "$op" "$kind" >"$WORK/violations"
    violations=$(cat "$WORK/violations")
    lock_freed "$since" || violations="${violations:+$violations
}lock still held $((LEASE + 3)) s after the operation ended"
    if [ -n "${PLANT_NOW:-}" ]; then
        plant "$cmd"
        check "$cmd" "$code" "$op" "$kind" >"$WORK/violations"
        violations=$(cat "$WORK/violations")
    fi
    if [ -n "$step" ]; then
        LANDED["$cmd/$kind"]=$(( ${LANDED["$cmd/$kind"]:-0} + 1 ))
        LANDED_ALL=$((LANDED_ALL + 1))
    fi
    TRIED["$cmd/$kind"]=$(( ${TRIED["$cmd/$kind"]:-0} + 1 ))
    local verdict=held
    if [ -n "$violations" ]; then verdict=VIOLATED; VIOLATED=$((VIOLATED + 1)); else HELD=$((HELD + 1)); fi
    local where="not mid-step"
    [ -z "$step" ] || where="mid-step ($step)"
    log "run $RUNS: $cmd / $kind at ${delay} ms: $where, exit $code, operation ${OP_STATE:-?}, host ${CLASS:-?}: $verdict"
    if [ -n "$violations" ]; then
        printf '%s\n' "$violations" | sed 's/^/    violation: /' | tee -a "$WORK/log"
        keep_evidence "$RUNS"
    fi
    if [ "$code" != 0 ]; then sed 's/^/    stderr: /' "$WORK/err.txt" | tail -n 4 >>"$WORK/log"; fi
    LAST_VIOLATIONS=$violations
}

# What the host held when an invariant did not: the state dir, ctops's output, the backups.
keep_evidence() { # RUN
    local e="$WORK/evidence/run-$1-seed-$SEED"
    rm -rf "$e"; mkdir -p "$e"
    cp -a "$STATE_DIR" "$e/state" 2>/dev/null
    cp "$WORK/out.json" "$WORK/err.txt" "$WORK/ct-errors.log" "$e/" 2>/dev/null
    ls -la "$BACKUPS2" >"$e/backups.txt" 2>&1
    ps -e -o pid,ppid,user,etimes,args >"$e/ps.txt"
    log "    evidence: $e"
}

# --- the planted violation -----------------------------------------------------------------

plant() { # CMD: corrupts what the checker looks at, as a bug would
    case $1 in
        backup)
            # A truncated dump listed with its manifest: a partial backup.
            local m
            m=$(find "$BACKUPS2" -maxdepth 1 -name 'db-*.manifest.json' | head -n 1)
            if [ -n "$m" ]; then
                : >"${m%.manifest.json}"
            else
                printf 'partial' >"$BACKUPS2/db-20000101T000000Z.dump"
                printf '{"kind":"db","name":"db-20000101T000000Z.dump","format":"custom","sha256":"%s","size":9,"created":"2000-01-01T00:00:00Z","database":"calmdb","revision":"a2","label":"","tables":{}}\n' \
                    "$(printf x | sha256sum | cut -d' ' -f1)" >"$BACKUPS2/db-20000101T000000Z.dump.manifest.json"
                chown calm:calm "$BACKUPS2"/db-20000101T000000Z.dump*
            fi ;;
        *) psql2 "DELETE FROM notes WHERE id = (SELECT max(id) FROM notes)" >/dev/null ;;
    esac
}

# Two runs whose result is corrupted before the check: each must be reported.
plant_trials() {
    local before=$VIOLATED caught=yes c
    for c in backup env; do
        PLANT_NOW=1 trial "$c" kill
        [ -n "$LAST_VIOLATIONS" ] || caught=no
    done
    PLANT_NOW=
    # The planted runs are not the product's: they leave the tallies.
    VIOLATED=$before
    RUNS=0 INJECTED=0 LANDED_ALL=0 HELD=0
    LANDED=() TRIED=()
    PLANTED_CAUGHT=$caught
    log "planted violations (a partial backup listed, a row deleted): caught: $caught"
}

summary() {
    local c k
    log ""
    log "faults.sh: seed $SEED, $(( ($(date +%s) - START) / 60 )) min"
    log "landed mid-step / injected, per command and fault:"
    for c in "${CMDS[@]}"; do
        local line
        line=$(printf '%-9s' "$c")
        for k in "${KS[@]}"; do line+=$(printf '  %s %2s/%-2s' "$k" "${LANDED[$c/$k]:-0}" "${TRIED[$c/$k]:-0}"); done
        log "  $line"
    done
    log "runs $RUNS, faults injected $INJECTED, landed mid-step $LANDED_ALL, invariants held $HELD, violated $VIOLATED; planted violation caught: $PLANTED_CAUGHT"
    if [ "$VIOLATED" = 0 ] && [ "$PLANTED_CAUGHT" != no ]; then log "all invariants held"; fi
}
