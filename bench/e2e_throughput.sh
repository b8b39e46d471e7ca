#!/usr/bin/env bash
# End-to-end throughput, submit to succeeded: N jobs (default 100,000), each
# one POST to a fast local HTTP server, through a lane with no limit, with
# durable commits. Reports jobs/s and the broker's peak memory.
#   bench/e2e_throughput.sh [nginx|mock] [JOBS] [WORKERS] [CONCURRENCY]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/fleet-lib.sh
TARGET=${1:-nginx}
JOBS=${2:-100000}
WORKERS=${3:-1}
CONC=${4:-64}
fleet_init

if [ "$TARGET" = nginx ]; then
  port=$(( 20000 + RANDOM % 20000 ))
  mkdir -p "$WORK/nginx"
  cat >"$WORK/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
error_log $WORK/nginx/error.log warn;
pid $WORK/nginx/nginx.pid;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$port;
    location /v1/echo { client_body_buffer_size 16k; return 200 '{"ok":true}'; }
  }
}
CONF
  nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" &
  FLEET_PIDS+=($!)
  NGINX_PID=$!
  for _ in $(seq 100); do curl -sf -X POST "http://127.0.0.1:$port/v1/echo" >/dev/null && break; sleep 0.05; done
  base="http://127.0.0.1:$port"
else
  start_mock --threads 64
  base="http://127.0.0.1:$MOCK_PORT"
fi

write_config "$base" "concurrency = 0"
start_broker
start_workers "$WORKERS" "$CONC"
echo_jobs "$JOBS" >"$WORK/jobs.jsonl"
if [ "$TARGET" = nginx ]; then
  server_pids=($(pgrep -P "$NGINX_PID"))  # its worker process
else
  server_pids=("$MOCK_PID")
fi

# CPU per job of each part: where the two cores go.
broker0=$(cpu_ticks "$BROKER_PID")
workers0=$(cpu_ticks "${WORKER_PIDS[@]}")
server0=$(cpu_ticks "${server_pids[@]}")
TIMEFORMAT='%U %S'
start=$(date +%s.%N)
{ time group=$("$BIN/client/pacer" submit --file "$WORK/jobs.jsonl"); } 2>"$WORK/submit.time"
submitted=$(date +%s.%N)
{ time "$BIN/client/pacer" wait --group "$group" --timeout-wait 30min >/dev/null; } 2>"$WORK/wait.time"
end=$(date +%s.%N)
broker=$(($(cpu_ticks "$BROKER_PID") - broker0))
workers=$(($(cpu_ticks "${WORKER_PIDS[@]}") - workers0))
server=$(($(cpu_ticks "${server_pids[@]}") - server0))
client_s=$(cat "$WORK/submit.time" "$WORK/wait.time" | awk '{ s += $1 + $2 } END { print s }')
client=$(echo "$client_s * $(getconf CLK_TCK)" | bc -l)

total=$(echo "$end - $start" | bc -l)
printf 'target=%s jobs=%d workers=%d concurrency=%d\n' "$TARGET" "$JOBS" "$WORKERS" "$CONC"
printf 'submit %.2f s, submit-to-succeeded %.2f s: %.0f jobs/s\n' \
  "$(echo "$submitted - $start" | bc -l)" "$total" "$(echo "$JOBS / $total" | bc -l)"
printf 'CPU per job: broker %s us, workers %s us, %s %s us, client %s us\n' \
  "$(us_per_job "$broker" "$JOBS")" "$(us_per_job "$workers" "$JOBS")" \
  "$TARGET" "$(us_per_job "$server" "$JOBS")" "$(us_per_job "$client" "$JOBS")"
printf 'broker peak RSS %d KiB\n' "$(peak_rss_kb "$BROKER_PID")"
"$BIN/client/pacer" stats --json | jq -c '.states'
