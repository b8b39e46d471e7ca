#!/usr/bin/env bash
# The broker alone: N jobs (default 100,000) through a lane with no limit, to
# stand-in workers (pacer-bench-worker) that answer every job at once without
# HTTP. Reports jobs/s submit-to-succeeded and the broker's CPU per job: the
# ceiling the broker puts on bench/e2e_throughput.sh.
#   bench/broker_ceiling.sh [JOBS] [WORKERS] [CAPACITY]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/fleet-lib.sh
JOBS=${1:-100000}
WORKERS=${2:-1}
CAP=${3:-64}
fleet_init

write_config "http://127.0.0.1:9" "concurrency = 0"
start_broker
for ((i = 1; i <= WORKERS; i++)); do
  "$BIN/bench/pacer-bench-worker" "ipc://$WORK/workers.sock" "$CAP" >"$WORK/bench-worker$i.log" 2>&1 &
  FLEET_PIDS+=($!)
done
echo_jobs "$JOBS" >"$WORK/jobs.jsonl"

ticks0=$(cpu_ticks "$BROKER_PID")
start=$(date +%s.%N)
group=$("$BIN/client/pacer" submit --file "$WORK/jobs.jsonl")
submitted=$(date +%s.%N)
"$BIN/client/pacer" wait --group "$group" --timeout-wait 30min >/dev/null
end=$(date +%s.%N)
ticks=$(( $(cpu_ticks "$BROKER_PID") - ticks0 ))

total=$(echo "$end - $start" | bc -l)
printf 'jobs=%d workers=%d capacity=%d\n' "$JOBS" "$WORKERS" "$CAP"
printf 'submit %.2f s, submit-to-succeeded %.2f s: %.0f jobs/s\n' \
  "$(echo "$submitted - $start" | bc -l)" "$total" "$(echo "$JOBS / $total" | bc -l)"
printf 'broker CPU %s us per job\n' "$(us_per_job "$ticks" "$JOBS")"
printf 'broker peak RSS %d KiB\n' "$(peak_rss_kb "$BROKER_PID")"
