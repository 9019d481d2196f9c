#!/usr/bin/env bash
# Benchmark: `ctops deploy` against the runbook's 2.2 commands run as written, on the
# sandbox, for (a) a deploy of one new commit (main~1 -> main) and (b) a deploy of the
# commit that already runs. Prints the median wall time of each, the ratios, ctops's own
# time beyond the host-side steps (from the runner's journal timestamps), and the SSH
# connections each needs.
#
#   tests/bench/deploy.sh [RUNS]        (default 5; resets the sandbox host)
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-5}
sandbox=${CTOPS_SANDBOX:-/var/tmp/ctops-sandbox}
export CTOPS_CONFIG=$sandbox/ctops.toml
cargo build --release --locked -q
ctops=$PWD/target/release/ctops
state="/srv/ctops sandbox/state"
dir="/srv/ctops sandbox/trader-psy"
ssh=(ssh -F "$sandbox/ssh_config" trader-psy-sandbox)
origin="/srv/ctops sandbox/origin.git"
prev=$(git --git-dir="$origin" rev-parse main~1)

tests/sandbox/sandbox.sh reset-host >/dev/null
put_host_at() { "$ctops" -q deploy --ref "$1" --skip-preflight --reason bench-setup >/dev/null 2>&1; }

# Runbook 2.2, steps 1-6 as written (step 7, `logs -f`, never ends); `exec` needs -T
# without a TTY, the only change.
runbook() {
  "${ssh[@]}" "cd '$dir' && git pull -q origin main && docker compose -f infrastructure/docker-compose.yml up -d --build && docker compose -f infrastructure/docker-compose.yml exec -T api alembic upgrade head" >/dev/null 2>&1
  curl -s http://127.0.0.1:18000/health >/dev/null
}
ctops_deploy() { "$ctops" deploy --skip-preflight --reason bench -vv >/dev/null 2>/tmp/ctops-bench.err; }
# ctops's own time: the wall time less the connection set-up and the time during which at
# least one remote command (probe, runner step, journal stream) was in flight (from -vv).
own_ms() { # WALL
  local connect busy
  connect=$(sed -E 's/\x1b\[[0-9;]*m//g' /tmp/ctops-bench.err | grep -o 'connected.*elapsed=[0-9.]*ms' | grep -o '[0-9.]*ms' | tr -d ms)
  busy=$(sed -E 's/\x1b\[[0-9;]*m//g' /tmp/ctops-bench.err | grep -o 'busy_ms=[0-9]*' | cut -d= -f2)
  awk "BEGIN{printf \"%d\", $1 - $connect - $busy}"
}

connections() { grep -c 'Connection from' "$sandbox/sshd/sshd.log" || true; }
ms() { date +%s%3N; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2))}'; }

# The last runner's own span (begin to end, from the host clock) in ms.
runner_span() {
  local op; op=$(cat "$state/last")
  awk -F'\t' '$3=="begin"{b=$2} $3=="end"{e=$2} END{print e-b}' "$state/ops/$op/journal"
}

declare -A t
measure() { # NAME SETUP FN
  local name=$1 setup=$2 fn=$3 times=() overheads=() owns=() c0 c1
  for _ in $(seq "$runs"); do
    $setup
    c0=$(connections); local a b; a=$(ms); $fn; b=$(ms); c1=$(connections)
    times+=($((b - a)))
    if [ "$fn" = ctops_deploy ]; then
      overheads+=($(( (b - a) - $(runner_span) )))
      owns+=($(own_ms $((b - a))))
      t[$name.op]=$(cat "$state/last")
    fi
  done
  t[$name]=$(printf '%s\n' "${times[@]}" | median)
  t[$name.conns]=$((c1 - c0))
  [ ${#overheads[@]} -gt 0 ] && t[$name.overhead]=$(printf '%s\n' "${overheads[@]}" | median)
  [ ${#owns[@]} -gt 0 ] && t[$name.own]=$(printf '%s\n' "${owns[@]}" | median)
  return 0
}
main12=$(git --git-dir="$origin" rev-parse main | cut -c1-12)
# A new commit is one whose images were never built: drop what an earlier run kept.
at_prev() {
  put_host_at "$prev"
  docker rmi "infrastructure-api:ctops-$main12" "infrastructure-bot:ctops-$main12" >/dev/null 2>&1 || true
}
at_main() { put_host_at main; }

measure runbook_new at_prev runbook
measure ctops_new at_prev ctops_deploy
measure runbook_same at_main runbook
measure ctops_same at_main ctops_deploy

row() { printf '%-32s %9s %9s %8s %18s %14s\n' "$@"; }
ratio() { awk "BEGIN{printf \"%.2f\", $1/$2}"; }
row "deploy ($runs runs each)" "median ms" "ssh conns" "ratio" "beyond runner ms" "ctops own ms"
row "one new commit: runbook 2.2" "${t[runbook_new]}" "${t[runbook_new.conns]}" 1.00 - -
row "one new commit: ctops deploy" "${t[ctops_new]}" "${t[ctops_new.conns]}" "$(ratio "${t[ctops_new]}" "${t[runbook_new]}")" "${t[ctops_new.overhead]}" "${t[ctops_new.own]}"
row "running commit: runbook 2.2" "${t[runbook_same]}" "${t[runbook_same.conns]}" 1.00 - -
row "running commit: ctops deploy" "${t[ctops_same]}" "${t[ctops_same.conns]}" "$(ratio "${t[ctops_same]}" "${t[runbook_same]}")" "${t[ctops_same.overhead]}" "${t[ctops_same.own]}"
echo
echo "host-side step times of the last new-commit deploy (runner journal, ms):"
awk -F'\t' '$3=="start"{s[$4]=$2} $3=="ok"||$3=="fail"{printf "  %-10s %6d\n", $4, $2-s[$4]}' "$state/ops/${t[ctops_new.op]}/journal"
tests/sandbox/sandbox.sh reset-host >/dev/null
