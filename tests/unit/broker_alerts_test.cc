// The alert engine under explicit times: each alert fires once when its
// condition crosses the threshold, stays quiet while it holds, clears once
// after clear_after, fires again on the next crossing; thresholds per API
// and turned off; usage from pacer's count and from the server's counters.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "broker/alerts.h"

using pacer::AlertThresholds;
using pacer::ApiConfig;
using pacer::Millis;
using pacer::alerts::Engine;
using pacer::alerts::Event;
using pacer::metrics::LaneSnapshot;
using pacer::metrics::LimitSample;
using pacer::metrics::UpstreamSample;

namespace {

constexpr Millis kT0 = 1'700'000'000'000;

// Thresholds with everything off but what a test turns on.
AlertThresholds quiet() {
  AlertThresholds t;
  t.usage_warning = 0;
  t.usage_critical = 0;
  t.rate_limited = 0;
  t.paused_ms = -1;
  t.circuit_open = false;
  t.dead_letters = 0;
  t.unit_budget = 0;
  t.clear_after_ms = 5'000;
  return t;
}

Engine engine_for(const AlertThresholds& t, const std::string& api = "echo") {
  std::map<std::string, ApiConfig> apis;
  apis[api].name = api;
  apis[api].alerts = t;
  return Engine(apis);
}

LaneSnapshot lane(const std::string& api = "echo") {
  LaneSnapshot s;
  s.api = api;
  return s;
}

LimitSample limit(std::int64_t amount, std::int64_t used, Millis window,
                  const std::string& unit = "requests",
                  const std::string& source = "configured") {
  LimitSample l;
  l.policy = std::to_string(amount) + (unit == "requests" ? "" : " " + unit) +
             "/" + std::to_string(window) + "ms";
  l.source = source;
  l.limit = amount;
  l.used = used;
  l.window_ms = window;
  l.unit = unit;
  return l;
}

// The alerts named in `events` as "alert:firing|cleared[:policy]".
std::vector<std::string> names(const std::vector<Event>& events) {
  std::vector<std::string> out;
  for (const auto& e : events)
    out.push_back(e.alert + (e.firing ? ":firing" : ":cleared") +
                  (e.policy.empty() ? "" : ":" + e.policy));
  return out;
}

}  // namespace

