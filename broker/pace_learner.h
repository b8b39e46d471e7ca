// PaceLearner: the pace at which a server that reports no counters accepts
// every request, learned from its accepts and refusals (nginx `limit_req`,
// gateways that answer 429 or 503 and nothing more). The lane then runs as
// a leaky bucket (a GCRA, see Limiter) of the learned spacing and burst.
//
// A leaky bucket of rate r and burst b accepts, from empty, b + 1 requests
// at once and then one per 1/r; run at a spacing s < 1/r, it accepts
// about b / (1 - s r) + 1 requests before its first refusal, at s >= 1/r
// all of them. So the learner runs epochs at a candidate spacing: an epoch
// that sees a refusal of one of its own starts proves the spacing too short,
// one that ran long enough without proves it long enough. It starts at the
// first answer's round trip (at least 50 ms) and halves the spacing after
// each clean epoch
// until a refusal, then halves the bounds until they are within
// kRelativeTolerance. Two refused epochs at different spacings with runs
// of accepts before their refusals give the bucket's rate and burst
// directly (the two equations above); the learner tries that rate next.
// An epoch only counts as clean after max(kEpochMs, kEpochStarts, three
// times the longest run a refused epoch accepted, up to kMaxEpochMs of
// starts) starts, so a burst that
// absorbs a too-short spacing for a while is not taken for a right one; a
// refusal before the epoch's first accept judges nothing (the server had
// no room at all: a window not over, a pause too short).
// The result is the upper bound: never faster than what was seen to work.
//
// Once learned, a refusal lengthens the spacing by the tolerance (a bucket
// with a burst takes a spacing slightly too short for a long while before
// it refuses, longer than any epoch; or arrivals bunched), and each quiet
// kQuietMs takes 1% off again, down to the learned spacing but not to one
// refused in the last kRefusedMemoryMs;
// kRelearnRefusals refusals within kRelearnWindowMs mean the server
// changed, and learning resumes above the old spacing.
//
// Pure: time is passed in. Not thread-safe; owned by the lane's QuotaState.
#pragma once

#include <cstdint>
#include <optional>

#include "common/clock.h"
#include "common/limit_spec.h"

namespace pacer {

class PaceLearner {
 public:
  static constexpr double kRelativeTolerance = 0.02;
  static constexpr Millis kEpochMs = 1000;
  static constexpr Millis kMaxEpochMs = 10'000;
  static constexpr std::int64_t kEpochStarts = 30;
  static constexpr Millis kMinSpacingUs = 100;            // 10,000/s
  static constexpr Millis kMaxSpacingUs = 60'000'000;     // 1/min
  static constexpr int kRelearnRefusals = 3;
  static constexpr Millis kRelearnWindowMs = 30'000;
  // Once learned, each quiet stretch this long takes 1% off a spacing that
  // refusals lengthened, back towards the best one an epoch proved.
  static constexpr Millis kQuietMs = 30'000;
  static constexpr Millis kRefusedMemoryMs = 600'000;
  static constexpr std::int64_t kFirstSpacingUs = 50'000;

  // The answer to a start made at `start`, at `now`: accepted, or refused
  // for rate (a 429, or a 503 on a lane learning its rate).
  void on_accept(Millis start, Millis now);
  void on_refuse(Millis start, Millis now);

  // The limit the lane should run at; nullopt until the first answer.
  std::optional<LimitSpec> limit() const;
  // limit() changed since the last call.
  bool take_changed();
  bool learned() const { return learned_; }
  // Spacing in microseconds (0 before the first answer), and the bounds.
  std::int64_t spacing_us() const { return spacing_us_; }
  std::int64_t burst() const { return burst_; }

  // Sets the spacing and burst in force (from the database, or a rate
  // recognised at `now`), learned or to learn from; answers to starts made
  // before `now` judge nothing.
  void restore(std::int64_t spacing_us, std::int64_t burst, bool learned,
               Millis now);

 private:
  void begin_epoch(std::int64_t spacing_us, Millis now);
  void settle();
  void estimate_from_runs();

  std::int64_t spacing_us_ = 0;  // the candidate in force
  std::int64_t lo_us_ = 0;       // refused at this spacing: 1/r > lo
  std::int64_t hi_us_ = 0;       // clean at this spacing (0: none yet)
  std::int64_t burst_ = 0;
  std::int64_t best_us_ = 0;  // the spacing learning settled on
  // The last spacing refused once learned, and when.
  std::int64_t refused_us_ = 0;
  Millis refused_at_ = 0;
  bool learned_ = false;
  bool changed_ = false;

  // The epoch at spacing_us_: since when, and the accepts of its starts.
  Millis epoch_start_ = 0;
  std::int64_t epoch_accepts_ = 0;
  std::int64_t longest_run_ = 0;
  // The last two refused epochs: spacing and accepts before the refusal.
  struct Run {
    std::int64_t spacing_us = 0;
    std::int64_t accepts = 0;
  };
  Run runs_[2];
  int refusals_learned_ = 0;
  Millis first_refusal_learned_ = 0;
};

}  // namespace pacer
