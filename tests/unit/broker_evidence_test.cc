// The servers' counters as evidence against the lane's model, under
// explicit time: a counter the lane's limits explain adds no wait; usage
// they do not explain (another client, a lower limit) still slows the lane;
// refusals the model should have prevented widen the margin, and a quiet
// stretch narrows it; a configured rate whose server refuses bunched starts
// without counters is recognised as a leaky bucket.
#include <doctest/doctest.h>

#include "broker/lane.h"
#include "broker/quota.h"

namespace pacer {
namespace {

using json = nlohmann::json;

// An x-ratelimit counter: whole-second reset (precision 1000).
QuotaObservation counter(double remaining, Millis reset_in, std::int64_t limit) {
  auto o = QuotaObservation::from_json(
      {{"limits",
        {{{"source", "x-ratelimit"},
          {"name", ""},
          {"unit", "requests"},
          {"limit", limit},
          {"remaining", remaining},
          {"reset_in_ms", reset_in},
          {"reset_precision_ms", 1000},
          {"reset_kind", "window_end"}}}}});
  REQUIRE(o);
  return *o;
}

LimitSpec spec(const char* text) {
  auto r = parse_limit(text);
  REQUIRE(r.ok());
  return *r;
}

ApiConfig api_with(std::vector<LimitSpec> limits, bool learn = true) {
  ApiConfig api;
  api.name = "a";
  api.limits = std::move(limits);
  api.learn = learn;
  api.margin_ms = 20;
  return api;
}

// Starts `n` at `t` and answers them all at `t + rtt` with `obs` (or a
// refusal), as a server that counted them would.
std::vector<QuotaState::Mark> burst(Lane& lane, int n, Millis t) {
  std::vector<QuotaState::Mark> marks;
  for (int i = 0; i < n; ++i) {
    REQUIRE(lane.gate(1, t) <= t);
    lane.on_start(1, t);
    marks.push_back(lane.quota().mark());
  }
  return marks;
}

void answer(Lane& lane, QuotaState::Mark m, const QuotaObservation& o, Millis t,
            bool refused = false) {
  QuotaState::Answer a;
  a.obs = &o;
  a.at = m;
  a.success = !refused;
  a.rate_limited = refused;
  lane.quota().on_answer(a, t);
  lane.sync_learned(t);
}

TEST_CASE("a counter the lane's own starts explain adds no wait") {
  // 20/s configured; the server (a window from the first request, reset
  // rounded up to whole seconds) counts the lane's 20 and says 0 remain
  // until a second that is up to a second late.
  Lane lane(api_with({spec("20/s")}), 64);
  auto marks = burst(lane, 20, 10'300);
  for (int i = 0; i < 20; ++i)
    answer(lane, marks[i], counter(19 - i, 1700, 20), 10'350);
  // The limiter allows the next burst at 10'300 + 1000 + 20 (margin); the
  // server's rounded reset (12'000) would have held it 680 ms longer.
  CHECK(lane.gate(1, 11'000) == 11'320);
  CHECK(lane.gate(1, 11'320) == 11'320);
  auto u = lane.quota().to_json(11'320)["upstream"];
  REQUIRE(u.size() == 1);
  CHECK(u[0]["explained"] == true);
}

TEST_CASE("a lower limit than configured is not explained: the counter "
          "caps the lane") {
  Lane lane(api_with({spec("20/s")}), 64);
  auto marks = burst(lane, 10, 0);
  for (int i = 0; i < 10; ++i)
    answer(lane, marks[i], counter(9 - i, 900, 10), 50);
  // Held past the server's reset (a second, rounded), not the limiter's
  // next start (at once); then one request finds out.
  const Millis until = lane.gate(1, 60);
  CHECK(until >= 950);
  CHECK(until <= 2000);
  CHECK(lane.quota().to_json(60)["upstream"][0]["explained"] == false);
  lane.on_start(1, until);
  CHECK(lane.gate(1, until) == QuotaState::kAwaitAnswer);
}

TEST_CASE("usage by another client is not explained: the lane slows") {
  Lane lane(api_with({spec("100/10s")}), 64);
  // Two answers 500 ms apart: the count fell by 30, the lane started 2.
  auto m1 = burst(lane, 1, 0);
  answer(lane, m1[0], counter(99, 9'000, 100), 10);
  auto m2 = burst(lane, 1, 500);
  answer(lane, m2[0], counter(69, 8'500, 100), 510);
  auto up = lane.quota().to_json(510)["upstream"][0];
  CHECK(up["explained"] == false);
  // 29 counted that the lane did not start, within the server's 10 s.
  CHECK(up["shared_use_per_s"].get<double>() >= 2.5);
  // The lane's limiter would start 98 more now; the counter, less what the
  // other client will spend before the reset, holds it back.
  int started = 0;
  Millis t = 600;
  while (lane.gate(1, t) <= t && started < 100) {
    lane.on_start(1, t);
    ++started;
  }
  CHECK(started < 69);
}

TEST_CASE("a window counter without a configured limit: the lane learns "
          "its window and then trusts it") {
  // Flask-Limiter: X-RateLimit-* with resets truncated to whole seconds,
  // no window; a fixed window of 1 s that opens at the first request.
  ApiConfig api = api_with({});
  Lane lane(api, 64);
  Millis opener = -1, end = 0;
  int count = 0, refusals = 0, accepted = 0;
  std::vector<std::pair<Millis, QuotaState::Mark>> flying;
  Millis last_accepted_start = 0;
  for (Millis t = 10'000; t < 40'000; ++t) {
    // Answers 20 ms after the start.
    for (auto it = flying.begin(); it != flying.end();) {
      if (it->first + 20 > t) {
        ++it;
        continue;
      }
      const Millis s = it->first;
      if (opener < 0 || s >= end) {
        opener = s;
        end = s + 1000;
        count = 0;
      }
      const bool ok = count < 20;
      if (ok) {
        ++count;
        ++accepted;
        last_accepted_start = s;
      } else {
        ++refusals;
      }
      const Millis reset_in = end / 1000 * 1000 - t;
      answer(lane, it->second, counter(20 - count, std::max<Millis>(reset_in, 0), 20),
             t, !ok);
      it = flying.erase(it);
    }
    lane.quota().tick(t);
    lane.sync_learned(t);
    while (flying.size() < 64 && lane.gate(1, t) <= t) {
      lane.on_start(1, t);
      flying.push_back({t, lane.quota().mark()});
    }
  }
  auto windows = lane.quota().to_json(40'000)["windows"];
  REQUIRE(windows.size() == 1);
  MESSAGE("accepted ", accepted, " refused ", refusals, " window ",
          windows[0].dump());
  CHECK(windows[0]["state"] == "learned");
  CHECK(windows[0]["at_most_ms"].get<Millis>() >= 1000);
  CHECK(windows[0]["at_most_ms"].get<Millis>() <= 1030);
  CHECK(refusals <= 20);
  // 30 s at 20 per (window + margin) at best: once learned, close to it.
  CHECK(accepted >= 0.85 * 20 * 30);
  (void)last_accepted_start;
}

TEST_CASE("refusals the model should have prevented widen the margin; a "
          "quiet stretch narrows it") {
  Lane lane(api_with({spec("20/s")}), 64);
  auto marks = burst(lane, 20, 0);
  for (int i = 0; i < 20; ++i)
    answer(lane, marks[i], counter(19 - i, 900, 20), 40);
  // The limiter lets the next second's first start go at 1020; it reached
  // the server before its window ended (arrivals bunch up on the way), and
  // the count it was refused on is the lane's own: the margin was short.
  REQUIRE(lane.gate(1, 1020) == 1020);
  lane.on_start(1, 1020);
  answer(lane, lane.quota().mark(), counter(0, 100, 20), 1060, true);
  CHECK(lane.quota().margin_scale() == 2.0);
  CHECK(lane.limiter().usage(1060)[0].margin_ms == 40);
  const Millis t = 1060 + QuotaState::kMarginQuietMs;
  lane.quota().tick(t - 1);
  CHECK(lane.quota().margin_scale() == 2.0);
  lane.quota().tick(t);
  lane.sync_learned(t);
  CHECK(lane.quota().margin_scale() == 1.5);
  CHECK(lane.limiter().usage(t)[0].margin_ms == 30);
  for (int i = 2; i <= 10; ++i)
    lane.quota().tick(1060 + i * QuotaState::kMarginQuietMs);
  lane.sync_learned(400'000);
  CHECK(lane.quota().margin_scale() == 1.0);
  CHECK(lane.limiter().usage(400'000)[0].margin_ms == 20);
}

TEST_CASE("a configured rate refused for bunched starts without counters "
          "is run as a leaky bucket") {
  Lane lane(api_with({spec("20/s")}), 64);
  auto marks = burst(lane, 5, 0);  // "20/s" lets a burst through
  QuotaObservation none;
  answer(lane, marks[0], none, 50);
  answer(lane, marks[1], none, 50, true);  // 0 ms after the first: refused
  auto learned = lane.quota().learned();
  REQUIRE(learned.size() == 1);
  CHECK(learned[0].source == "recognized");
  CHECK(learned[0].spec.leaky());
  CHECK(*lane.quota().learned_rate() == doctest::Approx(20.0));
  // From now on starts are a spacing (50 ms) plus the margin apart.
  const Millis pause_end = *lane.quota().paused_until(50);
  lane.on_start(1, pause_end);
  CHECK(lane.gate(1, pause_end) >= pause_end + 50);
  CHECK(lane.gate(1, pause_end) <= pause_end + 52);
}

TEST_CASE("a lane with no limit of its own sends one request first") {
  Lane lane(api_with({}), 64);
  CHECK(lane.gate(1, 0) == 0);
  lane.on_start(1, 0);
  auto m = lane.quota().mark();
  CHECK(lane.gate(1, 1) == QuotaState::kAwaitAnswer);
  answer(lane, m, counter(9, 900, 10), 30);
  CHECK(lane.gate(1, 30) == 30);
  // A lane with a configured limit needs no such probe.
  Lane known(api_with({spec("10/s")}), 64);
  known.on_start(1, 0);
  CHECK(known.gate(1, 0) == 0);
}

}  // namespace
}  // namespace pacer

namespace pacer {
namespace {

// The cause of feedback_test's unexplained github-dialect runs (14
// refusals once): a probe refused with a reset already past (an epoch
// second behind the server's Date: reset_in_ms 0) erased the counter its
// own answer had just refreshed, as "not refreshed by the probe", and the
// lane, with no counter left, sent its whole concurrency blind.
TEST_CASE("a refused probe whose reset is already past keeps its counter") {
  QuotaSettings settings;
  settings.learn_rate = false;
  QuotaState q(settings);
  auto exact = [](double remaining, Millis reset_in) {
    auto o = QuotaObservation::from_json(
        {{"limits",
          {{{"source", "github"},
            {"name", "core"},
            {"unit", "requests"},
            {"limit", 50},
            {"remaining", remaining},
            {"reset_in_ms", reset_in}}}}});
    REQUIRE(o);
    return *o;
  };
  q.on_start(1, 0);
  auto first = exact(0, 500);
  QuotaState::Answer a;
  a.obs = &first;
  a.at = q.mark();
  a.success = true;
  q.on_answer(a, 10);
  CHECK(q.gate(1, 20) == 510);
  // The reset passes: one probe goes, nothing else until it answers.
  q.on_start(1, 510);
  CHECK(q.gate(1, 511) == QuotaState::kAwaitAnswer);
  auto refused = exact(0, 0);
  QuotaState::Answer r;
  r.obs = &refused;
  r.at = q.mark();
  r.rate_limited = true;
  const Millis pause = q.on_answer(r, 520).value_or(520);
  // After the pause, again one probe at a time: the counter is still there.
  int started = 0;
  for (Millis t = pause; t < pause + 100; ++t)
    while (q.gate(1, t) <= t && started < 10) {
      q.on_start(1, t);
      ++started;
    }
  CHECK(started == 1);
}

}  // namespace
}  // namespace pacer

namespace pacer {
namespace {

TEST_CASE("the first requests count as arriving when answered; later ones "
          "as late as their answers were slower than the fastest") {
  ApiConfig api;
  api.name = "a";
  api.limits = {*parse_limit("2/s")};
  api.margin_ms = 0;
  Lane lane(api, 64);
  lane.on_start(1, 0);
  lane.on_start(1, 0);
  // Cold connections: answered 120 ms later. Nothing bounds how long the
  // way back took, so the window they opened may end at 1120.
  lane.note_answered(0, 125, 120, 1);
  lane.note_answered(0, 135, 130, 1);
  CHECK(lane.gate(1, 200) == 1120);
  // Warm calls take 20 ms at the worker; one that took 80 ms arrived up to
  // 60 ms late. (How long results take to reach the broker, here 15 ms,
  // does not count.)
  lane.on_start(1, 1120);
  lane.note_answered(1120, 1155, 20, 1);
  lane.on_start(1, 1130);
  lane.note_answered(1130, 1225, 80, 1);
  CHECK(lane.gate(1, 1225) == 2120);
  lane.on_start(1, 2120);
  CHECK(lane.gate(1, 2120) == 1130 + 60 + 1000);
}

}  // namespace
}  // namespace pacer
