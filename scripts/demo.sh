#!/usr/bin/env bash
# The demo fleet: a rate-limited mock API, one broker on the embedded SQLite
# default, two workers, and a few thousand jobs submitted from a JSONL file.
# Everything runs on loopback and is stopped on exit.
#   DEMO_JOBS=3000 DEMO_LIMIT=100/s DEMO_LATENCY_MS=20 ./scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/fleet-lib.sh
JOBS=${DEMO_JOBS:-3000}
LIMIT=${DEMO_LIMIT:-100/s}
LATENCY=${DEMO_LATENCY_MS:-20}
fleet_init

echo "==> mock API: limit $LIMIT (fixed windows), ${LATENCY} ms latency"
start_mock --limit "$LIMIT" --algorithm fixed --latency "$LATENCY"
write_config "http://127.0.0.1:$MOCK_PORT" "limits = [\"$LIMIT\"]
concurrency = 32
margin = \"20ms\""

echo "==> broker (SQLite at $WORK/pacer.db) and two workers"
start_broker
start_workers 2 32

echo "==> submitting $JOBS jobs"
echo_jobs "$JOBS" >"$WORK/jobs.jsonl"
start=$(date +%s.%N)
group=$("$BIN/client/pacer" submit --file "$WORK/jobs.jsonl")
echo "    group $group"
set +e
"$BIN/client/pacer" wait --group "$group"
wait_rc=$?
set -e
end=$(date +%s.%N)

stats=$(curl -s "http://127.0.0.1:$MOCK_PORT/stats")
lanes=$("$BIN/client/pacer" stats --json)
succeeded=$(jq '[.lanes[] | select(.api == "echo") | .states.succeeded // 0] | add' <<<"$lanes")
dead=$(jq '[.lanes[] | select(.api == "echo") | .states.dead // 0] | add' <<<"$lanes")
elapsed=$(echo "$end - $start" | bc -l)
rate=$(echo "$succeeded / $elapsed" | bc -l)
limit_rate=$(jq '.limit * 1000 / .window_ms' <<<"$stats")

echo
echo "==> summary"
printf '    jobs done        %d succeeded, %d dead, of %d\n' "$succeeded" "$dead" "$JOBS"
printf '    time             %.1f s\n' "$elapsed"
# Jobs over wall time overstates the pace of a short run: the first window's
# jobs start at once, so N jobs under "L per W" need only (ceil(N/L) - 1) * W.
# The pace line compares the run with that fastest schedule instead.
limit=$(jq .limit <<<"$stats")
window_s=$(jq '.window_ms / 1000' <<<"$stats")
fastest=$(echo "(($succeeded + $limit - 1) / $limit - 1) * $window_s" | bc)
printf '    rate achieved    %.1f jobs/s against a limit of %.1f/s\n' \
  "$rate" "$limit_rate"
if [ "$succeeded" -gt "$limit" ]; then
  printf '    pace             %d jobs in %.1f s; at %d per %s s they cannot start in under %.1f s (%.1f%% of that fastest pace)\n' \
    "$succeeded" "$elapsed" "$limit" "$window_s" "$fastest" \
    "$(echo "100 * $fastest / $elapsed" | bc -l)"
else
  printf '    pace             %d jobs fit in one window of %d per %s s: they may all start at once\n' \
    "$succeeded" "$limit" "$window_s"
fi
printf '    429s received    %d (upstream accepted %d; busiest window held %d of %d allowed)\n' \
  "$(jq .rejected <<<"$stats")" "$(jq .accepted <<<"$stats")" \
  "$(jq .max_in_window <<<"$stats")" "$(jq .limit <<<"$stats")"
exit $wait_rc
