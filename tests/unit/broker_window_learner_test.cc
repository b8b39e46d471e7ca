// WindowLearner against scripted servers under explicit time: windows that
// open at a request (express-rate-limit, Flask-Limiter) with resets rounded
// up or truncated to whole seconds, several window lengths, and windows
// aligned to a clock, which it must give up on rather than mislearn.
#include <doctest/doctest.h>

#include <cmath>

#include "broker/window_learner.h"

namespace pacer {
namespace {

enum class Rounding { kUp, kDown };

Millis round_s(Millis t, Rounding r) {
  return r == Rounding::kUp ? (t + 999) / 1000 * 1000 : t / 1000 * 1000;
}

struct Outcome {
  int probes = 0;
  int refusals = 0;
};

// A server whose window opens at the first request after the previous one
// ended, probed as the lane does: each window opens with the request the
// learner scheduled, answered `rtt` later with the window's reset.
Outcome learn_opener_windows(WindowLearner& w, Millis window, Rounding r,
                             Millis first, Millis rtt = 50) {
  Outcome o;
  Millis opener = first;  // the current window opened at its arrival
  Millis end = opener + window;
  w.reported(opener, opener + rtt, round_s(end, r), 1000);
  for (int i = 0; i < 40 && !w.trusted() && !w.failed(); ++i) {
    const Millis probe = w.probe_at(opener);
    REQUIRE(probe != WindowLearner::kUnknown);
    ++o.probes;
    if (probe >= end) {
      const bool predicted = w.known();
      w.fresh(opener, probe);
      if (predicted) w.confirm();
      opener = probe;
      end = opener + window;
      w.reported(opener, opener + rtt, round_s(end, r), 1000);
    } else {
      ++o.refusals;
      w.counted(opener, probe);
    }
  }
  return o;
}

TEST_CASE("a window that opens at a request is learned from whole-second "
          "resets, either rounding") {
  for (Millis window : {1000, 1500, 10'000, 60'000}) {
    for (Rounding r : {Rounding::kUp, Rounding::kDown}) {
      for (Millis first : {10'000, 10'300, 10'999}) {
        CAPTURE(window);
        CAPTURE(r == Rounding::kUp);
        CAPTURE(first);
        WindowLearner w;
        Outcome o = learn_opener_windows(w, window, r, first);
        CHECK_FALSE(w.failed());
        CHECK(w.trusted());
        // Never shorter than the truth, and within the tolerance of it.
        CHECK(w.hi() >= window);
        CHECK(w.hi() <=
              window + std::max<Millis>(
                           WindowLearner::kMinToleranceMs,
                           static_cast<Millis>(
                               WindowLearner::kRelativeTolerance * window)) +
                  WindowLearner::kJitterMs);
        CHECK(o.refusals <= 5);
        CHECK(o.probes <= 14);
      }
    }
  }
}

TEST_CASE("windows aligned to a clock are given up on, never mislearned") {
  const Millis window = 1000;
  for (Millis first : {10'100, 10'500, 10'900}) {
    CAPTURE(first);
    WindowLearner w;
    Millis opener = first;
    auto end_of = [&](Millis t) { return (t / window + 1) * window; };
    w.reported(opener, opener + 50, end_of(opener), 1000);
    int refusals_after_known = 0;
    for (int i = 0; i < 40 && !w.failed() && !w.trusted(); ++i) {
      const Millis probe = w.probe_at(opener);
      if (probe >= end_of(opener)) {
        w.fresh(opener, probe);
        if (w.known()) w.confirm();
        opener = probe;
        w.reported(opener, opener + 50, end_of(opener), 1000);
      } else {
        if (w.known()) ++refusals_after_known;
        w.counted(opener, probe);
      }
    }
    // Either it gave up, or what it learned is safe (not shorter than the
    // window); and a refusal where it predicted the end ends the learning.
    CHECK((w.failed() || w.hi() >= window));
    CHECK(refusals_after_known <= 1);
  }
}

TEST_CASE("counts within a window raise the lower bound; bounds that cross "
          "give up") {
  WindowLearner w;
  w.counted(1000, 1800);  // still counted 800 ms after the opener
  CHECK(w.lo() == 800 - WindowLearner::kJitterMs);
  w.fresh(1000, 2100);  // a fresh window 1100 ms after it
  CHECK(w.hi() == 1100 + WindowLearner::kJitterMs);
  CHECK_FALSE(w.known());
  w.counted(5000, 6200);  // 1200 ms: more than the upper bound allowed
  CHECK(w.failed());
  CHECK_FALSE(w.known());
}

}  // namespace
}  // namespace pacer
