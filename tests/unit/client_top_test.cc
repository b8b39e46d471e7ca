// `pacer top`'s frame from STATS replies: limits (configured and learned),
// use of the first limit, rate, the server's lowest counter, counts, 429s per
// minute between two replies, the circuit and a pause, and the backlog's ETA.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "client/top.h"

using nlohmann::json;
using pacer::client::render_top;

namespace {

constexpr pacer::Millis kNow = 1'764'286'000'000;

json lane(double rate_limited_total) {
  return {{"api", "echo"},
          {"usage",
           {{{"limit", "50/1s"}, {"used", 48}, {"learned", false}},
            {{"limit", "100/5s"}, {"used", 60}, {"learned", true}}}},
          {"rate_per_s", 10.0},
          {"items_per_request", 5.0},
          {"in_flight", 3},
          {"states",
           {{"queued", 900},
            {"retrying", 100},
            {"waiting_quota", 500},
            {"dead", 2}}},
          {"upstream",
           {{{"key", "a"}, {"remaining", 40}, {"limit", 100}},
            {{"key", "b"},
             {"remaining", 12},
             {"limit", 50},
             {"reset_in_ms", 2300}}}},
          {"circuit", "closed"},
          {"paused_until_ms", kNow + 4000},
          {"rate_limited_total", rate_limited_total}};
}

json stats(double rate_limited_total) {
  return {{"lanes", {lane(rate_limited_total)}},
          {"workers", {{{"id", "w1"}}, {{"id", "w2"}}}}};
}

}  // namespace

TEST_CASE("a lane's row") {
  json before = stats(10), now = stats(25);
  std::string frame = render_top(now, &before, 30'000, kNow);
  INFO(frame);
  CHECK(frame.find("workers 2") != std::string::npos);
  CHECK(frame.find("50/1s (learned 100/5s)") != std::string::npos);
  CHECK(frame.find("48 of 50/1s") != std::string::npos);
  CHECK(frame.find("10.0") != std::string::npos);  // calls per second
  CHECK(frame.find("12/50, reset 2.3s") != std::string::npos);  // the lowest
  CHECK(frame.find(" 1000 ") != std::string::npos);  // queued+retrying
  CHECK(frame.find(" 500 ") != std::string::npos);   // waiting
  CHECK(frame.find("30.0") != std::string::npos);    // 15 429s in 30 s
  CHECK(frame.find("closed, paused 4s") != std::string::npos);
  // 1,500 jobs at 10 calls/s of 5 jobs: 30 s.
  CHECK(frame.find("30s") != std::string::npos);
}

TEST_CASE("the first frame has no 429 rate; an empty backlog is done") {
  json s = stats(3);
  s["lanes"][0]["states"] = json::object();
  std::string frame = render_top(s, nullptr, 0, kNow);
  INFO(frame);
  CHECK(frame.find("done") != std::string::npos);
  CHECK(frame.find(" - ") != std::string::npos);
}

TEST_CASE(
    "a lane that sends nothing has no ETA, and odd replies do not throw") {
  json s = stats(0);
  s["lanes"][0]["rate_per_s"] = 0.0;
  std::string frame = render_top(s, nullptr, 0, kNow);
  CHECK(frame.find("LANE") != std::string::npos);
  CHECK_NOTHROW(render_top(json::object(), nullptr, 0, kNow));
  CHECK_NOTHROW(
      render_top(json{{"lanes", {1, "x", json::object()}}}, nullptr, 0, kNow));
  json odd = stats(0);
  odd["lanes"][0]["usage"] = {1, "x"};
  odd["lanes"][0]["upstream"] = {1, {{"remaining", "x"}}};
  odd["lanes"][0]["states"] = "x";
  CHECK_NOTHROW(render_top(odd, &odd, 1000, kNow));
}

TEST_CASE("firing alerts are listed under the table, oldest first") {
  json s = stats(0);
  s["lanes"][0]["alerts"] = {
      {{"alert", "rate_limited"},
       {"severity", "warning"},
       {"message", "echo: 12 answers rate limited (429) in 1m0s"},
       {"since_ms", kNow - 5'000}},
      {{"alert", "usage_critical"},
       {"severity", "critical"},
       {"message", "echo: 95% of 600/1m0s (570 of 600) used"},
       {"since_ms", kNow - 90'000}}};
  std::string frame = render_top(s, nullptr, 0, kNow);
  INFO(frame);
  const auto header = frame.find("\nALERTS\n");
  REQUIRE(header != std::string::npos);
  const auto critical = frame.find(
      "critical  usage_critical  echo: 95% of 600/1m0s (570 of 600) used  "
      "(for 1m30s)");
  const auto warning = frame.find("warning  rate_limited  echo: 12 answers");
  REQUIRE(critical != std::string::npos);
  REQUIRE(warning != std::string::npos);
  CHECK(header < critical);
  CHECK(critical < warning);
  // No alerts, no section.
  CHECK(render_top(stats(0), nullptr, 0, kNow).find("ALERTS") ==
        std::string::npos);
}
