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

}  // namespace
}  // namespace pacer::mock
