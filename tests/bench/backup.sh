#!/usr/bin/env bash
# Benchmark: `ctops backup db` against the runbook's 5.2 command as written (plain SQL, on the
# host), and `ctops backup db --download` against a raw `ssh ... pg_dump -Fc > file` pipe,
# on a sandbox database grown to each SIZE (MiB). Prints wall times (median of RUNS),
# throughput in MB/s of dump written, the ratios, and ctops's peak RSS.
#
#   tests/bench/backup.sh [RUNS] [SIZE_MIB...]   (default: 3 runs; 100 and 1024 MiB)
#
# The sandbox must be up and no test may run meanwhile (the database is grown, then put
# back by `sandbox.sh reset-host`). Compression: PostgreSQL 15's defaults on both sides
# (plain SQL uncompressed; custom format gzip level 6 for ctops and the raw pipe alike).
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-3}
shift || true
sizes=("${@:-100 1024}")
read -r -a sizes <<<"${sizes[*]}"
eval "$(tests/sandbox/sandbox.sh env)"
export CTOPS_CONFIG
cargo build --release --locked -q
ctops=$PWD/target/release/ctops
ssh=(ssh -F "$SANDBOX_SSH_CONFIG" "$SANDBOX_SSH_HOST")
compose_file="$SANDBOX_DIR/$SANDBOX_COMPOSE_FILE"
pg=$(docker ps -q --filter "label=com.docker.compose.project=$SANDBOX_COMPOSE_PROJECT" --filter label=com.docker.compose.service=postgres)
psql() { docker exec -i "$pg" psql -X -q -U trader -d trader_psy -v ON_ERROR_STOP=1 "$@"; }
local_out=$(mktemp -d)
trap 'rm -rf "$local_out"' EXIT

# Rows of 4 md5 strings (~150 bytes of text that compresses about 2:1, as real data does).
grow() { # MIB
  psql -c "DROP TABLE IF EXISTS bench_rows" -c "CREATE TABLE bench_rows (id bigint, a text, b text)"
  local target=$(( $1 * 1024 * 1024 )) size=0 from=1 batch
  batch=$(( target / 190 < 500000 ? target / 190 : 500000 ))
  while [ "$size" -lt "$target" ]; do
    psql -c "INSERT INTO bench_rows SELECT g, md5(g::text) || md5((g + 1)::text), md5((g * 7)::text) || md5((g * 13)::text) FROM generate_series($from, $(( from + batch - 1 ))) g"
    from=$(( from + batch ))
    size=$(psql -tAc "SELECT pg_database_size(current_database())")
    if [ $(( target - size )) -lt $(( batch * 190 )) ]; then batch=$(( (target - size) / 190 + 1000 )); fi
  done
  psql -c "VACUUM ANALYZE bench_rows"
  echo "$size"
}

clear_backups() { rm -rf "${SANDBOX_BACKUP_DIR:?}"/db* "$SANDBOX_LOCAL_BACKUPS/db" "$local_out"/*; }

# Median of the numbers on stdin.
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# Seconds (3 decimals) a command takes.
seconds() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null 2>&1; t1=$(date +%s.%N); echo "$t1 - $t0" | bc -l | xargs printf '%.3f\n'; }

# Runbook 5.2 exactly as written (its $(date) expands here, on the operator's machine).
runbook_52() {
  "${ssh[@]}" "docker compose -f '$compose_file' exec postgres pg_dump -U trader trader_psy > '$SANDBOX_BACKUP_DIR/db_$(date +%Y%m%d).sql'"
}
ctops_sql() { "$ctops" backup db --format sql; }
raw_pipe() {
  "${ssh[@]}" "docker compose -f '$compose_file' exec -T postgres pg_dump -U trader -Fc trader_psy" >"$local_out/raw.dump"
}
ctops_download() { "$ctops" backup db --download; }
peak_rss_kib() { /usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -n 1; }
bytes_of() { stat -c %s "$1"; }

for mib in "${sizes[@]}"; do
  db_bytes=$(grow "$mib")
  echo "== database $(( db_bytes / 1048576 )) MiB (pg_database_size), $runs runs each"
  declare -A t=()
  for name in runbook_52 ctops_sql raw_pipe ctops_download; do
    list=()
    for _ in $(seq 1 "$runs"); do
      clear_backups
      sync
      list+=("$(seconds "$name")")
    done
    t[$name]=$(printf '%s\n' "${list[@]}" | median)
    case $name in
      runbook_52) size[0]=$(bytes_of "$(ls "$SANDBOX_BACKUP_DIR"/db_*.sql)") ;;
      ctops_sql) size[1]=$(bytes_of "$(ls "$SANDBOX_BACKUP_DIR"/db-*.sql)") ;;
      raw_pipe) size[2]=$(bytes_of "$local_out/raw.dump") ;;
      ctops_download) size[3]=$(bytes_of "$(ls "$SANDBOX_LOCAL_BACKUPS"/db/db-*.dump)") ;;
    esac
  done
  clear_backups
  rss=$(peak_rss_kib "$ctops" backup db --download)
  clear_backups
  mbps() { echo "$1 / 1000000 / $2" | bc -l | xargs printf '%.1f'; }
  printf '%-28s %8s %10s %8s\n' method seconds "dump MB" "MB/s"
  printf '%-28s %8s %10s %8s\n' "runbook 5.2 (plain, host)" "${t[runbook_52]}" "$(( size[0] / 1000000 ))" "$(mbps "${size[0]}" "${t[runbook_52]}")"
  printf '%-28s %8s %10s %8s\n' "ctops backup db --format sql" "${t[ctops_sql]}" "$(( size[1] / 1000000 ))" "$(mbps "${size[1]}" "${t[ctops_sql]}")"
  printf '%-28s %8s %10s %8s\n' "raw ssh pg_dump -Fc > file" "${t[raw_pipe]}" "$(( size[2] / 1000000 ))" "$(mbps "${size[2]}" "${t[raw_pipe]}")"
  printf '%-28s %8s %10s %8s\n' "ctops backup db --download" "${t[ctops_download]}" "$(( size[3] / 1000000 ))" "$(mbps "${size[3]}" "${t[ctops_download]}")"
  echo "throughput ratio, backup db vs runbook 5.2: $(echo "${t[runbook_52]} / ${t[ctops_sql]}" | bc -l | xargs printf '%.2f')"
  echo "throughput ratio, --download vs raw pipe:   $(echo "${t[raw_pipe]} / ${t[ctops_download]}" | bc -l | xargs printf '%.2f')"
  echo "ctops peak RSS (backup db --download): $(( rss / 1024 )) MiB ($rss KiB)"
  unset t
done
psql -c "DROP TABLE IF EXISTS bench_rows"
