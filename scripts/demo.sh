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
printf '    rate achieved    %.1f jobs/s against a limit of %.1f/s (%.1f%%)\n' \
  "$rate" "$limit_rate" "$(echo "100 * $rate / $limit_rate" | bc -l)"
printf '    429s received    %d (upstream accepted %d; busiest window held %d of %d allowed)\n' \
  "$(jq .rejected <<<"$stats")" "$(jq .accepted <<<"$stats")" \
  "$(jq .max_in_window <<<"$stats")" "$(jq .limit <<<"$stats")"
exit $wait_rc
