// Unit tests for the mock upstream's limiters, interval statistics and
// endpoint logic. All time is explicit (fake clocks), so nothing sleeps.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "tests/mock_api/interval_max.h"
#include "tests/mock_api/limit_spec.h"
#include "tests/mock_api/mock_api.h"
#include "tests/mock_api/rate_limiter.h"

namespace pacer::mock {
namespace {

constexpr int64_t kMs = 1'000'000;
constexpr int64_t kSecond = 1'000 * kMs;

LimitSpec Spec(int64_t limit, int64_t window_ns) {
  LimitSpec spec;
  spec.limit = limit;
  spec.window_ns = window_ns;
  spec.text = std::to_string(limit) + "/custom";
  return spec;
}

RateLimiter Make(Algorithm algorithm, int64_t limit, int64_t window_ns,
                 int64_t origin_ns = 0) {
  return RateLimiter(algorithm, Spec(limit, window_ns), origin_ns);
}

// Random but reproducible arrival times: bursts and gaps around W.
std::vector<int64_t> Arrivals(uint64_t seed, int count, int64_t max_gap_ns) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> gap(0, max_gap_ns);
  std::bernoulli_distribution burst(0.3);
  std::vector<int64_t> times;
  int64_t t = 0;
  for (int i = 0; i < count; ++i) {
    if (!burst(rng)) t += gap(rng);
    times.push_back(t);
  }
  return times;
}

int64_t BruteForceMaxInInterval(const std::vector<int64_t>& times,
                                int64_t window_ns) {
  int64_t best = 0;
  for (int64_t end : times) {
    const int64_t count = std::count_if(
        times.begin(), times.end(),
        [&](int64_t t) { return t > end - window_ns && t <= end; });
    best = std::max(best, count);
  }
  return best;
}

// A rejection's retry_after must be exact: one ns earlier is still
// rejected, and at that instant the request is admitted.
void CheckRetryAfterExact(const RateLimiter& limiter, int64_t now,
                          int64_t retry_after_ns) {
  REQUIRE(retry_after_ns > 0);
  RateLimiter too_early = limiter;
  CHECK_FALSE(too_early.TryAdmit(now + retry_after_ns - 1).admitted);
  RateLimiter on_time = limiter;
  CHECK(on_time.TryAdmit(now + retry_after_ns).admitted);
}

TEST_CASE("ParseLimitSpec accepts the documented units") {
  struct Case {
    const char* text;
    int64_t limit;
    int64_t window_ns;
  };
  const Case cases[] = {
      {"50/s", 50, kSecond},
      {"600/min", 600, 60 * kSecond},
      {"10/100ms", 10, 100 * kMs},
      {"1000/h", 1000, 3600 * kSecond},
      {"5/2s", 5, 2 * kSecond},
      {"1/sec", 1, kSecond},
      {"1/second", 1, kSecond},
      {"1/m", 1, 60 * kSecond},
      {"1/minute", 1, 60 * kSecond},
      {"1/hour", 1, 3600 * kSecond},
      {"1/d", 1, 86400 * kSecond},
      {"3/day", 3, 86400 * kSecond},
      {"2/1.5s", 2, 1500 * kMs},
      {" 7 / 3 min ", 7, 180 * kSecond},
      {"4/MS", 4, kMs},
  };
  for (const Case& c : cases) {
    CAPTURE(c.text);
    std::string error;
    const std::optional<LimitSpec> spec = ParseLimitSpec(c.text, &error);
    REQUIRE(spec.has_value());
    CHECK(spec->limit == c.limit);
    CHECK(spec->window_ns == c.window_ns);
    CHECK(error.empty());
  }
  CHECK(ParseLimitSpec(" 50/s ", nullptr)->text == "50/s");
}

TEST_CASE("ParseLimitSpec rejects malformed specs with one-line reasons") {
  const char* bad[] = {"",
                       "50",
                       "/s",
                       "x/s",
                       "0/s",
                       "-1/s",
                       "5/",
                       "5/2",
                       "5/xs",
                       "5/s/2",
                       "5/0s",
                       "5/.s",
                       "1.5/s",
                       "5/-2s",
                       "5/2 lightyears",
                       "99999999999999999/s",
                       "5/1000d"};
  for (const char* text : bad) {
    CAPTURE(text);
    std::string error;
    CHECK_FALSE(ParseLimitSpec(text, &error).has_value());
    CHECK_FALSE(error.empty());
    CHECK(error.find('\n') == std::string::npos);
  }
}

TEST_CASE("ParseAlgorithm round-trips every name") {
  for (Algorithm a : {Algorithm::kFixed, Algorithm::kSliding,
                      Algorithm::kTokenBucket, Algorithm::kLeaky}) {
    CHECK(ParseAlgorithm(AlgorithmName(a)) == a);
  }
  CHECK_FALSE(ParseAlgorithm("token_bucket").has_value());
  CHECK_FALSE(ParseAlgorithm("").has_value());
}

TEST_CASE("Retry-After rounds up to whole units and is at least 1") {
  CHECK(RetryAfterSeconds(0) == 1);
  CHECK(RetryAfterSeconds(1) == 1);
  CHECK(RetryAfterSeconds(kSecond) == 1);
  CHECK(RetryAfterSeconds(kSecond + 1) == 2);
  CHECK(RetryAfterSeconds(59 * kSecond + 500 * kMs) == 60);
  CHECK(RetryAfterMillis(0) == 1);
  CHECK(RetryAfterMillis(1) == 1);
  CHECK(RetryAfterMillis(kMs) == 1);
  CHECK(RetryAfterMillis(kMs + 1) == 2);
  CHECK(RetryAfterMillis(1500 * kMs) == 1500);
}

TEST_CASE("unlimited admits everything") {
  RateLimiter limiter(Algorithm::kSliding, std::nullopt, 0);
  for (int i = 0; i < 10'000; ++i) CHECK(limiter.TryAdmit(0).admitted);
}

TEST_CASE("fixed admits N per window, then waits for the next window") {
  RateLimiter limiter = Make(Algorithm::kFixed, 3, kSecond);
  CHECK(limiter.TryAdmit(0).admitted);
  CHECK(limiter.TryAdmit(1 * kMs).admitted);
  CHECK(limiter.TryAdmit(2 * kMs).admitted);
  Admission a = limiter.TryAdmit(400 * kMs);
  CHECK_FALSE(a.admitted);
  CHECK(a.retry_after_ns == 600 * kMs);
  CheckRetryAfterExact(limiter, 400 * kMs, a.retry_after_ns);
  CHECK_FALSE(limiter.TryAdmit(kSecond - 1).admitted);
  for (int i = 0; i < 3; ++i) CHECK(limiter.TryAdmit(kSecond).admitted);
  a = limiter.TryAdmit(kSecond);
  CHECK_FALSE(a.admitted);
  CHECK(a.retry_after_ns == kSecond);
  // An idle gap of many windows starts a fresh one.
  CHECK(limiter.TryAdmit(7 * kSecond + 5).admitted);
}

TEST_CASE("fixed windows are aligned to the origin, not to the first hit") {
  const int64_t origin = 250 * kMs;
  RateLimiter limiter = Make(Algorithm::kFixed, 1, kSecond, origin);
  CHECK(limiter.TryAdmit(1200 * kMs).admitted);  // window [250ms, 1250ms)
  const Admission a = limiter.TryAdmit(1240 * kMs);
  CHECK_FALSE(a.admitted);
  CHECK(a.retry_after_ns == 10 * kMs);
  CHECK(limiter.TryAdmit(1250 * kMs).admitted);
}

TEST_CASE("fixed lets 2N through across a boundary; the tracker sees it") {
  RateLimiter limiter = Make(Algorithm::kFixed, 4, kSecond);
  IntervalMaxTracker any(kSecond);
  FixedWindowMaxTracker fixed(0, kSecond);
  for (int64_t t : {kSecond - 1, kSecond}) {
    for (int i = 0; i < 4; ++i) {
      REQUIRE(limiter.TryAdmit(t).admitted);
      any.Record(t);
      fixed.Record(t);
    }
  }
  CHECK(fixed.max() == 4);
  CHECK(any.max() == 8);
}

TEST_CASE("sliding admits at most N in any interval (t-W, t]") {
  RateLimiter limiter = Make(Algorithm::kSliding, 3, kSecond);
  CHECK(limiter.TryAdmit(0).admitted);
  CHECK(limiter.TryAdmit(100 * kMs).admitted);
  CHECK(limiter.TryAdmit(200 * kMs).admitted);
  Admission a = limiter.TryAdmit(500 * kMs);
  CHECK_FALSE(a.admitted);
  CHECK(a.retry_after_ns == 500 * kMs);
  CheckRetryAfterExact(limiter, 500 * kMs, a.retry_after_ns);
  // Exactly W after the first admission it has left the interval.
  CHECK(limiter.TryAdmit(kSecond).admitted);
  a = limiter.TryAdmit(1050 * kMs);
  CHECK_FALSE(a.admitted);
  CHECK(a.retry_after_ns == 50 * kMs);
}

TEST_CASE("sliding never exceeds N in any interval on random traffic") {
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    CAPTURE(seed);
    const int64_t window = 100 * kMs;
    const int64_t limit = 1 + static_cast<int64_t>(seed % 7);
    RateLimiter limiter = Make(Algorithm::kSliding, limit, window);
    IntervalMaxTracker tracker(window);
    std::vector<int64_t> admitted;
    for (int64_t t : Arrivals(seed, 2'000, 30 * kMs)) {
      const RateLimiter before = limiter;
      const Admission a = limiter.TryAdmit(t);
      if (a.admitted) {
        admitted.push_back(t);
        tracker.Record(t);
      } else {
        CheckRetryAfterExact(before, t, a.retry_after_ns);
      }
    }
    CHECK(tracker.max() <= limit);
    CHECK(tracker.max() == BruteForceMaxInInterval(admitted, window));
    // It is also work-conserving: busy traffic reaches the limit.
    CHECK(tracker.max() == limit);
  }
}

TEST_CASE("token bucket starts full, then refills at N/W") {
  RateLimiter limiter = Make(Algorithm::kTokenBucket, 5, kSecond);
  for (int i = 0; i < 5; ++i) CHECK(limiter.TryAdmit(0).admitted);
  Admission a = limiter.TryAdmit(0);
  CHECK_FALSE(a.admitted);
  CHECK(a.retry_after_ns == 200 * kMs);
  CheckRetryAfterExact(limiter, 0, a.retry_after_ns);
  CHECK_FALSE(limiter.TryAdmit(200 * kMs - 1).admitted);
  CHECK(limiter.TryAdmit(200 * kMs).admitted);
  a = limiter.TryAdmit(250 * kMs);
  CHECK_FALSE(a.admitted);
  CHECK(a.retry_after_ns == 150 * kMs);
  // Refill is capped at capacity however long the bucket idles.
  int admitted = 0;
  while (limiter.TryAdmit(100 * kSecond).admitted) ++admitted;
  CHECK(admitted == 5);
}

TEST_CASE("token bucket sustains exactly N/W under constant pressure") {
  RateLimiter limiter = Make(Algorithm::kTokenBucket, 5, kSecond);
  int admitted = 0;
  for (int64_t t = 0; t <= 10 * kSecond; t += kMs) {
    while (limiter.TryAdmit(t).admitted) ++admitted;
  }
  // 5 up front plus one every 200 ms for 10 s.
  CHECK(admitted == 5 + 50);
}

TEST_CASE("token bucket handles rates that do not divide the window") {
  RateLimiter limiter = Make(Algorithm::kTokenBucket, 3, kSecond);
  for (int i = 0; i < 3; ++i) REQUIRE(limiter.TryAdmit(0).admitted);
  const Admission a = limiter.TryAdmit(0);
  CHECK_FALSE(a.admitted);
  CHECK(a.retry_after_ns == 333'333'334);  // ceil(1e9 / 3)
  CheckRetryAfterExact(limiter, 0, a.retry_after_ns);
}

TEST_CASE("leaky bucket fills to N, then drains at N/W") {
  RateLimiter limiter = Make(Algorithm::kLeaky, 5, kSecond);
  for (int i = 0; i < 5; ++i) CHECK(limiter.TryAdmit(0).admitted);
  Admission a = limiter.TryAdmit(0);
  CHECK_FALSE(a.admitted);
  CHECK(a.retry_after_ns == 200 * kMs);
  CheckRetryAfterExact(limiter, 0, a.retry_after_ns);
  CHECK(limiter.TryAdmit(200 * kMs).admitted);
  CHECK_FALSE(limiter.TryAdmit(200 * kMs).admitted);
  // Fully drained after W of silence: N fit again, not more.
  int admitted = 0;
  while (limiter.TryAdmit(2 * kSecond).admitted) ++admitted;
  CHECK(admitted == 5);
}

TEST_CASE("leaky bucket and token bucket agree on every decision") {
  // As meters they are the same algorithm seen from opposite sides; any
  // divergence means one of them has an off-by-one.
  for (uint64_t seed = 1; seed <= 10; ++seed) {
    CAPTURE(seed);
    RateLimiter leaky = Make(Algorithm::kLeaky, 4, 100 * kMs);
    RateLimiter bucket = Make(Algorithm::kTokenBucket, 4, 100 * kMs);
    for (int64_t t : Arrivals(seed, 2'000, 40 * kMs)) {
      const RateLimiter before = leaky;
      const Admission l = leaky.TryAdmit(t);
      const Admission b = bucket.TryAdmit(t);
      REQUIRE(l.admitted == b.admitted);
      if (!l.admitted) {
        CHECK(l.retry_after_ns == b.retry_after_ns);
        CheckRetryAfterExact(before, t, l.retry_after_ns);
      }
    }
  }
}

TEST_CASE("bucket limiters allow at most 2N in any interval W") {
  for (Algorithm algorithm : {Algorithm::kTokenBucket, Algorithm::kLeaky}) {
    RateLimiter limiter = Make(algorithm, 10, kSecond);
    IntervalMaxTracker tracker(kSecond);
    for (int64_t t : Arrivals(7, 20'000, 5 * kMs)) {
      if (limiter.TryAdmit(t).admitted) tracker.Record(t);
    }
    CHECK(tracker.max() > 10);
    CHECK(tracker.max() <= 20);
  }
}

TEST_CASE("limiters treat a clock that runs backwards as standing still") {
  for (Algorithm algorithm : {Algorithm::kFixed, Algorithm::kSliding,
                              Algorithm::kTokenBucket, Algorithm::kLeaky}) {
    CAPTURE(AlgorithmName(algorithm));
    RateLimiter limiter = Make(algorithm, 2, kSecond);
    CHECK(limiter.TryAdmit(5 * kSecond).admitted);
    CHECK(limiter.TryAdmit(5 * kSecond).admitted);
    CHECK_FALSE(limiter.TryAdmit(0).admitted);
  }
}

TEST_CASE("Reset restores a fresh limiter at the new origin") {
  RateLimiter limiter = Make(Algorithm::kFixed, 1, kSecond);
  CHECK(limiter.TryAdmit(0).admitted);
  CHECK_FALSE(limiter.TryAdmit(10 * kMs).admitted);
  limiter.Reset(300 * kMs);
  CHECK(limiter.TryAdmit(300 * kMs).admitted);
  const Admission a = limiter.TryAdmit(1200 * kMs);
  CHECK_FALSE(a.admitted);
  CHECK(a.retry_after_ns == 100 * kMs);  // window [300ms, 1300ms)
}

// As CheckRetryAfterExact, for a request of `cost` units.
void CheckCostRetryAfterExact(const RateLimiter& limiter, int64_t now,
                              int64_t cost, int64_t retry_after_ns) {
  REQUIRE(retry_after_ns > 0);
  RateLimiter too_early = limiter;
  CHECK_FALSE(too_early.TryAdmit(now + retry_after_ns - 1, cost).admitted);
  RateLimiter on_time = limiter;
  CHECK(on_time.TryAdmit(now + retry_after_ns, cost).admitted);
}

TEST_CASE("costs above one use up that many units") {
  for (Algorithm algorithm : {Algorithm::kFixed, Algorithm::kSliding,
                              Algorithm::kTokenBucket, Algorithm::kLeaky}) {
    CAPTURE(AlgorithmName(algorithm));
    RateLimiter limiter = Make(algorithm, 10, kSecond);
    CHECK(limiter.TryAdmit(0, 4).admitted);
    CHECK(limiter.TryAdmit(0, 6).admitted);
    const RateLimiter before = limiter;
    const Admission a = limiter.TryAdmit(100 * kMs, 3);
    CHECK_FALSE(a.admitted);
    CHECK_FALSE(a.exceeds_limit);
    CheckCostRetryAfterExact(before, 100 * kMs, 3, a.retry_after_ns);
    // A free request always fits; one larger than the limit never does.
    CHECK(limiter.TryAdmit(100 * kMs, 0).admitted);
    const Admission never = limiter.TryAdmit(100 * kSecond, 11);
    CHECK_FALSE(never.admitted);
    CHECK(never.exceeds_limit);
  }
}

TEST_CASE("sliding waits until enough weight has left the window") {
  RateLimiter limiter = Make(Algorithm::kSliding, 10, kSecond);
  CHECK(limiter.TryAdmit(0, 3).admitted);
  CHECK(limiter.TryAdmit(200 * kMs, 3).admitted);
  CHECK(limiter.TryAdmit(400 * kMs, 4).admitted);
  const RateLimiter before = limiter;
  // 5 units need the first two admissions gone: at 1200 ms.
  const Admission a = limiter.TryAdmit(500 * kMs, 5);
  CHECK_FALSE(a.admitted);
  CHECK(a.retry_after_ns == 700 * kMs);
  CheckCostRetryAfterExact(before, 500 * kMs, 5, a.retry_after_ns);
}

TEST_CASE("Check decides without consuming; Consume charges") {
  RateLimiter limiter = Make(Algorithm::kFixed, 2, kSecond);
  limiter.Advance(0);
  CHECK(limiter.Check(2).admitted);
  CHECK(limiter.Check(2).admitted);
  CHECK(limiter.quota()->remaining == 2);
  limiter.Consume(2);
  CHECK(limiter.quota()->remaining == 0);
  CHECK_FALSE(limiter.Check(1).admitted);
}

TEST_CASE("quota reports limit, remaining and reset per algorithm") {
  CHECK_FALSE(RateLimiter(Algorithm::kFixed, std::nullopt, 0).quota());

  // Fixed: the reset is the end of the current window.
  RateLimiter fixed = Make(Algorithm::kFixed, 3, kSecond, 100 * kMs);
  fixed.TryAdmit(350 * kMs);
  Quota q = *fixed.quota();
  CHECK(q.limit == 3);
  CHECK(q.window_ns == kSecond);
  CHECK(q.remaining == 2);
  CHECK(q.reset_ns == 750 * kMs);
  fixed.TryAdmit(1100 * kMs);  // the next window
  q = *fixed.quota();
  CHECK(q.remaining == 2);
  CHECK(q.reset_ns == kSecond);

  // Sliding: the reset is when the oldest counted admission leaves.
  RateLimiter sliding = Make(Algorithm::kSliding, 3, kSecond);
  sliding.TryAdmit(0);
  sliding.TryAdmit(300 * kMs);
  q = *sliding.quota();
  CHECK(q.remaining == 1);
  CHECK(q.reset_ns == 700 * kMs);
  sliding.Advance(1200 * kMs);  // 0 has left, 300 ms has not
  q = *sliding.quota();
  CHECK(q.remaining == 2);
  CHECK(q.reset_ns == 100 * kMs);
  sliding.Advance(1300 * kMs);
  CHECK(sliding.quota()->reset_ns == 0);
  CHECK(sliding.quota()->remaining == 3);

  // Token bucket: the reset is when it is full again.
  RateLimiter bucket = Make(Algorithm::kTokenBucket, 4, kSecond);
  CHECK(bucket.quota()->remaining == 4);
  CHECK(bucket.quota()->reset_ns == 0);
  bucket.TryAdmit(0, 3);
  q = *bucket.quota();
  CHECK(q.remaining == 1);
  CHECK(q.reset_ns == 750 * kMs);
  bucket.Advance(100 * kMs);  // 0.4 tokens back: still 1 whole one
  q = *bucket.quota();
  CHECK(q.remaining == 1);
  CHECK(q.reset_ns == 650 * kMs);

  // Leaky bucket: the reset is when it has drained empty.
  RateLimiter leaky = Make(Algorithm::kLeaky, 4, kSecond);
  CHECK(leaky.quota()->remaining == 4);
  leaky.TryAdmit(0, 3);
  q = *leaky.quota();
  CHECK(q.remaining == 1);
  CHECK(q.reset_ns == 750 * kMs);
  leaky.Advance(100 * kMs);
  CHECK(leaky.quota()->remaining == 1);
  CHECK(leaky.quota()->reset_ns == 650 * kMs);
}

// ---- fixed windows that open at the first request ---------------------------

RateLimiter FirstRequest(int64_t limit, int64_t window_ns,
                         int64_t origin_ns = 0) {
  return RateLimiter(
      Algorithm::kFixed, Spec(limit, window_ns), origin_ns,
      {.window_start = WindowStart::kFirstRequest, .burst = std::nullopt});
}

TEST_CASE("ParseWindowStart round-trips every name") {
  for (WindowStart w : {WindowStart::kAligned, WindowStart::kFirstRequest}) {
    CHECK(ParseWindowStart(WindowStartName(w)) == w);
  }
  CHECK(WindowStartName(WindowStart::kFirstRequest) == "first-request");
  CHECK_FALSE(ParseWindowStart("first_request").has_value());
  CHECK_FALSE(ParseWindowStart("").has_value());
}

TEST_CASE("first-request: a window opens at the first request, not before") {
  RateLimiter limiter = FirstRequest(3, kSecond);
  // Nothing has arrived: no window, nothing counted, nothing to reset.
  limiter.Advance(300 * kMs);
  CHECK(limiter.quota()->remaining == 3);
  CHECK(limiter.quota()->reset_ns == 0);

  CHECK(limiter.TryAdmit(400 * kMs).admitted);  // opens [400ms, 1400ms)
  CHECK(limiter.quota()->remaining == 2);
  CHECK(limiter.quota()->reset_ns == kSecond);
  // Later requests in it share its end.
  CHECK(limiter.TryAdmit(900 * kMs).admitted);
  CHECK(limiter.quota()->reset_ns == 500 * kMs);
  CHECK(limiter.TryAdmit(1000 * kMs).admitted);
  CHECK(limiter.quota()->remaining == 0);
  CHECK(limiter.quota()->reset_ns == 400 * kMs);
  const Admission a = limiter.TryAdmit(1100 * kMs);
  CHECK_FALSE(a.admitted);
  CHECK(a.retry_after_ns == 300 * kMs);
  CheckRetryAfterExact(limiter, 1100 * kMs, a.retry_after_ns);

  // The window has ended and nothing opens one: nothing is counted.
  limiter.Advance(1400 * kMs);
  CHECK(limiter.quota()->remaining == 3);
  CHECK(limiter.quota()->reset_ns == 0);
  limiter.Advance(2000 * kMs);
  CHECK(limiter.quota()->reset_ns == 0);

  // The next window starts at the next request: [2050ms, 3050ms), neither
  // on the old grid ([2400ms, 3400ms)) nor on the origin's ([2s, 3s)).
  CHECK(limiter.TryAdmit(2050 * kMs).admitted);
  CHECK(limiter.quota()->reset_ns == kSecond);
  CHECK(limiter.TryAdmit(2050 * kMs).admitted);
  CHECK(limiter.TryAdmit(2999 * kMs).admitted);
  CHECK_FALSE(limiter.TryAdmit(3000 * kMs).admitted);
  const Admission b = limiter.TryAdmit(3049 * kMs);
  CHECK_FALSE(b.admitted);
  CHECK(b.retry_after_ns == 1 * kMs);
  CHECK(limiter.TryAdmit(3050 * kMs).admitted);  // opens [3050ms, 4050ms)
  CHECK(limiter.quota()->reset_ns == kSecond);
}

TEST_CASE("first-request: free requests open no window; Reset closes it") {
  RateLimiter limiter = FirstRequest(2, kSecond);
  CHECK(limiter.TryAdmit(100 * kMs, 0).admitted);
  CHECK(limiter.quota()->reset_ns == 0);
  CHECK(limiter.TryAdmit(600 * kMs).admitted);  // opens [600ms, 1600ms)
  CHECK(limiter.quota()->reset_ns == kSecond);
  limiter.Reset(700 * kMs);
  CHECK(limiter.quota()->remaining == 2);
  CHECK(limiter.quota()->reset_ns == 0);
  CHECK(limiter.TryAdmit(900 * kMs).admitted);
  CHECK(limiter.quota()->reset_ns == kSecond);
}

TEST_CASE("first-request matches a model of express-rate-limit's store") {
  // The store's rule: a key whose window has ended (or that has none) gets
  // a fresh window [t, t + W) at its next counted hit; at most N per window.
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    CAPTURE(seed);
    const int64_t window = 100 * kMs;
    const int64_t limit = 1 + static_cast<int64_t>(seed % 5);
    RateLimiter limiter = FirstRequest(limit, window);
    bool open = false;
    int64_t window_end = 0;
    int64_t count = 0;
    int64_t refused = 0;
    int64_t windows = 0;
    for (int64_t t : Arrivals(seed, 2'000, 60 * kMs)) {
      if (open && t >= window_end) open = false;
      const bool expect = !open || count < limit;
      const RateLimiter before = limiter;
      const Admission a = limiter.TryAdmit(t);
      REQUIRE(a.admitted == expect);
      if (!a.admitted) {
        ++refused;
        CHECK(a.retry_after_ns == window_end - t);
        CheckRetryAfterExact(before, t, a.retry_after_ns);
        continue;
      }
      if (!open) {
        open = true;
        window_end = t + window;
        count = 0;
        ++windows;
      }
      ++count;
      CHECK(limiter.quota()->reset_ns == window_end - t);
      CHECK(limiter.quota()->remaining == limit - count);
    }
    // The traffic exercised both outcomes and many windows.
    CHECK(refused > 0);
    CHECK(windows > 100);
  }
}

// ---- leaky bucket with an nginx limit_req burst
// ------------------------------

RateLimiter Leaky(int64_t limit, int64_t window_ns, int64_t burst) {
  return RateLimiter(Algorithm::kLeaky, Spec(limit, window_ns), 0,
                     {.window_start = WindowStart::kAligned, .burst = burst});
}

TEST_CASE("nginx burst=0: one request per 1/R, nothing more") {
  RateLimiter limiter = Leaky(20, kSecond, 0);  // rate=20r/s burst=0
  CHECK(limiter.TryAdmit(0).admitted);
  Admission a = limiter.TryAdmit(0);
  CHECK_FALSE(a.admitted);
  CHECK(a.retry_after_ns == 50 * kMs);
  a = limiter.TryAdmit(49 * kMs);
  CHECK_FALSE(a.admitted);
  CHECK(a.retry_after_ns == 1 * kMs);
  CheckRetryAfterExact(limiter, 49 * kMs, a.retry_after_ns);
  CHECK(limiter.TryAdmit(50 * kMs).admitted);
  // Refusals do not move the timer: only the admission at 50 ms counts.
  for (int64_t t = 51; t < 100; t += 7) {
    CHECK_FALSE(limiter.TryAdmit(t * kMs).admitted);
  }
  CHECK(limiter.TryAdmit(100 * kMs).admitted);
  // Idle time saves nothing up: still one at a time.
  CHECK(limiter.TryAdmit(10 * kSecond).admitted);
  CHECK_FALSE(limiter.TryAdmit(10 * kSecond).admitted);
}

TEST_CASE("nginx burst=10: 11 at once after idle, then one per 1/R") {
  RateLimiter limiter = Leaky(20, kSecond, 10);
  for (int i = 0; i < 11; ++i) CHECK(limiter.TryAdmit(0).admitted);
  Quota q = *limiter.quota();
  CHECK(q.limit == 20);
  CHECK(q.remaining == 0);
  CHECK(q.reset_ns == 550 * kMs);  // 11 requests drain at 20/s
  const Admission a = limiter.TryAdmit(0);
  CHECK_FALSE(a.admitted);
  CHECK(a.retry_after_ns == 50 * kMs);
  CheckRetryAfterExact(limiter, 0, a.retry_after_ns);
  CHECK_FALSE(limiter.TryAdmit(49 * kMs).admitted);
  CHECK(limiter.TryAdmit(50 * kMs).admitted);
  CHECK_FALSE(limiter.TryAdmit(50 * kMs).admitted);
  CHECK_FALSE(limiter.TryAdmit(99 * kMs).admitted);
  CHECK(limiter.TryAdmit(100 * kMs).admitted);
  // After 300 ms more, 6 have drained: 6 fit, the 7th does not.
  int admitted = 0;
  while (limiter.TryAdmit(400 * kMs).admitted) ++admitted;
  CHECK(admitted == 6);
  // Fully drained: 11 again, not 20.
  admitted = 0;
  while (limiter.TryAdmit(2 * kSecond).admitted) ++admitted;
  CHECK(admitted == 11);
  CHECK(limiter.quota()->reset_ns == 550 * kMs);
}

TEST_CASE("a burst may exceed the rate; remaining counts what fits now") {
  RateLimiter limiter = Leaky(2, kSecond, 5);
  CHECK(limiter.quota()->remaining == 6);
  CHECK(limiter.TryAdmit(0, 6).admitted);
  CHECK(limiter.quota()->reset_ns == 3 * kSecond);
  const Admission never = limiter.TryAdmit(10 * kSecond, 7);
  CHECK_FALSE(never.admitted);
  CHECK(never.exceeds_limit);
}

TEST_CASE("burst matches nginx limit_req's rule on random traffic") {
  // nginx, in units of requests: excess = max(prev - R * elapsed + 1, 0)
  // with elapsed since the last accepted request; refuse when
  // excess > burst, otherwise store excess and the time. Kept here in
  // units of 1/W of a request so it stays exact.
  for (int64_t burst : {0, 1, 3, 10}) {
    for (uint64_t seed = 1; seed <= 5; ++seed) {
      CAPTURE(burst);
      CAPTURE(seed);
      const int64_t rate = 20;
      const int64_t window = kSecond;
      RateLimiter limiter = Leaky(rate, window, burst);
      __extension__ typedef __int128 Wide;
      Wide excess = 0;
      int64_t last = 0;
      bool fresh = true;  // nginx admits a key's first request outright
      int64_t refused = 0;
      for (int64_t t : Arrivals(seed, 3'000, 80 * kMs)) {
        Wide next = excess - Wide{rate} * (t - last) + window;
        if (next < 0) next = 0;
        const bool expect = fresh || next <= Wide{burst} * window;
        const RateLimiter before = limiter;
        const Admission a = limiter.TryAdmit(t);
        REQUIRE(a.admitted == expect);
        if (a.admitted) {
          excess = fresh ? 0 : next;
          last = t;
          fresh = false;
        } else {
          ++refused;
          CheckRetryAfterExact(before, t, a.retry_after_ns);
        }
      }
      CHECK(refused > 0);
      CHECK(refused < 3'000);
    }
  }
}

TEST_CASE("without a burst the leaky bucket keeps capacity N") {
  RateLimiter defaulted = Make(Algorithm::kLeaky, 5, kSecond);
  RateLimiter explicit_burst = Leaky(5, kSecond, 4);
  for (int64_t t : Arrivals(3, 2'000, 100 * kMs)) {
    REQUIRE(defaulted.TryAdmit(t).admitted ==
            explicit_burst.TryAdmit(t).admitted);
  }
}

TEST_CASE("IntervalMaxTracker counts half-open intervals exactly") {
  IntervalMaxTracker tracker(1000);
  tracker.Record(0);
  tracker.Record(500);
  tracker.Record(999);
  CHECK(tracker.max() == 3);
  tracker.Record(1000);  // (0, 1000] no longer holds t = 0
  CHECK(tracker.max() == 3);
  tracker.Record(1499);  // (499, 1499] holds 500, 999, 1000, 1499
  CHECK(tracker.max() == 4);
  tracker.Record(5000);
  CHECK(tracker.max() == 4);
  tracker.Reset(10);
  CHECK(tracker.max() == 0);
}

TEST_CASE("IntervalMaxTracker matches brute force on random times") {
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    CAPTURE(seed);
    const std::vector<int64_t> times = Arrivals(seed, 500, 10 * kMs);
    IntervalMaxTracker tracker(25 * kMs);
    for (int64_t t : times) tracker.Record(t);
    CHECK(tracker.max() == BruteForceMaxInInterval(times, 25 * kMs));
  }
}

TEST_CASE("FixedWindowMaxTracker counts per aligned window") {
  FixedWindowMaxTracker tracker(100, 1000);  // windows [100,1100), ...
  tracker.Record(1099);
  tracker.Record(1099);
  tracker.Record(1100);
  CHECK(tracker.max() == 2);
  for (int i = 0; i < 3; ++i) tracker.Record(2099);
  CHECK(tracker.max() == 4);
  tracker.Record(2100);
  CHECK(tracker.max() == 4);
}

TEST_CASE("FixedWindowMaxTracker counts per named window") {
  FixedWindowMaxTracker tracker(0, 1000);
  tracker.RecordInWindow(500);  // [500, 1500)
  tracker.RecordInWindow(500);
  tracker.RecordInWindow(1600);  // [1600, 2600): a new window
  CHECK(tracker.max() == 2);
  for (int i = 0; i < 2; ++i) tracker.RecordInWindow(1600);
  CHECK(tracker.max() == 3);
  // Record names the aligned window holding t, here [2000, 3000).
  tracker.Record(2100);
  CHECK(tracker.max() == 3);
}

// ---- MockApi: endpoint logic with a fake clock -----------------------------

struct FakeClock {
  int64_t now = 1'000 * kSecond;  // arbitrary non-zero epoch
  MockApi::Clock clock() {
    return [this] { return now; };
  }
};

MockConfig LimitedConfig(const char* limit, Algorithm algorithm) {
  MockConfig config;
  config.limit = ParseLimitSpec(limit, nullptr);
  config.algorithm = algorithm;
  return config;
}

Json Body(const Reply& reply) { return Json::parse(reply.body); }

std::optional<std::string> Header(const Reply& reply, const std::string& name) {
  for (const auto& [key, value] : reply.headers) {
    if (key == name) return value;
  }
  return std::nullopt;
}

TEST_CASE("echo returns the parsed body and a sequence number") {
  FakeClock fake;
  MockApi api(MockConfig{}, fake.clock());
  Reply reply = api.Echo(R"({"b":1,"a":[true,null]})");
  CHECK(reply.status == 200);
  CHECK(reply.content_type == "application/json");
  CHECK(reply.body == R"({"echo":{"b":1,"a":[true,null]},"n":1})");
  reply = api.Echo("plain text");
  CHECK(Body(reply)["echo"] == "plain text");
  CHECK(Body(reply)["n"] == 2);
  reply = api.Echo("\xff\xfe");  // not UTF-8: must not throw
  CHECK(reply.status == 200);
}

TEST_CASE("over the limit: 429 with Retry-After and retry_after_ms") {
  FakeClock fake;
  MockApi api(LimitedConfig("2/s", Algorithm::kFixed), fake.clock());
  CHECK(api.Echo("1").status == 200);
  fake.now += 100 * kMs;
  CHECK(api.Echo("2").status == 200);
  fake.now += 150 * kMs;
  const Reply reply = api.Echo("3");
  CHECK(reply.status == 429);
  CHECK(Header(reply, "Retry-After") == "1");
  const Json body = Body(reply);
  CHECK(body["error"] == "rate_limited");
  CHECK(body["retry_after_ms"] == 750);

  fake.now += 750 * kMs;
  CHECK(api.Echo("4").status == 200);
  const Json stats = api.StatsJson();
  CHECK(stats["accepted"] == 3);
  CHECK(stats["rejected"] == 1);
  CHECK(stats["requests"] == 4);
  CHECK(stats["limit"] == 2);
  CHECK(stats["window_ms"] == 1000);
  CHECK(stats["algorithm"] == "fixed");
  CHECK(stats["max_in_window"] == 2);
  CHECK(stats["max_in_any_interval"] == 2);
  CHECK(stats["first_accept_ms"] == 0.0);
  CHECK(stats["last_accept_ms"] == 1000.0);
  CHECK(stats["uptime_ms"] == 1000.0);
  CHECK(stats["status_counts"]["200"] == 3);
  CHECK(stats["status_counts"]["429"] == 1);
}

TEST_CASE("Retry-After is in whole seconds, rounded up") {
  FakeClock fake;
  MockApi api(LimitedConfig("1/5s", Algorithm::kSliding), fake.clock());
  CHECK(api.Echo("").status == 200);
  fake.now += 1 * kMs;
  const Reply reply = api.Echo("");
  CHECK(reply.status == 429);
  CHECK(Header(reply, "Retry-After") == "5");  // 4.999 s
  CHECK(Body(reply)["retry_after_ms"] == 4999);
}

TEST_CASE("stats before any acceptance report nulls") {
  FakeClock fake;
  MockApi api(MockConfig{}, fake.clock());
  const Json stats = api.StatsJson();
  CHECK(stats["limit"].is_null());
  CHECK(stats["window_ms"] == 1000);
  CHECK(stats["first_accept_ms"].is_null());
  CHECK(stats["last_accept_ms"].is_null());
  CHECK(stats["status_counts"].empty());
  CHECK(stats["max_in_any_interval"] == 0);
}

TEST_CASE("max_in_any_interval exposes a fixed-window boundary burst") {
  FakeClock fake;
  MockApi api(LimitedConfig("3/s", Algorithm::kFixed), fake.clock());
  fake.now += 999 * kMs;
  for (int i = 0; i < 4; ++i) api.Echo("");
  fake.now += 1 * kMs;
  for (int i = 0; i < 4; ++i) api.Echo("");
  const Json stats = api.StatsJson();
  CHECK(stats["accepted"] == 6);
  CHECK(stats["rejected"] == 2);
  CHECK(stats["max_in_window"] == 3);
  CHECK(stats["max_in_any_interval"] == 6);
}

TEST_CASE("batch counts as one request and echoes inputs with indexes") {
  FakeClock fake;
  MockApi api(LimitedConfig("1/s", Algorithm::kFixed), fake.clock());
  Reply reply = api.Batch(R"({"inputs":["a",{"x":1},3]})");
  CHECK(reply.status == 200);
  CHECK(reply.body ==
        R"({"results":[{"echo":"a","i":0},{"echo":{"x":1},"i":1},)"
        R"({"echo":3,"i":2}]})");
  reply = api.Batch(R"({"inputs":[1]})");
  CHECK(reply.status == 429);
  CHECK(Header(reply, "Retry-After") == "1");
  const Json stats = api.StatsJson();
  CHECK(stats["accepted"] == 1);
  CHECK(stats["batch_requests"] == 1);
  CHECK(stats["batch_items"] == 3);
  CHECK(stats["requests"] == 2);
}

TEST_CASE("bad batch bodies get 400 without using limit capacity") {
  FakeClock fake;
  MockApi api(LimitedConfig("1/s", Algorithm::kFixed), fake.clock());
  for (const char* body : {"not json", "[1,2]", R"({"inputs":5})", "{}"}) {
    CAPTURE(body);
    const Reply reply = api.Batch(body);
    CHECK(reply.status == 400);
    CHECK(Body(reply)["error"] == "bad_request");
  }
  CHECK(api.Batch(R"({"inputs":[]})").status == 200);
  const Json stats = api.StatsJson();
  CHECK(stats["status_counts"]["400"] == 4);
  CHECK(stats["accepted"] == 1);
}

TEST_CASE("batch faults: item errors, short results, non-JSON body") {
  FakeClock fake;
  MockApi api(MockConfig{}, fake.clock());
  const std::string five = R"({"inputs":[10,11,12,13,14]})";

  Reply reply = api.Configure(R"({"batch_item_error_every":2})");
  REQUIRE(reply.status == 200);
  Json results = Body(api.Batch(five))["results"];
  REQUIRE(results.size() == 5);
  CHECK(results[0]["echo"] == 10);
  CHECK(results[1]["error"]["code"] == "item_failed");
  CHECK(results[1]["i"] == 1);
  CHECK_FALSE(results[1].contains("echo"));
  CHECK(results[2]["echo"] == 12);
  CHECK(results[3].contains("error"));
  CHECK(results[4]["echo"] == 14);

  api.Configure(R"({"batch_item_error_every":0,"batch_short":true})");
  results = Body(api.Batch(five))["results"];
  REQUIRE(results.size() == 4);
  CHECK(results[3]["i"] == 3);

  api.Configure(R"({"batch_short":false,"batch_non_json":true})");
  reply = api.Batch(five);
  CHECK(reply.status == 200);
  CHECK(reply.content_type == "text/plain");
  CHECK(Json::parse(reply.body, nullptr, false).is_discarded());
}

TEST_CASE("error rate injects seeded 500s that are not accepted") {
  FakeClock fake;
  MockConfig config;
  config.error_rate = 0.5;
  config.seed = 42;
  MockApi first(config, fake.clock());
  MockApi second(config, fake.clock());
  std::vector<int> pattern;
  for (int i = 0; i < 200; ++i) {
    const Reply a = first.Echo("");
    const Reply b = second.Echo("");
    REQUIRE(a.status == b.status);
    pattern.push_back(a.status);
    if (a.status == 500) CHECK(Body(a)["error"] == "injected");
  }
  const int64_t errors = std::count(pattern.begin(), pattern.end(), 500);
  CHECK(errors > 50);
  CHECK(errors < 150);
  const Json stats = first.StatsJson();
  CHECK(stats["errors"] == errors);
  CHECK(stats["accepted"] == 200 - errors);

  // After a reset the same seed replays the same pattern.
  first.Reset();
  for (int i = 0; i < 200; ++i) REQUIRE(first.Echo("").status == pattern[i]);
}

TEST_CASE("error rate 1 fails everything admitted") {
  FakeClock fake;
  MockConfig config = LimitedConfig("2/s", Algorithm::kFixed);
  config.error_rate = 1.0;
  MockApi api(config, fake.clock());
  CHECK(api.Echo("").status == 500);
  CHECK(api.Echo("").status == 500);
  // The failed requests still used the capacity.
  CHECK(api.Echo("").status == 429);
  const Json stats = api.StatsJson();
  CHECK(stats["accepted"] == 0);
  CHECK(stats["errors"] == 2);
  CHECK(stats["rejected"] == 1);
  CHECK(stats["first_accept_ms"].is_null());
}

TEST_CASE("fail_status answers every /v1 request with that status") {
  FakeClock fake;
  MockApi api(LimitedConfig("1/s", Algorithm::kFixed), fake.clock());
  Reply reply = api.Configure(R"({"fail_status":400})");
  REQUIRE(reply.status == 200);
  CHECK(Body(reply)["fail_status"] == 400);
  for (int i = 0; i < 3; ++i) {
    reply = api.Echo("");
    CHECK(reply.status == 400);
    CHECK(Body(reply)["error"] == "forced_failure");
  }
  CHECK(api.Batch("garbage").status == 400);
  api.Configure(R"({"fail_status":null})");
  CHECK(api.Echo("").status == 200);  // the limiter was never touched
  const Json stats = api.StatsJson();
  CHECK(stats["status_counts"]["400"] == 4);
  CHECK(stats["requests"] == 5);
}

TEST_CASE("configure validates everything before applying anything") {
  FakeClock fake;
  MockApi api(MockConfig{}, fake.clock());
  const char* bad[] = {
      "nope",
      "[]",
      R"({"latency_ms":-1})",
      R"({"latency_ms":"5"})",
      R"({"error_rate":1.5})",
      R"({"limit":"5/fortnight"})",
      R"({"limit":5})",
      R"({"algorithm":"lottery"})",
      R"({"fail_status":99})",
      R"({"fail_status":"500"})",
      R"({"batch_item_error_every":-2})",
      R"({"batch_short":1})",
      R"({"latency_ms":5,"colour":"blue"})",
  };
  for (const char* body : bad) {
    CAPTURE(body);
    const Reply reply = api.Configure(body);
    CHECK(reply.status == 400);
    CHECK(Body(reply)["error"] == "bad_config");
    CHECK_FALSE(Body(reply)["message"].get<std::string>().empty());
  }
  CHECK(api.ConfigJson()["latency_ms"] == 0.0);

  const Reply reply = api.Configure(
      R"({"latency_ms":2.5,"limit":"10/100ms","algorithm":"leaky"})");
  CHECK(reply.status == 200);
  const Json config = Body(reply);
  CHECK(config["latency_ms"] == 2.5);
  CHECK(config["limit"] == "10/100ms");
  CHECK(config["window_ms"] == 100);
  CHECK(config["algorithm"] == "leaky");
  CHECK(api.Echo("").delay == std::chrono::microseconds(2500));
  CHECK(api.StatsJson()["window_ms"] == 100);
}

TEST_CASE("changing the limit restarts the limiter") {
  FakeClock fake;
  MockApi api(LimitedConfig("1/min", Algorithm::kFixed), fake.clock());
  CHECK(api.Echo("").status == 200);
  CHECK(api.Echo("").status == 429);
  api.Configure(R"({"limit":"2/min"})");
  CHECK(api.Echo("").status == 200);
  CHECK(api.Echo("").status == 200);
  CHECK(api.Echo("").status == 429);
  api.Configure(R"({"limit":null})");
  for (int i = 0; i < 100; ++i) CHECK(api.Echo("").status == 200);
  CHECK(api.StatsJson()["limit"].is_null());
}

TEST_CASE("reset zeroes counters and the limiter") {
  FakeClock fake;
  MockApi api(LimitedConfig("1/h", Algorithm::kSliding), fake.clock());
  api.Echo("");
  api.Echo("");
  api.Batch("{}");
  api.NotFound("GET", "/v1/nope");
  Json stats = api.StatsJson();
  CHECK(stats["requests"] == 4);
  CHECK(stats["status_counts"]["404"] == 1);
  fake.now += 5 * kSecond;
  CHECK(Body(api.Reset())["ok"] == true);
  stats = api.StatsJson();
  for (const char* key :
       {"accepted", "rejected", "errors", "requests", "batch_requests",
        "batch_items", "max_in_window", "max_in_any_interval"}) {
    CAPTURE(key);
    CHECK(stats[key] == 0);
  }
  CHECK(stats["status_counts"].empty());
  CHECK(stats["first_accept_ms"].is_null());
  CHECK(stats["uptime_ms"] == 5000.0);  // uptime is not reset
  const Reply reply = api.Echo("");
  CHECK(reply.status == 200);
  CHECK(Body(reply)["n"] == 1);
}

TEST_CASE("only /v1 paths count toward requests when not found") {
  FakeClock fake;
  MockApi api(MockConfig{}, fake.clock());
  const Reply reply = api.NotFound("DELETE", "/elsewhere");
  CHECK(reply.status == 404);
  CHECK(Body(reply)["error"] == "not_found");
  CHECK(api.StatsJson()["requests"] == 0);
}

TEST_CASE("first-request: max_in_window counts the windows actually opened") {
  FakeClock fake;
  MockConfig config = LimitedConfig("3/s", Algorithm::kFixed);
  config.window_start = WindowStart::kFirstRequest;
  MockApi api(config, fake.clock());
  const int64_t start = fake.now;
  fake.now = start + 500 * kMs;  // opens [500ms, 1500ms)
  CHECK(api.Echo("").status == 200);
  fake.now = start + 1200 * kMs;
  CHECK(api.Echo("").status == 200);
  CHECK(api.Echo("").status == 200);
  CHECK(api.Echo("").status == 429);
  fake.now = start + 1600 * kMs;  // opens [1600ms, 2600ms)
  for (int i = 0; i < 3; ++i) CHECK(api.Echo("").status == 200);
  CHECK(api.Echo("").status == 429);
  const Json stats = api.StatsJson();
  CHECK(stats["accepted"] == 6);
  // The aligned second [1s, 2s) holds 5, but no window the limiter opened
  // held more than 3.
  CHECK(stats["max_in_window"] == 3);
  CHECK(stats["max_total_in_window"] == 3);
  CHECK(stats["max_in_any_interval"] == 5);
}

TEST_CASE("max_attempted_in_any_interval counts refused requests too") {
  FakeClock fake;
  MockApi api(LimitedConfig("20/s", Algorithm::kFixed), fake.clock());
  CHECK(api.StatsJson()["max_attempted_in_any_interval"] == 0);
  int accepted = 0;
  for (int i = 0; i < 30; ++i) accepted += api.Echo("").status == 200;
  CHECK(accepted == 20);
  Json stats = api.StatsJson();
  CHECK(stats["max_in_window"] == 20);
  CHECK(stats["max_in_any_interval"] == 20);
  CHECK(stats["max_attempted_in_any_interval"] == 30);

  // A client that never sends more than 20 in any second stays at 20.
  api.Configure(R"({"limit":"20/s"})");
  CHECK(api.StatsJson()["max_attempted_in_any_interval"] == 0);
  for (int i = 0; i < 100; ++i) {
    fake.now += 50 * kMs;
    CHECK(api.Echo("").status == 200);
  }
  CHECK(api.StatsJson()["max_attempted_in_any_interval"] == 20);
}

TEST_CASE("max_attempted_in_any_interval: what the limiter decided on") {
  FakeClock fake;
  MockConfig config = LimitedConfig("2/s", Algorithm::kSliding);
  config.shared_load = ParseSharedLoad("10/s", nullptr);
  MockApi api(config, fake.clock());
  // Requests the limiter never sees: bad bodies and forced failures.
  CHECK(api.Batch("not json").status == 400);
  api.Configure(R"({"fail_status":502})");
  CHECK(api.Echo("").status == 502);
  api.Configure(R"({"fail_status":null,"error_rate":1})");
  // Admitted, then failed with an injected 500: decided on, so counted.
  CHECK(api.Echo("").status == 500);
  fake.now += 2 * kMs;
  // The shared load's request and the 500 used the quota.
  CHECK(api.Echo("").status == 429);
  // The shared load's own requests are not counted.
  fake.now += 200 * kMs;
  const Json stats = api.StatsJson();
  CHECK(stats["shared_accepted"] == 1);
  CHECK(stats["shared_rejected"] == 2);
  CHECK(stats["max_attempted_in_any_interval"] == 2);
  CHECK(stats["max_in_any_interval"] == 0);
  CHECK(stats["requests"] == 4);

  api.Configure(R"({"limit":null,"shared_load":null})");
  for (int i = 0; i < 5; ++i) CHECK(api.Echo("").status == 500);
  CHECK(api.StatsJson()["max_attempted_in_any_interval"].is_null());
  // Restarted with the limiter, like the other maxima.
  api.Configure(R"({"limit":"5/s","error_rate":0})");
  for (int i = 0; i < 3; ++i) CHECK(api.Echo("").status == 200);
  CHECK(api.StatsJson()["max_attempted_in_any_interval"] == 3);
  api.Reset();
  CHECK(api.StatsJson()["max_attempted_in_any_interval"] == 0);
}

TEST_CASE("nginx limit_req: leaky with a burst, no headers, 503") {
  FakeClock fake;
  MockConfig config = LimitedConfig("20/s", Algorithm::kLeaky);
  config.burst = 10;
  config.dialect = Dialect::kNone;
  MockApi api(config, fake.clock());
  for (int i = 0; i < 11; ++i) CHECK(api.Echo("").status == 200);
  Reply reply = api.Echo("");
  CHECK(reply.status == 503);
  CHECK(reply.headers.empty());
  CHECK(reply.body == R"({"error":"rate_limited"})");
  fake.now += 49 * kMs;
  CHECK(api.Echo("").status == 503);
  fake.now += 1 * kMs;
  CHECK(api.Echo("").status == 200);
  CHECK(api.Echo("").status == 503);
  CHECK(api.ConfigJson()["burst"] == 10);

  // burst 0: one request per 50 ms.
  REQUIRE(api.Configure(R"({"burst":0,"reject_status":429})").status == 200);
  CHECK(api.Echo("").status == 200);
  CHECK(api.Echo("").status == 429);
  fake.now += 49 * kMs;
  CHECK(api.Echo("").status == 429);
  fake.now += 1 * kMs;
  CHECK(api.Echo("").status == 200);
  // null restores capacity N: 20 at once.
  REQUIRE(api.Configure(R"({"burst":null})").status == 200);
  int accepted = 0;
  for (int i = 0; i < 30; ++i) accepted += api.Echo("").status == 200;
  CHECK(accepted == 20);
}

TEST_CASE("window_start, burst and reset_rounding are validated together") {
  FakeClock fake;
  MockApi api(LimitedConfig("20/s", Algorithm::kFixed), fake.clock());
  Json config = api.ConfigJson();
  CHECK(config["window_start"] == "aligned");
  CHECK(config["burst"].is_null());
  CHECK(config["reset_rounding"] == "up");
  const char* bad[] = {
      R"({"window_start":"first"})",
      R"({"window_start":1})",
      R"({"reset_rounding":"nearest"})",
      R"({"reset_rounding":null})",
      R"({"burst":-1})",
      R"({"burst":1.5})",
      R"({"burst":"3"})",
      R"({"burst":1000000000001})",
      // Only leaky has a burst.
      R"({"burst":3})",
      R"({"algorithm":"sliding","burst":3})",
      // A full bucket must drain within 366 days.
      R"({"algorithm":"leaky","limit":"1/d","burst":366})",
  };
  for (const char* body : bad) {
    CAPTURE(body);
    const Reply reply = api.Configure(body);
    CHECK(reply.status == 400);
    CHECK(Body(reply)["error"] == "bad_config");
    CHECK(Body(reply)["message"].get<std::string>().find('\n') ==
          std::string::npos);
  }
  CHECK(api.ConfigJson() == config);

  Reply reply = api.Configure(
      R"({"algorithm":"leaky","limit":"1/d","burst":365,)"
      R"("window_start":"first-request","reset_rounding":"down"})");
  REQUIRE(reply.status == 200);
  config = Body(reply);
  CHECK(config["burst"] == 365);
  CHECK(config["window_start"] == "first-request");
  CHECK(config["reset_rounding"] == "down");
  // Leaving leaky needs the burst dropped in the same change.
  CHECK(api.Configure(R"({"algorithm":"fixed"})").status == 400);
  CHECK(api.Configure(R"({"algorithm":"fixed","burst":null})").status == 200);
}

TEST_CASE("mentioning window_start or burst restarts metering") {
  FakeClock fake;
  MockApi api(LimitedConfig("1/min", Algorithm::kFixed), fake.clock());
  CHECK(api.Echo("").status == 200);
  CHECK(api.Echo("").status == 429);
  REQUIRE(api.Configure(R"({"window_start":"aligned"})").status == 200);
  CHECK(api.Echo("").status == 200);
  CHECK(api.Echo("").status == 429);
  REQUIRE(api.Configure(R"({"reset_rounding":"down"})").status == 200);
  CHECK(api.Echo("").status == 429);  // rounding is not metering
  REQUIRE(api.Configure(R"({"algorithm":"leaky","burst":0})").status == 200);
  CHECK(api.Echo("").status == 200);
  CHECK(api.Echo("").status == 429);
  REQUIRE(api.Configure(R"({"burst":0})").status == 200);
  CHECK(api.Echo("").status == 200);
}

}  // namespace
}  // namespace pacer::mock
