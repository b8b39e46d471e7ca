#!/usr/bin/env bash
# Conformance against real rate limiters: pacer's pace and the rejections it
# draws from third-party limiters run on loopback, each with the limit
# configured in the lane ("known") and not ("unknown": the lane learns it).
#
#   bench/conformance.sh [--quick] [--verify] [--list] [ROW...]
#
#   --quick    only the rows with 1 s windows and the 20 r/s rate rows (~10 s
#              of traffic for a known lane, ~30 s for an unknown one; the full
#              table's 1 min rows take ~10-20 min)
#   --verify   add the measurement checks: a lane limited to 40/s against a
#              20/s server (express and the mock), which must show rejections
#   --list     print the row names and exit
#   --parallel=N  rows running at once (default 12, or $CONFORMANCE_PARALLEL);
#              longest first, so the table still takes about as long as the
#              longest row. Every row at once (44) overloads two cores: the
#              mock's keep-alive threads poll, and a starved broker declares
#              its worker lost (seen as "pacer other outcomes")
#   ROW...     only these rows: a name or its prefix ("express", "flask-fixed",
#              "nginx-b10", "mock"), or one row and lane exactly
#              ("express-1s:unknown", "nginx-b10:as-window")
#
# Servers (bench/conformance/; each row starts its own, on 127.0.0.1):
#   express-*       express-rate-limit 8 (npm), MemoryStore fixed window that
#                   starts at the client's first request, draft-7 RateLimit
#                   fields and X-RateLimit-*; windowMs 1 s, 10 s, 1 min
#   flask-fixed-*   Flask-Limiter 3.3 (Debian), memory storage, fixed-window,
#   flask-moving-*  or moving-window; X-RateLimit-* and Retry-After. Its
#                   moving-window X-RateLimit-Reset is int(newest) + W + 1
#                   (limits 2.8 get_moving_window returns int() of the newest
#                   entry still in the window, Flask-Limiter's reset_at adds
#                   1): not when the oldest entry leaves the window, so a
#                   client that waits for the reset is late by up to W + 1 s
#   nginx-b0        nginx limit_req rate=20r/s, burst=0 (a leaky bucket),
#   nginx-b10       or burst=10 nodelay; 429 with Retry-After: 1; proxied to
#                   an unlimited pacer-mock-api (nginx itself cannot wait)
#   mock-fixed-*    pacer-mock-api as real servers behave: fixed windows from
#                   the first request, X-RateLimit-* with resets rounded down;
#   mock-sliding-*  a sliding log (moving window), X-RateLimit-*;
#   mock-leaky-b*   nginx's leaky bucket (--burst 0 / 10), no headers, 429
# Every accepted request is answered after 50 ms (simulated API latency).
# Every server allows 20 requests/s: 20/1s, 200/10s, 1200/1min, 20r/s.
#
# Per row: its own server, broker (SQLite in a temp dir, ipc:// endpoints),
# one worker with 64 transfers, and jobs, each a POST /v1/echo:
#   known, as-window, over lanes: ten windows, L x 10 (200 at 1 s, 2,000 at
#             10 s, 12,000 at 1 min; 200 at 20 r/s);
#   unknown lanes: enough for learning plus at least ten windows after it:
#             30 windows at 1 s and at 20 r/s (600), 15 at 10 s (3,000), and
#             still 10 at 1 min (12,000: learning a 1 min window takes 2-4
#             windows, so "after" covers the 6-8 left).
# Lanes: "known"  limits = the server's ("20/s", "200/10s", "1200/min"; for
#                 leaky servers "20/s burst 0" / "20/s burst 10");
#        "unknown" no limits, learn left at its default (true);
#        "as-window" (nginx) limits = ["20/s"]: rate=20r/s read as a window;
#        "over" (--verify) limits twice the server's: must draw rejections.
# Rows run at once (--parallel at a time, longest first), so the table takes
# about as long as the longest row.
#
# What is measured, from what the servers saw (not from what pacer believes):
#   jobs      succeeded / submitted (read from the broker's database after the
#             run); anything short of all is a FAIL.
#   rej       requests the server refused: the app's own count (express and
#             Flask count in their rejection handler, GET /stats), the 429
#             lines in nginx's access log, the mock's /stats "rejected".
#   p.rej     the same seen by pacer: attempts rows with status 429 or 503.
#   pace      fastest / actual, over the N requests the server accepted:
#             actual  = arrival of the last accepted request - arrival of the
#                       first, at the server (express stamps each request
#                       when it reaches the app, before the limiter decides;
#                       Flask by the limiter's own clock reading for it, the
#                       time its algorithm decided by; nginx logs $msec -
#                       $request_time; the mock's /stats first_accept_ms and
#                       last_accept_ms)
#             fastest = the least time the server's algorithm needs to accept
#                       N requests: for L per window W, (ceil(N/L) - 1) * W
#                       (the last window's burst starts ceil(N/L) - 1 windows
#                       after the first); for a leaky bucket of rate R and
#                       burst B (nginx), (N - 1 - B) / R.
#             It cannot exceed 1.000 unless the server let more through than
#             its algorithm allows (see "over" in the checks).
#   learned   (unknown and as-window lanes) when the lane first showed that
#             it had learned the server's limit, in seconds from the first
#             accepted arrival (the same times "after" is computed on); "-"
#             if it never did. While the jobs run, the row polls
#             `pacer stats --json` every 250 ms (one call at a time, each
#             250 ms after the previous one started, or 20 ms after it ended
#             if it took longer; a 2 s reply timeout; from before the jobs
#             are submitted until the lane learns or the run ends) and takes
#             the lane's entry (lanes[] whose api is the lane, "echo"); it
#             has learned when any of
#               windows[].state == "learned"   a window learned from a
#                                               counter's resets,
#               pace_learned == true           a pace learned from accepts
#                                               and refusals (nginx),
#               learned[].source is "advertised" (IETF fields, at once) or
#                 "recognized" (a configured window recognised as a leaky
#                 bucket after a refusal).
#             (A learned[] entry with source "pace" or "window" alone is a
#             limit still being learned: it does not count.) t_learned is the
#             wall clock, epoch ms, when the first reply that shows it was
#             received; it is the same host clock as the servers' stamps and
#             trails the broker's actual moment by at most one poll (~250 ms
#             plus a call: "poll N ms" in the checks is how long the call
#             that saw it took: ~30-60 ms idle, seconds on an overloaded
#             host). Each call costs ~30 ms of CPU (the client's start:
#             ~0.15 core per row still polling); jq runs only when a reply
#             looks learned. Every poll is logged in the row's poll.log.
#   after     (unknown lanes) the pace once learned: from t_ref = t_learned
#             + W (one window after; W = 1 s for the 20 r/s rows) to the last
#             accepted arrival t_last, with M requests accepted in
#             [t_ref, t_last]:
#               after = fastest'(M) / (t_last - t_ref)
#             "-" when the lane never learned, or nothing was accepted after
#             t_ref (then the row is a MISS).
#             fastest'(M) = the least time from t_ref in which the server's
#             algorithm could accept M requests, given what it had accepted
#             before t_ref (replayed from the accepted arrivals):
#               fixed windows that start at the first request after the last
#                 one ended (express, Flask fixed-window, mock fixed): the rest
#                 of the current window's L at once, then L per window, each
#                 starting when the previous one ends;
#               moving window (Flask moving-window, mock sliding): request k
#                 no earlier than W after request k - L;
#               leaky bucket (nginx, mock leaky): an excess that drains at R
#                 and that each request raises by 1, never above B (burst
#                 saved before t_ref is credited).
#             So time lost after t_ref (pauses, waits for a late reset) counts
#             against it, and "after" cannot exceed 1 either. Mock rows: the
#             mock logs no per-request times, so "after" is computed on
#             pacer's attempt start times (attempts.started_at, the broker's
#             dispatch), which track the arrivals to a few ms; "learned" is
#             then counted from the first of those too.
#   target    known / as-window lanes: pace >= 0.97 and rej = 0; unknown:
#             learned, after >= 0.95 (at least 0.95 of the fastest pace once
#             learned) and rej <= L (one window's worth; 20 at 20 r/s), the
#             rejections over the whole run, learning included;
#             over: rej > 0. Printed as ok / MISS (FAIL when jobs are lost,
#             dead or still pending at the row's deadline), never as the exit
#             status.
#   checks    "pacer-side pace": the pace recomputed from pacer's own attempt
#             start times (agrees with the server's to ~0.01 when both are
#             right); "busiest/W": the most accepted in any interval (t - W, t]
#             at the server (a fixed window may reach 2 L across a boundary,
#             a leaky bucket B + 1 + R W); "SERVER OVER-ADMITTED n": accepted
#             requests the server's algorithm should have refused (replayed
#             with 2 ms of slack; the mock: its busiest own window over L);
#             for the mock "attempted/W": its max_attempted_in_any_interval;
#             for nginx the "limiting requests" lines of its error log.
#
# Uses the binaries in $PACER_BIN (default build/). Needs node/npm (express
# rows; node_modules is installed here with `npm ci` if missing), Debian's
# python3-flask-limiter, nginx, sqlite3, jq, curl: ./dev.sh bench installs
# them. Rows whose server is missing, or whose mock lacks a flag, or whose
# lane configuration the broker refuses, are reported as such, not run.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/fleet-lib.sh   # BIN, write_config, echo_jobs
CONF=bench/conformance
PY=/usr/bin/python3            # Debian's: Flask-Limiter is a Debian package
LATENCY_MS=50
CONCURRENCY=64

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }

