# Shared by scripts/demo.sh and bench/*.sh: start a mock API, a broker and
# workers on loopback in a temporary directory, and stop them all on exit.
# Source it, then call fleet_init.
BIN=${PACER_BIN:-build}
FLEET_PIDS=()

fleet_init() {
  WORK=$(mktemp -d /tmp/pacer-fleet.XXXXXX)
  trap fleet_cleanup EXIT
}

fleet_cleanup() {
  local rc=$?
  for p in "${FLEET_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${FLEET_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ $rc -ne 0 ]; then echo "failed; logs kept in $WORK" >&2; else rm -rf "$WORK"; fi
}

wait_for() {  # FILE TEXT SECONDS
  local deadline=$((SECONDS + $3))
  until grep -q "$2" "$1" 2>/dev/null; do
    if [ $SECONDS -ge $deadline ]; then
      echo "timed out waiting for '$2' in $1" >&2
      cat "$1" >&2 || true
      return 1
    fi
    sleep 0.05
  done
}

start_mock() {  # ARGS... ; sets MOCK_PORT and MOCK_PID
  "$BIN/tests/mock_api/pacer-mock-api" --port 0 "$@" >"$WORK/mock.out" 2>"$WORK/mock.err" &
  FLEET_PIDS+=($!)
  MOCK_PID=$!
  wait_for "$WORK/mock.out" "listening on" 20
  MOCK_PORT=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$WORK/mock.out")
}

write_config() {  # BASE_URL API_TOML_LINES ; sets PACER_CONFIG
  cat >"$WORK/pacer.toml" <<TOML
[broker]
database = "$WORK/pacer.db"
worker_endpoint = "ipc://$WORK/workers.sock"
client_endpoint = "ipc://$WORK/clients.sock"

[api.echo]
base_url = "$1"
$2
TOML
  export PACER_CONFIG="$WORK/pacer.toml"
}

start_broker() {  # sets BROKER_PID
  "$BIN/broker/pacer-broker" "$@" >>"$WORK/broker.log" 2>&1 &
  BROKER_PID=$!
  FLEET_PIDS+=($BROKER_PID)
  wait_for "$WORK/broker.log" '"event":"listening"' 30
}

start_workers() {  # COUNT CONCURRENCY ; sets WORKER_PIDS
  local i
  WORKER_PIDS=()
  for ((i = 1; i <= $1; i++)); do
    "$BIN/worker/pacer-worker" --id "worker-$i" --concurrency "$2" >"$WORK/worker$i.log" 2>&1 &
    FLEET_PIDS+=($!)
    WORKER_PIDS+=($!)
  done
  for ((i = 1; i <= $1; i++)); do wait_for "$WORK/worker$i.log" '"event":"connected"' 30; done
}

echo_jobs() {  # COUNT > file
  awk -v n="$1" 'BEGIN { for (i = 1; i <= n; i++) printf "{\"api\":\"echo\",\"method\":\"POST\",\"path\":\"/v1/echo\",\"body\":{\"n\":%d}}\n", i }'
}

cpu_ticks() {  # PID... : their user + system CPU time so far, in clock ticks
  local p sum=0
  for p in "$@"; do sum=$((sum + $(awk '{ print $14 + $15 }' "/proc/$p/stat"))); done
  echo "$sum"
}

us_per_job() {  # TICKS JOBS : CPU microseconds per job
  echo "$1 * 1000000 / $(getconf CLK_TCK) / $2" | bc -l | xargs printf '%.1f'
}

peak_rss_kb() {  # PID
  awk '/VmHWM/ { print $2 }' "/proc/$1/status"
}
rss_kb() {  # PID
  awk '/VmRSS/ { print $2 }' "/proc/$1/status"
}
