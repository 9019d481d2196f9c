# shellcheck shell=sh
# The detached runner's functions (src/runner.rs renders the plan around them). Set above
# them by `remote::assign`: D (state dir), OP (operation id), TOKEN (the lock's fencing
# token), LEASE and RENEW (seconds), and the plan's own variables. O and J are derived.

# The journal: one line per event, tab-separated. A field never carries a tab or a newline
# (a value with a newline would otherwise forge a line, an `end` say).
stamp() { date -u '+%Y-%m-%dT%H:%M:%SZ	%s%3N'; }
one_line() { printf '%s' "$1" | tr '\t\n\r' '   '; }
journal() {
    printf '%s\t%s\t%s\t%s\n' "$(stamp)" "$1" "$(one_line "${2:-}")" "$(one_line "${3:-}")" >> "$J"
}
json_escape() { printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g' | tr '\n\t' '  '; }

# shared_file (lock-functions.sh): a file the other operators append to, 0660.
# A file that may hold derived secrets (a step's output): ours alone.
private_file() { [ -e "$1" ] || ( umask 077 && : >> "$1" ); }

# A process's state and start time (clock ticks since boot), from /proc: not `kill -0`, which
# reads EPERM as dead. Empty when there is no such process.
proc_of() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{ print $1, $20 }'; }
# PID STARTED: the process that started then is alive (neither gone, nor a zombie nobody
# reaps, nor a new process that got the same pid).
alive() {
    case $(proc_of "$1") in
        ''|Z*|X*) return 1 ;;
        *" $2") return 0 ;;
        *) return 1 ;;
    esac
}

fenced() {
    lock_mine "$TOKEN" || { journal note "lost the host lock: stopping"; return 1; }
    if [ "$1" = forward ] && [ -e "$O/abort" ]; then journal note "interrupted by the operator"; return 1; fi
}

# forward|back ID START_FLAG DONE_FLAG TITLE: START_FLAG is set to 1 before the step runs
# (its undo must run even if it fails half-way), DONE_FLAG once it succeeded.
run_step() {
    fenced "$1" || return 1
    if [ -n "$3" ]; then eval "$3=1"; fi
    journal start "$2" "$5"
    if [ -n "${CTOPS_STEP_DELAY:-}" ]; then sleep "$CTOPS_STEP_DELAY"; fi
    private_file "$O/$2.log"; private_file "$O/output.log"
    # Each step's output goes to its own log and to output.log, which `-v` streams.
    # (fd 8, the operations lock, stays with the runner: nothing a step leaves behind holds it.)
    { ( "s_$2" ) 8<&-; echo $? > "$O/$2.rc"; } 2>&1 | tee "$O/$2.log" >> "$O/output.log"
    rc=$(cat "$O/$2.rc" 2>/dev/null || echo 1)
    if [ "${CTOPS_FAIL_STEP:-}" = "$2" ]; then echo "injected failure (CTOPS_FAIL_STEP)" >> "$O/$2.log"; rc=99; fi
    if [ "$rc" -eq 0 ]; then
        if [ -n "$4" ]; then eval "$4=1"; fi
        journal ok "$2"
    else
        journal fail "$2" "exit $rc: $(tail -n 12 "$O/$2.log" | tr '\t' ' ' | sed ':a;N;$!ba;s/\n/ | /g')"
    fi
    return "$rc"
}

container_of() { docker ps -q --filter "label=com.docker.compose.project=$P" --filter "label=com.docker.compose.service=$1" | head -n 1; }
stack_state() {
    ids=$(docker ps -aq --filter "label=com.docker.compose.project=$P" --filter label=com.docker.compose.oneoff=False)
    # shellcheck disable=SC2086 # one word per container id
    [ -n "$ids" ] && docker inspect -f '{{index .Config.Labels "com.docker.compose.service"}} {{.State.Status}} {{.RestartCount}} {{.Id}}' $ids | sort
}
gate() { # EXPECTED_VERSION: health_url 2xx (reporting it), then every service up and stable
    end=$(( $(date +%s) + HEALTH_TIMEOUT ))
    want=$(printf '%s' "$1" | sed 's/[.]/\\./g')
    while :; do
        if body=$(curl -fsS -m 5 "$HEALTH_URL" 2>&1); then
            if [ -z "$1" ] || ! printf '%s' "$body" | grep -q '"version"' ||
               printf '%s' "$body" | grep -Eq "\"version\"[[:space:]]*:[[:space:]]*\"$want\""; then break; fi
            last="health_url answers, but not version $1: $body"
        else last="health_url: $body"; fi
        if [ "$(date +%s)" -ge "$end" ]; then echo "$last"; return 1; fi
        sleep "$HEALTH_INTERVAL"
    done
    echo "health_url ok: $body"
    first=$(stack_state)
    end=$(( $(date +%s) + STABLE_FOR ))
    now_state=$first
    while :; do
        down=$(printf '%s\n' "$now_state" | awk '$2 != "running" {print $1 " " $2}')
        if [ -n "$down" ]; then
            echo "not running: $down"
            for svc in $(printf '%s\n' "$down" | awk '{print $1}'); do
                cid=$(docker ps -aq --filter "label=com.docker.compose.project=$P" --filter "label=com.docker.compose.service=$svc" | head -n 1)
                if [ -n "$cid" ]; then echo "--- last lines of $svc:"; docker logs --tail 5 "$cid" 2>&1; fi
            done
            return 1
        fi
        if [ "$now_state" != "$first" ]; then
            echo "restarted while the gate watched (stable_for):"; printf '%s\n' "$now_state" | awk '{print $1 " restarts " $3}'
            for svc in $(printf '%s\n%s\n' "$first" "$now_state" | sort | uniq -u | awk '{print $1}' | sort -u); do
                echo "--- last lines of $svc:"; docker logs --tail 5 "$(container_of "$svc")" 2>&1
            done
            return 1
        fi
        [ "$(date +%s)" -ge "$end" ] && break
        sleep 1
        now_state=$(stack_state)
    done
    echo "every service stayed up for ${STABLE_FOR}s"
}
keep_image() { # SERVICE IMAGE TAG: tag the image the service runs now (or IMAGE:latest)
    cid=$(container_of "$1"); img=""
    if [ -n "$cid" ]; then img=$(docker inspect -f '{{.Image}}' "$cid") || return 1; fi
    docker tag "${img:-$2:latest}" "$2:$3"
}
