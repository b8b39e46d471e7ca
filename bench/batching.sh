#!/usr/bin/env bash
# Batching: jobs per second through one lane limited to LIMIT requests/s
# (the mock enforces the same limit, fixed windows), sent one per call and
# sent in batches of up to MAX_ITEMS (max_wait 200ms) to the mock's
# /v1/batch. Reports per run: jobs, calls the mock accepted and refused,
# wall time from the submission to the last job done, and jobs per second.
#   bench/batching.sh [LIMIT] [SINGLE_JOBS] [BATCHED_JOBS] [MAX_ITEMS]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/fleet-lib.sh
LIMIT=${1:-10}
SINGLE_JOBS=${2:-300}
BATCHED_JOBS=${3:-10000}
MAX_ITEMS=${4:-50}

jobs_file() {  # COUNT KEY(empty: none) > file
  awk -v n="$1" -v key="$2" 'BEGIN {
    for (i = 1; i <= n; i++) {
      k = key == "" ? "" : ",\"batch_key\":\"" key "\""
      printf "{\"api\":\"echo\",\"path\":\"/v1/echo\",\"body\":{\"n\":%d}%s}\n", i, k
    }
  }'
}

run_one() {  # MODE(single|batched) JOBS
  local mode=$1 jobs=$2 key="" api
  fleet_init
  start_mock --limit "$LIMIT/s" --algorithm fixed --latency 20
  api="limits = [\"$LIMIT/s\"]
concurrency = 16"
  if [ "$mode" = batched ]; then
    key=k
    api="$api

[api.echo.batch]
path = \"/v1/batch\"
max_items = $MAX_ITEMS
max_wait = \"200ms\"
request_array = \"/inputs\"
response_array = \"/results\""
  fi
  write_config "http://127.0.0.1:$MOCK_PORT" "$api"
  start_broker
  start_workers 2 8
  jobs_file "$jobs" "$key" >"$WORK/jobs.jsonl"
  local t0 t1 group stats
  t0=$(date +%s.%N)
  group=$("$BIN/client/pacer" submit --file "$WORK/jobs.jsonl")
  "$BIN/client/pacer" wait --group "$group" --timeout-wait 30min >/dev/null
  t1=$(date +%s.%N)
  stats=$(curl -s "http://127.0.0.1:$MOCK_PORT/stats")
  local secs calls
  secs=$(echo "$t1 - $t0" | bc -l)
  calls=$(jq .accepted <<<"$stats")
  printf '%-8s %7d %6d %5d %8.1f %9.1f\n' "$mode" "$jobs" "$calls" \
    "$(jq .rejected <<<"$stats")" "$secs" "$(echo "$jobs / $secs" | bc -l)"
  fleet_cleanup
  trap - EXIT
  FLEET_PIDS=()
}

printf 'lane and mock: %d requests/s (fixed windows), 20 ms latency, 2 workers x 8, batches of up to %d\n' "$LIMIT" "$MAX_ITEMS"
printf '%-8s %7s %6s %5s %8s %9s\n' mode jobs calls rej secs jobs/s
run_one single "$SINGLE_JOBS"
run_one batched "$BATCHED_JOBS"
