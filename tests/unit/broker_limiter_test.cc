// The limiter's guarantee, checked under explicit time: no interval of length
// W ever sees more than L units started, for several limit sets and arrival
// patterns, and the limiter is not needlessly slow either.
#include <doctest/doctest.h>

#include <algorithm>
#include <random>
#include <vector>

#include "broker/limiter.h"
#include "common/limit_spec.h"

using pacer::Limiter;
using pacer::LimitSpec;
using pacer::Millis;

namespace {

LimitSpec limit(const char* text) {
  auto r = pacer::parse_limit(text);
  REQUIRE(r.ok());
  return *r;
}

struct Start {
  Millis t;
  std::int64_t cost;
};

// The largest number of units charged to `spec` that started in any
// half-open interval (t - W, t]: the quantity the guarantee bounds.
std::int64_t max_in_any_window(const std::vector<Start>& starts,
                               const LimitSpec& spec) {
  std::int64_t best = 0, sum = 0;
  std::size_t lo = 0;
  for (std::size_t hi = 0; hi < starts.size(); ++hi) {
    sum += spec.counts_requests() ? 1 : starts[hi].cost;
    while (starts[lo].t <= starts[hi].t - spec.window_ms) {
      sum -= spec.counts_requests() ? 1 : starts[lo].cost;
      ++lo;
    }
    best = std::max(best, sum);
  }
  return best;
}

// Drives a limiter like the broker does: jobs arrive by a pattern, each waits
// in FIFO order for next_admit, and is recorded when admitted.
std::vector<Start> simulate(Limiter& limiter, std::vector<Start> arrivals,
                            Millis end) {
  std::vector<Start> starts;
  std::size_t next = 0;
  std::vector<Start> queue;
  Millis now = 0;
  while (now <= end) {
    while (next < arrivals.size() && arrivals[next].t <= now)
      queue.push_back(arrivals[next++]);
    while (!queue.empty() && limiter.admits(queue.front().cost, now)) {
      limiter.record(queue.front().cost, now);
      starts.push_back({now, queue.front().cost});
      queue.erase(queue.begin());
    }
    Millis wake = end + 1;
    if (!queue.empty())
      wake = std::min(wake, limiter.next_admit(queue.front().cost, now));
    if (next < arrivals.size()) wake = std::min(wake, arrivals[next].t);
    CHECK(wake > now);  // next_admit must never say "now" for a refused start
    now = std::max(wake, now + 1);
  }
  return starts;
}

}  // namespace

TEST_CASE("admits L per window, then refuses until the oldest start expires") {
  Limiter l({limit("5/s")}, Millis{0});
  for (int i = 0; i < 5; ++i) {
    CHECK(l.admits(1, 1000));
    l.record(1, 1000);
  }
  CHECK_FALSE(l.admits(1, 1000));
  CHECK_FALSE(l.admits(1, 1999));
  CHECK(l.next_admit(1, 1500) == 2000);
  CHECK(l.admits(1, 2000));
}

TEST_CASE("no token-bucket edge burst: 2L never start within one window") {
  // A bucket that starts full would admit L at t=999 and L more at t=1000.
  Limiter l({limit("10/s")}, Millis{0});
  for (int i = 0; i < 10; ++i) l.record(1, 999);
  CHECK_FALSE(l.admits(1, 1000));
  CHECK(l.next_admit(1, 1000) == 1999);
}

TEST_CASE("the margin widens every window") {
  Limiter l({limit("1/100ms")}, Millis{7});
  l.record(1, 0);
  CHECK_FALSE(l.admits(1, 100));
  CHECK(l.next_admit(1, 50) == 107);
  CHECK(l.admits(1, 107));
}

