#!/usr/bin/env bash
# Benchmark: `ctops health` against the runbook's 6.1-6.2 checks run by hand (one `ssh` per
# check, as the runbook writes them), against a hand-written shell that runs the same
# checks concurrently over one `ssh`, and against the floor, `ssh host true` (one
# handshake). `ctops health` runs twice: with the sandbox config's command checks
# (`docker exec` of pg_isready and redis-cli), and with the native checks the README's
# example config uses (`{ postgres = ADDR }`, `{ redis = ADDR }`: asked over a forward of
# the one connection, no exec). Prints the median wall time of each, the ratios to the
# runbook and to `ssh true`, and the SSH connections each needs (counted at the sandbox's
# sshd). Targets (issue 15): native health at most 1.3x `ssh true`, at most 0.25x the runbook.
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

# The sandbox config with the README's native checks for the database and redis (the
# sandbox's services use the host's network, so the checks name their addresses).
native_config=$(mktemp -d)/ctops.toml
trap 'rm -rf "$(dirname "$native_config")"' EXIT
sed -e "s|^postgres = .*|postgres = { postgres = \"127.0.0.1:15432\" }|" \
    -e "s|^redis = .*|redis = { redis = \"127.0.0.1:16379\" }|" \
    -e "s|^ssh_config = \"ssh_config\"|ssh_config = \"$sandbox/ssh_config\"|" \
    -e "s|^local_dir = \"local-backups\"|local_dir = \"$sandbox/local-backups\"|" \
    "$CTOPS_CONFIG" >"$native_config"
if ! grep -q 'postgres = { postgres = ' "$native_config" || ! grep -q 'redis = { redis = ' "$native_config"; then
  echo "cannot make the native-check config from $CTOPS_CONFIG" >&2
  exit 1
fi

ctops_health_native() {
  "$ctops" --config "$native_config" health >/dev/null 2>&1
}

ssh_true() {
  "${ssh[@]}" true
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

"$ctops" --config "$native_config" health >/dev/null 2>&1 \
  || { echo "ctops health with native checks is not all green: $("$ctops" --config "$native_config" health 2>&1)" >&2; exit 1; }

read -r rb_ms rb_conn < <(measure runbook)
read -r one_ms one_conn < <(measure one_ssh_concurrent)
read -r ct_ms ct_conn < <(measure ctops_health)
read -r nat_ms nat_conn < <(measure ctops_health_native)
read -r true_ms true_conn < <(measure ssh_true)

ratio() { awk "BEGIN {printf \"%.2f\", $1/$2}"; }
row() { printf '%-38s %10s %10s %12s %12s\n' "$@"; }
row "method ($runs runs)" "median ms" "ssh conns" "to runbook" "to ssh true"
row "runbook 6.1-6.2 by hand" "$rb_ms" "$rb_conn" "1.00" "$(ratio "$rb_ms" "$true_ms")"
row "hand-written, one ssh, concurrent" "$one_ms" "$one_conn" "$(ratio "$one_ms" "$rb_ms")" "$(ratio "$one_ms" "$true_ms")"
row "ctops health (command checks)" "$ct_ms" "$ct_conn" "$(ratio "$ct_ms" "$rb_ms")" "$(ratio "$ct_ms" "$true_ms")"
row "ctops health (native checks)" "$nat_ms" "$nat_conn" "$(ratio "$nat_ms" "$rb_ms")" "$(ratio "$nat_ms" "$true_ms")"
row "ssh host true" "$true_ms" "$true_conn" "$(ratio "$true_ms" "$rb_ms")" "1.00"
