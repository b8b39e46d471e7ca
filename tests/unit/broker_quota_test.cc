// QuotaState and Lane under explicit time: pauses, caps from remaining
// counts, probes after a reset, learned limits, the pace learned against
// simulated servers without counters, reopening without a burst, the circuit
// breaker, others' spending, and the persisted state.
#include <doctest/doctest.h>

#include <deque>

#include "broker/lane.h"
#include "broker/quota.h"

namespace pacer {
namespace {

using json = nlohmann::json;

QuotaObservation obs_json(const json& j) {
  auto o = QuotaObservation::from_json(j);
  REQUIRE(o);
  return *o;
}

json limit(double remaining, std::optional<Millis> reset_in,
           std::optional<std::int64_t> lim = std::nullopt,
           std::optional<std::int64_t> window_s = std::nullopt,
           const char* unit = "requests") {
  json l = {{"source", "x-ratelimit"},
            {"name", "default"},
            {"unit", unit},
            {"remaining", remaining}};
  if (reset_in) l["reset_in_ms"] = *reset_in;
  if (lim) l["limit"] = *lim;
  if (window_s) l["window_s"] = *window_s;
  return l;
}

QuotaState::Answer ok(const QuotaObservation* o, QuotaState::Mark at) {
  QuotaState::Answer a;
  a.obs = o;
  a.at = at;
  a.success = true;
  return a;
}

QuotaState::Answer rejected(const QuotaObservation* o, QuotaState::Mark at) {
  QuotaState::Answer a;
  a.obs = o;
  a.at = at;
  a.rate_limited = true;
  return a;
}

TEST_CASE("observation JSON is read defensively") {
  CHECK_FALSE(QuotaObservation::from_json(json::array()));
  auto o = obs_json({{"verdict", 7},
                     {"wait_ms", -5},
                     {"retry_after_ms", 1e300},
                     {"limits",
                      {{{"remaining", "x"}, {"limit", -1}},
                       "junk",
                       {{"remaining", 3}, {"reset_in_ms", 2000.2}}}}});
  CHECK(o.verdict == "ok");
  CHECK_FALSE(o.wait_ms);
  REQUIRE(o.retry_after_ms);
  CHECK(*o.retry_after_ms <= 7LL * 86'400'000);
  REQUIRE(o.limits.size() == 2);
  CHECK_FALSE(o.limits[0].remaining);
  CHECK_FALSE(o.limits[0].limit);
  CHECK(o.limits[1].remaining == 3);
  CHECK(o.limits[1].reset_in_ms == 2001);
}

TEST_CASE(
    "a 429 pauses the lane for max(Retry-After, backoff), once per burst") {
  QuotaSettings s;
  s.learn_rate = false;
  s.backoff_base_ms = 500;
  QuotaState q(s);
  const Millis t0 = 1'000'000;
  std::vector<QuotaState::Mark> marks;
  for (int i = 0; i < 5; ++i) {
    q.on_start(1, t0);
    marks.push_back(q.mark());
  }
  auto o = obs_json({{"verdict", "throttled"},
                     {"blocking", true},
                     {"retry_after_ms", 2000},
                     {"wait_ms", 2000}});
  auto until = q.on_answer(rejected(&o, marks[0]), t0 + 10);
  REQUIRE(until);
  CHECK(*until == t0 + 10 + 2000);
  CHECK(q.gate(1, t0 + 20) == t0 + 2010);
  // The other four were sent before the first 429 was seen: same episode,
  // the backoff does not escalate.
  auto bare = obs_json({{"verdict", "throttled"}, {"blocking", true}});
  for (int i = 1; i < 5; ++i) q.on_answer(rejected(&bare, marks[i]), t0 + 11);
  CHECK(q.gate(1, t0 + 20) == t0 + 2010);
  // A start after the pause drawing another bare 429: backoff doubles.
  q.on_start(1, t0 + 2010);
  auto m = q.mark();
  until = q.on_answer(rejected(&bare, m), t0 + 2020);
  CHECK(*until == t0 + 2020 + 1000);
  // A success resets the escalation.
  q.on_start(1, t0 + 3100);
  m = q.mark();
  q.on_answer(ok(nullptr, m), t0 + 3110);
  q.on_start(1, t0 + 3200);
  m = q.mark();
  until = q.on_answer(rejected(&bare, m), t0 + 3210);
  CHECK(*until == t0 + 3210 + 500);
}

TEST_CASE("remaining = R caps the starts before the reset") {
  QuotaState q;
  const Millis t0 = 5'000;
  q.on_start(1, t0);  // the observed request
  auto observed = q.mark();
  q.on_start(1, t0);  // two more left before its answer came back:
  q.on_start(1, t0);  // the server had not counted them
  auto o = obs_json({{"limits", {limit(5, 1000, 10)}}});
  q.on_answer(ok(&o, observed), t0 + 5);
  // 5 remaining - 2 uncounted = 3 more starts.
  for (int i = 0; i < 3; ++i) {
    CHECK(q.gate(1, t0 + 6) == t0 + 6);
    q.on_start(1, t0 + 6);
  }
  CHECK(q.gate(1, t0 + 6) == t0 + 5 + 1000);
}

TEST_CASE("remaining = 0 pauses until the reset, then one probe goes first") {
  QuotaState q;
  const Millis t0 = 10'000;
  q.on_start(1, t0);
  auto m = q.mark();
  auto o = obs_json({{"limits", {limit(0, 800, 10)}}});
  q.on_answer(ok(&o, m), t0 + 2);
  CHECK(q.gate(1, t0 + 3) == t0 + 802);
  // After the reset the count is unknown: one start, then wait for it.
  CHECK(q.gate(1, t0 + 802) == t0 + 802);
  q.on_start(1, t0 + 802);
  auto probe = q.mark();
  CHECK(q.gate(1, t0 + 803) == QuotaState::kAwaitAnswer);
  auto fresh = obs_json({{"limits", {limit(9, 1000, 10)}}});
  q.on_answer(ok(&fresh, probe), t0 + 805);
  CHECK(q.gate(1, t0 + 806) == t0 + 806);
}

TEST_CASE("a probe answered without the counter drops it") {
  QuotaState q;
  q.on_start(1, 0);
  auto m = q.mark();
  auto o = obs_json({{"limits", {limit(3, 100)}}});
  q.on_answer(ok(&o, m), 1);
  q.on_start(1, 200);
  auto probe = q.mark();
  CHECK(q.gate(1, 201) == QuotaState::kAwaitAnswer);
  q.on_answer(ok(nullptr, probe), 210);
  CHECK(q.gate(1, 211) == 211);
  CHECK(q.to_json(211)["upstream"].empty());
}

TEST_CASE("an older request's answer does not overwrite a newer count") {
  QuotaState q;
  q.on_start(1, 0);
  auto first = q.mark();
  q.on_start(1, 0);
  auto second = q.mark();
  auto newer = obs_json({{"limits", {limit(3, 1000)}}});
  // The older one reached the server after the newer one (it saw less).
  auto older = obs_json({{"limits", {limit(2, 1000)}}});
  // The first request may still be on its way: 3 - 1 remain for sure.
  q.on_answer(ok(&newer, second), 5);
  q.on_answer(ok(&older, first), 6);
  for (int i = 0; i < 2; ++i) {
    CHECK(q.gate(1, 7) == 7);
    q.on_start(1, 7);
  }
  CHECK(q.gate(1, 8) == 1005);
}

TEST_CASE("requests that overtook older ones do not inflate the budget") {
  QuotaState q;
  std::vector<QuotaState::Mark> marks;
  for (int i = 0; i < 4; ++i) {
    q.on_start(1, 0);
    marks.push_back(q.mark());
  }
  // The fourth arrived first and saw 10 remaining; three older ones may not
  // be counted yet, so at most 7 more may start...
  auto o4 = obs_json({{"limits", {limit(10, 1000)}}});
  q.on_answer(ok(&o4, marks[3]), 2);
  int allowed = 0;
  while (q.gate(1, 3) <= 3) {
    q.on_start(1, 3);
    ++allowed;
  }
  CHECK(allowed == 7);
  // ...until their answers show where they were counted: one that saw
  // more remaining (11) was counted before the fourth, so the fourth's 10
  // already included it; one that saw less (9) was counted after.
  auto o1 = obs_json({{"limits", {limit(11, 1000)}}});
  q.on_answer(ok(&o1, marks[0]), 4);
  CHECK(q.gate(1, 5) == 5);
  q.on_start(1, 5);
  auto o2 = obs_json({{"limits", {limit(9, 1000)}}});
  q.on_answer(ok(&o2, marks[1]), 6);
  CHECK(q.gate(1, 7) == 1002);
}

TEST_CASE("unit counters are charged with the job's cost") {
  QuotaState q;
  q.on_start(100, 0);
  auto m = q.mark();
  auto o = obs_json({{"limits", {limit(250, 60'000, 1000, {}, "tokens")}}});
  q.on_answer(ok(&o, m), 1);
  CHECK(q.gate(200, 2) == 2);
  q.on_start(200, 2);
  CHECK(q.gate(100, 3) == 60'001);
  CHECK(q.gate(50, 3) == 3);
}

TEST_CASE("advertised limits with a window are learned and seeded") {
  QuotaState q;
  q.on_start(1, 0);
  auto m = q.mark();
  auto o = obs_json({{"limits", {limit(40, 30'000, 100, 60)}}});
  q.on_answer(ok(&o, m), 1);
  REQUIRE(q.take_limits_changed());
  auto learned = q.learned();
  REQUIRE(learned.size() == 1);
  CHECK(learned[0].spec == LimitSpec{100, 60'000, "requests"});
  CHECK(learned[0].source == "advertised");
  CHECK(q.learned_seed(learned[0].key) == 60);
  // The same again changes nothing.
  q.on_start(1, 2);
  m = q.mark();
  auto again = obs_json({{"limits", {limit(39, 29'000, 100, 60)}}});
  q.on_answer(ok(&again, m), 3);
  CHECK_FALSE(q.take_limits_changed());
}

TEST_CASE("one answer stops the lane for at most max_pause; a second is "
          "believed") {
  QuotaSettings s;
  s.learn_rate = false;
  s.max_pause_ms = 3'600'000;
  const Millis week = 7LL * 86'400'000;
  auto forged = obs_json({{"verdict", "throttled"},
                          {"blocking", true},
                          {"retry_after_ms", week},
                          {"wait_ms", week}});

  SUBCASE("a 429 asking for a week") {
    QuotaState q(s);
    const Millis t0 = 1'000'000;
    q.on_start(1, t0);
    auto until = q.on_answer(rejected(&forged, q.mark()), t0 + 10);
    REQUIRE(until);
    CHECK(*until == t0 + 10 + 3'600'000);
    CHECK(q.pause_reason().find("held to max_pause") != std::string::npos);
    // The next answer asking as much is believed.
    q.on_start(1, *until);
    until = q.on_answer(rejected(&forged, q.mark()), *until + 10);
    CHECK(*until >= t0 + week);
  }
  SUBCASE("a success in between: held again") {
    QuotaState q(s);
    const Millis t0 = 1'000'000;
    q.on_start(1, t0);
    auto until = q.on_answer(rejected(&forged, q.mark()), t0 + 10);
    q.on_start(1, *until);
    q.on_answer(ok(nullptr, q.mark()), *until + 10);
    q.on_start(1, *until + 20);
    auto again = q.on_answer(rejected(&forged, q.mark()), *until + 30);
    CHECK(*again == *until + 30 + 3'600'000);
  }
  SUBCASE("a counter reset a day off") {
    QuotaState q(s);
    const Millis t0 = 10'000;
    auto day = obs_json({{"limits", {limit(0, 86'400'000, 1000)}}});
    q.on_start(1, t0);
    q.on_answer(ok(&day, q.mark()), t0 + 2);
    CHECK(q.gate(1, t0 + 3) == t0 + 2 + 3'600'000);
    // A second answer of the window saying as much: the reset holds.
    QuotaState q2(s);
    q2.on_start(1, t0);
    auto first = q2.mark();
    q2.on_start(1, t0);
    auto second = q2.mark();
    q2.on_answer(ok(&day, first), t0 + 2);
    auto day2 = obs_json({{"limits", {limit(0, 86'400'000 - 1, 1000)}}});
    q2.on_answer(ok(&day2, second), t0 + 3);
    CHECK(q2.gate(1, t0 + 4) == t0 + 2 + 86'400'000);
  }
  SUBCASE("an advertised limit of 1 per week") {
    QuotaState q(s);
    auto policy = obs_json({{"limits", {limit(0, 1000, 1, 7 * 86'400)}}});
    q.on_start(1, 0);
    q.on_answer(ok(&policy, q.mark()), 1);
    CHECK(q.learned().empty());
    q.on_start(1, 2);
    q.on_answer(ok(&policy, q.mark()), 3);
    REQUIRE(q.learned().size() == 1);
    CHECK(q.learned()[0].spec == LimitSpec{1, 7 * 86'400'000LL, "requests"});
  }
  SUBCASE("an advertised limit a tenth of the configured one or less") {
    QuotaSettings c = s;
    c.configured = {LimitSpec{100, 1000, "requests"}};
    QuotaState q(c);
    auto strict = obs_json({{"limits", {limit(5, 1000, 9, 1)}}});
    q.on_start(1, 0);
    q.on_answer(ok(&strict, q.mark()), 1);
    CHECK(q.learned().empty());
    // A tenth or more is installed at once.
    QuotaState r(c);
    auto tenth = obs_json({{"limits", {limit(5, 1000, 10, 1)}}});
    r.on_start(1, 0);
    r.on_answer(ok(&tenth, r.mark()), 1);
    CHECK(r.learned().size() == 1);
  }
}

TEST_CASE("a lane with a learned limit seeds its limiter from the server") {
  ApiConfig api;
  api.name = "a";
  Lane lane(api, 16);
  lane.on_start(1, 0);
  auto m = lane.quota().mark();
  auto o = obs_json({{"limits", {limit(7, 9'000, 10, 10)}}});
  lane.quota().on_answer(ok(&o, m), 1);
  lane.sync_learned(1);
  // The server said 3 of 10 are used: the limiter now holds them (plus the
  // cap from the answer itself allows 7).
  int started = 0;
  for (Millis t = 2; t < 3; ++t)
    while (lane.gate(1, t) <= t) {
      lane.on_start(1, t);
      ++started;
    }
  CHECK(started == 7);
}

// A server with fixed windows of `limit` per `window` aligned to 0.
struct FixedWindowServer {
  std::int64_t limit;
  Millis window = 1000;
  Millis window_start = 0;
  std::int64_t count = 0;
  std::int64_t accepted = 0, rejected = 0;
  bool admit(Millis t) {
    Millis w = t / window * window;
    if (w != window_start) {
      window_start = w;
      count = 0;
    }
    if (count >= limit) {
      ++rejected;
      return false;
    }
    ++count;
    ++accepted;
    return true;
  }
};

// nginx's limit_req: `rate` per second with `burst`, in its own integer
// arithmetic (excess in thousandths of a request, time in whole ms).
struct LeakyServer {
  std::int64_t rate;
  std::int64_t burst;
  std::int64_t excess = 0;
  Millis last = -1;
  std::int64_t accepted = 0, rejected = 0;
  bool admit(Millis t) {
    std::int64_t e = 0;
    if (last >= 0) e = std::max<std::int64_t>(
                       0, excess - rate * 1000 * (t - last) / 1000 + 1000);
    if (last >= 0 && e > burst * 1000) {
      ++rejected;
      return false;
    }
    excess = e;
    last = t;
    ++accepted;
    return true;
  }
};

// Runs a lane against `admit` for `ms` with an endless backlog, answers
// after `latency`; returns acceptances in the last `tail_ms`.
template <typename Admit>
std::int64_t run_backlog(Lane& lane, Admit admit, Millis ms, Millis latency,
                         Millis tail_ms, std::int64_t& late_rejections) {
  struct Pending {
    Millis answer_at;
    Millis start;
    QuotaState::Mark mark;
  };
  std::deque<Pending> in_flight;
  std::int64_t accepted_late = 0;
  late_rejections = 0;
  for (Millis t = 0; t < ms; ++t) {
    while (!in_flight.empty() && in_flight.front().answer_at <= t) {
      Pending p = in_flight.front();
      in_flight.pop_front();
      bool admitted = admit(p.start);
      QuotaState::Answer a;
      a.at = p.mark;
      a.success = admitted;
      a.rate_limited = !admitted;
      lane.quota().on_answer(a, t);
      lane.sync_learned(t);
      if (admitted && t >= ms - tail_ms) ++accepted_late;
      if (!admitted && t >= ms - tail_ms) ++late_rejections;
    }
    lane.quota().tick(t);
    lane.sync_learned(t);
    while (in_flight.size() < 32 && lane.gate(1, t) <= t) {
      lane.on_start(1, t);
      in_flight.push_back({t + latency, t, lane.quota().mark()});
    }
  }
  return accepted_late;
}

TEST_CASE("the pace of a server without counters is learned, rejections "
          "bounded") {
  for (std::int64_t burst : {0, 10}) {
    CAPTURE(burst);
    ApiConfig api;
    api.name = "nginx-like";
    api.backoff_base_ms = 500;
    Lane lane(api, 64);
    LeakyServer server{20, burst};
    std::int64_t late_rejections = 0;
    const std::int64_t late = run_backlog(
        lane, [&](Millis t) { return server.admit(t); }, 180'000, 50, 60'000,
        late_rejections);
    MESSAGE("burst ", burst, ": accepted in the last minute ", late,
            ", rejections there ", late_rejections, ", in all ",
            server.rejected, ", learned ",
            lane.quota().learned_rate().value_or(0), "/s");
    // At most a window's worth of the limit (20) refused in all; in the
    // last minute at most one (a bucket with a burst takes a spacing a
    // little too short for hundreds of requests before it refuses one,
    // which lengthens it), and at least 95% of the rate.
    CHECK(server.rejected <= 20);
    CHECK(late_rejections <= 1);
    CHECK(late >= 0.95 * 20 * 60);
    REQUIRE(lane.quota().learned_rate());
    CHECK(*lane.quota().learned_rate() >= 19.0);
    CHECK(*lane.quota().learned_rate() <= 21.0);
  }
}

TEST_CASE("a fixed window without counters is paced at its average rate") {
  for (Millis window : {1000, 5000}) {
    CAPTURE(window);
    ApiConfig api;
    api.name = "fixed";
    api.backoff_base_ms = 500;
    Lane lane(api, 64);
    FixedWindowServer server{50, window};
    std::int64_t late_rejections = 0;
    const std::int64_t late = run_backlog(
        lane, [&](Millis t) { return server.admit(t); }, 180'000, 10, 60'000,
        late_rejections);
    const double allowed = 50.0 * 60'000 / static_cast<double>(window);
    MESSAGE("window ", window, ": accepted in the last minute ", late,
            " of ", allowed, ", rejections there ", late_rejections,
            ", in all ", server.rejected);
    CHECK(late >= 0.9 * allowed);
    CHECK(late_rejections <= 3);
    CHECK(server.rejected <= 50);
  }
}

TEST_CASE("a lane reopens without a burst") {
  ApiConfig api;
  api.name = "a";
  api.limits = {LimitSpec{10, 1000, "requests"}};
  Lane lane(api, 64);
  lane.on_start(1, 0);
  auto m = lane.quota().mark();
  auto o = obs_json({{"verdict", "throttled"},
                     {"blocking", true},
                     {"retry_after_ms", 5000},
                     {"wait_ms", 5000}});
  lane.quota().on_answer(rejected(&o, m), 1);
  std::vector<Millis> starts;
  for (Millis t = 0; t < 10'000; ++t)
    while (lane.gate(1, t) <= t) {
      lane.on_start(1, t);
      starts.push_back(t);
    }
  REQUIRE_FALSE(starts.empty());
  CHECK(starts.front() >= 5001);
  // No interval of one second holds more than the limit.
  for (std::size_t i = 0; i < starts.size(); ++i) {
    std::size_t j = i;
    while (j < starts.size() && starts[j] < starts[i] + 1000) ++j;
    CHECK(j - i <= 10);
  }
}

TEST_CASE("circuit breaker: opens, half-opens with one probe, closes") {
  QuotaSettings s;
  s.circuit_failures = 3;
  s.circuit_cooldown_ms = 10'000;
  QuotaState q(s);
  auto fail = [&](Millis t) {
    q.on_start(1, t);
    auto m = q.mark();
    QuotaState::Answer a;
    a.at = m;
    a.transient = true;
    q.on_answer(a, t + 1);
  };
  fail(0);
  fail(10);
  CHECK(q.circuit() == "closed");
  fail(20);
  CHECK(q.circuit() == "open");
  CHECK(q.gate(1, 30) == 21 + 10'000);
  // Cooldown over: one probe, nothing else until it answers.
  CHECK(q.gate(1, 10'021) == 10'021);
  q.on_start(1, 10'021);
  auto probe = q.mark();
  CHECK(q.circuit() == "half_open");
  CHECK(q.gate(1, 10'022) == QuotaState::kAwaitAnswer);
  // The probe fails: open again for the cooldown.
  QuotaState::Answer a;
  a.at = probe;
  a.transient = true;
  q.on_answer(a, 10'030);
  CHECK(q.circuit() == "open");
  CHECK(q.gate(1, 10'031) == 20'030);
  q.on_start(1, 20'030);
  probe = q.mark();
  q.on_answer(ok(nullptr, probe), 20'040);
  CHECK(q.circuit() == "closed");
  CHECK(q.gate(1, 20'041) == 20'041);
}

TEST_CASE("others spending the same quota slow the lane to match") {
  QuotaState q;
  // Fixed window of 100 ending at t=10'000; every 500 ms this lane starts
  // one request and sees the count fall by 6: 5 were someone else's.
  double remaining = 100;
  for (Millis t = 1000; t <= 5000; t += 500) {
    q.on_start(1, t);
    auto m = q.mark();
    remaining -= 6;
    auto o = obs_json({{"limits", {limit(remaining, 10'000 - t, 100)}}});
    q.on_answer(ok(&o, m), t);
  }
  auto j = q.to_json(5000);
  REQUIRE(j["upstream"].size() == 1);
  double shared = j["upstream"][0]["shared_use_per_s"].get<double>();
  CHECK(shared == doctest::Approx(10.0).epsilon(0.3));
  // 46 remain, but the others are expected to spend ~50 more before the
  // reset: the lane holds back rather than race them.
  CHECK(q.gate(1, 5001) == 10'000);
}

TEST_CASE("persisted state survives a restart") {
  QuotaState q;
  const Millis t0 = 1'000'000;
  q.on_start(1, t0);
  auto m = q.mark();
  auto o = obs_json({{"verdict", "throttled"},
                     {"blocking", true},
                     {"retry_after_ms", 60'000},
                     {"wait_ms", 60'000},
                     {"limits",
                      {limit(0, 60'000, 100, 60),
                       {{"source", "x"},
                        {"name", "hour"},
                        {"unit", "requests"},
                        {"remaining", 500},
                        {"reset_in_ms", 3'600'000}}}}});
  q.on_answer(rejected(&o, m), t0);
  json saved = q.persisted(t0 + 10);

  QuotaState r;
  r.restore(saved, t0 + 20);
  CHECK(r.paused_until(t0 + 20) == t0 + 60'000);
  CHECK(r.take_limits_changed());
  REQUIRE(r.learned().size() == 1);
  CHECK(r.learned()[0].spec == LimitSpec{100, 60'000, "requests"});
  // The exhausted counter waits for its reset; then the hour counter, whose
  // count went on while the broker was down, is probed first.
  CHECK(r.gate(1, t0 + 20) == t0 + 60'000);
  CHECK(r.gate(1, t0 + 60'000) == t0 + 60'000);
  r.on_start(1, t0 + 60'000);
  CHECK(r.gate(1, t0 + 60'001) == QuotaState::kAwaitAnswer);
}

}  // namespace
}  // namespace pacer
