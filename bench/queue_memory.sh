#!/usr/bin/env bash
# Broker memory with a deep queue: RSS of an idle broker over an empty queue,
# after 1,000,000 jobs are submitted (no worker runs them), and after a
# restart over that database (recovery and lane windows refilled).
#   bench/queue_memory.sh [JOBS]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/fleet-lib.sh
JOBS=${1:-1000000}
fleet_init
write_config "http://127.0.0.1:9" "limits = [\"100/s\"]"
start_broker
empty=$(rss_kb "$BROKER_PID")
echo_jobs "$JOBS" >"$WORK/jobs.jsonl"
start=$(date +%s.%N)
"$BIN/client/pacer" submit --file "$WORK/jobs.jsonl" >/dev/null
end=$(date +%s.%N)
full=$(rss_kb "$BROKER_PID")
peak=$(peak_rss_kb "$BROKER_PID")
kill "$BROKER_PID"; wait "$BROKER_PID" 2>/dev/null || true
start_broker
"$BIN/client/pacer" stats --json | jq -c .states
restarted=$(rss_kb "$BROKER_PID")
printf 'jobs %d, submitted in %.1f s (%.0f jobs/s), database %s\n' "$JOBS" \
  "$(echo "$end - $start" | bc -l)" "$(echo "$JOBS / ($end - $start)" | bc -l)" \
  "$(du -h "$WORK/pacer.db" | cut -f1)"
printf 'broker RSS: empty queue %d KiB; with %d queued %d KiB (peak %d KiB); restarted over them %d KiB\n' \
  "$empty" "$JOBS" "$full" "$peak" "$restarted"