QUICK=0 VERIFY=0 LIST=0
PARALLEL=${CONFORMANCE_PARALLEL:-12}
SELECT=()
for a in "$@"; do
  case $a in
    --parallel=*) PARALLEL=${a#--parallel=} ;;
    --quick) QUICK=1 ;;
    --verify) VERIFY=1 ;;
    --list) LIST=1 ;;
    -h | --help) usage; exit 0 ;;
    -*) echo "conformance.sh: unknown option $a (see --help)" >&2; exit 2 ;;
    *) SELECT+=("$a") ;;
  esac
done

# ---------------------------------------------------------------- the rows
# Per row: name, lane mode, server kind and arguments, the server's algorithm
# for the pace (fixed windows that start at a request or a moving window, of L
# per W ms; or a leaky bucket of L per W ms with burst B), the lane's
# limits line, whether it is a 1 s row (--quick) and in the default set.
R_NAME=() R_MODE=() R_SERVER=() R_SARGS=() R_KIND=() R_L=() R_W=() R_B=()
R_LANE=() R_LIMTXT=() R_SHORT=() R_DEFAULT=() R_NEEDS=()
add_row() {  # NAME MODE SERVER SARGS KIND L W_MS B LANE_LIMITS LIMTXT SHORT DEFAULT [MOCK_FLAGS]
  R_NAME+=("$1") R_MODE+=("$2") R_SERVER+=("$3") R_SARGS+=("$4") R_KIND+=("$5")
  R_L+=("$6") R_W+=("$7") R_B+=("$8") R_LANE+=("$9") R_LIMTXT+=("${10}")
  R_SHORT+=("${11}") R_DEFAULT+=("${12}") R_NEEDS+=("${13:-}")
}
lane_for() {  # MODE KNOWN_LIMIT OVER_LIMIT
  case $1 in
    known) echo "limits = [\"$2\"]" ;;
    unknown) echo "" ;;
    over) echo "limits = [\"$3\"]" ;;
  esac
}
window_rows() {  # NAME_PREFIX SERVER ALGORITHM SARGS_FN MOCK_FLAGS
  local w L W lim over flask short mode
  for w in 1s 10s 1min; do
    case $w in
      1s) L=20 W=1000 lim=20/s over=40/s flask="20 per 1 second" short=1 ;;
      10s) L=200 W=10000 lim=200/10s over=400/10s flask="200 per 10 second" short=0 ;;
      1min) L=1200 W=60000 lim=1200/min over=2400/min flask="1200 per 1 minute" short=0 ;;
    esac
    for mode in known unknown over; do
      [ "$mode" = over ] && [ "$w" != 1s ] && continue
      add_row "$1-$w" "$mode" "$2" "$($4 "$L" "$W" "$lim" "$flask")" "$3" "$L" "$W" 0 \
        "$(lane_for "$mode" "$lim" "$over")" "$L/$w" "$short" \
        "$([ "$mode" = over ] && echo 0 || echo 1)" "${5:-}"
    done
  done
}
express_args() { echo "--limit $1 --window-ms $2"; }
flask_fixed_args() { echo "--strategy fixed-window --limit '$4'"; }
flask_moving_args() { echo "--strategy moving-window --limit '$4'"; }
mock_fixed_args() { echo "--limit $3 --algorithm fixed --window-start first-request --dialect x-ratelimit --reset-rounding down"; }
mock_sliding_args() { echo "--limit $3 --algorithm sliding --dialect x-ratelimit"; }

