#!/usr/bin/env bash
# Benchmark: `ctops health` against the runbook's 6.1-6.2 checks run by hand (one `ssh` per
# check, as the runbook writes them), and against a hand-written shell that runs the same
# checks concurrently over one `ssh`. Prints the median wall time of each, the ratios, and
# the SSH connections each needs (counted at the sandbox's sshd).
#
#   tests/bench/health.sh [RUNS]        (default 15; the sandbox must be up)
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-15}
sandbox=${CTOPS_SANDBOX:-/var/tmp/ctops-sandbox}
export CTOPS_CONFIG=$sandbox/ctops.toml
cargo build --release --locked -q
ctops=$PWD/target/release/ctops
ssh=(ssh -F "$sandbox/ssh_config" trader-psy-sandbox)
dc='cd "/srv/ctops sandbox/trader-psy" && docker compose -f infrastructure/docker-compose.yml'
health_url=http://127.0.0.1:18000/health
minio_url=http://127.0.0.1:19000/

# Runbook 6.2 and the 6.1 table, one command at a time, one ssh each.
runbook() {
  curl -s -o /dev/null "$health_url"
  "${ssh[@]}" "$dc ps" >/dev/null
  "${ssh[@]}" "$dc exec -T postgres pg_isready -h 127.0.0.1 -p 15432 -U trader" >/dev/null
  "${ssh[@]}" "$dc exec -T redis redis-cli -p 16379 ping" >/dev/null
  "${ssh[@]}" "curl -s -o /dev/null $minio_url" >/dev/null
}

# The best a careful engineer writes by hand: the same checks concurrently over one ssh.
one_ssh_concurrent() {
  curl -s -o /dev/null "$health_url" &
  "${ssh[@]}" "$dc ps >/dev/null & $dc exec -T postgres pg_isready -h 127.0.0.1 -p 15432 -U trader >/dev/null & $dc exec -T redis redis-cli -p 16379 ping >/dev/null & curl -s -o /dev/null $minio_url & wait"
  wait
}

ctops_health() {
  "$ctops" health >/dev/null 2>&1
}

connections() { grep -c 'Connection from' "$sandbox/sshd/sshd.log" || true; }

# Median wall time in ms of $runs runs of a function, and SSH connections per run.
measure() {
  local fn=$1 times=() before after
  "$fn" >/dev/null 2>&1 || true   # warm-up
  before=$(connections)
  for _ in $(seq "$runs"); do
    local t0 t1
    t0=$(date +%s%N); "$fn" >/dev/null 2>&1 || true; t1=$(date +%s%N)
    times+=($(( (t1 - t0) / 1000000 )))
  done
  sleep 0.3
  after=$(connections)
  local median
  median=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}')
  echo "$median $(( (after - before) / runs ))"
}

read -r rb_ms rb_conn < <(measure runbook)
read -r one_ms one_conn < <(measure one_ssh_concurrent)
read -r ct_ms ct_conn < <(measure ctops_health)

printf '%-34s %10s %12s %16s\n' "method ($runs runs)" "median ms" "ssh conns" "ratio to runbook"
printf '%-34s %10s %12s %16s\n' "runbook 6.1-6.2 by hand" "$rb_ms" "$rb_conn" "1.00"
printf '%-34s %10s %12s %16s\n' "hand-written, one ssh, concurrent" "$one_ms" "$one_conn" "$(awk "BEGIN {printf \"%.2f\", $one_ms/$rb_ms}")"
printf '%-34s %10s %12s %16s\n' "ctops health" "$ct_ms" "$ct_conn" "$(awk "BEGIN {printf \"%.2f\", $ct_ms/$rb_ms}")"
