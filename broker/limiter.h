// Limiter: the admission decision of one lane. Holds one log per limit and
// admits a start only if every log allows it:
//   - a window limit ("L/W") keeps a sliding log of (start time, units) and
//     allows a start only if the units started in the last (W + margin) plus
//     the new start stay within L. This gives the guarantee a token bucket
//     does not: no interval of length W ever sees more than L units started.
//   - a leaky-bucket limit ("L/W burst B", nginx's limit_req) keeps the
//     theoretical arrival time of a GCRA: starts run at L/W on average and
//     at most B units ahead of that pace; the margin is kept in reserve
//     against the bucket, so with B = 0 starts are spaced W/L + margin apart.
//
// Logs of long windows are bucketed (times rounded *later*, which only delays
// expiry and so stays safe) so memory stays bounded at ~kMaxEntries per limit.
// Time is passed in, never read: tests drive it with explicit values.
// Not thread-safe; owned by the broker loop.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/limit_spec.h"

namespace pacer {

class Limiter {
 public:
  static constexpr std::size_t kMaxEntries = 2000;

  // `margin`: extra time added to every window to absorb network jitter
  // between dispatch and arrival; empty means default_margin(window).
  explicit Limiter(std::vector<LimitSpec> limits,
                   std::optional<Millis> margin = std::nullopt);

  static Millis default_margin(Millis window_ms);
  // The margin a limit gets when none is configured: default_margin of its
  // window; for a leaky bucket, of its spacing (window / amount), or a
  // quarter of its burst's time (up to 50 ms) when larger, since a bucket
  // with a burst keeps the margin in reserve without losing rate.
  static Millis default_margin(const LimitSpec& spec);

  // Whether a start of `cost` units may happen at `now`. A start counts
  // `requests` against request limits (1 for a job; a batch sent with
  // cost = "per_item" counts one per member) and `cost` against unit limits.
  bool admits(std::int64_t cost, Millis now, std::int64_t requests = 1);
  // The earliest time >= now at which it may start (now if it may now).
  // kNever when it can never fit (larger than a limit).
  Millis next_admit(std::int64_t cost, Millis now, std::int64_t requests = 1);
  // Records a start. Callers record only what they admitted (or what they
  // replay from the attempts table after a restart).
  void record(std::int64_t cost, Millis t, std::int64_t requests = 1);
  // The most one start may be charged and still fit every limit: units
  // against the unit limits, requests against the request limits (INT64_MAX
  // when there is no such limit).
  std::int64_t max_units() const;
  std::int64_t max_requests() const;
  // Moves the starts recorded at `from` (the latest ones) to `to` >= from.
  // The broker decides at the start of a loop turn but the jobs leave after
  // the commit; the log must hold when they really left, or a slow commit
  // would let the next window's starts arrive too close behind these.
  void restamp(Millis from, Millis to);
  // Moves one start recorded at `from` to `to` > from: it may have reached
  // the server that late (its answer took longer than the fastest one),
  // and the window it opened or joined there ends that much later. Window
  // limits only (a leaky bucket keeps its margin for that).
  void move_later(Millis from, Millis to, std::int64_t cost,
                  std::int64_t requests = 1);

  // Learned limits (DESIGN §5), identified by a key, live beside the
  // configured ones. Updating one keeps its log; a new one starts with
  // `seed_units` recorded at `now` (what the server said was already used).
  void upsert_learned(const std::string& key, const LimitSpec& spec,
                      std::optional<Millis> margin, std::int64_t seed_units,
                      Millis now);
  // Drops learned limits whose key is not in `keys`.
  void retain_learned(const std::vector<std::string>& keys);
  // Corrects the unit limits by `delta` units for a start made at `t`
  // (the response stated a different cost than the job's estimate).
  void correct(std::int64_t delta, Millis t, Millis now);

  // The effective margin of every limit is its base margin (configured, or
  // the default) times `scale` >= 1, capped at max(base, window / 10) (the
  // spacing for a leaky bucket): arrivals that bunch up on the way to the
  // server widen it (DESIGN §5, docs/architecture.md).
  void set_margin_scale(double scale);
  double margin_scale() const { return margin_scale_; }

  struct Usage {
    LimitSpec spec;
    // Units counted in the current window; for a leaky bucket, its level
    // (at most burst + 1).
    std::int64_t used = 0;
    std::string learned;  // key of a learned limit, empty if configured
    Millis margin_ms = 0;  // the effective margin
  };
  std::vector<Usage> usage(Millis now);
  const std::vector<LimitSpec>& limits() const { return specs_; }
  Millis longest_span() const;

  static constexpr Millis kNever = INT64_MAX;

 private:
  struct Entry {
    Millis t;
    std::int64_t units;
  };
  struct Log {
    LimitSpec spec;
    std::string key;           // learned limits only
    Millis base_margin = 0;    // configured or default
    Millis margin = 0;         // effective: base_margin scaled
    Millis span = 0;           // window + margin
    Millis bucket = 0;         // rounding granularity, 0 = exact
    std::deque<Entry> entries;
    std::int64_t sum = 0;
    // A leaky bucket (spec.burst set): microseconds per unit, the GCRA's
    // theoretical arrival time, and what restamp needs to move the latest
    // starts: the arrival time before them, their time and units.
    std::int64_t interval_us = 0;
    std::int64_t tat_us = 0;
    std::int64_t tat_before_us = 0;
    Millis last_t = -1;
    std::int64_t last_units = 0;
  };
  static std::int64_t charge(const Log& log, std::int64_t cost,
                             std::int64_t requests) {
    return log.spec.counts_requests() ? requests : cost;
  }
  static void evict(Log& log, Millis now);
  Log make_log(const LimitSpec& spec, std::optional<Millis> margin) const;
  void apply_margin(Log& log) const;
  static void add(Log& log, std::int64_t units, Millis t);
  // Earliest time (>= now) a start charging `units` fits this log.
  static Millis log_admit(const Log& log, std::int64_t units, Millis now);

  std::vector<LimitSpec> specs_;
  std::vector<Log> logs_;
  double margin_scale_ = 1.0;
};

}  // namespace pacer
