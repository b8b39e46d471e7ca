// Limiter: the admission decision of one lane. Holds one sliding log of
// (start time, units) per configured limit and admits a start only if, for
// every limit, the units started in the last (window + margin) plus the new
// start stay within the limit. This gives the guarantee a token bucket does
// not: no interval of length W ever sees more than L units started.
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

  struct Usage {
    LimitSpec spec;
    std::int64_t used = 0;  // units counted in the current window
    std::string learned;    // key of a learned limit, empty if configured
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
    std::string key;    // learned limits only
    Millis span = 0;    // window + margin
    Millis bucket = 0;  // rounding granularity, 0 = exact
    std::deque<Entry> entries;
    std::int64_t sum = 0;
  };
  static std::int64_t charge(const Log& log, std::int64_t cost,
                             std::int64_t requests) {
    return log.spec.counts_requests() ? requests : cost;
  }
  static void evict(Log& log, Millis now);
  static Log make_log(const LimitSpec& spec, std::optional<Millis> margin);
  static void add(Log& log, std::int64_t units, Millis t);

  std::vector<LimitSpec> specs_;
  std::vector<Log> logs_;
};

}  // namespace pacer
