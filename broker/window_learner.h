// WindowLearner: the length of a server's rate-limit window, learned from
// what the server does, for a counter that reports a limit, what remains
// and a reset, but no window (X-RateLimit-* without a policy: Flask-Limiter,
// GitHub, most gateways).
//
// The model it tests is the one most servers implement: a window opens at
// the first request that arrives after the previous one ended (express-rate-
// limit's and Python `limits`' fixed windows, Redis INCR + EXPIRE) or counts
// the requests of the last W (a moving window). In both, a request's answer
// bounds W: W is more than the time from the window's opener to any later
// request the same window still counted or refused, and at most the time
// from the opener to the first request a fresh window counted. The reported
// reset, in whole seconds rounded either way, bounds it from above. Times are start
// times (when the broker sent the request): arrival jitter is what the
// lane's margin absorbs, and a small allowance keeps bounds from crossing.
//
// Until the bounds are within kRelativeTolerance of each other the lane
// probes (one request) at candidates between them: each refused candidate
// raises the lower bound, each accepted one lowers the upper bound; wide
// bounds are halved (a round window such as 1 s or 1 min in their middle
// half goes first), close ones tested just under the upper bound. Then
// the upper bound is the window (never shorter than the truth, so the
// lane's sliding log stays exact), confirmed by kConfirmations windows in a
// row that opened where predicted before the lane trusts it without probes.
// Bounds that cross mean the server does not follow the model (windows
// aligned to a clock): the learner gives up and the lane waits for the
// server's reset, as it would without it.
//
// Pure: time is passed in. Not thread-safe; owned by the lane's QuotaState.
#pragma once

#include <cstdint>

#include "common/clock.h"

namespace pacer {

class WindowLearner {
 public:
  static constexpr double kRelativeTolerance = 0.02;
  static constexpr Millis kMinToleranceMs = 5;
  // Start times stand for arrival times: bounds allow this much either way.
  static constexpr Millis kJitterMs = 2;
  static constexpr int kConfirmations = 2;
  static constexpr Millis kUnknown = INT64_MAX;

  // A request started at `start` was counted (or refused for want of
  // quota) in the window whose first known request started at `opener`.
  void counted(Millis opener, Millis start);
  // A fresh window counted a request started at `start`; the previous
  // window's opener started at `previous_opener`.
  void fresh(Millis previous_opener, Millis start);
  // The window opened by a request started at `opener` (answered at
  // `answered`) reports a reset at `reset_at` (local time), exact to within
  // `precision` either way: an upper bound (servers report the end or
  // later). A report the bounds contradict is ignored.
  void reported(Millis opener, Millis answered, Millis reset_at,
                Millis precision);
  // A probe sent at the predicted end of a window found a fresh one.
  void confirm();

  // The bounds are close enough: the window is hi().
  bool known() const;
  // Known and confirmed: the lane may trust it without probing.
  bool trusted() const { return known() && confirmations_ >= kConfirmations; }
  bool failed() const { return failed_; }
  // When the window opened by a request started at `opener` ends, at the
  // latest (known), or the next candidate to probe (learning).
  Millis probe_at(Millis opener) const;
  Millis lo() const { return lo_; }
  Millis hi() const { return hi_; }

 private:
  void check();
  Millis tolerance() const;

  Millis lo_ = 0;         // W > lo_
  Millis hi_ = kUnknown;  // W <= hi_
  int confirmations_ = 0;
  bool failed_ = false;
};

}  // namespace pacer