window_rows express express fixed express_args
window_rows flask-fixed flask fixed flask_fixed_args
window_rows flask-moving flask sliding flask_moving_args
for b in 0 10; do
  for mode in known unknown as-window; do
    case $mode in
      known) lane="limits = [\"20/s burst $b\"]" ;;
      unknown) lane="" ;;
      as-window) lane='limits = ["20/s"]' ;;
    esac
    # One as-window row (burst 0, nginx's default) in the default set.
    add_row "nginx-b$b" "$mode" nginx "$b" leaky 20 1000 "$b" "$lane" "20r/s b$b" 1 \
      "$([ "$mode" = as-window ] && [ "$b" != 0 ] && echo 0 || echo 1)"
  done
done
window_rows mock-fixed mock fixed mock_fixed_args "--window-start --reset-rounding"
window_rows mock-sliding mock sliding mock_sliding_args
for b in 0 10; do
  for mode in known unknown; do
    case $mode in
      known) lane="limits = [\"20/s burst $b\"]" ;;
      unknown) lane="" ;;
    esac
    add_row "mock-leaky-b$b" "$mode" mock \
      "--limit 20/s --algorithm leaky --burst $b --dialect none --reject-status 429" \
      leaky 20 1000 "$b" "$lane" "20r/s b$b" 1 1 "--burst"
  done
done

