// The human-written quantities (durations, sizes, limits) and the job model:
// JobSpec validation and normalization, state and outcome names.
#include <doctest/doctest.h>

#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>

#include "common/job.h"
#include "common/limit_spec.h"
#include "common/units.h"

using nlohmann::json;
using pacer::LimitSpec;
using pacer::Millis;
using pacer::parse_duration;
using pacer::parse_job_spec;
using pacer::parse_limit;
using pacer::parse_size;

namespace pacer {
// Lets doctest print a LimitSpec in a failed comparison.
std::ostream& operator<<(std::ostream& os, const LimitSpec& s) {
  return os << s.amount << " " << s.unit << "/" << s.window_ms << "ms";
}
}  // namespace pacer

namespace {

Millis duration(const char* text) {
  auto r = parse_duration(text);
  REQUIRE_MESSAGE(r.ok(), text << ": " << r.error());
  return *r;
}

std::string duration_error(const std::string& text) {
  auto r = parse_duration(text);
  CAPTURE(text);
  REQUIRE_FALSE(r.ok());
  return r.error();
}

pacer::JobSpec job(const json& j) {
  auto r = parse_job_spec(j);
  REQUIRE_MESSAGE(r.ok(), j.dump() << ": " << r.error());
  return *r;
}

std::string job_error(const json& j) {
  auto r = parse_job_spec(j);
  CAPTURE(j.dump());
  REQUIRE_FALSE(r.ok());
  return r.error();
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

}  // namespace

// ------------------------------------------------------------- durations

TEST_CASE("parse_duration accepts the documented forms") {
  CHECK(duration("250ms") == 250);
  CHECK(duration("2s") == 2000);
  CHECK(duration("1.5s") == 1500);
  CHECK(duration("5min") == 300'000);
  CHECK(duration("1h") == 3'600'000);
  CHECK(duration("7d") == 7 * 86'400'000LL);
  CHECK(duration("1m30s") == 90'000);
  CHECK(duration("1h30m") == 5'400'000);
  CHECK(duration("2 s") == 2000);
  CHECK(duration("  10 seconds  ") == 10'000);
  CHECK(duration("3 Minutes") == 180'000);
  CHECK(duration("0s") == 0);
  CHECK(duration("0.5ms") == 1);  // rounded to the nearest millisecond
  CHECK(duration("1.5h") == 5'400'000);
  CHECK(duration("2hours 30mins") == 9'000'000);
}

TEST_CASE(
    "parse_duration refuses junk, empty, negative and overflowing input") {
  CHECK(contains(duration_error(""), "empty duration"));
  CHECK(contains(duration_error("   "), "empty duration"));
  CHECK(contains(duration_error("junk"), "invalid duration 'junk'"));
  CHECK(contains(duration_error("5"),
                 "invalid duration"));  // a bare number has no unit
  CHECK(contains(duration_error("-5s"), "invalid duration"));
  CHECK(contains(duration_error("5s-1s"), "invalid duration"));
  CHECK(contains(duration_error("5 fortnights"),
                 "unknown time unit 'fortnights'"));
  CHECK(contains(duration_error("1.2.3s"), "invalid duration"));
  CHECK(contains(duration_error(".s"), "invalid duration"));
  CHECK(contains(duration_error("s"), "invalid duration"));
  CHECK(contains(duration_error("5s junk"), "invalid duration"));
  CHECK(contains(duration_error("1e3s"), "unknown time unit 'e'"));
  CHECK(contains(duration_error("nan s"), "invalid duration"));
  CHECK(contains(duration_error("inf s"), "invalid duration"));
  // Overflow: far beyond any Millis, and beyond what the parser allows.
  CHECK(contains(duration_error("99999999999999999999d"), "too long"));
  CHECK(contains(duration_error(std::string(400, '9') + "s"),
                 "invalid duration"));
  CHECK(contains(duration_error("100000d"), "too long"));
}

TEST_CASE("parse_size") {
  auto size = [](const char* text) {
    auto r = parse_size(text);
    REQUIRE_MESSAGE(r.ok(), text << ": " << r.error());
    return *r;
  };
  CHECK(size("123") == 123);
  CHECK(size("64KiB") == 65'536);
  CHECK(size("64k") == 65'536);
  CHECK(size("1KB") == 1000);
  CHECK(size("1 kb") == 1000);
  CHECK(size("1MB") == 1'000'000);
  CHECK(size("1MiB") == 1'048'576);
  CHECK(size("2GiB") == 2LL * 1024 * 1024 * 1024);
  CHECK(size("1GB") == 1'000'000'000);
  CHECK(size("1.5KiB") == 1536);
  CHECK(size("10B") == 10);
  for (const char* bad :
       {"", "abc", "-1", "5XB", "1e3", "KiB", "99999999 GiB"}) {
    CAPTURE(std::string(bad));
    CHECK_FALSE(parse_size(bad).ok());
  }
  CHECK(contains(parse_size("99999999 GiB").error(), "too large"));
  CHECK(contains(parse_size("5XB").error(), "unknown size unit 'xb'"));
}

TEST_CASE("format_duration") {
  CHECK(pacer::format_duration(0) == "0ms");
  CHECK(pacer::format_duration(250) == "250ms");
  CHECK(pacer::format_duration(999) == "999ms");
  // Whole seconds render as "2s" (the documented style), not "2.0s".
  CHECK(pacer::format_duration(1000) == "1s");
  CHECK(pacer::format_duration(2000) == "2s");
  CHECK(pacer::format_duration(1500) == "1.5s");
  CHECK(pacer::format_duration(1050) == "1.05s");
  // Just under a minute must not round up to "60.0s".
  CHECK(pacer::format_duration(59'999) == "59.999s");
  CHECK(pacer::format_duration(60'000) == "1m0s");
  CHECK(pacer::format_duration(90'000) == "1m30s");
  CHECK(pacer::format_duration(3'600'000) == "1h0m");
  CHECK(pacer::format_duration(5'400'000) == "1h30m");
  CHECK(pacer::format_duration(86'400'000) == "24h0m");
  CHECK(pacer::format_duration(-1500) == "-1.5s");
  CHECK(pacer::format_duration(-250) == "-250ms");
  // Whatever it renders below an hour parses back to the same duration.
  for (Millis ms : {1LL, 999LL, 1000LL, 1001LL, 1050LL, 1500LL, 12'345LL,
                    59'999LL, 60'000LL, 61'000LL, 3'599'000LL}) {
    CAPTURE(ms);
    auto back = parse_duration(pacer::format_duration(ms));
    REQUIRE(back.ok());
    CHECK(*back == ms);
  }
}

// ------------------------------------------------------------- limits

TEST_CASE("parse_limit accepts the documented forms") {
  auto limit = [](const char* text) {
    auto r = parse_limit(text);
    REQUIRE_MESSAGE(r.ok(), text << ": " << r.error());
    return *r;
  };
  CHECK(limit("50/s") == LimitSpec{50, 1000, "requests"});
  CHECK(limit("600/min") == LimitSpec{600, 60'000, "requests"});
  CHECK(limit("10000/day") == LimitSpec{10'000, 86'400'000, "requests"});
  CHECK(limit("1/50ms") == LimitSpec{1, 50, "requests"});
  CHECK(limit("90000 tokens/min") == LimitSpec{90'000, 60'000, "tokens"});
  CHECK(limit("20 requests/2s") == LimitSpec{20, 2000, "requests"});
  CHECK(limit("20 req/2s") == LimitSpec{20, 2000, "requests"});
  CHECK(limit("5 calls/h") == LimitSpec{5, 3'600'000, "requests"});
  CHECK(limit(" 50 / s ") == LimitSpec{50, 1000, "requests"});
  CHECK(limit("100 Credits/min") == LimitSpec{100, 60'000, "credits"});
  CHECK(limit("50/s").counts_requests());
  CHECK_FALSE(limit("90000 tokens/min").counts_requests());
  CHECK_FALSE(limit("50/s").leaky());
}

TEST_CASE("parse_limit reads a leaky bucket: a rate with a burst") {
  auto r = parse_limit("20/s burst 10");
  REQUIRE_MESSAGE(r.ok(), r.error());
  CHECK(r->amount == 20);
  CHECK(r->window_ms == 1000);
  CHECK(r->burst == 10);
  CHECK(r->leaky());
  CHECK(parse_limit("20/s burst 0")->burst == 0);
  CHECK(parse_limit(" 600 / min  burst   5 ")->burst == 5);
  CHECK(parse_limit("90000 tokens/min burst 1000")->unit == "tokens");
  CHECK(parse_limit("20/s burst 10")->to_string() == "20/1s burst 10");
  CHECK(*parse_limit(parse_limit("3/1050ms burst 2")->to_string()) ==
        *parse_limit("3/1050ms burst 2"));
  CHECK_FALSE(*parse_limit("20/s burst 1") == *parse_limit("20/s"));
  for (const char* bad : {"20/s burst", "20/s burst x", "20/s burst -1",
                          "20/s burst 1 2", "20/sburst 1", "20/burst 1",
                          "20/s burst 1234567890123456"}) {
    CAPTURE(std::string(bad));
    auto e = parse_limit(bad);
    REQUIRE_FALSE(e.ok());
    CHECK(contains(e.error(), std::string("invalid limit '") + bad + "'"));
  }
  CHECK(contains(parse_limit("20/s burst").error(), "whole number"));
  CHECK(contains(parse_limit("20/s burst 1 2").error(), "after the burst"));
}

TEST_CASE("parse_limit refuses bad limits and says why") {
  for (const char* bad :
       {"", "50", "0/s", "-1/s", "50/", "50/fortnight", "abc/s", "/s", "50/0s",
        "50/-1s", "50 tok:ens/s", "1234567890123456/s", "1.5/s", "50/s/s"}) {
    CAPTURE(std::string(bad));
    auto r = parse_limit(bad);
    REQUIRE_FALSE(r.ok());
    CHECK(contains(r.error(), std::string("invalid limit '") + bad + "'"));
  }
  CHECK(contains(parse_limit("50").error(), "no '/'"));
  CHECK(contains(parse_limit("0/s").error(), "at least 1"));
  CHECK(contains(parse_limit("50/0s").error(), "longer than 0"));
  CHECK(contains(parse_limit("50/fortnight").error(), "unknown time unit"));
}

TEST_CASE("LimitSpec::to_string is canonical and parses back") {
  CHECK(parse_limit("50/s")->to_string() == "50/1s");
  CHECK(parse_limit("90000 tokens/min")->to_string() == "90000 tokens/1m0s");
  CHECK(parse_limit("1/50ms")->to_string() == "1/50ms");
  CHECK(parse_limit("20 requests/2s")->to_string() == "20/2s");
  CHECK(parse_limit("10000/day")->to_string() == "10000/24h0m");
  for (const char* text : {"50/s", "600/min", "10000/day", "1/50ms",
                           "90000 tokens/min", "20 requests/2s", "1/1050ms",
                           "7/90500ms", "3/3601s", "9 credits/1500ms"}) {
    CAPTURE(std::string(text));
    auto spec = parse_limit(text);
    REQUIRE(spec.ok());
    auto back = parse_limit(spec->to_string());
    REQUIRE_MESSAGE(back.ok(), spec->to_string());
    CHECK(*back == *spec);
  }
}

// ------------------------------------------------------------- job model

TEST_CASE("job states and outcomes have fixed names that parse back") {
  using pacer::JobState;
  using pacer::Outcome;
  CHECK(pacer::to_string(JobState::kQueued) == "queued");
  CHECK(pacer::to_string(JobState::kWaitingQuota) == "waiting_quota");
  CHECK(pacer::to_string(JobState::kCanceled) == "canceled");
  for (int i = 0; i <= 6; ++i) {
    auto s = static_cast<JobState>(i);
    CHECK(pacer::parse_job_state(pacer::to_string(s)) == s);
  }
  CHECK_FALSE(pacer::parse_job_state("cancelled").has_value());
  CHECK_FALSE(pacer::parse_job_state("").has_value());
  CHECK(pacer::is_final(JobState::kSucceeded));
  CHECK(pacer::is_final(JobState::kDead));
  CHECK(pacer::is_final(JobState::kCanceled));
  CHECK_FALSE(pacer::is_final(JobState::kQueued));
  CHECK_FALSE(pacer::is_final(JobState::kRunning));
  CHECK_FALSE(pacer::is_final(JobState::kRetrying));
  CHECK_FALSE(pacer::is_final(JobState::kWaitingQuota));

  CHECK(pacer::to_string(Outcome::kRateLimited) == "rate_limited");
  for (int i = 0; i <= 5; ++i) {
    auto o = static_cast<Outcome>(i);
    CHECK(pacer::parse_outcome(pacer::to_string(o)) == o);
  }
  CHECK_FALSE(pacer::parse_outcome("ok").has_value());

  CHECK(pacer::classify_status(200) == Outcome::kSuccess);
  CHECK(pacer::classify_status(204) == Outcome::kSuccess);
  CHECK(pacer::classify_status(429) == Outcome::kRateLimited);
  CHECK(pacer::classify_status(0) == Outcome::kTransient);
  CHECK(pacer::classify_status(500) == Outcome::kTransient);
  CHECK(pacer::classify_status(503) == Outcome::kTransient);
  CHECK(pacer::classify_status(408) == Outcome::kTransient);
  CHECK(pacer::classify_status(400) == Outcome::kPermanent);
  CHECK(pacer::classify_status(404) == Outcome::kPermanent);
  CHECK(pacer::classify_status(301) == Outcome::kPermanent);
}

TEST_CASE("parse_job_spec defaults") {
  auto s = job({{"api", "echo"}});
  CHECK(s.api == "echo");
  CHECK(s.method == "GET");  // no body
  CHECK(s.path == "/");
  CHECK(s.headers.empty());
  CHECK_FALSE(s.body.has_value());
  CHECK(s.priority == 0);
  CHECK(s.delay_ms == 0);
  CHECK(s.cost == 1);
  CHECK(s.key.empty());
  CHECK(s.batch_key.empty());
  CHECK_FALSE(s.max_attempts.has_value());
  CHECK_FALSE(s.timeout_ms.has_value());

  CHECK(job({{"api", "echo"}, {"body", {{"n", 1}}}}).method == "POST");
  CHECK(job({{"api", "echo"}, {"body_text", "raw"}}).method == "POST");
  CHECK(job({{"api", "echo"}, {"body", nullptr}}).method ==
        "GET");  // null: no body
  CHECK(job({{"api", "echo"}, {"method", "put"}}).method == "PUT");
  CHECK(job({{"api", "echo"}, {"method", "GET"}, {"body", 1}}).method == "GET");
  CHECK(job({{"api", "echo"}, {"id", 7}}).api ==
        "echo");  // `pacer run` lines carry ids
}

TEST_CASE("parse_job_spec: the body is serialized JSON; body_text is raw") {
  CHECK(job({{"api", "e"}, {"body", {{"n", 1}}}}).body ==
        std::optional<std::string>("{\"n\":1}"));
  CHECK(job({{"api", "e"}, {"body", "text"}}).body ==
        std::optional<std::string>("\"text\""));
  CHECK(job({{"api", "e"}, {"body", json::array({1, 2})}}).body ==
        std::optional<std::string>("[1,2]"));
  CHECK(job({{"api", "e"}, {"body", false}}).body ==
        std::optional<std::string>("false"));
  CHECK(job({{"api", "e"}, {"body", 0}}).body ==
        std::optional<std::string>("0"));
  CHECK(job({{"api", "e"}, {"body_text", "a=1&b=2"}}).body ==
        std::optional<std::string>("a=1&b=2"));
  CHECK(job({{"api", "e"}, {"body_text", ""}}).body ==
        std::optional<std::string>(""));

  CHECK(contains(job_error({{"api", "e"}, {"body", 1}, {"body_text", "x"}}),
                 "either"));
  CHECK(contains(job_error({{"api", "e"}, {"body_text", 5}}),
                 "'body_text' must be a string"));
  CHECK(contains(
      job_error({{"api", "e"}, {"body_text", std::string((1 << 20) + 1, 'x')}}),
      "larger than 1 MiB"));
  CHECK(job({{"api", "e"}, {"body_text", std::string(1 << 20, 'x')}})
            .body->size() == 1 << 20);
}

TEST_CASE("parse_job_spec: api, method and unknown fields") {
  CHECK(contains(job_error({{"path", "/"}}), "'api' is required"));
  CHECK(contains(job_error({{"api", ""}}), "'api' is required"));
  CHECK(contains(job_error({{"api", 5}}), "'api' is required"));
  CHECK(contains(job_error(json::array({1})), "JSON object"));
  CHECK(contains(job_error("echo"), "JSON object"));
  CHECK(job_error({{"api", "e"}, {"prio", 1}}) == "unknown field 'prio'");
  CHECK(job_error({{"api", "e"}, {"Body", 1}}) == "unknown field 'Body'");
  CHECK(contains(job_error({{"api", "e"}, {"method", 1}}),
                 "'method' must be a string"));
  CHECK(contains(job_error({{"api", "e"}, {"method", "GE T"}}),
                 "invalid method 'GE T'"));
  CHECK(contains(job_error({{"api", "e"}, {"method", ""}}), "invalid method"));
  CHECK(contains(job_error({{"api", "e"}, {"method", "GET\r\n"}}),
                 "invalid method"));
  CHECK(contains(job_error({{"api", "e"}, {"method", "G\xC3\xA9T"}}),
                 "invalid method"));
  CHECK(contains(job_error({{"api", "e"}, {"method", std::string(17, 'A')}}),
                 "invalid method"));
  CHECK(job({{"api", "e"}, {"method", std::string(16, 'A')}}).method.size() ==
        16);
}

TEST_CASE("parse_job_spec: path rules") {
  CHECK(job({{"api", "e"}, {"path", "/v1/echo?x=1&y=%20"}}).path ==
        "/v1/echo?x=1&y=%20");
  for (const char* bad : {"", "v1/echo", "//evil", "//evil.example.com/x",
                          "http://x", "https://x/y"}) {
    CAPTURE(std::string(bad));
    CHECK(contains(job_error({{"api", "e"}, {"path", bad}}),
                   "must start with a single '/'"));
  }
  for (const char* bad : {"/a b", "/a\tb", "/a\r\nHost: evil", "/a\n"}) {
    CAPTURE(std::string(bad));
    CHECK(contains(job_error({{"api", "e"}, {"path", bad}}), "whitespace"));
  }
  CHECK(contains(job_error({{"api", "e"}, {"path", std::string("/a\0b", 4)}}),
                 "whitespace"));
  CHECK(contains(
      job_error({{"api", "e"}, {"path", "/" + std::string(8192, 'a')}}),
      "too long"));
  CHECK(contains(job_error({{"api", "e"}, {"path", 5}}),
                 "'path' must be a string"));
}

TEST_CASE("parse_job_spec: header rules") {
  auto s =
      job({{"api", "e"},
           {"headers", {{"X-Trace", "abc"}, {"Content-Type", "text/plain"}}}});
  CHECK(s.headers == std::map<std::string, std::string>{
                         {"Content-Type", "text/plain"}, {"X-Trace", "abc"}});
  CHECK(job({{"api", "e"}, {"headers", nullptr}}).headers.empty());
  for (const char* managed : {"Host", "host", "HOST", "Content-Length",
                              "transfer-encoding", "Connection"}) {
    CAPTURE(std::string(managed));
    CHECK(contains(job_error({{"api", "e"}, {"headers", {{managed, "x"}}}}),
                   "is managed by the worker"));
  }
  for (const char* bad_value : {"a\r\nX-Injected: 1", "a\nb", "a\rb"}) {
    CAPTURE(std::string(bad_value));
    CHECK(contains(job_error({{"api", "e"}, {"headers", {{"X-A", bad_value}}}}),
                   "contains a line break"));
  }
  CHECK(contains(
      job_error({{"api", "e"}, {"headers", {{"X-A", std::string("a\0b", 3)}}}}),
      "line break"));
  for (const char* bad_name :
       {"Bad Name", "X:Y", "", "X\r\nY", "caf\xC3\xA9"}) {
    CAPTURE(std::string(bad_name));
    CHECK(contains(job_error({{"api", "e"}, {"headers", {{bad_name, "x"}}}}),
                   "invalid header name"));
  }
  CHECK(contains(job_error({{"api", "e"}, {"headers", {{"X-A", 5}}}}),
                 "must have a string value"));
  CHECK(contains(job_error({{"api", "e"}, {"headers", json::array({"X-A"})}}),
                 "'headers' must be an object"));
  CHECK(contains(
      job_error({{"api", "e"}, {"headers", {{"X-A", std::string(8193, 'v')}}}}),
      "longer than 8 KiB"));
  CHECK(job({{"api", "e"}, {"headers", {{"X-A", std::string(8192, 'v')}}}})
            .headers.size() == 1);
}

TEST_CASE("parse_job_spec: priority, cost, delay, timeout, key, max_attempts") {
  auto s = job({{"api", "e"},
                {"priority", -5},
                {"cost", 7},
                {"delay", "10s"},
                {"timeout", "30s"},
                {"key", "k-1"},
                {"batch_key", "b"},
                {"max_attempts", 3}});
  CHECK(s.priority == -5);
  CHECK(s.cost == 7);
  CHECK(s.delay_ms == 10'000);
  CHECK(s.timeout_ms == std::optional<Millis>(30'000));
  CHECK(s.key == "k-1");
  CHECK(s.batch_key == "b");
  CHECK(s.max_attempts == std::optional<int>(3));

  // Milliseconds are accepted for delay and timeout.
  CHECK(job({{"api", "e"}, {"delay", 250}}).delay_ms == 250);
  CHECK(job({{"api", "e"}, {"delay", 0}}).delay_ms == 0);
  CHECK(job({{"api", "e"}, {"timeout", 1500}}).timeout_ms ==
        std::optional<Millis>(1500));
  CHECK(job({{"api", "e"}, {"priority", 1'000'000}}).priority == 1'000'000);
  CHECK(job({{"api", "e"}, {"priority", -1'000'000}}).priority == -1'000'000);
  CHECK(job({{"api", "e"}, {"max_attempts", 1000}}).max_attempts ==
        std::optional<int>(1000));
  CHECK(job({{"api", "e"}, {"key", std::string(512, 'k')}}).key.size() == 512);

  auto refused = [](const json& field_and_value, const std::string& why) {
    json j = {{"api", "e"}};
    j.update(field_and_value);
    std::string e = job_error(j);
    CHECK(contains(e, why));
  };
  refused({{"priority", 1.5}}, "'priority' must be an integer");
  refused({{"priority", "1"}}, "'priority' must be an integer");
  refused({{"priority", 1'000'001}}, "'priority' must be between");
  refused({{"priority", -1'000'001}}, "'priority' must be between");
  // An unsigned value beyond int64 must not wrap around into the range.
  refused({{"priority", std::numeric_limits<std::uint64_t>::max()}},
          "'priority' must be");
  refused({{"cost", 0}}, "'cost' must be an integer of at least 1");
  refused({{"cost", -1}}, "'cost' must be an integer of at least 1");
  refused({{"cost", 1.5}}, "'cost' must be an integer of at least 1");
  refused({{"cost", 1'000'000'001}}, "'cost' is more than 1000000000");
  refused({{"cost", std::numeric_limits<std::uint64_t>::max()}}, "'cost'");
  refused({{"delay", -1}}, "'delay' must not be negative");
  refused({{"delay", "soon"}}, "'delay'");
  refused({{"delay", "-5s"}}, "'delay'");
  refused({{"delay", 1.5}}, "'delay' must be a duration string");
  refused({{"delay", true}}, "'delay' must be a duration string");
  // Milliseconds beyond what a duration string may say would overflow
  // now + delay when the broker computes run_at.
  refused({{"delay", std::numeric_limits<std::int64_t>::max()}}, "'delay'");
  refused({{"delay", std::numeric_limits<std::uint64_t>::max()}}, "'delay'");
  refused({{"timeout", 0}}, "'timeout' must be positive");
  refused({{"timeout", "0s"}}, "'timeout' must be positive");
  refused({{"timeout", "forever"}}, "'timeout'");
  refused({{"timeout", std::numeric_limits<std::int64_t>::max()}}, "'timeout'");
  refused({{"key", 5}}, "'key' must be a string");
  refused({{"key", std::string(513, 'k')}}, "'key' is longer than 512 bytes");
  refused({{"batch_key", 5}}, "'batch_key' must be a string");
  refused({{"max_attempts", 0}},
          "'max_attempts' must be an integer from 1 to 1000");
  refused({{"max_attempts", 1001}},
          "'max_attempts' must be an integer from 1 to 1000");
  refused({{"max_attempts", "5"}},
          "'max_attempts' must be an integer from 1 to 1000");
  refused({{"max_attempts", 2.5}},
          "'max_attempts' must be an integer from 1 to 1000");
  // 2^32 + 1 must not be read as 1 through a narrowing conversion.
  refused({{"max_attempts", 4'294'967'297LL}},
          "'max_attempts' must be an integer from 1 to 1000");
  refused({{"max_attempts", -4'294'967'295LL}},
          "'max_attempts' must be an integer from 1 to 1000");
}

TEST_CASE("JobSpec::to_json parses back to the same spec") {
  auto s = job({{"api", "echo"},
                {"method", "patch"},
                {"path", "/v1/x"},
                {"headers", {{"X-Trace", "abc"}}},
                {"body", {{"n", 1}}},
                {"priority", 3},
                {"delay", "2s"},
                {"cost", 4},
                {"key", "k"},
                {"batch_key", "b"},
                {"max_attempts", 9},
                {"timeout", "5s"}});
  json j = s.to_json();
  CHECK(j["body_text"] == "{\"n\":1}");
  CHECK_FALSE(j.contains("body"));
  auto back = job(j);
  CHECK(back.api == s.api);
  CHECK(back.method == "PATCH");
  CHECK(back.path == s.path);
  CHECK(back.headers == s.headers);
  CHECK(back.body == s.body);
  CHECK(back.priority == s.priority);
  CHECK(back.delay_ms == 2000);
  CHECK(back.cost == s.cost);
  CHECK(back.key == s.key);
  CHECK(back.batch_key == s.batch_key);
  CHECK(back.max_attempts == s.max_attempts);
  CHECK(back.timeout_ms == s.timeout_ms);

  auto minimal = job({{"api", "echo"}});
  CHECK(minimal.to_json() ==
        json{{"api", "echo"}, {"method", "GET"}, {"path", "/"}});
}