TEST_CASE("default margin scales with the window and stays small") {
  CHECK(Limiter::default_margin(50) == 1);
  CHECK(Limiter::default_margin(1000) == 20);
  CHECK(Limiter::default_margin(60'000) == 50);
  CHECK(Limiter::default_margin(86'400'000) == 50);
}

TEST_CASE("unit limits charge the cost, request limits charge one") {
  Limiter l({limit("100 tokens/s"), limit("3/s")}, Millis{0});
  CHECK(l.admits(60, 0));
  l.record(60, 0);
  CHECK_FALSE(l.admits(50, 0));  // 110 tokens
  CHECK(l.admits(40, 0));
  l.record(40, 0);
  CHECK_FALSE(l.admits(1, 0));  // tokens exhausted
  auto usage = l.usage(0);
  REQUIRE(usage.size() == 2);
  CHECK(usage[0].used == 100);
  CHECK(usage[1].used == 2);
  CHECK(l.next_admit(1, 10) == 1000);
}

TEST_CASE("a cost larger than a unit limit can never start") {
  Limiter l({limit("100 tokens/min")}, Millis{0});
  CHECK(l.next_admit(101, 0) == Limiter::kNever);
  CHECK_FALSE(l.admits(101, 0));
}

TEST_CASE("no limits admits everything") {
  Limiter l({}, std::nullopt);
  for (int i = 0; i < 1000; ++i) {
    CHECK(l.admits(5, 0));
    l.record(5, 0);
  }
  CHECK(l.next_admit(5, 0) == 0);
}

TEST_CASE("long windows are bucketed with bounded memory and stay safe") {
  Limiter l({limit("100000/day")}, Millis{0});
  Millis t = 0;
  int admitted = 0;
  // One start every 100 ms for a day: the log must not grow past the bound,
  // and never more than 100000 may start within the day.
  for (; t < 86'400'000; t += 100) {
    if (l.admits(1, t)) {
      l.record(1, t);
      ++admitted;
    }
  }
  CHECK(admitted == 100000);
  CHECK(l.usage(t)[0].used <= 100000);
}

TEST_CASE("restart replay: recorded past starts count against the window") {
  Limiter l({limit("50/s")}, Millis{0});
  for (int i = 0; i < 50; ++i) l.record(1, 10'000 - 500 + i);  // replayed
  CHECK_FALSE(l.admits(1, 10'000));
  CHECK(l.next_admit(1, 10'000) == 10'500);
  // An older start replayed out of order keeps the log sorted.
  Limiter m({limit("2/s")}, Millis{0});
  m.record(1, 900);
  m.record(1, 100);
  CHECK_FALSE(m.admits(1, 950));
  CHECK(m.next_admit(1, 950) == 1100);
}

TEST_CASE(
    "property: no interval of length W exceeds L, for many limit sets and "
    "patterns") {
  std::mt19937_64 rng(12345);
  const std::vector<std::vector<const char*>> sets = {
      {"50/s"},
      {"1/50ms"},
      {"10/100ms", "50/s"},
      {"600/min", "20/s"},
      {"90000 tokens/min", "100/s"},
      {"7/333ms", "100 tokens/s", "30/2s"},
  };
  for (const auto& texts : sets) {
    std::vector<LimitSpec> specs;
    for (auto t : texts) specs.push_back(limit(t));
    for (int pattern = 0; pattern < 4; ++pattern) {
      CAPTURE(texts[0]);
      CAPTURE(pattern);
      Limiter limiter(specs, Millis{0});
      std::vector<Start> arrivals;
      Millis horizon = 20'000;
      std::uniform_int_distribution<int> cost_dist(1, 3000);
      auto cost = [&] {
        bool units = std::any_of(specs.begin(), specs.end(),
                                 [](auto& s) { return !s.counts_requests(); });
        if (!units) return std::int64_t{1};
        std::int64_t c = cost_dist(rng);
        for (auto& s : specs)
          if (!s.counts_requests()) c = std::min<std::int64_t>(c, s.amount);
        return c;
      };
      if (pattern == 0) {  // everything at once
        for (int i = 0; i < 3000; ++i) arrivals.push_back({0, cost()});
      } else if (pattern == 1) {  // Poisson-ish
        std::exponential_distribution<double> gap(0.2);
        double t = 0;
        while (t < horizon) {
          arrivals.push_back({static_cast<Millis>(t), cost()});
          t += gap(rng);
        }
      } else if (pattern == 2) {  // bursts at window edges
        for (Millis t = 0; t < horizon; t += 1000)
          for (int i = 0; i < 200; ++i)
            arrivals.push_back({t + 999 * (i % 2), cost()});
      } else {  // random bursts
        std::uniform_int_distribution<Millis> when(0, horizon);
        std::uniform_int_distribution<int> size(1, 300);
        for (int b = 0; b < 40; ++b) {
          Millis t = when(rng);
          int n = size(rng);
          for (int i = 0; i < n; ++i) arrivals.push_back({t, cost()});
        }
      }
      std::stable_sort(arrivals.begin(), arrivals.end(),
                       [](auto& a, auto& b) { return a.t < b.t; });
      auto starts = simulate(limiter, arrivals, horizon * 3);
      REQUIRE(!starts.empty());
      for (auto& spec : specs) {
        CAPTURE(spec.to_string());
        CHECK(max_in_any_window(starts, spec) <= spec.amount);
      }
      // Not needlessly slow: a steady backlog reaches the tightest limit.
      if (pattern == 0 && specs.size() == 1 && specs[0].counts_requests()) {
        Millis first = starts.front().t;
        Millis last = starts.back().t;
        double rate =
            (starts.size() - 1) * 1000.0 / std::max<Millis>(1, last - first);
        double limit_rate = specs[0].amount * 1000.0 / specs[0].window_ms;
        CHECK(rate >= 0.95 * limit_rate);
      }
    }
  }
}

TEST_CASE("restamp moves this turn's starts to when they really left") {
  Limiter l({limit("2/s")}, Millis{0});
  l.record(1, 100);
  l.record(1, 500);
  l.restamp(500, 530);  // the commit took 30 ms
  CHECK_FALSE(l.admits(1, 1099));
  CHECK(l.next_admit(1, 1050) == 1100);  // the start at 100 expires first
  l.record(1, 1100);
  CHECK(l.next_admit(1, 1100) == 1530);  // not 1500: it left at 530
  l.restamp(400, 450);  // nothing was recorded at 400: no change
  CHECK(l.next_admit(1, 1100) == 1530);
}

// nginx's limit_req: `rate` per second with `burst`, in its own integer
// arithmetic (excess in thousandths of a request, time in whole ms).
struct NginxBucket {
  std::int64_t rate;
  std::int64_t burst;
  std::int64_t excess = 0;
  Millis last = -1;
  bool admit(Millis t) {
    std::int64_t e = 0;
    if (last >= 0)
      e = std::max<std::int64_t>(0, excess - rate * (t - last) + 1000);
    if (last >= 0 && e > burst * 1000) return false;
    excess = e;
    last = t;
    return true;
  }
};

TEST_CASE("a leaky bucket with burst 0 spaces starts evenly") {
  Limiter l({limit("20/s burst 0")}, Millis{0});
  CHECK(l.admits(1, 1000));
  l.record(1, 1000);
  CHECK_FALSE(l.admits(1, 1049));
  CHECK(l.next_admit(1, 1001) == 1050);
  l.record(1, 1050);
  CHECK(l.next_admit(1, 1050) == 1100);
  // After a quiet spell there is no more than one at once.
  CHECK(l.admits(1, 5000));
  l.record(1, 5000);
  CHECK_FALSE(l.admits(1, 5000));
  // The default margin (a fiftieth of the spacing, at least 1 ms).
  Limiter m({limit("20/s burst 0")});
  m.record(1, 0);
  CHECK(m.next_admit(1, 0) == 51);
}

TEST_CASE("a leaky bucket lets burst + 1 through at once, then its rate") {
  Limiter l({limit("20/s burst 10")}, Millis{0});
  for (int i = 0; i < 11; ++i) {
    CHECK(l.admits(1, 0));
    l.record(1, 0);
  }
  CHECK_FALSE(l.admits(1, 0));
  CHECK(l.next_admit(1, 0) == 50);
  CHECK(l.max_requests() == 11);
  auto u = l.usage(0);
  REQUIRE(u.size() == 1);
  CHECK(u[0].used == 11);
  CHECK(l.usage(550)[0].used == 0);
  // A start of more than burst + 1 units never fits.
  Limiter t({limit("100 tokens/s burst 4")}, Millis{0});
  CHECK(t.next_admit(6, 0) == Limiter::kNever);
  CHECK(t.next_admit(5, 0) == 0);
}

TEST_CASE("against nginx's own arithmetic a leaky limit is never refused") {
  for (std::int64_t burst : {0, 1, 10}) {
    CAPTURE(burst);
    LimitSpec spec = limit("20/s");
    spec.burst = burst;
    Limiter l({spec});  // the default margin
    NginxBucket server{20, burst};
    std::mt19937 rng(static_cast<unsigned>(burst) + 7);
    std::uniform_int_distribution<int> gap(0, 120);
    std::vector<Start> arrivals;
    Millis t = 0;
    for (int i = 0; i < 2000; ++i) {
      t += gap(rng) < 100 ? 0 : gap(rng) * 10;  // bursts and quiet spells
      arrivals.push_back({t, 1});
    }
    auto starts = simulate(l, arrivals, t + 200'000);
    CHECK(starts.size() == arrivals.size());
    std::int64_t refused = 0;
    for (const auto& s : starts)
      if (!server.admit(s.t)) ++refused;
    CHECK(refused == 0);
  }
}

TEST_CASE("a leaky limit keeps its rate when the margin is less than the "
          "burst's room, and restamps its latest starts") {
  Limiter l({limit("10/s burst 2")}, Millis{5});
  for (int i = 0; i < 3; ++i) l.record(1, 0);
  // Full: the next fits once a spacing has drained, margin in reserve.
  CHECK(l.next_admit(1, 0) == 105);
  // Saturated, starts come one spacing apart: the margin only shifts them.
  l.record(1, 105);
  CHECK(l.next_admit(1, 105) == 205);
  l.record(1, 205);
  // The bucket was ahead of that start: moving it later changes nothing.
  l.restamp(205, 230);
  CHECK(l.next_admit(1, 230) == 305);
  // A start into an empty bucket counts from when it really left.
  Limiter e({limit("10/s burst 0")}, Millis{0});
  e.record(1, 100);
  e.restamp(100, 130);  // the commit took 30 ms
  CHECK(e.next_admit(1, 130) == 230);
  e.restamp(90, 140);  // nothing was recorded at 90: no change
  CHECK(e.next_admit(1, 130) == 230);
}

TEST_CASE("the margin scale widens every limit, capped at a tenth of its "
          "window") {
  Limiter l({limit("10/s"), limit("20/s burst 0")});
  auto margins = [&] {
    std::vector<Millis> m;
    for (const auto& u : l.usage(0)) m.push_back(u.margin_ms);
    return m;
  };
  CHECK(margins() == std::vector<Millis>{20, 1});
  l.set_margin_scale(2);
  CHECK(margins() == std::vector<Millis>{40, 2});
  l.set_margin_scale(32);
  CHECK(margins() == std::vector<Millis>{100, 5});  // 1000/10 and 50/10
  l.set_margin_scale(0.5);  // never below the configured margin
  CHECK(margins() == std::vector<Millis>{20, 1});
  l.record(1, 0);
  l.set_margin_scale(2);
  CHECK(l.next_admit(1, 0) == 52);  // the leaky one: 50 + 2
}

TEST_CASE("a start that reached the server late is recorded late") {
  Limiter l({limit("2/s"), limit("20/s burst 0")}, Millis{0});
  l.record(1, 0);
  l.record(1, 100);
  CHECK(l.next_admit(1, 100) == 1000);
  // The start at 0 was answered at 300 where answers take 50 ms: it may
  // have arrived at 250, and a window it opened there ends at 1250.
  l.move_later(0, 250, 1);
  CHECK(l.next_admit(1, 300) == 1100);  // now the start at 100 is oldest
  l.record(1, 1100);
  CHECK(l.next_admit(1, 1100) == 1250);
  // A start no longer in the log, or a later time that is not later: no-op.
  l.move_later(5, 400, 1);
  l.move_later(1100, 1100, 1);
  CHECK(l.next_admit(1, 1100) == 1250);
}
