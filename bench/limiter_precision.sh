#!/usr/bin/env bash
# Limiter precision: a backlog through a lane limited to LIMIT against a mock
# API enforcing the same limit with fixed windows. Reports the rate achieved
# against the limit and the rejections at the mock over a run of ~DURATION s.
#   bench/limiter_precision.sh [LIMIT_PER_S] [DURATION_S] [ALGORITHM]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/fleet-lib.sh
PER_S=${1:-100}
DURATION=${2:-60}
ALGO=${3:-fixed}
JOBS=$(( PER_S * DURATION ))
fleet_init

start_mock --limit "$PER_S/s" --algorithm "$ALGO" --latency 10
write_config "http://127.0.0.1:$MOCK_PORT" "limits = [\"$PER_S/s\"]
concurrency = 64"
start_broker
start_workers 2 32
echo_jobs "$JOBS" >"$WORK/jobs.jsonl"
group=$("$BIN/client/pacer" submit --file "$WORK/jobs.jsonl")
"$BIN/client/pacer" wait --group "$group" --timeout-wait 30min >/dev/null
stats=$(curl -s "http://127.0.0.1:$MOCK_PORT/stats")
first=$(jq .first_accept_ms <<<"$stats")
last=$(jq .last_accept_ms <<<"$stats")
accepted=$(jq .accepted <<<"$stats")
# Rate between the first and last accepted request: (n - 1) intervals.
rate=$(echo "($accepted - 1) * 1000 / ($last - $first)" | bc -l)
printf 'limit %d/s (%s windows at the mock), %d jobs\n' "$PER_S" "$ALGO" "$JOBS"
printf 'achieved %.2f/s = %.2f%% of the limit over %.1f s\n' "$rate" \
  "$(echo "100 * $rate / $PER_S" | bc -l)" "$(echo "($last - $first) / 1000" | bc -l)"
printf 'rejections %d, busiest window %d (limit %d), busiest interval of 1 s %d\n' \
  "$(jq .rejected <<<"$stats")" "$(jq .max_in_window <<<"$stats")" "$PER_S" \
  "$(jq .max_in_any_interval <<<"$stats")"
