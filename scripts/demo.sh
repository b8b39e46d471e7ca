#!/usr/bin/env bash
# The demo fleet: a rate-limited mock API, one broker on the embedded SQLite
# default, two workers, and a few thousand jobs submitted from a JSONL file.
# Everything runs on loopback and is stopped on exit.
#   DEMO_JOBS=3000 DEMO_LIMIT=100/s ./scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${PACER_BIN:-build}
JOBS=${DEMO_JOBS:-3000}
LIMIT=${DEMO_LIMIT:-100/s}
LATENCY=${DEMO_LATENCY_MS:-20}

work=$(mktemp -d /tmp/pacer-demo.XXXXXX)
pids=()
cleanup() {
  local rc=$?
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ $rc -ne 0 ]; then echo "demo failed; logs kept in $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

wait_for() {  # FILE TEXT SECONDS
  local deadline=$((SECONDS + $3))
  until grep -q "$2" "$1" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || { echo "timed out waiting for '$2' in $1" >&2; cat "$1" >&2 || true; return 1; }
    sleep 0.05
  done
}

echo "==> mock API: limit $LIMIT (fixed window), ${LATENCY} ms latency"
"$BIN/tests/mock_api/pacer-mock-api" --port 0 --limit "$LIMIT" --algorithm fixed \
  --latency "$LATENCY" >"$work/mock.out" 2>"$work/mock.err" &
pids+=($!)
wait_for "$work/mock.out" "listening on" 20
port=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$work/mock.out")

cat >"$work/pacer.toml" <<TOML
[broker]
database = "$work/pacer.db"
worker_endpoint = "ipc://$work/workers.sock"
client_endpoint = "ipc://$work/clients.sock"

[api.echo]
base_url = "http://127.0.0.1:$port"
limits = ["$LIMIT"]
concurrency = 32
margin = "5ms"
TOML
export PACER_CONFIG="$work/pacer.toml"

echo "==> broker (SQLite at $work/pacer.db) and two workers"
"$BIN/broker/pacer-broker" >"$work/broker.log" 2>&1 &
pids+=($!)
wait_for "$work/broker.log" '"event":"listening"' 20
for i in 1 2; do
  "$BIN/worker/pacer-worker" --id "demo-worker-$i" --concurrency 32 >"$work/worker$i.log" 2>&1 &
  pids+=($!)
done
wait_for "$work/worker1.log" '"event":"connected"' 20
wait_for "$work/worker2.log" '"event":"connected"' 20

echo "==> submitting $JOBS jobs"
for ((i = 1; i <= JOBS; i++)); do
  printf '{"api": "echo", "method": "POST", "path": "/v1/echo", "body": {"n": %d}}\n' "$i"
done >"$work/jobs.jsonl"
start=$(date +%s.%N)
group=$("$BIN/client/pacer" submit --file "$work/jobs.jsonl")
echo "    group $group"
set +e
"$BIN/client/pacer" wait --group "$group"
wait_rc=$?
set -e
end=$(date +%s.%N)

stats=$(curl -s "http://127.0.0.1:$port/stats")
progress=$("$BIN/client/pacer" stats --json)
succeeded=$(jq '[.lanes[] | select(.api=="echo") | .states.succeeded // 0] | add' <<<"$progress")
dead=$(jq '[.lanes[] | select(.api=="echo") | .states.dead // 0] | add' <<<"$progress")
accepted=$(jq .accepted <<<"$stats")
rejected=$(jq .rejected <<<"$stats")
max_window=$(jq .max_in_window <<<"$stats")
limit_n=$(jq .limit <<<"$stats")
window_ms=$(jq .window_ms <<<"$stats")
elapsed=$(echo "$end - $start" | bc -l)
rate=$(echo "$succeeded / $elapsed" | bc -l)
limit_rate=$(echo "$limit_n * 1000 / $window_ms" | bc -l)

echo
echo "==> summary"
printf '    jobs done          %d succeeded, %d dead (of %d)\n' "$succeeded" "$dead" "$JOBS"
printf '    time               %.1f s\n' "$elapsed"
printf '    rate achieved      %.1f jobs/s vs limit %.1f/s (%.1f%%)\n' "$rate" "$limit_rate" \
  "$(echo "100 * $rate / $limit_rate" | bc -l)"
printf '    429s received      %d (mock accepted %d; busiest window %d of %d allowed)\n' \
  "$rejected" "$accepted" "$max_window" "$limit_n"
exit $wait_rc
