#!/usr/bin/env bash
# The quota feedback loop per header dialect: a backlog through one lane
# against a mock API enforcing LIMIT per WINDOW (fixed windows), once with the
# limit configured ("known") and once with no limit configured ("unknown":
# the lane learns it from the headers, or by AIMD from rejections alone).
# Reports per run: the pace over wall time (the fastest schedule the limit
# allows for the accepted requests against the time they took: a window the
# lane enters late costs here), utilization of the limit in the windows
# after the first (what they carried against what they allowed; a window
# entered late still fills, so this alone hides lateness), the
# rejections at the mock, and, for unknown limits, the time to converge: from
# the first accepted request to the start of the first upstream window from
# which on every full window carried >= 85% of the limit.
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
  # The mock's windows are aligned to when it started, as are first and
  # last accept. The windows after the first (learning) one carried
  # (accepted - what the first one took) of the (windows - 1) * LIMIT they
  # allowed; the first one's count comes from the samples.
  local wms=$((WINDOW * 1000)) w_first w_last in_first
  w_first=$(echo "$first / $wms" | bc)
  w_last=$(echo "$last / $wms" | bc)
  in_first=$(awk -v end=$(( (w_first + 1) * wms )) '$1 < end { a = $2 } END { print a + 0 }' "$samples")
  if [ "$w_last" -gt "$w_first" ]; then
    util=$(echo "100 * ($accepted - $in_first) / (($w_last - $w_first) * $LIMIT)" | bc -l)
  else
    util=0
  fi
  # Converged: the start of the first of the upstream's windows from which
  # on every full window before the backlog ran out carried >= 85% of
  # LIMIT (windows are aligned to the mock's start, as the samples are).
  converge=$(awk -v w=$wms -v lim="$LIMIT" -v first="$first" -v last="$last" '
    { k = int($1 / w); at_end[k] = $2 }
    END {
      kf = int(first / w); kl = int(last / w)
      prev = 0; conv = -1
      for (k = kf; k < kl; k++) {
        if (!(k in at_end)) { conv = -1; continue }
        n = at_end[k] - prev; prev = at_end[k]
        if (n >= 0.85 * lim) { if (conv < 0) conv = k } else conv = -1
      }
      if (conv < 0) print "n/a"
      else { t = (conv * w - first) / 1000; if (t < 0) t = 0; printf "%.1f", t }
    }' "$samples")
  # Pace over wall time: the fastest the limit allows the accepted
  # requests to span ((ceil(N/L) - 1) windows: the last window's burst
  # starts that many windows after the first) against the time they took.
  # A window the lane enters late costs time here, although it still fills.
  local pace
  pace=$(echo "$first $last $accepted $LIMIT $wms" | awk '{
    n = $3; l = $4; w = $5; spent = $2 - $1
    fastest = (int((n + l - 1) / l) - 1) * w
    if (spent <= 0) print 100; else printf "%.1f", 100 * fastest / spent }')
  printf '%-17s %-8s %6.1f%% %6.1f%% %5d   %s\n' "$dialect" "$mode" "$pace" "$util" "$rejected" \
    "$([ "$mode" = unknown ] && echo "${converge} s" || echo -)"
  fleet_cleanup
  trap - EXIT
  FLEET_PIDS=()
}

printf 'limit %d per %d s (fixed windows), %d jobs per run, 2 workers x 8\n' "$LIMIT" "$WINDOW" "$JOBS"
printf '%-17s %-8s %7s %7s %5s   %s\n' dialect limit pace util rej converge
for d in "${DIALECTS[@]}"; do
  run_one "$d" known
  run_one "$d" unknown
done