TEST_CASE("usage: warning and critical fire once per crossing and clear") {
  AlertThresholds t = quiet();
  t.usage_warning = 0.8;
  t.usage_critical = 0.9;
  Engine e = engine_for(t);
  auto at = [&](std::int64_t used, Millis ms) {
    LaneSnapshot s = lane();
    s.limits = {limit(100, used, 60'000)};
    return names(e.evaluate(s, kT0 + ms));
  };
  const std::string p = ":100/60000ms";
  CHECK(at(50, 0).empty());
  CHECK(at(80, 1000) == std::vector<std::string>{"usage_warning:firing" + p});
  // Holding above: no repeat.
  for (int i = 2; i < 10; ++i) CHECK(at(85, i * 1000).empty());
  CHECK(at(95, 10'000) ==
        std::vector<std::string>{"usage_critical:firing" + p});
  CHECK(at(99, 11'000).empty());
  // Below critical but within the hysteresis: critical holds.
  CHECK(at(86, 12'000).empty());
  CHECK(at(86, 30'000).empty());
  // Below both bars: clears after clear_after (5 s) of staying below.
  CHECK(at(10, 31'000).empty());
  CHECK(at(10, 35'000).empty());
  CHECK(at(10, 36'000) ==
        std::vector<std::string>{"usage_warning:cleared" + p,
                                 "usage_critical:cleared" + p});
  CHECK(at(10, 37'000).empty());
  // A dip back above within clear_after restarts the wait, with no event.
  CHECK(at(81, 40'000) == std::vector<std::string>{"usage_warning:firing" + p});
  CHECK(at(10, 41'000).empty());
  CHECK(at(81, 44'000).empty());
  CHECK(at(10, 45'000).empty());
  CHECK(at(10, 49'000).empty());
  CHECK(at(10, 50'000) ==
        std::vector<std::string>{"usage_warning:cleared" + p});

  auto samples = e.samples();
  REQUIRE(samples.size() == 2);
  CHECK(samples[0].alert == "usage_critical");
  CHECK(samples[0].fired_total == 1);
  CHECK_FALSE(samples[0].firing);
  CHECK(samples[1].alert == "usage_warning");
  CHECK(samples[1].fired_total == 2);
}

TEST_CASE("usage: short windows are pacing and skipped; the minimum is set") {
  AlertThresholds t = quiet();
  t.usage_warning = 0.8;
  SUBCASE("default minimum of a minute") {
    Engine e = engine_for(t);
    LaneSnapshot s = lane();
    s.limits = {limit(50, 50, 1'000), limit(1000, 900, 3'600'000)};
    auto ev = e.evaluate(s, kT0);
    REQUIRE(ev.size() == 1);
    CHECK(ev[0].policy == "1000/3600000ms");
    CHECK(ev[0].severity == "warning");
    CHECK(ev[0].value == doctest::Approx(0.9));
    CHECK(ev[0].threshold == doctest::Approx(0.8));
    CHECK(ev[0].message == "echo: 90% of 1000/3600000ms (900 of 1000) used");
  }
  SUBCASE("usage_min_window = 0s checks every limit") {
    t.usage_min_window_ms = 0;
    Engine e = engine_for(t);
    LaneSnapshot s = lane();
    s.limits = {limit(50, 50, 1'000)};
    CHECK(e.evaluate(s, kT0).size() == 1);
  }
}

TEST_CASE("usage from the server's counters; learned limits then skipped") {
  AlertThresholds t = quiet();
  t.usage_critical = 0.9;
  Engine e = engine_for(t);
  LaneSnapshot s = lane();
  s.limits = {limit(100, 99, 60'000, "requests", "learned")};
  UpstreamSample u;
  u.policy = "x-ratelimit/requests";
  u.limit = 100;
  u.remaining = 5;
  u.reset_seconds = 30;
  s.upstream = {u};
  auto ev = e.evaluate(s, kT0);
  REQUIRE(ev.size() == 1);
  CHECK(ev[0].policy == "x-ratelimit/requests");
  CHECK(ev[0].value == doctest::Approx(0.95));
  CHECK(ev[0].message.find("the server's counter x-ratelimit/requests (5 of "
                           "100 left)") != std::string::npos);
  // The counter's reset passed with no newer answer: it is full again.
  s.upstream[0].reset_seconds = 0;
  CHECK(e.evaluate(s, kT0 + 1000).empty());
  auto cleared = e.evaluate(s, kT0 + 6000);
  REQUIRE(cleared.size() == 1);
  CHECK_FALSE(cleared[0].firing);
  // Without counters, the learned limit is read from pacer's own count.
  s.upstream.clear();
  ev = e.evaluate(s, kT0 + 7000);
  REQUIRE(ev.size() == 1);
  CHECK(ev[0].policy == "100/60000ms");
}

TEST_CASE("unit_budget: a unit limit or counter with little left") {
  AlertThresholds t = quiet();
  t.unit_budget = 0.05;
  Engine e = engine_for(t);
  LaneSnapshot s = lane();
  s.limits = {limit(100, 99, 60'000),  // requests: not a unit budget
              limit(10'000, 9'000, 60'000, "tokens")};
  CHECK(e.evaluate(s, kT0).empty());
  s.limits[1].used = 9'600;
  auto ev = e.evaluate(s, kT0 + 1000);
  REQUIRE(ev.size() == 1);
  CHECK(ev[0].alert == "unit_budget");
  CHECK(ev[0].severity == "critical");
  CHECK(ev[0].policy == "10000 tokens/60000ms");
  CHECK(ev[0].value == doctest::Approx(0.04));
  CHECK(ev[0].message ==
        "echo: only 4% of 10000 tokens/60000ms (9600 of 10000) left");
  // A server's token counter counts too.
  UpstreamSample u;
  u.policy = "x-ratelimit/tokens";
  u.unit = "tokens";
  u.limit = 1000;
  u.remaining = 10;
  s.upstream = {u};
  ev = e.evaluate(s, kT0 + 2000);
  REQUIRE(ev.size() == 1);
  CHECK(ev[0].policy == "x-ratelimit/tokens");
}

TEST_CASE("rate_limited: answers classed rate limited within the window") {
  AlertThresholds t = quiet();
  t.rate_limited = 5;
  t.rate_limited_window_ms = 10'000;
  Engine e = engine_for(t);
  auto at = [&](std::int64_t total, Millis ms) {
    LaneSnapshot s = lane();
    s.counters.rate_limited = total;
    return names(e.evaluate(s, kT0 + ms));
  };
  CHECK(at(0, 0).empty());
  CHECK(at(4, 1000).empty());
  CHECK(at(5, 2000) == std::vector<std::string>{"rate_limited:firing"});
  CHECK(at(9, 3000).empty());
  // No new 429s: the window slides past them (the count at 2 s still lies
  // within 10 s at 11 s, not at 13 s); then clear_after.
  CHECK(at(9, 11'000).empty());
  CHECK(at(9, 13'000).empty());  // 9 - 9 (reading of 3 s is the baseline)
  CHECK(at(9, 17'000).empty());
  CHECK(at(9, 18'000) == std::vector<std::string>{"rate_limited:cleared"});
  // A new spike fires again.
  CHECK(at(20, 19'000) == std::vector<std::string>{"rate_limited:firing"});
}

TEST_CASE("paused: only when the pause lasts longer than paused_for") {
  AlertThresholds t = quiet();
  t.paused_ms = 10'000;
  t.clear_after_ms = 0;
  Engine e = engine_for(t);
  auto at = [&](bool paused, Millis ms) {
    LaneSnapshot s = lane();
    s.paused = paused;
    s.pause_reason = "429 Too Many Requests";
    return e.evaluate(s, kT0 + ms);
  };
  CHECK(at(true, 0).empty());
  CHECK(at(true, 5'000).empty());
  CHECK(at(false, 6'000).empty());  // a short pause: nothing
  CHECK(at(true, 7'000).empty());
  CHECK(at(true, 16'000).empty());
  auto ev = at(true, 17'000);
  REQUIRE(ev.size() == 1);
  CHECK(ev[0].alert == "paused");
  CHECK(ev[0].message == "echo: paused for 10s: 429 Too Many Requests");
  CHECK(at(true, 30'000).empty());
  ev = at(false, 31'000);
  REQUIRE(ev.size() == 1);
  CHECK_FALSE(ev[0].firing);
  CHECK(ev[0].fired_at == kT0 + 17'000);
  CHECK(ev[0].at == kT0 + 31'000);
}

TEST_CASE("circuit_open: fires while open or half open") {
  AlertThresholds t = quiet();
  t.circuit_open = true;
  t.clear_after_ms = 0;
  Engine e = engine_for(t);
  auto at = [&](const char* circuit, Millis ms) {
    LaneSnapshot s = lane();
    s.circuit = circuit;
    return names(e.evaluate(s, kT0 + ms));
  };
  CHECK(at("closed", 0).empty());
  CHECK(at("open", 1000) == std::vector<std::string>{"circuit_open:firing"});
  CHECK(at("half_open", 2000).empty());
  CHECK(at("open", 3000).empty());
  CHECK(at("closed", 4000) == std::vector<std::string>{"circuit_open:cleared"});
}

TEST_CASE("dead_letters: growth within the window, not the standing count") {
  AlertThresholds t = quiet();
  t.dead_letters = 2;
  t.dead_window_ms = 60'000;
  t.clear_after_ms = 0;
  Engine e = engine_for(t);
  auto at = [&](std::optional<std::int64_t> dead, Millis ms) {
    LaneSnapshot s = lane();
    if (dead) s.jobs["dead"] = *dead;
    return names(e.evaluate(s, kT0 + ms));
  };
  SUBCASE("dead letters from before the broker started are not growth") {
    CHECK(at(100, 0).empty());
    CHECK(at(101, 10'000).empty());
    CHECK(at(102, 20'000) == std::vector<std::string>{"dead_letters:firing"});
    // Replayed: the count falls; growth is measured from the lowest
    // reading (and clear_after is 0 here).
    CHECK(at(0, 30'000) == std::vector<std::string>{"dead_letters:cleared"});
    CHECK(at(1, 40'000).empty());
    CHECK(at(2, 50'000) == std::vector<std::string>{"dead_letters:firing"});
  }
  SUBCASE("a lane without dead jobs has no count: it reads as 0") {
    CHECK(at(std::nullopt, 0).empty());
    CHECK(at(2, 1'000) == std::vector<std::string>{"dead_letters:firing"});
  }
  SUBCASE("growth older than the window no longer counts") {
    CHECK(at(0, 0).empty());
    CHECK(at(1, 1'000).empty());
    CHECK(at(1, 61'000).empty());
    CHECK(at(2, 62'000).empty());  // 1 new within the last minute
  }
}

TEST_CASE("thresholds are per API; unknown APIs and turned-off alerts") {
  std::map<std::string, ApiConfig> apis;
  AlertThresholds loud = quiet();
  loud.circuit_open = true;
  loud.clear_after_ms = 0;
  apis["a"].alerts = loud;
  apis["b"].alerts = quiet();
  Engine e(apis);
  LaneSnapshot a = lane("a"), b = lane("b"), c = lane("c");
  a.circuit = b.circuit = c.circuit = "open";
  CHECK(e.evaluate(a, kT0).size() == 1);
  CHECK(e.evaluate(b, kT0).empty());
  CHECK(e.evaluate(c, kT0).empty());  // not configured: no thresholds
  auto active = e.active();
  REQUIRE(active.size() == 1);
  CHECK(active[0].api == "a");
  CHECK(active[0].since == kT0);
  CHECK(e.active("b").empty());
}

TEST_CASE("a firing alert whose limit goes away clears") {
  AlertThresholds t = quiet();
  t.usage_warning = 0.5;
  t.clear_after_ms = 0;
  Engine e = engine_for(t);
  LaneSnapshot s = lane();
  s.limits = {limit(10, 9, 60'000, "requests", "learned")};
  CHECK(names(e.evaluate(s, kT0)) ==
        std::vector<std::string>{"usage_warning:firing:10/60000ms"});
  s.limits.clear();
  CHECK(names(e.evaluate(s, kT0 + 1000)) ==
        std::vector<std::string>{"usage_warning:cleared:10/60000ms"});
}

TEST_CASE("the webhook document") {
  Event ev;
  ev.firing = false;
  ev.api = "openai";
  ev.alert = "usage_critical";
  ev.severity = "critical";
  ev.policy = "10000/1d";
  ev.value = 0.5;
  ev.threshold = 0.9;
  ev.message = "openai: 91% of 10000/1d (9100 of 10000) used";
  ev.fired_at = kT0;
  ev.at = kT0 + 61'500;
  auto j = ev.to_json();
  CHECK(j["status"] == "resolved");
  CHECK(j["alert"] == "usage_critical");
  CHECK(j["severity"] == "critical");
  CHECK(j["api"] == "openai");
  CHECK(j["policy"] == "10000/1d");
  CHECK(j["fired_at"] == "2023-11-14T22:13:20.000Z");
  CHECK(j["resolved_at"] == "2023-11-14T22:14:21.500Z");
  CHECK(j["source"] == "pacer-broker");
  ev.firing = true;
  ev.policy.clear();
  j = ev.to_json();
  CHECK(j["status"] == "firing");
  CHECK(j["policy"].is_null());
  CHECK_FALSE(j.contains("resolved_at"));
}