row_id() { echo "${R_NAME[$1]}:${R_MODE[$1]}"; }
# Jobs for a row (see the header): ten windows; an unknown lane 30 windows at
# 1 s and 20 r/s, 15 at 10 s, 10 at 1 min.
row_jobs() {  # IDX
  local i=$1 n=10
  if [ "${R_MODE[$i]}" = unknown ]; then
    case ${R_W[$i]} in
      1000) n=30 ;;
      10000) n=15 ;;
    esac
  fi
  echo $((R_L[i] * n))
}
# The least time, ms, the server's algorithm needs to accept JOBS requests.
fastest_ms() {  # IDX JOBS
  local i=$1 jobs=$2
  if [ "${R_KIND[$i]}" = leaky ]; then
    echo $(( (jobs - 1 - R_B[i]) * R_W[i] / R_L[i] ))
  else
    echo $(( ((jobs + R_L[i] - 1) / R_L[i] - 1) * R_W[i] ))
  fi
}
selected() {  # IDX
  local i=$1 id a
  id=$(row_id "$i")
  [ "$QUICK" = 1 ] && [ "${R_SHORT[$i]}" != 1 ] && return 1
  if [ ${#SELECT[@]} -eq 0 ]; then
    [ "${R_DEFAULT[$i]}" = 1 ] || { [ "$VERIFY" = 1 ] && [ "${R_MODE[$i]}" = over ]; }
    return
  fi
  for a in "${SELECT[@]}"; do
    [ "$id" = "$a" ] && return 0
    if [ "${R_NAME[$i]}" = "$a" ] || [[ "$id" == "$a"-* ]] || [[ "$id" == "$a":* ]]; then
      [ "${R_DEFAULT[$i]}" = 1 ] && return 0
      [ "$VERIFY" = 1 ] && [ "${R_MODE[$i]}" = over ] && return 0
    fi
  done
  return 1
}

[[ "$PARALLEL" =~ ^[1-9][0-9]*$ ]] || { echo "conformance.sh: --parallel needs a positive number" >&2; exit 2; }
if [ "$LIST" = 1 ]; then
  for i in "${!R_NAME[@]}"; do
    printf '%-24s %-9s %s%s\n' "$(row_id "$i")" "${R_LIMTXT[$i]}" \
      "$(if [ "${R_DEFAULT[$i]}" = 1 ]; then echo default; elif [ "${R_MODE[$i]}" = over ]; then echo "--verify"; else echo "only when named exactly"; fi)" \
      "$([ "${R_SHORT[$i]}" = 1 ] && echo ", --quick" || true)"
  done
  exit 0
fi

ROWS=()
for i in "${!R_NAME[@]}"; do selected "$i" && ROWS+=("$i"); done
if [ ${#ROWS[@]} -eq 0 ]; then
  echo "conformance.sh: no row selected (see --list)" >&2
  exit 2
fi

# ------------------------------------------------------------ prerequisites
for b in broker/pacer-broker worker/pacer-worker client/pacer tests/mock_api/pacer-mock-api; do
  if [ ! -x "$BIN/$b" ]; then
    echo "conformance.sh: $BIN/$b missing: build first (./dev.sh bench, or PACER_BIN=DIR)" >&2
    exit 2
  fi
done
for t in curl jq sqlite3 awk; do
  command -v "$t" >/dev/null || { echo "conformance.sh: $t missing (./dev.sh bench)" >&2; exit 2; }
done
MOCK_HELP=$("$BIN/tests/mock_api/pacer-mock-api" --help 2>&1 || true)
# Why a server kind cannot run here (empty: it can).
declare -A MISSING=()
want() { local i; for i in "${ROWS[@]}"; do [ "${R_SERVER[$i]}" = "$1" ] && return 0; done; return 1; }
if want express; then
  if ! command -v node >/dev/null; then
    MISSING[express]="node missing (./dev.sh bench)"
  elif [ ! -d "$CONF/express/node_modules/express-rate-limit" ]; then
    if ! command -v npm >/dev/null; then
      MISSING[express]="npm missing (./dev.sh bench)"
    elif ! (cd "$CONF/express" && npm ci --no-audit --no-fund --loglevel=error >/dev/null); then
      MISSING[express]="npm ci failed in $CONF/express"
    fi
  fi
fi
if want flask && ! "$PY" -c 'import flask_limiter' 2>/dev/null; then
  MISSING[flask]="python3-flask-limiter missing (./dev.sh bench)"
fi
if want nginx && ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
  MISSING[nginx]="nginx missing (./dev.sh bench)"
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

# ------------------------------------------------------- process handling
ROOT=$(mktemp -d /tmp/pacer-conformance.XXXXXX)
ROW_PIDS=()
KEEP_LOGS=0   # set when a row failed; KEEP=1 keeps them always

# Each row runs in its own subshell; every process it starts is its child,
# listed in FLEET_PIDS and in $WORK/pids (for the top level's last resort).
spawn() {  # OUT ERR CMD... ; sets SPAWNED
  local out=$1 err=$2
  shift 2
  "$@" >>"$out" 2>>"$err" &
  SPAWNED=$!
  FLEET_PIDS+=("$SPAWNED")
  echo "$SPAWNED" >>"$WORK/pids"
}

stop_pids() {  # PID... : TERM, up to 5 s, then KILL; reaps them
  local p alive deadline=$((SECONDS + 5))
  for p in "$@"; do kill "$p" 2>/dev/null || true; done
  while :; do
    alive=0
    for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    if [ $SECONDS -ge $deadline ]; then
      for p in "$@"; do kill -KILL "$p" 2>/dev/null || true; done
      break
    fi
    sleep 0.05
  done
  for p in "$@"; do wait "$p" 2>/dev/null || true; done
}

row_cleanup() {
  trap - EXIT TERM INT
  [ ${#FLEET_PIDS[@]} -gt 0 ] && stop_pids "${FLEET_PIDS[@]}"
  FLEET_PIDS=()
  : >"$WORK/pids"
}

top_cleanup() {
  local rc=$? p f
  trap - EXIT INT TERM
  if [ ${#ROW_PIDS[@]} -gt 0 ]; then
    for p in "${ROW_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${ROW_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  fi
  # Last resort: anything a row started and did not stop (pids files are
  # emptied once a row has stopped its processes).
  for f in "$ROOT"/*/pids; do
    [ -s "$f" ] || continue
    while read -r p; do kill -KILL "$p" 2>/dev/null || true; done <"$f"
  done
  if [ "$rc" -eq 0 ] && [ "${KEEP:-0}" != 1 ] && [ "$KEEP_LOGS" = 0 ]; then
    rm -rf "$ROOT"
  else
    echo "logs kept in $ROOT" >&2
  fi
  exit "$rc"
}
trap top_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

wait_started() {  # FILE PATTERN PID SECONDS : the pattern, or the process gone
  local deadline=$((SECONDS + $4))
  until grep -q "$2" "$1" 2>/dev/null; do
    kill -0 "$3" 2>/dev/null || return 1
    [ $SECONDS -ge $deadline ] && return 1
    sleep 0.05
  done
}

free_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

res() { printf '%s=%q\n' "$1" "$2" >>"$WORK/result"; }
row_end() {  # STATUS NOTE: a row that did not run to the end
  res status "$1"
  res note "$2"
  exit 0
}

# ---------------------------------------------------------------- servers
# Each sets PORT (and, for the mock, nothing else: /stats is the mock's).
start_listening_server() {  # NAME CMD... : waits for "listening on HOST:PORT"
  local name=$1
  shift
  spawn "$WORK/$name.out" "$WORK/$name.err" "$@"
  local pid=$SPAWNED
  SERVER_PID=$pid
  if ! wait_started "$WORK/$name.out" "listening on" "$pid" 60; then
    row_end failed "$name did not start: $(tail -n 3 "$WORK/$name.err" | tr '\n' ' ')"
  fi
  PORT=$(sed -n 's/.*listening on [0-9.]*:\([0-9]*\).*/\1/p' "$WORK/$name.out" | head -n 1)
}

start_nginx() {  # BURST
  local burst=$1 d="$WORK/nginx" limit pid
  mkdir -p "$d"
  start_listening_server backend "$BIN/tests/mock_api/pacer-mock-api" --port 0 \
    --latency "$LATENCY_MS" --threads 256
  local backend=$PORT
  if [ "$burst" = 0 ]; then
    limit="limit_req zone=api;"
  else
    # nodelay: the burst is served at once, as a real allowance; without it
    # nginx would queue the excess and release it at the rate itself, doing
    # the pacing for the client (0 rejections for any client within the
    # burst, and a server-side delay that the pace would measure).
    limit="limit_req zone=api burst=$burst nodelay;"
  fi
  for _ in 1 2 3 4 5; do
    PORT=$(free_port)
    cat >"$d/nginx.conf" <<CONF
worker_processes 1;
daemon off;
master_process off;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 1024; }
http {
  client_body_temp_path $d/body;
  proxy_temp_path $d/proxy;
  fastcgi_temp_path $d/fastcgi;
  uwsgi_temp_path $d/uwsgi;
  scgi_temp_path $d/scgi;
  access_log off;
  keepalive_timeout 75s;
  keepalive_requests 1000000;
  # \$msec is when the line is written (the request's end); \$msec -
  # \$request_time is its arrival.
  log_format arrivals '\$msec \$request_time \$status \$request_uri';
  limit_req_zone \$binary_remote_addr zone=api:1m rate=20r/s;
  limit_req_status 429;
  # Retry-After: 1 on the 429s only ("add_header ... always" in the location
  # would put it on every 200 too).
  map \$status \$retry_after { 429 1; default ""; }
  upstream backend {
    server 127.0.0.1:$backend;
    keepalive 64;
  }
  server {
    listen 127.0.0.1:$PORT;
    location /v1/ {
      $limit
      access_log $d/access.log arrivals;
      add_header Retry-After \$retry_after always;
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
    location = /ready { return 200 "ready\n"; }
  }
}
CONF
    spawn "$WORK/nginx.out" "$WORK/nginx.err" "$NGINX" -p "$d" -c "$d/nginx.conf" -e "$d/error.log"
    pid=$SPAWNED
    local deadline=$((SECONDS + 20))
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do
      [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/ready")" = 200 ] && return 0
      sleep 0.05
    done
    kill -0 "$pid" 2>/dev/null && row_end failed "nginx did not answer on port $PORT"
    wait "$pid" 2>/dev/null || true
    grep -q "Address already in use" "$d/error.log" "$WORK/nginx.err" 2>/dev/null || \
      row_end failed "nginx did not start: $(tail -n 2 "$d/error.log" "$WORK/nginx.err" 2>/dev/null | tr '\n' ' ')"
  done
  row_end failed "nginx found no free port"
}

# The server did not answer after the run: ends the row, saying how the
# server ended if it did (not in a subshell: it waits for the server).
server_failed() {  # WHAT
  local rc=0 why=""
  if [ -n "${SERVER_PID:-}" ] && ! kill -0 "$SERVER_PID" 2>/dev/null; then
    wait "$SERVER_PID" 2>/dev/null || rc=$?
    if [ "$rc" -gt 128 ]; then
      why=" (the server died during the run: signal $((rc - 128)))"
    else
      why=" (the server exited during the run: status $rc)"
    fi
  fi
  row_end failed "$1 failed$why"
}

# ------------------------------------------------- when the lane learned
# Polls `pacer stats --json` about every 250 ms, one call at a time, until
# the lane first shows a learned limit (see "learned" in the header), then
# writes "EPOCH_MS<TAB>CRITERIA<TAB>LEARNED LIMITS<TAB>CALL_MS" to
# $WORK/learned and stops (EPOCH_MS: when that reply was received; CALL_MS:
# how long that call took, the uncertainty on the broker's side); or stops
# after SECONDS_MAX, or at TERM (ending its current call). Every poll
# appends "EPOCH_MS CALL_MS BYTES states=... pace_learned=... sources=..." to
# $WORK/poll.log (what the reply showed; the row's config has one lane). Run
# in the background in the row's subshell; its only children are one pacer
# or one sleep at a time.
poll_learned() {  # LANE SECONDS_MAX
  local lane=$1 deadline=$((SECONDS + $2)) child="" reply t t_sent hit x states sources
  trap - EXIT
  trap '[ -n "$child" ] && kill "$child" 2>/dev/null; exit 0' TERM INT
  while [ $SECONDS -lt $deadline ]; do
    t_sent=${EPOCHREALTIME//[!0-9]/}
    "$BIN/client/pacer" --timeout 2s stats --json >"$WORK/poll.json" 2>/dev/null &
    child=$!
    wait "$child" || true
    t=${EPOCHREALTIME//[!0-9]/}   # microseconds since the epoch
    reply=$(<"$WORK/poll.json")
    reply=${reply//[[:space:]]/}
    states="" sources=""
    for x in learning confirming learned given_up; do
      [[ $reply == *"\"state\":\"$x\""* ]] && states+="$x,"
    done
    for x in advertised window pace recognized; do
      [[ $reply == *"\"source\":\"$x\""* ]] && sources+="$x,"
    done
    x=false
    [[ $reply == *'"pace_learned":true'* ]] && x=true
    printf '%s %s %s states=%s pace_learned=%s sources=%s\n' "${t:0:13}" "$(((t - t_sent) / 1000))" \
      "${#reply}" "${states%,}" "$x" "${sources%,}" >>"$WORK/poll.log"
    # jq only when the reply looks learned (a fork saved on most polls).
    if [[ $reply == *'"state":"learned"'* || $reply == *'"pace_learned":true'* ||
          $reply == *'"source":"advertised"'* || $reply == *'"source":"recognized"'* ]]; then
      hit=$(jq -r --arg lane "$lane" '
        first(.lanes[]? | select(.api == $lane)) as $l
        | ([ if any(($l.windows // [])[]; .state == "learned") then "window" else empty end,
             if $l.pace_learned == true then "pace" else empty end,
             (($l.learned // [])[] | select(.source == "advertised" or .source == "recognized")
              | .source) ] | unique) as $via
        | select($via | length > 0)
        | "\($via | join("+"))\t\([($l.learned // [])[] | "\(.limit) (\(.source))"] | join(", "))"
        ' "$WORK/poll.json" 2>/dev/null || true)
      if [ -n "$hit" ]; then
        printf '%s\t%s\t%s\n' "${t:0:13}" "$hit" "$(((t - t_sent) / 1000))" >"$WORK/learned"
        cp "$WORK/poll.json" "$WORK/learned.json"
        exit 0
      fi
    fi
    # The next call 250 ms after this one started (at least 20 ms after it
    # ended).
    x=$((250 - (t - t_sent) / 1000))
    [ "$x" -lt 20 ] && x=20
    sleep "0.$(printf '%03d' "$x")" &
    child=$!
    wait "$child" || true
  done
  exit 0
}

# ------------------------------------------------------------------ a row
# The server's algorithm, replayed on the accepted arrival times (ms, sorted,
# one a line) and the moment the lane learned (epoch ms, or "-"): prints
# N SPAN_MS PACE AFTER M BUSIEST OVER LEARNED_S (see the header).
#   fixed    windows of W that start at the first request after the previous
#            one ended (express MemoryStore, Flask-Limiter fixed-window, the
#            mock's --window-start first-request); at most L in each
#   sliding  at most L in any W (Flask-Limiter moving-window, the mock's
#            sliding log): request k no earlier than W after request k - L
#   leaky    nginx limit_req: an excess that drains at L per W and that each
#            accepted request raises by 1; refused if it would exceed B
pace_of() {  # ALGORITHM L W_MS B T_LEARNED_MS < times
  awk -v algo="$1" -v L="$2" -v W="$3" -v B="$4" -v TL="${5:--}" -v tol=2 '
    # When the last of M requests could be accepted, at the earliest, from
    # ref on, after the server accepted t[0..h-1] (minus ref).
    function fastest_from(ref, h, M,    i, k, s, c, tau, prev, e, last, v, x, started, r) {
      if (M <= 0) return 0
      prev = ref
      if (algo == "fixed") {
        s = -1e18; c = 0
        for (i = 0; i < h; i++) { if (t[i] >= s + W) { s = t[i]; c = 0 } c++ }
        for (k = 0; k < M; k++) {
          tau = prev
          if (tau >= s + W) { s = tau; c = 0 }
          else if (c >= L) { tau = s + W; s = tau; c = 0 }
          c++; prev = tau
        }
        return prev - ref
      }
      if (algo == "sliding") {
        for (i = 0; i < h; i++) u[i] = t[i]
        for (k = 0; k < M; k++) {
          tau = prev
          if (h + k >= L && u[h + k - L] + W > tau) tau = u[h + k - L] + W
          u[h + k] = tau; prev = tau
        }
        return prev - ref
      }
      r = L / W; e = 0; started = 0
      for (i = 0; i < h; i++) {
        if (started) { v = e - r * (t[i] - last) + 1; e = v < 0 ? 0 : v } else started = 1
        last = t[i]
      }
      for (k = 0; k < M; k++) {
        tau = prev
        if (started) {
          x = last + (e + 1 - B) / r
          if (x > tau) tau = x
          v = e - r * (tau - last) + 1; e = v < 0 ? 0 : v
        } else started = 1
        last = tau; prev = tau
      }
      return prev - ref
    }
    # Accepted requests the algorithm would have refused (tol ms of slack for
    # where the arrival was stamped): 0 unless the server let through more.
    function over_limit(   i, s, c, n_over, e, v, last, r) {
      n_over = 0
      if (algo == "fixed") {
        s = -1e18; c = 0
        for (i = 0; i < n; i++) { if (t[i] >= s + W - tol) { s = t[i]; c = 0 } if (++c > L) n_over++ }
      } else if (algo == "sliding") {
        for (i = L; i < n; i++) if (t[i] - t[i - L] < W - tol) n_over++
      } else {
        r = L / W; e = 0
        for (i = 1; i < n; i++) {
          v = e - r * (t[i] - t[i - 1] + tol) + 1; e = v < 0 ? 0 : v
          if (e > B + 1e-9) n_over++
        }
      }
      return n_over
    }
    NF { t[n++] = $1 + 0 }
    END {
      if (n == 0) { print "0 0 - - 0 0 0 -"; exit }
      span = t[n - 1] - t[0]
      f = fastest_from(t[0], 0, n)
      pace = span > 0 ? sprintf("%.3f", f / span) : (f == 0 ? "1.000" : "-")
      # After learning: from one window after the lane learned.
      learned = "-"; after = "-"; h = n
      if (TL != "-" && TL != "") {
        learned = sprintf("%.1f", (TL - t[0]) / 1000)
        ref = TL + W; h = 0
        while (h < n && t[h] < ref) h++
        if (n - h > 0 && t[n - 1] > ref)
          after = sprintf("%.3f", fastest_from(ref, h, n - h) / (t[n - 1] - ref))
      }
      j = 0; busiest = 0
      for (i = 0; i < n; i++) {
        while (t[j] <= t[i] - W) j++
        if (i - j + 1 > busiest) busiest = i - j + 1
      }
      printf "%d %.1f %s %s %d %d %d %s\n", n, span, pace, after, n - h, busiest, over_limit(), learned
    }'
}

run_row() {  # IDX
  local i=$1
  WORK="$ROOT/${R_NAME[$i]}-${R_MODE[$i]}"
  mkdir -p "$WORK"
  : >"$WORK/pids"
  : >"$WORK/result"
  FLEET_PIDS=()
  trap row_cleanup EXIT
  trap 'exit 143' TERM INT
  local server=${R_SERVER[$i]} algo=${R_KIND[$i]} L=${R_L[$i]} W=${R_W[$i]} B=${R_B[$i]}
  local jobs f
  jobs=$(row_jobs "$i")
  res jobs "$jobs"

  [ -n "${MISSING[$server]:-}" ] && row_end skipped "${MISSING[$server]}"
  for f in ${R_NEEDS[$i]}; do
    grep -q -- "$f" <<<"$MOCK_HELP" || row_end skipped "mock lacks $f"
  done

  # The server.
  case $server in
    express)
      # shellcheck disable=SC2086
      start_listening_server server node "$CONF/express/server.js" ${R_SARGS[$i]} \
        --port 0 --latency "$LATENCY_MS" ;;
    flask)
      eval "start_listening_server server \"\$PY\" \"\$CONF/flask_app.py\" ${R_SARGS[$i]} --port 0 --latency $LATENCY_MS" ;;
    nginx)
      start_nginx "${R_SARGS[$i]}" ;;
    mock)
      # shellcheck disable=SC2086
      start_listening_server server "$BIN/tests/mock_api/pacer-mock-api" ${R_SARGS[$i]} \
        --port 0 --latency "$LATENCY_MS" --threads 256 ;;
  esac
  local base="http://127.0.0.1:$PORT"

  # The broker and one worker.
  write_config "$base" "${R_LANE[$i]}"
  spawn "$WORK/broker.log" "$WORK/broker.log" "$BIN/broker/pacer-broker"
  if ! wait_started "$WORK/broker.log" '"event":"listening"' "$SPAWNED" 30; then
    local why
    why=$(grep -v '^{' "$WORK/broker.log" | head -n 1)
    [ -z "$why" ] && why=$(tail -n 1 "$WORK/broker.log")
    why=$(sed 's/^pacer-broker: [^ ]*pacer\.toml:[0-9]*: //' <<<"$why")
    if [[ "${R_LANE[$i]}" == *burst* ]]; then
      # e.g. "api.echo.limits: invalid limit '20/s burst 0': invalid duration ..."
      row_end unsupported "config not supported yet: ${why%%\': *}'"
    fi
    row_end failed "broker did not start: ${why:0:120}"
  fi
  spawn "$WORK/worker1.log" "$WORK/worker1.log" "$BIN/worker/pacer-worker" \
    --id worker-1 --concurrency "$CONCURRENCY"
  wait_started "$WORK/worker1.log" '"event":"connected"' "$SPAWNED" 30 || \
    row_end failed "worker did not connect: $(tail -n 1 "$WORK/worker1.log")"

  # The run: the row's jobs (see the header); a deadline of three times the
  # fastest schedule plus a minute. Unknown and as-window lanes: the poller
  # watches for the moment the lane learns, from before the first request.
  echo_jobs "$jobs" >"$WORK/jobs.jsonl"
  local fastest_s timeout group rc=0 t0 t1 poller=""
  fastest_s=$(( $(fastest_ms "$i" "$jobs") / 1000 + 1 ))
  timeout=$((3 * fastest_s + 60))
  if [ "${R_MODE[$i]}" = unknown ] || [ "${R_MODE[$i]}" = as-window ]; then
    poll_learned echo "$((timeout + 30))" &
    poller=$!
    FLEET_PIDS+=("$poller")
    echo "$poller" >>"$WORK/pids"
  fi
  t0=$SECONDS
  group=$("$BIN/client/pacer" submit --file "$WORK/jobs.jsonl") || row_end failed "submit failed"
  "$BIN/client/pacer" wait --group "$group" --timeout-wait "${timeout}s" >"$WORK/wait.out" 2>&1 &
  local wpid=$!
  FLEET_PIDS+=("$wpid")
  echo "$wpid" >>"$WORK/pids"
  wait "$wpid" || rc=$?
  t1=$SECONDS
  res wall_s "$((t1 - t0))"
  [ "$rc" = 124 ] && res note "timed out after ${timeout}s"
  # The poller stops now if it has not (the run is over), before the
  # server's side is read; both are then off the list.
  [ -n "$poller" ] && stop_pids "$poller"
  local rest=() p
  for p in "${FLEET_PIDS[@]}"; do [ "$p" != "$poller" ] && [ "$p" != "$wpid" ] && rest+=("$p"); done
  FLEET_PIDS=("${rest[@]}")
  local t_learned=- learned_via="" learned_what="" learned_call=""
  if [ -s "$WORK/learned" ]; then
    IFS=$'\t' read -r t_learned learned_via learned_what learned_call <"$WORK/learned"
    res learned_via "$learned_via"
    res learned_what "$learned_what"
    res learned_call "$learned_call"
  fi

  # What the server saw.
  local srv_rej times="$WORK/accepted.txt" st
  case $server in
    express | flask)
      curl -sf "$base/stats" >"$WORK/stats.json" || server_failed "GET /stats"
      curl -sf "$base/log" >"$WORK/log.txt" || server_failed "GET /log"
      srv_rej=$(jq .rejected "$WORK/stats.json")
      awk '$2 == 200 { print $1 }' "$WORK/log.txt" | sort -n >"$times"
      res srv_other "$(awk '$2 != 200 && $2 != 429' "$WORK/log.txt" | wc -l)" ;;
    nginx)
      # Lines are written when a request ends: after the run, all are there.
      awk '{ printf "%.3f %s\n", ($1 - $2) * 1000, $3 }' "$WORK/nginx/access.log" >"$WORK/log.txt"
      srv_rej=$(awk '$2 == 429' "$WORK/log.txt" | wc -l)
      awk '$2 == 200 { print $1 }' "$WORK/log.txt" | sort -n >"$times"
      res srv_other "$(awk '$2 != 200 && $2 != 429' "$WORK/log.txt" | wc -l)"
      res nginx_limited "$(grep -c 'limiting requests' "$WORK/nginx/error.log" || true)" ;;
    mock)
      curl -sf "$base/stats" >"$WORK/stats.json" || server_failed "GET /stats"
      srv_rej=$(jq .rejected "$WORK/stats.json")
      st=$(jq -r '"\(.accepted) \(.first_accept_ms) \(.last_accept_ms) \(.max_in_any_interval) \(.max_attempted_in_any_interval // "-") \(.max_in_window)"' "$WORK/stats.json")
      res mock_stats "$st" ;;
  esac
  res srv_rej "$srv_rej"

  # What pacer saw: stop everything (the server's side is read), then read
  # the broker's database.
  stop_pids "${FLEET_PIDS[@]}"
  FLEET_PIDS=()
  : >"$WORK/pids"
  local db="$WORK/pacer.db"
  res succeeded "$(sqlite3 "$db" "select count(*) from jobs where state = 'succeeded'")"
  res dead "$(sqlite3 "$db" "select count(*) from jobs where state = 'dead'")"
  res pacer_rej "$(sqlite3 "$db" "select count(*) from attempts where status in (429, 503)")"
  res pacer_other "$(sqlite3 "$db" "select count(*) from attempts where status is null or status not in (200, 429, 503)")"
  sqlite3 "$db" "select started_at from attempts where status between 200 and 299 order by started_at" >"$WORK/pacer_accepted.txt"

  # The measures.
  local srv pac pace after m
  pac=$(pace_of "$algo" "$L" "$W" "$B" "$t_learned" <"$WORK/pacer_accepted.txt")
  res pacer_measure "$pac"
  if [ "$server" = mock ]; then
    local acc first last anyint inwin over
    read -r acc first last anyint _ inwin <<<"$st"
    if [ "$acc" -gt 0 ] && [ "$first" != null ]; then
      # The mock gives N, the first and the last arrival: the same pace; then
      # "after" from pacer's starts, "busiest" and "over" from its maxima
      # (its busiest own window, or interval of W, against L; not for leaky).
      pace=$(awk -v n="$acc" -v s="$(echo "$last - $first" | bc -l)" -v algo="$algo" -v L="$L" -v W="$W" -v B="$B" '
        function ceil(x) { return (x == int(x)) ? x : int(x) + 1 }
        BEGIN {
          f = (algo == "leaky") ? (n - 1 - B) * W / L : (ceil(n / L) - 1) * W
          if (f < 0) f = 0
          if (s > 0) printf "%.3f", f / s; else print (f == 0 ? "1.000" : "-")
        }')
      local learned
      read -r _ _ _ after m _ _ learned <<<"$pac"
      over=$([ "$algo" = leaky ] && echo - || echo $((inwin > L ? inwin - L : 0)))
      srv="$acc $(echo "$last - $first" | bc -l) $pace $after $m $anyint $over $learned"
    else
      srv="0 0 - - 0 0 - -"
    fi
  else
    srv=$(pace_of "$algo" "$L" "$W" "$B" "$t_learned" <"$times")
  fi
  res server_measure "$srv"
  res status "done"
}

# -------------------------------------------------------------- the table
print_row() {  # IDX
  local i=$1 jobs="" status="" note="" succeeded=0 dead=0 srv_rej=- pacer_rej=- server_measure="" pacer_measure="" \
    srv_other=0 pacer_other=0 wall_s="" mock_stats="" nginx_limited="" learned_via="" learned_what="" \
    learned_call=""
  local f="$ROOT/${R_NAME[$i]}-${R_MODE[$i]}/result"
  # shellcheck disable=SC1090
  [ -f "$f" ] && source "$f"
  local L=${R_L[$i]} mode=${R_MODE[$i]}
  if [ "$status" != "done" ]; then
    [ "$status" = skipped ] || [ "$status" = unsupported ] || KEEP_LOGS=1
    printf '%-17s %-9s %-10s %s: %s\n' "${R_NAME[$i]}" "$mode" "${R_LIMTXT[$i]}" "${status:-failed}" \
      "${note:-no result (logs in ${f%/result})}"
    return
  fi
  local pace after busiest over ppace learned _
  read -r _ _ pace after _ busiest over learned <<<"$server_measure"
  read -r _ _ ppace _ <<<"$pacer_measure"
  [ "$mode" = unknown ] || after=-
  [ "$mode" = unknown ] || [ "$mode" = as-window ] || learned=-
  [ -n "$learned" ] && [ "$learned" != - ] && learned="${learned}s"
  [ -z "$learned" ] && learned=-
  local verdict
  if [ "$succeeded" != "$jobs" ]; then
    verdict="FAIL"
    KEEP_LOGS=1
  else
    case $mode in
      known | as-window)
        verdict=$(awk -v p="$pace" -v r="$srv_rej" 'BEGIN { print (p != "-" && p >= 0.97 && r == 0) ? "ok" : "MISS" }') ;;
      unknown)
        verdict=$(awk -v p="$after" -v r="$srv_rej" -v L="$L" 'BEGIN { print (p != "-" && p >= 0.95 && r <= L) ? "ok" : "MISS" }') ;;
      over)
        verdict=$([ "$srv_rej" -gt 0 ] && echo "ok(rej)" || echo "MISS(no rej)") ;;
    esac
  fi
  local checks="pacer-side pace $ppace"
  [ "$mode" = unknown ] && [ "${R_SERVER[$i]}" = mock ] && checks="$checks (learned, after: pacer-side)"
  [ -n "$learned_via" ] && checks="$checks; learned by $learned_via: $learned_what (poll ${learned_call} ms)"
  checks="$checks; busiest/W $busiest"
  if [ "${R_SERVER[$i]}" = mock ]; then
    local att
    att=$(awk '{ print $5 }' <<<"$mock_stats")
    [ "$att" != - ] && checks="$checks; attempted/W $att"
  fi
  [ -n "$nginx_limited" ] && checks="$checks; nginx error.log limited $nginx_limited"
  [ "$srv_other" != 0 ] && checks="$checks; server other statuses $srv_other"
  [ "$pacer_other" != 0 ] && checks="$checks; pacer other outcomes $pacer_other"
  [ "$succeeded" != "$jobs" ] && checks="$checks; dead $dead"
  [ -n "$note" ] && checks="$checks; $note"
  [ "$over" != 0 ] && [ "$over" != - ] && checks="$checks; SERVER OVER-ADMITTED $over"
  awk -v p="$pace" 'BEGIN { exit !(p != "-" && p > 1.0005) }' && checks="$checks; PACE > 1"
  printf '%-17s %-9s %-10s %11s %5s %5s %6s %7s %6s  %-7s %5ss  %s\n' "${R_NAME[$i]}" "$mode" "${R_LIMTXT[$i]}" \
    "$succeeded/$jobs" "$srv_rej" "$pacer_rej" "$pace" "$learned" "$after" "$verdict" "$wall_s" "$checks"
}

echo "conformance: pacer against real rate limiters on loopback, ${LATENCY_MS} ms latency, 1 worker x $CONCURRENCY"
echo "rows: ${#ROWS[@]}, $PARALLEL at once, longest first; binaries: $BIN; logs: $ROOT"
start=$SECONDS
# Longest rows first, at most $PARALLEL at once: the 1 min rows start at once
# and the short ones cycle through the other slots, so the table takes about
# as long as the longest row without loading the two cores with every row's
# processes at once.
mapfile -t QUEUE < <(for i in "${ROWS[@]}"; do
  echo "$(fastest_ms "$i" "$(row_jobs "$i")") $i"
done | sort -k1,1nr -k2,2n -s | awk '{ print $2 }')
declare -A ROW_OF=()
while [ ${#QUEUE[@]} -gt 0 ] || [ ${#ROW_PIDS[@]} -gt 0 ]; do
  while [ ${#QUEUE[@]} -gt 0 ] && [ ${#ROW_PIDS[@]} -lt "$PARALLEL" ]; do
    ( run_row "${QUEUE[0]}" ) &
    ROW_PIDS+=($!)
    ROW_OF[$!]=${QUEUE[0]}
    QUEUE=("${QUEUE[@]:1}")
  done
  done_pid=""
  wait -n -p done_pid "${ROW_PIDS[@]}" || true
  [ -z "$done_pid" ] && break
  rest=()
  for p in "${ROW_PIDS[@]}"; do [ "$p" != "$done_pid" ] && rest+=("$p"); done
  ROW_PIDS=("${rest[@]}")
  printf '  [%4ds] %-26s done (%d running, %d waiting)\n' $((SECONDS - start)) \
    "$(row_id "${ROW_OF[$done_pid]}")" "${#ROW_PIDS[@]}" "${#QUEUE[@]}" >&2
done

echo
printf '%-17s %-9s %-10s %11s %5s %5s %6s %7s %6s  %-7s %6s  %s\n' row lane limit jobs rej p.rej pace learned after target wall checks
for i in "${ROWS[@]}"; do print_row "$i"; done
echo
echo "host load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) cores); wall time $((SECONDS - start)) s"
echo "pace = fastest allowed time / actual time between the first and last accepted request at the server;"
echo "learned = s from the first accepted request until the lane first showed a learned limit (polled every ~250 ms);"
echo "after = the pace from one window after that on (unknown lanes); rej = refused by the server (its own count),"
echo "p.rej = 429/503 in pacer's attempts. Targets: known pace >= 0.97 and 0 rej; unknown after >= 0.95 and rej <= L."
