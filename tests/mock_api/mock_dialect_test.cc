// Unit tests for what the mock upstream tells clients about its quota (the
// rate-limit header dialects, the token limit) and for the simulated second
// client that shares the quota. Time is a fake clock; nothing sleeps.
#include <doctest/doctest.h>

#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "tests/mock_api/limit_spec.h"
#include "tests/mock_api/mock_api.h"
#include "tests/mock_api/rate_headers.h"
#include "tests/mock_api/rate_limiter.h"

namespace pacer::mock {
namespace {

constexpr int64_t kMs = 1'000'000;
constexpr int64_t kSecond = 1'000 * kMs;
// Wall clock at start: Wed, 01 Jan 2025 00:00:00 GMT.
constexpr int64_t kUnixStartS = 1'735'689'600;

// Monotonic time starts at an arbitrary non-zero value; the wall clock the
// mock reads once at construction is kUnixStartS.
struct FakeClock {
  int64_t start = 1'000 * kSecond;
  int64_t now = start;
  MockApi::Clock clock() {
    return [this] { return now; };
  }
  static MockApi::Clock wall() {
    return [] { return kUnixStartS * kSecond; };
  }
  void At(int64_t since_start_ns) { now = start + since_start_ns; }
};

MockConfig Config(const char* limit, Algorithm algorithm, Dialect dialect) {
  MockConfig config;
  config.limit = ParseLimitSpec(limit, nullptr);
  config.algorithm = algorithm;
  config.dialect = dialect;
  return config;
}

Json Body(const Reply& reply) { return Json::parse(reply.body); }

// The reply's headers as "Name: value" lines, in order.
std::string Lines(const Reply& reply) {
  std::string out;
  for (const auto& [name, value] : reply.headers) {
    out += name + ": " + value + "\n";
  }
  return out;
}

std::optional<std::string> Header(const Reply& reply, const std::string& name) {
  for (const auto& [key, value] : reply.headers) {
    if (key == name) return value;
  }
  return std::nullopt;
}

// ---- formats ---------------------------------------------------------------

TEST_CASE("GoDuration matches Go's Duration.String at millisecond precision") {
  struct Case {
    int64_t ns;
    const char* text;
  };
  const Case cases[] = {
      {0, "0s"},
      {1, "1ms"},  // rounded up: never promise quota too early
      {12 * kMs, "12ms"},
      {250 * kMs, "250ms"},
      {999 * kMs + 1, "1s"},
      {kSecond, "1s"},
      {1500 * kMs, "1.5s"},
      {59'912 * kMs, "59.912s"},
      {60 * kSecond, "1m0s"},
      {360 * kSecond, "6m0s"},
      {179'560 * kMs, "2m59.56s"},
      {3600 * kSecond, "1h0m0s"},
      {3'723'500 * kMs, "1h2m3.5s"},
      {-5, "0s"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.ns);
    CHECK(GoDuration(c.ns) == c.text);
  }
}

TEST_CASE("Rfc3339Utc writes UTC instants, milliseconds only when needed") {
  const int64_t start = kUnixStartS * kSecond;
  CHECK(Rfc3339Utc(start) == "2025-01-01T00:00:00Z");
  CHECK(Rfc3339Utc(start + 1) == "2025-01-01T00:00:00.001Z");
  CHECK(Rfc3339Utc(start + 6'500 * kMs) == "2025-01-01T00:00:06.500Z");
  CHECK(Rfc3339Utc(start - kSecond) == "2024-12-31T23:59:59Z");
  CHECK(Rfc3339Utc(1'709'210'096 * kSecond) == "2024-02-29T12:34:56Z");
  CHECK(Rfc3339Utc(0) == "1970-01-01T00:00:00Z");
}

TEST_CASE("ImfFixdate writes RFC 9110 IMF-fixdate") {
  CHECK(ImfFixdate(784'111'777) == "Sun, 06 Nov 1994 08:49:37 GMT");
  CHECK(ImfFixdate(kUnixStartS) == "Wed, 01 Jan 2025 00:00:00 GMT");
  CHECK(ImfFixdate(0) == "Thu, 01 Jan 1970 00:00:00 GMT");
  CHECK(ImfFixdate(1'709'210'096) == "Thu, 29 Feb 2024 12:34:56 GMT");
}

TEST_CASE("ParseDialect round-trips every name") {
  for (Dialect d :
       {Dialect::kRetryAfter, Dialect::kIetf6, Dialect::kIetf7, Dialect::kIetf8,
        Dialect::kXRateLimit, Dialect::kGitHub, Dialect::kOpenAi,
        Dialect::kAnthropic, Dialect::kRetryAfterDate, Dialect::kNone}) {
    CAPTURE(DialectName(d));
    CHECK(ParseDialect(DialectName(d)) == d);
    CHECK(std::string(DialectNames()).find(DialectName(d)) !=
          std::string::npos);
  }
  CHECK_FALSE(ParseDialect("ietf").has_value());
  CHECK_FALSE(ParseDialect("OpenAI").has_value());
}

// ---- dialects on the wire --------------------------------------------------

// 3/min in fixed windows: accepted at 0 s, 20.5 s and 30 s, then refused at
// 45 s. The 200 at 20.5 s leaves 1 request and resets in 39.5 s (window end
// at 60 s); the refusal at 45 s has 0 left and must wait 15 s.
struct DialectCase {
  Dialect dialect;
  int reject_status;
  const char* ok;      // headers of the 200 at 20.5 s
  const char* reject;  // headers of the refusal at 45 s
};

const DialectCase kDialectCases[] = {
    {Dialect::kRetryAfter, 429, "", "Retry-After: 15\n"},
    {Dialect::kIetf6, 429,
     "RateLimit-Policy: 3;w=60\n"
     "RateLimit-Limit: 3\n"
     "RateLimit-Remaining: 1\n"
     "RateLimit-Reset: 40\n",
     "RateLimit-Policy: 3;w=60\n"
     "RateLimit-Limit: 3\n"
     "RateLimit-Remaining: 0\n"
     "RateLimit-Reset: 15\n"
     "Retry-After: 15\n"},
    {Dialect::kIetf7, 429,
     "RateLimit-Policy: 3;w=60\n"
     "RateLimit: limit=3, remaining=1, reset=40\n",
     "RateLimit-Policy: 3;w=60\n"
     "RateLimit: limit=3, remaining=0, reset=15\n"
     "Retry-After: 15\n"},
    {Dialect::kIetf8, 429,
     "RateLimit-Policy: \"default\";q=3;w=60\n"
     "RateLimit: \"default\";r=1;t=40\n",
     "RateLimit-Policy: \"default\";q=3;w=60\n"
     "RateLimit: \"default\";r=0;t=15\n"
     "Retry-After: 15\n"},
    {Dialect::kXRateLimit, 429,
     "Date: Wed, 01 Jan 2025 00:00:20 GMT\n"
     "X-RateLimit-Limit: 3\n"
     "X-RateLimit-Remaining: 1\n"
     "X-RateLimit-Reset: 1735689660\n",
     "Date: Wed, 01 Jan 2025 00:00:45 GMT\n"
     "X-RateLimit-Limit: 3\n"
     "X-RateLimit-Remaining: 0\n"
     "X-RateLimit-Reset: 1735689660\n"
     "Retry-After: 15\n"},
    {Dialect::kGitHub, 429,
     "Date: Wed, 01 Jan 2025 00:00:20 GMT\n"
     "x-ratelimit-limit: 3\n"
     "x-ratelimit-remaining: 1\n"
     "x-ratelimit-used: 2\n"
     "x-ratelimit-reset: 1735689660\n"
     "x-ratelimit-resource: core\n",
     "Date: Wed, 01 Jan 2025 00:00:45 GMT\n"
     "x-ratelimit-limit: 3\n"
     "x-ratelimit-remaining: 0\n"
     "x-ratelimit-used: 3\n"
     "x-ratelimit-reset: 1735689660\n"
     "x-ratelimit-resource: core\n"},
    {Dialect::kOpenAi, 429,
     "x-ratelimit-limit-requests: 3\n"
     "x-ratelimit-remaining-requests: 1\n"
     "x-ratelimit-reset-requests: 39.5s\n",
     "x-ratelimit-limit-requests: 3\n"
     "x-ratelimit-remaining-requests: 0\n"
     "x-ratelimit-reset-requests: 15s\n"},
    {Dialect::kAnthropic, 429,
     "Date: Wed, 01 Jan 2025 00:00:20 GMT\n"
     "anthropic-ratelimit-requests-limit: 3\n"
     "anthropic-ratelimit-requests-remaining: 1\n"
     "anthropic-ratelimit-requests-reset: 2025-01-01T00:01:00Z\n",
     "Date: Wed, 01 Jan 2025 00:00:45 GMT\n"
     "anthropic-ratelimit-requests-limit: 3\n"
     "anthropic-ratelimit-requests-remaining: 0\n"
     "anthropic-ratelimit-requests-reset: 2025-01-01T00:01:00Z\n"
     "retry-after: 15\n"},
    {Dialect::kRetryAfterDate, 429, "Date: Wed, 01 Jan 2025 00:00:20 GMT\n",
     "Date: Wed, 01 Jan 2025 00:00:45 GMT\n"
     "Retry-After: Wed, 01 Jan 2025 00:01:00 GMT\n"},
    {Dialect::kNone, 503, "", ""},
};

TEST_CASE("headers_after_call: the headers describe the count when the "
          "reply is sent") {
  FakeClock fake;
  MockConfig config = Config("2/s", Algorithm::kFixed, Dialect::kXRateLimit);
  config.window_start = WindowStart::kFirstRequest;
  config.headers_after_call = true;
  MockApi api(config, fake.clock(), FakeClock::wall());
  fake.At(0);
  Reply first = api.Echo("{}");
  fake.At(10 * kMs);
  Reply second = api.Echo("{}");
  // Admitted first of two: 1 left then, none when its reply goes.
  CHECK(Header(first, "X-RateLimit-Remaining") == "1");
  api.RefreshHeaders(first);
  CHECK(Header(first, "X-RateLimit-Remaining") == "0");
  fake.At(900 * kMs);
  Reply refused = api.Echo("{}");
  REQUIRE(refused.status == 429);
  CHECK(Header(refused, "X-RateLimit-Remaining") == "0");
  // Sent after the window ended: a fresh count, and no wait.
  fake.At(1'050 * kMs);
  api.RefreshHeaders(refused);
  CHECK(refused.status == 429);
  CHECK(Header(refused, "X-RateLimit-Remaining") == "2");
  CHECK_FALSE(Header(refused, "Retry-After"));
  // Without the setting, a reply keeps the headers of its admission.
  config.headers_after_call = false;
  MockApi plain(config, fake.clock(), FakeClock::wall());
  Reply kept = plain.Echo("{}");
  plain.Echo("{}");
  plain.RefreshHeaders(kept);
  CHECK(Header(kept, "X-RateLimit-Remaining") == "1");
}

TEST_CASE("each dialect's exact headers on a 200 and on a rejection") {
  for (const DialectCase& c : kDialectCases) {
    CAPTURE(DialectName(c.dialect));
    FakeClock fake;
    MockApi api(Config("3/min", Algorithm::kFixed, c.dialect), fake.clock(),
                FakeClock::wall());
    REQUIRE(api.Echo("").status == 200);
    fake.At(20'500 * kMs);
    const Reply ok = api.Echo("");
    CHECK(ok.status == 200);
    CHECK(Lines(ok) == c.ok);
    fake.At(30 * kSecond);
    REQUIRE(api.Echo("").status == 200);
    fake.At(45 * kSecond);
    const Reply reject = api.Echo("");
    CHECK(reject.status == c.reject_status);
    CHECK(Lines(reject) == c.reject);
    CHECK(Body(reject)["error"] == "rate_limited");
    CHECK(Body(reject).contains("retry_after_ms") ==
          (c.dialect != Dialect::kNone));
    // Configurable per dialect.
    CHECK(api.Configure(R"({"reject_status":429})").status == 200);
    CHECK(api.Echo("").status == 429);
    CHECK(api.Configure(R"({"reject_status":503})").status == 200);
    const Reply unavailable = api.Echo("");
    CHECK(unavailable.status == 503);
    CHECK(Lines(unavailable) == Lines(reject));
  }
}

TEST_CASE("remaining counts down and the next window starts afresh") {
  FakeClock fake;
  MockApi api(Config("3/10s", Algorithm::kFixed, Dialect::kIetf8), fake.clock(),
              FakeClock::wall());
  const char* expected[] = {
      "\"default\";r=2;t=10",  // 0 s
      "\"default\";r=1;t=9",   // 1 s
      "\"default\";r=0;t=8",   // 2 s
  };
  for (int i = 0; i < 3; ++i) {
    fake.At(i * kSecond);
    const Reply reply = api.Echo("");
    CHECK(reply.status == 200);
    CHECK(Header(reply, "RateLimit") == expected[i]);
  }
  fake.At(9'999 * kMs);
  Reply reply = api.Echo("");
  CHECK(reply.status == 429);
  CHECK(Header(reply, "RateLimit") == "\"default\";r=0;t=1");
  CHECK(Header(reply, "Retry-After") == "1");
  fake.At(10 * kSecond);
  reply = api.Echo("");
  CHECK(reply.status == 200);
  CHECK(Header(reply, "RateLimit") == "\"default\";r=2;t=10");
}

TEST_CASE("sliding resets when the oldest counted request leaves") {
  FakeClock fake;
  MockApi api(Config("2/s", Algorithm::kSliding, Dialect::kOpenAi),
              fake.clock(), FakeClock::wall());
  struct Step {
    int64_t at_ms;
    int status;
    const char* remaining;
    const char* reset;
  };
  const Step steps[] = {
      {0, 200, "1", "1s"},        // window holds {0}
      {300, 200, "0", "700ms"},   // {0, 300}: 0 leaves at 1000
      {600, 429, "0", "400ms"},   // refused, nothing changes
      {1000, 200, "0", "300ms"},  // 0 left; {300, 1000}
      {1300, 200, "0", "700ms"},  // 300 left; {1000, 1300}
      {2500, 200, "1", "1s"},     // both left; {2500}
  };
  for (const Step& step : steps) {
    CAPTURE(step.at_ms);
    fake.At(step.at_ms * kMs);
    const Reply reply = api.Echo("");
    CHECK(reply.status == step.status);
    CHECK(Header(reply, "x-ratelimit-remaining-requests") == step.remaining);
    CHECK(Header(reply, "x-ratelimit-reset-requests") == step.reset);
  }
}

TEST_CASE("sliding ietf-7 and anthropic resets at known instants") {
  FakeClock fake;
  MockApi api(Config("2/min", Algorithm::kSliding, Dialect::kIetf7),
              fake.clock(), FakeClock::wall());
  api.Echo("");
  fake.At(10 * kSecond);
  Reply reply = api.Echo("");
  CHECK(Header(reply, "RateLimit") == "limit=2, remaining=0, reset=50");
  fake.At(25'200 * kMs);
  reply = api.Echo("");
  CHECK(reply.status == 429);
  CHECK(Header(reply, "RateLimit") == "limit=2, remaining=0, reset=35");
  CHECK(Header(reply, "Retry-After") == "35");  // 34.8 s, rounded up

  REQUIRE(api.Configure(R"({"dialect":"anthropic"})").status == 200);
  reply = api.Echo("");
  CHECK(reply.status == 429);
  CHECK(Header(reply, "anthropic-ratelimit-requests-reset") ==
        "2025-01-01T00:01:00Z");
  CHECK(Header(reply, "retry-after") == "35");
  CHECK(Header(reply, "Date") == "Wed, 01 Jan 2025 00:00:25 GMT");
}

TEST_CASE("bucket algorithms reset when the bucket is back to full") {
  for (Algorithm algorithm : {Algorithm::kTokenBucket, Algorithm::kLeaky}) {
    CAPTURE(AlgorithmName(algorithm));
    FakeClock fake;
    MockApi api(Config("4/s", algorithm, Dialect::kOpenAi), fake.clock(),
                FakeClock::wall());
    Reply reply = api.Echo("");
    CHECK(Header(reply, "x-ratelimit-remaining-requests") == "3");
    CHECK(Header(reply, "x-ratelimit-reset-requests") == "250ms");
    for (int i = 0; i < 3; ++i) api.Echo("");
    reply = api.Echo("");
    CHECK(reply.status == 429);
    CHECK(Header(reply, "x-ratelimit-remaining-requests") == "0");
    CHECK(Header(reply, "x-ratelimit-reset-requests") == "1s");
    CHECK(Body(reply)["retry_after_ms"] == 250);  // one request's worth
    fake.At(600 * kMs);
    reply = api.Echo("");
    CHECK(reply.status == 200);
    // 2.4 back, one spent: 1 whole request left, full in 0.6 + 0.25 s.
    CHECK(Header(reply, "x-ratelimit-remaining-requests") == "1");
    CHECK(Header(reply, "x-ratelimit-reset-requests") == "650ms");
  }
}

TEST_CASE("sub-second resets round up to whole seconds where they must") {
  FakeClock fake;
  MockApi api(Config("2/100ms", Algorithm::kFixed, Dialect::kIetf6),
              fake.clock(), FakeClock::wall());
  fake.At(30 * kMs);
  const Reply reply = api.Echo("");
  CHECK(Lines(reply) ==
        "RateLimit-Policy: 2;w=1\n"
        "RateLimit-Limit: 2\n"
        "RateLimit-Remaining: 1\n"
        "RateLimit-Reset: 1\n");
  REQUIRE(api.Configure(R"({"dialect":"x-ratelimit"})").status == 200);
  api.Echo("");
  const Reply refused = api.Echo("");
  CHECK(refused.status == 429);
  CHECK(Header(refused, "X-RateLimit-Reset") == "1735689601");
  CHECK(Header(refused, "Retry-After") == "1");
  CHECK(Body(refused)["retry_after_ms"] == 70);
}

TEST_CASE("without a limit the dialects send no quota fields") {
  for (Dialect dialect : {Dialect::kIetf8, Dialect::kOpenAi, Dialect::kGitHub,
                          Dialect::kRetryAfterDate}) {
    CAPTURE(DialectName(dialect));
    FakeClock fake;
    MockConfig config;
    config.dialect = dialect;
    MockApi api(config, fake.clock(), FakeClock::wall());
    const Reply reply = api.Echo("");
    CHECK(reply.status == 200);
    for (const auto& [name, value] : reply.headers) CHECK(name == "Date");
  }
}

TEST_CASE("dialect headers also ride on batches and injected 500s") {
  FakeClock fake;
  MockConfig config = Config("5/s", Algorithm::kFixed, Dialect::kIetf8);
  MockApi api(config, fake.clock(), FakeClock::wall());
  Reply reply = api.Batch(R"({"inputs":[1,2]})");
  CHECK(reply.status == 200);
  CHECK(Header(reply, "RateLimit") == "\"default\";r=4;t=1");
  REQUIRE(api.Configure(R"({"error_rate":1})").status == 200);
  reply = api.Echo("");
  CHECK(reply.status == 500);
  CHECK(Header(reply, "RateLimit") == "\"default\";r=3;t=1");
  // Requests that never reach the limiter carry none.
  REQUIRE(api.Configure(R"({"error_rate":0})").status == 200);
  reply = api.Batch("not json");
  CHECK(reply.status == 400);
  CHECK(reply.headers.empty());
}

TEST_CASE("the default dialect behaves exactly as before") {
  FakeClock fake;
  MockApi api(Config("1/s", Algorithm::kFixed, Dialect::kRetryAfter),
              fake.clock(), FakeClock::wall());
  Reply reply = api.Echo(R"({"tokens":5})");
  CHECK(reply.status == 200);
  CHECK(reply.headers.empty());
  CHECK(reply.body == R"({"echo":{"tokens":5},"n":1})");
  fake.At(250 * kMs);
  reply = api.Echo("");
  CHECK(reply.status == 429);
  CHECK(Lines(reply) == "Retry-After: 1\n");
  CHECK(reply.body == R"({"error":"rate_limited","retry_after_ms":750})");
  const Json config = api.ConfigJson();
  CHECK(config["dialect"] == "retry-after");
  CHECK(config["reject_status"] == 429);
  CHECK(config["token_limit"].is_null());
  CHECK(config["shared_load"].is_null());
}

TEST_CASE("none: no headers, 503 unless configured otherwise") {
  FakeClock fake;
  MockApi api(Config("1/s", Algorithm::kFixed, Dialect::kNone), fake.clock(),
              FakeClock::wall());
  CHECK(api.ConfigJson()["reject_status"] == 503);
  Reply reply = api.Echo("");
  CHECK(reply.status == 200);
  CHECK(reply.headers.empty());
  reply = api.Echo("");
  CHECK(reply.status == 503);
  CHECK(reply.headers.empty());
  CHECK(reply.body == R"({"error":"rate_limited"})");
  CHECK(api.StatsJson()["status_counts"]["503"] == 1);
  CHECK(api.StatsJson()["rejected"] == 1);

  // --reject-status 429 keeps the silence.
  REQUIRE(api.Configure(R"({"reject_status":429})").status == 200);
  reply = api.Echo("");
  CHECK(reply.status == 429);
  CHECK(reply.headers.empty());
  // An explicit status survives a change of dialect; null restores the
  // dialect's default.
  REQUIRE(api.Configure(R"({"dialect":"ietf-8"})").status == 200);
  CHECK(api.ConfigJson()["reject_status"] == 429);
  REQUIRE(api.Configure(R"({"reject_status":null,"dialect":"none"})").status ==
          200);
  CHECK(api.ConfigJson()["reject_status"] == 503);
}

TEST_CASE("dialect and reject_status are validated in /admin/config") {
  FakeClock fake;
  MockApi api(MockConfig{}, fake.clock(), FakeClock::wall());
  for (const char* body :
       {R"({"dialect":"ietf-9"})", R"({"dialect":7})",
        R"({"reject_status":500})", R"({"reject_status":"429"})",
        R"({"token_limit":"10/fortnight"})", R"({"token_limit":10})",
        R"({"shared_load":"many"})", R"({"shared_load":"1000000/s"})",
        R"({"shared_load":5})"}) {
    CAPTURE(body);
    const Reply reply = api.Configure(body);
    CHECK(reply.status == 400);
    CHECK(Body(reply)["error"] == "bad_config");
  }
  const Reply reply = api.Configure(
      R"({"dialect":"github","reject_status":503,"token_limit":"90/min",)"
      R"("shared_load":"20/s"})");
  CHECK(reply.status == 200);
  const Json config = Body(reply);
  CHECK(config["dialect"] == "github");
  CHECK(config["reject_status"] == 503);
  CHECK(config["token_limit"] == "90/min");
  CHECK(config["shared_load"] == "20/s");
  CHECK(api.ConfigJson() == config);
}

// ---- reset rounding and Date -----------------------------------------------

TEST_CASE("ParseResetRounding round-trips every name") {
  for (ResetRounding r : {ResetRounding::kUp, ResetRounding::kDown}) {
    CHECK(ParseResetRounding(ResetRoundingName(r)) == r);
  }
  CHECK_FALSE(ParseResetRounding("floor").has_value());
  CHECK_FALSE(ParseResetRounding("").has_value());
}

// 2/10s in windows that open at the first request: the first, at 0.3 s,
// opens [0.3 s, 10.3 s). Accepted again at 1 s (9.3 s to the reset), then
// refused at 8.9 s (1.4 s to wait) and at 10 s (0.3 s to wait).
struct RoundingCase {
  Dialect dialect;
  const char* name;  // the header whose value rounding changes
  // Values at 1 s, 8.9 s and 10 s, rounding up then down.
  const char* up[3];
  const char* down[3];
};

const RoundingCase kRoundingCases[] = {
    {Dialect::kRetryAfter,
     "Retry-After",
     {nullptr, "2", "1"},
     {nullptr, "1", "0"}},
    {Dialect::kIetf6, "RateLimit-Reset", {"10", "2", "1"}, {"9", "1", "0"}},
    {Dialect::kIetf6, "Retry-After", {nullptr, "2", "1"}, {nullptr, "1", "0"}},
    {Dialect::kIetf7,
     "RateLimit",
     {"limit=2, remaining=0, reset=10", "limit=2, remaining=0, reset=2",
      "limit=2, remaining=0, reset=1"},
     {"limit=2, remaining=0, reset=9", "limit=2, remaining=0, reset=1",
      "limit=2, remaining=0, reset=0"}},
    {Dialect::kIetf8,
     "RateLimit",
     {"\"default\";r=0;t=10", "\"default\";r=0;t=2", "\"default\";r=0;t=1"},
     {"\"default\";r=0;t=9", "\"default\";r=0;t=1", "\"default\";r=0;t=0"}},
    {Dialect::kXRateLimit,
     "X-RateLimit-Reset",
     {"1735689611", "1735689611", "1735689611"},
     {"1735689610", "1735689610", "1735689610"}},
    {Dialect::kXRateLimit,
     "Retry-After",
     {nullptr, "2", "1"},
     {nullptr, "1", "0"}},
    {Dialect::kGitHub,
     "x-ratelimit-reset",
     {"1735689611", "1735689611", "1735689611"},
     {"1735689610", "1735689610", "1735689610"}},
    {Dialect::kRetryAfterDate,
     "Retry-After",
     {nullptr, "Wed, 01 Jan 2025 00:00:11 GMT",
      "Wed, 01 Jan 2025 00:00:11 GMT"},
     {nullptr, "Wed, 01 Jan 2025 00:00:10 GMT",
      "Wed, 01 Jan 2025 00:00:10 GMT"}},
    {Dialect::kAnthropic,
     "retry-after",
     {nullptr, "2", "1"},
     {nullptr, "1", "0"}},
    // Fields with milliseconds stay exact whatever the rounding.
    {Dialect::kOpenAi,
     "x-ratelimit-reset-requests",
     {"9.3s", "1.4s", "300ms"},
     {"9.3s", "1.4s", "300ms"}},
    {Dialect::kAnthropic,
     "anthropic-ratelimit-requests-reset",
     {"2025-01-01T00:00:10.300Z", "2025-01-01T00:00:10.300Z",
      "2025-01-01T00:00:10.300Z"},
     {"2025-01-01T00:00:10.300Z", "2025-01-01T00:00:10.300Z",
      "2025-01-01T00:00:10.300Z"}},
};

TEST_CASE("reset rounding: up as express-rate-limit, down as Flask-Limiter") {
  for (const RoundingCase& c : kRoundingCases) {
    for (ResetRounding rounding : {ResetRounding::kUp, ResetRounding::kDown}) {
      CAPTURE(DialectName(c.dialect));
      CAPTURE(c.name);
      CAPTURE(ResetRoundingName(rounding));
      const char* const* expected =
          rounding == ResetRounding::kUp ? c.up : c.down;
      FakeClock fake;
      MockConfig config = Config("2/10s", Algorithm::kFixed, c.dialect);
      config.window_start = WindowStart::kFirstRequest;
      config.reset_rounding = rounding;
      MockApi api(config, fake.clock(), FakeClock::wall());
      fake.At(300 * kMs);
      REQUIRE(api.Echo("").status == 200);
      const int64_t at_ms[] = {1'000, 8'900, 10'000};
      const int statuses[] = {200, 429, 429};
      const int64_t retry_after_ms[] = {0, 1'400, 300};
      for (int i = 0; i < 3; ++i) {
        CAPTURE(at_ms[i]);
        fake.At(at_ms[i] * kMs);
        const Reply reply = api.Echo("");
        REQUIRE(reply.status == statuses[i]);
        if (expected[i] == nullptr) {
          CHECK_FALSE(Header(reply, c.name).has_value());
        } else {
          CHECK(Header(reply, c.name) == expected[i]);
        }
        // The JSON body keeps the exact wait, rounded up to milliseconds.
        if (statuses[i] != 200) {
          CHECK(Body(reply)["retry_after_ms"] == retry_after_ms[i]);
        }
      }
      // The next window opens at the next request, at 10.3 s here.
      fake.At(10'300 * kMs);
      CHECK(api.Echo("").status == 200);
    }
  }
}

TEST_CASE("Flask-Limiter's fixed window: truncated resets, Retry-After 0") {
  FakeClock fake;
  MockConfig config = Config("2/10s", Algorithm::kFixed, Dialect::kXRateLimit);
  config.window_start = WindowStart::kFirstRequest;
  config.reset_rounding = ResetRounding::kDown;
  MockApi api(config, fake.clock(), FakeClock::wall());
  fake.At(300 * kMs);
  Reply reply = api.Echo("");
  CHECK(Lines(reply) ==
        "Date: Wed, 01 Jan 2025 00:00:00 GMT\n"
        "X-RateLimit-Limit: 2\n"
        "X-RateLimit-Remaining: 1\n"
        "X-RateLimit-Reset: 1735689610\n");
  fake.At(1 * kSecond);
  REQUIRE(api.Echo("").status == 200);
  fake.At(10 * kSecond);
  reply = api.Echo("");
  CHECK(reply.status == 429);
  CHECK(Lines(reply) ==
        "Date: Wed, 01 Jan 2025 00:00:10 GMT\n"
        "X-RateLimit-Limit: 2\n"
        "X-RateLimit-Remaining: 0\n"
        "X-RateLimit-Reset: 1735689610\n"
        "Retry-After: 0\n");
  CHECK(reply.body == R"({"error":"rate_limited","retry_after_ms":300})");
}

TEST_CASE("Date is the mock's wall time truncated to whole seconds") {
  // The wall clock reads 00:00:00.700 at startup; resets and Date derive
  // from the same instant, so they stay consistent with each other.
  const MockApi::Clock wall = [] { return kUnixStartS * kSecond + 700 * kMs; };
  for (ResetRounding rounding : {ResetRounding::kUp, ResetRounding::kDown}) {
    CAPTURE(ResetRoundingName(rounding));
    const bool up = rounding == ResetRounding::kUp;
    FakeClock fake;
    MockConfig config = Config("1/s", Algorithm::kFixed, Dialect::kXRateLimit);
    config.reset_rounding = rounding;
    MockApi api(config, fake.clock(), wall);
    // 00:00:00.900; the window ends at 00:00:01.700.
    fake.At(200 * kMs);
    Reply reply = api.Echo("");
    CHECK(Header(reply, "Date") == "Wed, 01 Jan 2025 00:00:00 GMT");
    CHECK(Header(reply, "X-RateLimit-Reset") ==
          (up ? "1735689602" : "1735689601"));
    // 00:00:01.000, 0.7 s before the window ends.
    fake.At(300 * kMs);
    reply = api.Echo("");
    CHECK(reply.status == 429);
    CHECK(Header(reply, "Date") == "Wed, 01 Jan 2025 00:00:01 GMT");
    CHECK(Header(reply, "X-RateLimit-Reset") ==
          (up ? "1735689602" : "1735689601"));
    CHECK(Header(reply, "Retry-After") == (up ? "1" : "0"));
  }
}

// ---- real servers, as the README maps them ---------------------------------

TEST_CASE("express-rate-limit: windows from the first hit, resets rounded up") {
  FakeClock fake;
  MockConfig config = Config("3/min", Algorithm::kFixed, Dialect::kIetf7);
  config.window_start = WindowStart::kFirstRequest;
  MockApi api(config, fake.clock(), FakeClock::wall());
  struct Step {
    int64_t at_ms;
    int status;
    const char* rate_limit;
  };
  const Step steps[] = {
      // The first hit opens [12.5 s, 72.5 s); every hit in it shares its end.
      {12'500, 200, "limit=3, remaining=2, reset=60"},
      {30'000, 200, "limit=3, remaining=1, reset=43"},
      {40'000, 200, "limit=3, remaining=0, reset=33"},
      {50'000, 429, "limit=3, remaining=0, reset=23"},
      // The next window opens at the next hit, [100 s, 160 s), not on the
      // old grid ([72.5 s, 132.5 s)).
      {100'000, 200, "limit=3, remaining=2, reset=60"},
      {130'000, 200, "limit=3, remaining=1, reset=30"},
      {160'000, 200, "limit=3, remaining=2, reset=60"},
  };
  for (const Step& step : steps) {
    CAPTURE(step.at_ms);
    fake.At(step.at_ms * kMs);
    const Reply reply = api.Echo("");
    CHECK(reply.status == step.status);
    CHECK(Header(reply, "RateLimit") == step.rate_limit);
    CHECK(Header(reply, "RateLimit-Policy") == "3;w=60");
    if (step.status == 429) CHECK(Header(reply, "Retry-After") == "23");
  }
  CHECK(api.StatsJson()["max_in_window"] == 3);
}

TEST_CASE("Flask-Limiter's moving window: the oldest hit leaving, truncated") {
  FakeClock fake;
  MockConfig config =
      Config("2/min", Algorithm::kSliding, Dialect::kXRateLimit);
  config.reset_rounding = ResetRounding::kDown;
  MockApi api(config, fake.clock(), FakeClock::wall());
  REQUIRE(api.Echo("").status == 200);
  fake.At(10'500 * kMs);
  Reply reply = api.Echo("");
  CHECK(Header(reply, "X-RateLimit-Remaining") == "0");
  CHECK(Header(reply, "X-RateLimit-Reset") == "1735689660");  // 0 s + 60
  fake.At(25'200 * kMs);
  reply = api.Echo("");
  CHECK(reply.status == 429);
  CHECK(Header(reply, "X-RateLimit-Reset") == "1735689660");
  CHECK(Header(reply, "Retry-After") == "34");  // 34.8 s, truncated
  fake.At(60'500 * kMs);
  reply = api.Echo("");
  CHECK(reply.status == 200);
  // {10.5 s, 60.5 s} are counted; 10.5 s leaves at 70.5 s.
  CHECK(Header(reply, "X-RateLimit-Remaining") == "0");
  CHECK(Header(reply, "X-RateLimit-Reset") == "1735689670");
}

// ---- token limit -----------------------------------------------------------

TEST_CASE("token limit: both limits must allow, usage reports the cost") {
  FakeClock fake;
  MockConfig config = Config("3/min", Algorithm::kFixed, Dialect::kOpenAi);
  config.token_limit = ParseLimitSpec("100/min", nullptr);
  MockApi api(config, fake.clock(), FakeClock::wall());

  Reply reply = api.Echo(R"({"tokens":30})");
  CHECK(reply.status == 200);
  CHECK(Body(reply)["usage"]["total_tokens"] == 30);
  CHECK(Lines(reply) ==
        "x-ratelimit-limit-requests: 3\n"
        "x-ratelimit-remaining-requests: 2\n"
        "x-ratelimit-reset-requests: 1m0s\n"
        "x-ratelimit-limit-tokens: 100\n"
        "x-ratelimit-remaining-tokens: 70\n"
        "x-ratelimit-reset-tokens: 1m0s\n");

  // Too many tokens: refused, and neither limit is charged.
  fake.At(15 * kSecond);
  reply = api.Echo(R"({"tokens":71})");
  CHECK(reply.status == 429);
  CHECK(Body(reply)["error"] == "rate_limited");
  CHECK(Body(reply)["retry_after_ms"] == 45'000);
  CHECK(Lines(reply) ==
        "x-ratelimit-limit-requests: 3\n"
        "x-ratelimit-remaining-requests: 2\n"
        "x-ratelimit-reset-requests: 45s\n"
        "x-ratelimit-limit-tokens: 100\n"
        "x-ratelimit-remaining-tokens: 70\n"
        "x-ratelimit-reset-tokens: 45s\n");

  // No "tokens" field costs 1; fractions round up.
  reply = api.Echo(R"({"prompt":"hi"})");
  CHECK(Body(reply)["usage"]["total_tokens"] == 1);
  CHECK(Header(reply, "x-ratelimit-remaining-tokens") == "69");
  reply = api.Echo(R"({"tokens":2.5})");
  CHECK(Body(reply)["usage"]["total_tokens"] == 3);
  CHECK(Header(reply, "x-ratelimit-remaining-tokens") == "66");
  CHECK(Header(reply, "x-ratelimit-remaining-requests") == "0");

  // Out of requests with tokens to spare: refused, tokens untouched.
  reply = api.Echo(R"({"tokens":1})");
  CHECK(reply.status == 429);
  CHECK(Header(reply, "x-ratelimit-remaining-tokens") == "66");

  const Json stats = api.StatsJson();
  CHECK(stats["accepted"] == 3);
  CHECK(stats["rejected"] == 2);
}

TEST_CASE("token limit: costs beyond the limit and malformed costs") {
  FakeClock fake;
  MockConfig config = Config("10/s", Algorithm::kSliding, Dialect::kAnthropic);
  config.token_limit = ParseLimitSpec("50/s", nullptr);
  MockApi api(config, fake.clock(), FakeClock::wall());

  Reply reply = api.Echo(R"({"tokens":51})");
  CHECK(reply.status == 429);
  CHECK(Body(reply)["error"] == "request_too_large");
  CHECK_FALSE(Header(reply, "retry-after").has_value());
  CHECK(Header(reply, "anthropic-ratelimit-tokens-remaining") == "50");

  for (const char* body : {R"({"tokens":"12"})", R"({"tokens":-1})",
                           R"({"tokens":null})", R"({"tokens":1e13})"}) {
    CAPTURE(body);
    reply = api.Echo(body);
    CHECK(reply.status == 400);
    CHECK(Body(reply)["error"] == "bad_request");
  }
  // A body that is not an object, or not JSON, costs 1.
  CHECK(Body(api.Echo("[1,2]"))["usage"]["total_tokens"] == 1);
  reply = api.Echo("plain");
  CHECK(Body(reply)["usage"]["total_tokens"] == 1);
  CHECK(Lines(reply) ==
        "Date: Wed, 01 Jan 2025 00:00:00 GMT\n"
        "anthropic-ratelimit-requests-limit: 10\n"
        "anthropic-ratelimit-requests-remaining: 8\n"
        "anthropic-ratelimit-requests-reset: 2025-01-01T00:00:01Z\n"
        "anthropic-ratelimit-tokens-limit: 50\n"
        "anthropic-ratelimit-tokens-remaining: 48\n"
        "anthropic-ratelimit-tokens-reset: 2025-01-01T00:00:01Z\n");
  // Zero tokens are free but still count as a request.
  fake.At(400 * kMs);
  reply = api.Echo(R"({"tokens":0})");
  CHECK(Body(reply)["usage"]["total_tokens"] == 0);
  CHECK(Header(reply, "anthropic-ratelimit-tokens-remaining") == "48");
  CHECK(Header(reply, "anthropic-ratelimit-requests-remaining") == "7");

  // The token refusal's wait is the token limiter's: 48 more tokens fit
  // only once the first two leave at 1 s.
  reply = api.Echo(R"({"tokens":49})");
  CHECK(reply.status == 429);
  CHECK(Header(reply, "retry-after") == "1");
  CHECK(Body(reply)["retry_after_ms"] == 600);

  // Batches are charged the same way.
  reply = api.Batch(R"({"inputs":[1],"tokens":8})");
  CHECK(reply.status == 200);
  CHECK(Body(reply)["usage"]["total_tokens"] == 8);
  CHECK(Header(reply, "anthropic-ratelimit-tokens-remaining") == "40");
}

TEST_CASE("without a token limit there are no token fields or usage") {
  FakeClock fake;
  MockApi api(Config("10/s", Algorithm::kFixed, Dialect::kOpenAi), fake.clock(),
              FakeClock::wall());
  const Reply reply = api.Echo(R"({"tokens":"ignored"})");
  CHECK(reply.status == 200);
  CHECK_FALSE(Body(reply).contains("usage"));
  CHECK_FALSE(Header(reply, "x-ratelimit-limit-tokens").has_value());
  CHECK(Header(reply, "x-ratelimit-limit-requests") == "10");
}

TEST_CASE("a token limit alone reports only the token family") {
  FakeClock fake;
  MockConfig config;
  config.dialect = Dialect::kOpenAi;
  config.token_limit = ParseLimitSpec("1000/min", nullptr);
  MockApi api(config, fake.clock(), FakeClock::wall());
  const Reply reply = api.Echo(R"({"tokens":250})");
  CHECK(Lines(reply) ==
        "x-ratelimit-limit-tokens: 1000\n"
        "x-ratelimit-remaining-tokens: 750\n"
        "x-ratelimit-reset-tokens: 1m0s\n");
}

// ---- shared load -----------------------------------------------------------

TEST_CASE("shared load spends quota at its rate, due requests first") {
  FakeClock fake;
  MockConfig config = Config("10/s", Algorithm::kFixed, Dialect::kIetf8);
  config.shared_load = ParseSharedLoad("4/s", nullptr);
  MockApi api(config, fake.clock(), FakeClock::wall());

  // Due at 0, 250, 500 ms: three spent before this request is considered.
  fake.At(500 * kMs);
  Reply reply = api.Echo("");
  CHECK(reply.status == 200);
  CHECK(Header(reply, "RateLimit") == "\"default\";r=6;t=1");

  // By 999 ms the fourth (750 ms) is in too: 10 - 4 - 1 leaves 5.
  fake.At(999 * kMs);
  int accepted = 0;
  for (int i = 0; i < 10; ++i) accepted += api.Echo("").status == 200;
  CHECK(accepted == 5);

  Json stats = api.StatsJson();
  CHECK(stats["accepted"] == 6);
  CHECK(stats["rejected"] == 5);
  CHECK(stats["shared_accepted"] == 4);
  CHECK(stats["shared_rejected"] == 0);
  CHECK(stats["max_in_window"] == 6);
  CHECK(stats["max_total_in_window"] == 10);

  // Reading /stats replays what is due: 40 in 10 s, all admitted.
  fake.At(9'999 * kMs);
  stats = api.StatsJson();
  CHECK(stats["shared_accepted"] == 40);
  CHECK(stats["accepted"] == 6);
  CHECK(stats["requests"] == 11);
}

TEST_CASE("shared load faster than the limit is refused like anyone else") {
  FakeClock fake;
  MockConfig config = Config("5/s", Algorithm::kFixed, Dialect::kRetryAfter);
  config.shared_load = ParseSharedLoad("20/s", nullptr);
  MockApi api(config, fake.clock(), FakeClock::wall());
  fake.At(999 * kMs);  // due: 0, 50, ..., 950 ms
  const Reply reply = api.Echo("");
  CHECK(reply.status == 429);
  CHECK(Header(reply, "Retry-After") == "1");
  CHECK(Body(reply)["retry_after_ms"] == 1);
  const Json stats = api.StatsJson();
  CHECK(stats["shared_accepted"] == 5);
  CHECK(stats["shared_rejected"] == 15);
  CHECK(stats["accepted"] == 0);
  CHECK(stats["rejected"] == 1);
  CHECK(stats["max_total_in_window"] == 5);
}

TEST_CASE("shared load at rates that do not divide the window") {
  FakeClock fake;
  MockConfig config = Config("100/s", Algorithm::kSliding, Dialect::kNone);
  config.shared_load = ParseSharedLoad("30/s", nullptr);
  MockApi api(config, fake.clock(), FakeClock::wall());
  fake.At(10 * kSecond);  // due at k/30 s for k = 0..300
  Json stats = api.StatsJson();
  CHECK(stats["shared_accepted"] == 301);
  CHECK(stats["shared_rejected"] == 0);
  CHECK(stats["max_total_in_window"] == 30);
  CHECK(stats["max_in_window"] == 0);

  // Any unit works; the new schedule starts when it is configured.
  REQUIRE(api.Configure(R"({"shared_load":"7/min"})").status == 200);
  fake.At(10 * kSecond + 60 * kSecond - 1);
  stats = api.StatsJson();
  CHECK(stats["shared_accepted"] == 301 + 7);
}

TEST_CASE("shared load plus real traffic never exceeds the limit in total") {
  for (Algorithm algorithm : {Algorithm::kFixed, Algorithm::kSliding}) {
    CAPTURE(AlgorithmName(algorithm));
    FakeClock fake;
    MockConfig config = Config("5/100ms", algorithm, Dialect::kIetf8);
    config.shared_load = ParseSharedLoad("20/s", nullptr);
    MockApi api(config, fake.clock(), FakeClock::wall());
    std::mt19937_64 rng(7);
    std::uniform_int_distribution<int64_t> gap(0, 30 * kMs);
    for (int i = 0; i < 3'000; ++i) {
      fake.now += gap(rng);
      api.Echo("");
    }
    const Json stats = api.StatsJson();
    CHECK(stats["max_total_in_window"] == 5);
    CHECK(stats["max_in_window"] <= 5);
    CHECK(stats["shared_accepted"] > 0);
    CHECK(stats["accepted"].get<int64_t>() + stats["rejected"].get<int64_t>() ==
          3'000);
  }
}

TEST_CASE("shared load opens first-request windows like any client") {
  FakeClock fake;
  MockConfig config = Config("5/100ms", Algorithm::kFixed, Dialect::kOpenAi);
  config.window_start = WindowStart::kFirstRequest;
  config.shared_load = ParseSharedLoad("1/s", nullptr);
  MockApi api(config, fake.clock(), FakeClock::wall());
  // The shared load's request at 0 opened [0, 100ms).
  fake.At(40 * kMs);
  Reply reply = api.Echo("");
  CHECK(Header(reply, "x-ratelimit-remaining-requests") == "3");
  CHECK(Header(reply, "x-ratelimit-reset-requests") == "60ms");

  std::mt19937_64 rng(11);
  std::uniform_int_distribution<int64_t> gap(0, 30 * kMs);
  for (int i = 0; i < 3'000; ++i) {
    fake.now += gap(rng);
    api.Echo("");
  }
  const Json stats = api.StatsJson();
  CHECK(stats["max_total_in_window"] == 5);
  CHECK(stats["max_in_window"] <= 5);
  CHECK(stats["max_in_any_interval"] > 5);  // windows are not aligned
  CHECK(stats["shared_accepted"] > 0);
}

TEST_CASE("first-request windows on the token limit are its own") {
  FakeClock fake;
  MockConfig config = Config("5/s", Algorithm::kFixed, Dialect::kOpenAi);
  config.window_start = WindowStart::kFirstRequest;
  config.token_limit = ParseLimitSpec("10/2s", nullptr);
  MockApi api(config, fake.clock(), FakeClock::wall());
  // Opens [0, 1 s) for requests and [0, 2 s) for tokens.
  Reply reply = api.Echo(R"({"tokens":4})");
  CHECK(Header(reply, "x-ratelimit-reset-requests") == "1s");
  CHECK(Header(reply, "x-ratelimit-reset-tokens") == "2s");
  // The request window has ended; this opens [1.5 s, 2.5 s).
  fake.At(1'500 * kMs);
  reply = api.Echo(R"({"tokens":4})");
  CHECK(reply.status == 200);
  CHECK(Header(reply, "x-ratelimit-remaining-requests") == "4");
  CHECK(Header(reply, "x-ratelimit-reset-requests") == "1s");
  CHECK(Header(reply, "x-ratelimit-remaining-tokens") == "2");
  CHECK(Header(reply, "x-ratelimit-reset-tokens") == "500ms");
  fake.At(1'600 * kMs);
  reply = api.Echo(R"({"tokens":4})");
  CHECK(reply.status == 429);
  CHECK(Body(reply)["retry_after_ms"] == 400);
  CHECK(Header(reply, "x-ratelimit-reset-requests") == "900ms");
  CHECK(Header(reply, "x-ratelimit-reset-tokens") == "400ms");
  // The token window ends at 2 s; with nothing counted, its reset is 0
  // until a request opens the next.
  fake.At(2'000 * kMs);
  reply = api.Echo(R"({"tokens":0})");
  CHECK(reply.status == 200);
  CHECK(Header(reply, "x-ratelimit-remaining-tokens") == "10");
  CHECK(Header(reply, "x-ratelimit-reset-tokens") == "0s");
  fake.At(2'100 * kMs);
  reply = api.Echo(R"({"tokens":1})");
  CHECK(Header(reply, "x-ratelimit-reset-tokens") == "2s");
  CHECK(Header(reply, "x-ratelimit-reset-requests") == "400ms");
}

TEST_CASE("shared load draws on the token limit too, one token each") {
  FakeClock fake;
  MockConfig config = Config("100/s", Algorithm::kFixed, Dialect::kOpenAi);
  config.token_limit = ParseLimitSpec("10/s", nullptr);
  config.shared_load = ParseSharedLoad("4/s", nullptr);
  MockApi api(config, fake.clock(), FakeClock::wall());
  fake.At(800 * kMs);  // due at 0, 250, 500, 750 ms
  const Reply reply = api.Echo(R"({"tokens":6})");
  CHECK(reply.status == 200);
  CHECK(Header(reply, "x-ratelimit-remaining-tokens") == "0");
  CHECK(Header(reply, "x-ratelimit-remaining-requests") == "95");
}

TEST_CASE("reset and reconfiguring restart the shared load") {
  FakeClock fake;
  MockConfig config = Config("10/s", Algorithm::kFixed, Dialect::kIetf8);
  config.shared_load = ParseSharedLoad("2/s", nullptr);
  MockApi api(config, fake.clock(), FakeClock::wall());
  fake.At(2'100 * kMs);  // 0, 0.5, 1, 1.5, 2 s
  CHECK(api.StatsJson()["shared_accepted"] == 5);

  api.Reset();
  Json stats = api.StatsJson();
  CHECK(stats["shared_accepted"] == 1);  // the first is due at the reset
  CHECK(stats["shared_rejected"] == 0);
  CHECK(stats["max_total_in_window"] == 1);
  // Windows restart at the reset too.
  Reply reply = api.Echo("");
  CHECK(Header(reply, "RateLimit") == "\"default\";r=8;t=1");

  REQUIRE(api.Configure(R"({"shared_load":null})").status == 200);
  fake.At(60 * kSecond);
  stats = api.StatsJson();
  CHECK(stats["shared_accepted"] == 1);
  reply = api.Echo("");
  CHECK(Header(reply, "RateLimit") == "\"default\";r=9;t=1");

  REQUIRE(api.Configure(R"({"shared_load":"1/s"})").status == 200);
  fake.At(62'500 * kMs);  // 60, 61, 62 s
  CHECK(api.StatsJson()["shared_accepted"] == 4);
  CHECK(api.ConfigJson()["shared_load"] == "1/s");
}

TEST_CASE("ParseSharedLoad bounds the rate") {
  std::string error;
  CHECK(ParseSharedLoad("100000/s", &error).has_value());
  CHECK_FALSE(ParseSharedLoad("100001/s", &error).has_value());
  CHECK(error.find("100000") != std::string::npos);
  CHECK_FALSE(ParseSharedLoad("0/s", &error).has_value());
  CHECK(ParseSharedLoad("300/min", nullptr)->window_ns == 60 * kSecond);
}

}  // namespace
}  // namespace pacer::mock
