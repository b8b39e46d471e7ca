// A lane against the rate limiters real servers run, under a fake clock:
// the mock API's limiter and header code (tests/mock_api) playing
// express-rate-limit, Flask-Limiter's fixed and moving windows (headers
// read when the answer is sent, 50 ms after the decision) and nginx's
// limit_req, the worker's header parser reading its answers, and the
// broker's Lane deciding every start. Requests arrive 0-1 ms after their
// start and are answered 50 ms later; the lane has an endless backlog.
//
// With the limit configured the lane must draw no refusal and keep at least
// 0.97 of the fastest pace the limit allows; with it unknown, every refusal
// counts against one window's worth of the limit and, from the fourth
// window on, the pace must be at least 0.95 of the fastest.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <queue>
#include <random>

#include "broker/lane.h"
#include "common/ratelimit.h"
#include "tests/mock_api/mock_api.h"

namespace pacer {
namespace {

constexpr Millis kEpochMs = 1'767'225'600'300;  // a wall time off the second
constexpr Millis kLatencyMs = 50;

struct Server {
  std::string name;
  mock::MockConfig config;
  std::int64_t limit = 0;  // per window, or the rate per second (leaky)
  Millis window_ms = 0;
  std::optional<std::int64_t> burst;  // leaky
};

mock::MockConfig mock_config(const char* limit, mock::Algorithm algorithm,
                             mock::Dialect dialect) {
  mock::MockConfig c;
  std::string error;
  c.limit = mock::ParseLimitSpec(limit, &error);
  REQUIRE_MESSAGE(c.limit, error);
  c.algorithm = algorithm;
  c.dialect = dialect;
  c.reject_status = 429;
  return c;
}

Server express(std::int64_t limit, Millis window_ms, mock::Dialect dialect) {
  const std::string text =
      std::to_string(limit) + "/" + std::to_string(window_ms) + "ms";
  Server s{"express " + text, mock_config(text.c_str(), mock::Algorithm::kFixed,
                                          dialect),
           limit, window_ms};
  s.config.window_start = mock::WindowStart::kFirstRequest;
  return s;
}

Server flask(std::int64_t limit, Millis window_ms, mock::Algorithm algorithm) {
  const std::string text =
      std::to_string(limit) + "/" + std::to_string(window_ms) + "ms";
  Server s{std::string(algorithm == mock::Algorithm::kSliding ? "flask moving "
                                                              : "flask fixed ") +
               text,
           mock_config(text.c_str(), algorithm, mock::Dialect::kXRateLimit),
           limit, window_ms};
  s.config.window_start = mock::WindowStart::kFirstRequest;
  s.config.reset_rounding = mock::ResetRounding::kDown;
  // Flask-Limiter reads the count for its headers after the view ran.
  s.config.headers_after_call = true;
  return s;
}

Server nginx(std::int64_t burst) {
  Server s{"nginx burst " + std::to_string(burst),
           mock_config("20/s", mock::Algorithm::kLeaky, mock::Dialect::kNone),
           20, 1000, burst};
  s.config.burst = burst;
  return s;
}

struct Result {
  std::int64_t accepted = 0;
  std::int64_t refused = 0;
  double pace = 0;          // over the whole run
  double pace_learned = 0;  // from a window after the lane learned the limit
  Millis learned_after = -1;
};

// The lane knows the server's limit: advertised, a window learned from
// the counter's resets, or a pace learned from accepts and refusals.
bool learned(Lane& lane, Millis now) {
  auto j = lane.quota().to_json(now);
  for (const auto& w : j["windows"])
    if (w["state"] == "learned") return true;
  for (const auto& l : j["learned"])
    if (l["source"] == "advertised" || l["source"] == "recognized") return true;
  return j["pace_learned"] == true;
}

// The fastest the limit allows `n` accepted requests to span.
double fastest_ms(const Server& s, std::int64_t n) {
  if (n <= 1) return 0;
  if (s.burst)
    return static_cast<double>(n - 1 - *s.burst) * 1000.0 /
           static_cast<double>(s.limit);
  return static_cast<double>((n + s.limit - 1) / s.limit - 1) *
         static_cast<double>(s.window_ms);
}

double pace_of(const Server& s, const std::vector<Millis>& accepted) {
  if (accepted.size() < 2) return 0;
  const double spent =
      static_cast<double>(accepted.back() - accepted.front());
  return spent <= 0 ? 1.0
                    : fastest_ms(s, static_cast<std::int64_t>(
                                        accepted.size())) /
                          spent;
}

Result run(const Server& s, std::vector<LimitSpec> limits, Millis duration,
           unsigned seed = 1) {
  Millis now = kEpochMs;
  auto clock_ns = [&] { return (now - kEpochMs) * 1'000'000; };
  auto wall_ns = [&] { return now * 1'000'000; };
  mock::MockApi server(s.config, clock_ns, wall_ns);
  ApiConfig api;
  api.name = "sim";
  api.limits = std::move(limits);
  api.backoff_base_ms = 500;
  Lane lane(api, 512);
  std::mt19937 rng(seed);

  struct Request {
    Millis start;
    QuotaState::Mark mark;
  };
  // Arrivals in time order, then answers in time order.
  std::multimap<Millis, Request> arriving;
  struct Answer {
    Request request;
    mock::Reply reply;
  };
  std::multimap<Millis, Answer> answering;
  std::vector<Millis> accepted;
  Result r;
  for (; now < kEpochMs + duration; ++now) {
    for (auto it = arriving.begin(); it != arriving.end() && it->first <= now;
         it = arriving.erase(it)) {
      mock::Reply reply = server.Echo("{}");
      if (reply.status == 200) accepted.push_back(now);
      answering.emplace(now + kLatencyMs, Answer{it->second, std::move(reply)});
    }
    for (auto it = answering.begin(); it != answering.end() && it->first <= now;
         it = answering.erase(it)) {
      Answer& a = it->second;
      server.RefreshHeaders(a.reply);
      const int status = a.reply.status;
      Observation parsed =
          observe_response(status, a.reply.headers, "", now, "auto");
      auto obs = QuotaObservation::from_json(to_json(parsed));
      QuotaState::Answer q;
      if (obs) q.obs = &*obs;
      q.at = a.request.mark;
      q.success = status == 200;
      q.rate_limited = status == 429;
      if (q.rate_limited) ++r.refused;
      q.late_ms = lane.note_answered(
          a.request.start, now, static_cast<double>(now - a.request.start), 1);
      lane.quota().on_answer(q, now);
      lane.sync_learned(now);
      lane.finished();
    }
    lane.quota().tick(now);
    lane.sync_learned(now);
    if (r.learned_after < 0 && now % 10 == 0 && learned(lane, now))
      r.learned_after = now - kEpochMs;
    while (lane.in_flight() < 64 && lane.gate(1, now) <= now) {
      lane.on_start(1, now);
      lane.started();
      const Millis arrival = now + static_cast<Millis>(rng() % 2);
      arriving.emplace(arrival, Request{now, lane.quota().mark()});
    }
  }
  r.accepted = static_cast<std::int64_t>(accepted.size());
  r.pace = pace_of(s, accepted);
  // From a window after the lane learned the limit.
  const Millis from =
      r.learned_after < 0 ? INT64_MAX
                          : kEpochMs + r.learned_after + s.window_ms;
  std::vector<Millis> late;
  for (Millis t : accepted)
    if (t >= from) late.push_back(t);
  r.pace_learned = pace_of(s, late);
  return r;
}

LimitSpec spec(const std::string& text) {
  auto r = parse_limit(text);
  REQUIRE_MESSAGE(r.ok(), text);
  return *r;
}

std::string window_limit(const Server& s) {
  return std::to_string(s.limit) + "/" + std::to_string(s.window_ms) + "ms";
}

void known(const Server& s, const std::string& limit) {
  CAPTURE(s.name);
  Result r = run(s, {spec(limit)}, 12 * s.window_ms);
  MESSAGE(s.name, " known as ", limit, ": accepted ", r.accepted, ", refused ",
          r.refused, ", pace ", r.pace);
  CHECK(r.refused == 0);
  CHECK(r.pace >= 0.97);
}

void unknown(const Server& s) {
  CAPTURE(s.name);
  const Millis duration = 30 * s.window_ms + 30'000;
  Result r = run(s, {}, duration);
  MESSAGE(s.name, " unknown: accepted ", r.accepted, ", refused ", r.refused,
          ", pace ", r.pace, ", learned after ", r.learned_after,
          " ms, then pace ", r.pace_learned);
  CHECK(r.refused <= s.limit);
  REQUIRE(r.learned_after >= 0);
  CHECK(r.learned_after <= duration - 5 * s.window_ms);
  CHECK(r.pace_learned >= 0.95);
}

TEST_CASE("express-rate-limit: a window from the first request, resets "
          "rounded up") {
  for (Millis w : {1000, 10'000}) {
    const std::int64_t limit = 20 * w / 1000;
    Server x = express(limit, w, mock::Dialect::kXRateLimit);
    known(x, window_limit(x));
    unknown(x);
    Server i = express(limit, w, mock::Dialect::kIetf7);
    known(i, window_limit(i));
    unknown(i);
  }
}

TEST_CASE("Flask-Limiter: fixed and moving windows, resets truncated") {
  for (auto algorithm : {mock::Algorithm::kFixed, mock::Algorithm::kSliding}) {
    for (Millis w : {1000, 10'000}) {
      Server s = flask(20 * w / 1000, w, algorithm);
      known(s, window_limit(s));
      unknown(s);
    }
  }
}

TEST_CASE("a moving window, resets rounded up") {
  for (Millis w : {1000, 10'000}) {
    Server s = flask(20 * w / 1000, w, mock::Algorithm::kSliding);
    s.name = "moving (rounded up) " + std::to_string(w);
    s.config.reset_rounding = mock::ResetRounding::kUp;
    known(s, window_limit(s));
    unknown(s);
  }
}

TEST_CASE("nginx limit_req: a leaky bucket, no counters") {
  for (std::int64_t burst : {0, 10}) {
    Server s = nginx(burst);
    known(s, "20/s burst " + std::to_string(burst));
    unknown(s);
  }
}

TEST_CASE("nginx limit_req configured as a window is recognised as a leaky "
          "bucket") {
  Server s = nginx(0);
  Result r = run(s, {spec("20/s")}, 60'000);
  MESSAGE("nginx burst 0 configured as 20/s: accepted ", r.accepted,
          ", refused ", r.refused, ", recognised after ", r.learned_after,
          " ms, then pace ", r.pace_learned);
  // The first burst is refused but for one; then the lane paces evenly.
  CHECK(r.refused <= s.limit);
  REQUIRE(r.learned_after >= 0);
  CHECK(r.learned_after <= 1000);
  CHECK(r.pace_learned >= 0.97);
}

TEST_CASE("a window aligned to the server's clock, reset rounded up") {
  Server s{"aligned 20/1s",
           mock_config("20/s", mock::Algorithm::kFixed,
                       mock::Dialect::kXRateLimit),
           20, 1000};
  known(s, "20/s");
  // Unknown: the window learner gives up on clock-aligned windows; the
  // lane keeps to the server's counts and resets as before, at a lower
  // pace, and few refusals.
  Result r = run(s, {}, 60'000);
  MESSAGE("aligned unknown: accepted ", r.accepted, ", refused ", r.refused,
          ", pace ", r.pace);
  CHECK(r.refused <= s.limit);
  CHECK(r.pace >= 0.5);
}

}  // namespace
}  // namespace pacer
