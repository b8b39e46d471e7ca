#include "broker/window_learner.h"

#include <algorithm>
#include <cmath>
#include <iterator>

namespace pacer {

namespace {

// Windows people configure. A candidate between the bounds that is one of
// these is tried first: it is most likely the server's exact window.
constexpr Millis kRoundWindows[] = {
    100,       200,       250,       500,        1'000,      2'000,
    3'000,     5'000,     10'000,    15'000,     20'000,     30'000,
    60'000,    120'000,   300'000,   600'000,    900'000,    1'800'000,
    3'600'000, 7'200'000, 21'600'000, 43'200'000, 86'400'000};

}  // namespace

void WindowLearner::counted(Millis opener, Millis start) {
  if (failed_) return;
  // Still counted where the window should have ended: not this model.
  if (hi_ != kUnknown && start - opener >= hi_) failed_ = true;
  lo_ = std::max(lo_, start - opener - kJitterMs);
  check();
}

void WindowLearner::fresh(Millis previous_opener, Millis start) {
  if (failed_) return;
  const Millis bound = start - previous_opener + kJitterMs;
  if (bound > 0) hi_ = std::min(hi_, bound);
  check();
}

void WindowLearner::reported(Millis opener, Millis answered, Millis reset_at,
                             Millis precision) {
  if (failed_) return;
  // The window the opener opened ends at its arrival + W, after its
  // start; servers report that end or later (give or take the precision):
  // rounded up, truncated plus a second (Flask-Limiter), or when the
  // newest count leaves a moving window. So a report bounds W from above
  // only; one below what the server was seen to do is ignored.
  (void)answered;
  const Millis hi = reset_at + precision - opener + kJitterMs;
  if (hi <= lo_) return;
  if (hi > 0) hi_ = std::min(hi_, hi);
  check();
}

void WindowLearner::confirm() {
  if (known()) ++confirmations_;
}

void WindowLearner::check() {
  // Bounds that cross: the server's windows do not start at a request.
  if (hi_ != kUnknown && lo_ >= hi_) failed_ = true;
}

Millis WindowLearner::tolerance() const {
  return std::max<Millis>(
      kMinToleranceMs,
      static_cast<Millis>(kRelativeTolerance * static_cast<double>(hi_)));
}

bool WindowLearner::known() const {
  if (failed_ || hi_ == kUnknown) return false;
  return hi_ - lo_ <= tolerance();
}

Millis WindowLearner::probe_at(Millis opener) const {
  if (hi_ == kUnknown) return kUnknown;
  if (known()) return opener + hi_;
  const Millis width = hi_ - lo_;
  // Just above a round window: most likely that window exactly.
  const bool round = std::any_of(
      std::begin(kRoundWindows), std::end(kRoundWindows), [&](Millis w) {
        return w > lo_ && hi_ >= w && hi_ - w <= 2 * kJitterMs;
      });
  Millis candidate;
  if (width > 4 * tolerance() && !round) {
    // The largest round window between the bounds goes first: a probe
    // above the truth costs a wait, one below it a refusal, and the
    // reported reset puts the upper bound just above the window (by its
    // precision). Without one, halve the bounds.
    candidate = lo_ + width / 2;
    for (Millis w : kRoundWindows)
      if (w > lo_ + kJitterMs && w < hi_) candidate = std::max(candidate, w);
    Millis best = kUnknown;
    for (Millis w : kRoundWindows)
      if (w > lo_ + kJitterMs && w < hi_) best = w;
    if (best != kUnknown) candidate = best;
  } else {
    // Close, or just above a round window: the upper bound is the answer
    // unless the window is shorter still. A refusal just under it settles
    // that in one probe.
    candidate = hi_ - tolerance() + kJitterMs;
  }
  return opener + std::max<Millis>(candidate, 1);
}

}  // namespace pacer
