#!/usr/bin/env bash
# The quota feedback loop per header dialect: a backlog through one lane
# against a mock API enforcing LIMIT per WINDOW (fixed windows), once with the
# limit configured ("known") and once with no limit configured ("unknown":
# the lane learns it from the headers, or by AIMD from rejections alone).
# Reports per run: utilization of the limit after the first window, the
# rejections at the mock, and, for unknown limits, the time to converge: the
# start of the first WINDOW-long stretch, from which on every such stretch
# ran at >= 85% of the limit.
#   bench/feedback.sh [LIMIT] [WINDOW_S] [WINDOWS] [DIALECT...]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/fleet-lib.sh
LIMIT=${1:-100}
WINDOW=${2:-5}
WINDOWS=${3:-12}
shift $(( $# < 3 ? $# : 3 ))
DIALECTS=("$@")
[ ${#DIALECTS[@]} -eq 0 ] && DIALECTS=(ietf-6 ietf-7 ietf-8 x-ratelimit github openai anthropic retry-after-date none)
JOBS=$(( LIMIT * WINDOWS ))

run_one() {  # DIALECT MODE(known|unknown)
  local dialect=$1 mode=$2 api
  fleet_init
  start_mock --limit "$LIMIT/${WINDOW}s" --algorithm fixed --dialect "$dialect"
  api="concurrency = 16"
  [ "$mode" = known ] && api="$api
limits = [\"$LIMIT/${WINDOW}s\"]"
  [ "$dialect" = none ] && api="$api
statuses = { rate_limited = [503] }"
  write_config "http://127.0.0.1:$MOCK_PORT" "$api"
  start_broker
  start_workers 2 8
  echo_jobs "$JOBS" >"$WORK/jobs.jsonl"
  local group start samples="$WORK/samples"
  group=$("$BIN/client/pacer" submit --file "$WORK/jobs.jsonl")
  : >"$samples"
  # Sample the mock's accepted count every 250 ms until the run is done.
  while :; do
    local st
    st=$(curl -s "http://127.0.0.1:$MOCK_PORT/stats")
    echo "$(jq .uptime_ms <<<"$st") $(jq .accepted <<<"$st")" >>"$samples"
    [ "$(jq .accepted <<<"$st")" -ge "$JOBS" ] && break
    sleep 0.25
  done
  "$BIN/client/pacer" wait --group "$group" --timeout-wait 30min >/dev/null
  local stats first last accepted rejected util converge
  stats=$(curl -s "http://127.0.0.1:$MOCK_PORT/stats")
  first=$(jq .first_accept_ms <<<"$stats")
  last=$(jq .last_accept_ms <<<"$stats")
  accepted=$(jq .accepted <<<"$stats")
  rejected=$(jq .rejected <<<"$stats")
  # After the first window: (accepted - LIMIT) over (last - first - WINDOW).
  util=$(echo "100 * ($accepted - $LIMIT) / (($last - $first) / 1000 - $WINDOW) / ($LIMIT / $WINDOW)" | bc -l)
  # Converged: from this sample on, every later WINDOW-long stretch that
  # ends before the backlog ran out accepted >= 85% of LIMIT.
  converge=$(awk -v w=$((WINDOW * 1000)) -v lim="$LIMIT" -v first="$first" -v last="$last" '
    { t[NR] = $1; a[NR] = $2 }
    END {
      conv = -1
      for (i = NR; i >= 1; i--) {
        if (t[i] < first) break
        # the sample a window later
        j = i; while (j <= NR && t[j] < t[i] + w) j++
        if (j > NR || t[j] > last) continue
        if (a[j] - a[i] >= 0.85 * lim) conv = t[i]; else break
      }
      if (conv < 0) print "n/a"; else printf "%.1f", (conv - first) / 1000
    }' "$samples")
  printf '%-17s %-8s %6.1f%% %5d   %s\n' "$dialect" "$mode" "$util" "$rejected" \
    "$([ "$mode" = unknown ] && echo "${converge} s" || echo -)"
  fleet_cleanup
  trap - EXIT
  FLEET_PIDS=()
}

printf 'limit %d per %d s (fixed windows), %d jobs per run, 2 workers x 8\n' "$LIMIT" "$WINDOW" "$JOBS"
printf '%-17s %-8s %7s %5s   %s\n' dialect limit util rej converge
for d in "${DIALECTS[@]}"; do
  run_one "$d" known
  run_one "$d" unknown
done
