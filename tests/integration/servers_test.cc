// Real broker, worker and mock processes against the mock behaving as the
// rate limiters real servers run (tests/mock_api/README.md, "Behaving like
// real servers"): express-rate-limit's and Flask-Limiter's windows opened by
// a client's first request, with whole-second resets rounded up or
// truncated, and Flask-Limiter's headers read after the call (they count the
// requests that arrived meanwhile); Flask-Limiter's moving window; nginx
// limit_req's leaky bucket
// with burst 0 and 10. Each once with the server's limit configured and
// once unknown, all fleets at once (they are rate bound).
//   known:   every job succeeds, the server refuses none (nginx burst 0: a
//            few, see below), and no second sees more requests arrive than
//            the limit allows (refused ones counted);
//   unknown: every job succeeds and the server refuses at most one
//            window's worth of the limit (20) while the lane learns.
// Each fleet's pace (the fastest the limit allows over the time it took) is
// printed, not asserted: speed is the benchmarks' to measure
// (bench/conformance.sh against the real servers, broker_servers_test on a
// fake clock), and a loaded machine here must not fail a correct lane.
#include <doctest/doctest.h>

#include <chrono>
#include <memory>

#include "tests/support/fleet.h"

using namespace pacer::testing;
using json = nlohmann::json;

namespace {

struct Behaviour {
  std::string name;
  std::vector<std::string> mock_args;
  std::string known_limit;  // the lane's limits when known
  int burst = -1;           // leaky bucket's burst, -1 for windows
};

std::vector<Behaviour> behaviours() {
  const std::vector<std::string> window = {"--limit", "20/s", "--algorithm",
                                           "fixed", "--window-start",
                                           "first-request"};
  auto with = [](std::vector<std::string> a, std::vector<std::string> b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
  };
  return {
      {"express x-ratelimit", with(window, {"--dialect", "x-ratelimit"}),
       "20/s"},
      {"express ietf-7", with(window, {"--dialect", "ietf-7"}), "20/s"},
      {"flask fixed",
       with(window, {"--dialect", "x-ratelimit", "--reset-rounding", "down",
                     "--headers-after-call"}),
       "20/s"},
      {"flask moving",
       {"--limit", "20/s", "--algorithm", "sliding", "--dialect",
        "x-ratelimit", "--reset-rounding", "down", "--headers-after-call"},
       "20/s"},
      {"nginx burst 0",
       {"--limit", "20/s", "--algorithm", "leaky", "--burst", "0", "--dialect",
        "none", "--reject-status", "429"},
       "20/s burst 0", 0},
      {"nginx burst 10",
       {"--limit", "20/s", "--algorithm", "leaky", "--burst", "10",
        "--dialect", "none", "--reject-status", "429"},
       "20/s burst 10", 10},
  };
}

struct Run {
  Behaviour b;
  bool known = false;
  int jobs = 0;
  std::unique_ptr<Fleet> fleet;
  std::vector<std::int64_t> ids;
};

// The least time the limit allows n accepted requests to span, in ms.
double fastest_ms(const Behaviour& b, std::int64_t n) {
  if (b.burst >= 0) return static_cast<double>(n - 1 - b.burst) * 50.0;
  return static_cast<double>((n + 19) / 20 - 1) * 1000.0;
}

}  // namespace

void run_all(bool known);

TEST_CASE("each real server's behaviour, its limit configured") {
  run_all(true);
}

TEST_CASE("each real server's behaviour, its limit unknown") {
  run_all(false);
}

void run_all(bool known) {
  std::vector<Run> runs;
  for (const auto& b : behaviours()) {
    {
      Run r;
      r.b = b;
      r.known = known;
      r.jobs = known ? 100 : 400;
      std::vector<std::string> args = b.mock_args;
      args.insert(args.end(), {"--latency", "20"});
      std::string api = "concurrency = 32\n";
      if (known) api += "limits = [\"" + b.known_limit + "\"]\n";
      // Many fleets share two cores here: arrivals bunch by tens of ms, so
      // the windows get the margin other integration tests use (a window
      // opened by a late first arrival must not see the next burst early).
      // A leaky bucket with no burst cannot take one without losing rate.
      if (known && b.burst < 0) api += "margin = \"50ms\"\n";
      r.fleet = std::make_unique<Fleet>(FleetOptions{
          .mock_args = args, .api_toml = api, .workers = 1,
          .worker_concurrency = 32});
      r.fleet->start_broker();
      r.fleet->start_worker(0);
      runs.push_back(std::move(r));
    }
  }
  for (auto& r : runs) {
    REQUIRE(r.fleet->wait_workers(1));
    r.ids = r.fleet->submit_echo(r.jobs, r.b.name);
    REQUIRE(r.ids.size() == static_cast<std::size_t>(r.jobs));
  }
  const auto deadline = std::chrono::steady_clock::now() + 240s;
  for (auto& r : runs) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    CHECK_MESSAGE(r.fleet->wait_done(r.ids, std::max(left, 1000ms)), r.b.name);
  }
  for (auto& r : runs) {
    CAPTURE(r.b.name);
    CAPTURE(r.known);
    auto p = r.fleet->progress(r.ids);
    CHECK(p["succeeded"] == r.jobs);
    json s = r.fleet->mock().stats();
    const auto accepted = s["accepted"].get<std::int64_t>();
    const auto rejected = s["rejected"].get<std::int64_t>();
    const double spent = s["last_accept_ms"].get<double>() -
                         s["first_accept_ms"].get<double>();
    const double pace = spent > 0 ? fastest_ms(r.b, accepted) / spent : 1.0;
    MESSAGE(r.b.name, std::string(r.known ? " known" : " unknown"), ": accepted ",
            accepted, ", refused ", rejected, ", pace ", pace,
            ", busiest second attempted ", s["max_attempted_in_any_interval"]);
    if (r.known) {
      // nginx with no burst refuses any arrival 1 ms early: the bunching
      // of a loaded machine draws a few refusals, each widening the margin.
      CHECK(rejected <= (r.b.burst == 0 ? 5 : 0));
      // A leaky bucket admits burst + 1 at once, then its rate.
      const int most = r.b.burst >= 0 ? 21 + r.b.burst : 20;
      CHECK(s["max_attempted_in_any_interval"].get<int>() <= most);
    } else {
      CHECK(rejected <= 20);
    }
  }
}
