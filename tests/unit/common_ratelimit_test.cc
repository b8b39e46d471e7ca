// The rate-limit parser: every vector of tests/data/ratelimit-vectors.json
// (the reference's §12) as its own subcase, targeted cases for what the
// vectors do not pin down, parse_response_head, and a fuzz run with fixed
// seeds that checks the parser's bounds on hostile input.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "common/ratelimit.h"

using nlohmann::json;
using pacer::HeaderFields;
using pacer::kMaxObservedWaitMs;
using pacer::Observation;
using pacer::observe_response;
using pacer::parse_response_head;
using pacer::to_json;

namespace {

constexpr std::int64_t kNow = 1'735'689'600'000;  // 2025-01-01T00:00:00Z

json load_vectors() {
  std::ifstream in(std::string(PACER_SOURCE_DIR) +
                   "/tests/data/ratelimit-vectors.json");
  REQUIRE_MESSAGE(in.good(), "tests/data/ratelimit-vectors.json is missing");
  std::stringstream ss;
  ss << in.rdbuf();
  return json::parse(ss.str());
}

// Parses a raw response and observes it.
Observation observe(const std::string& raw, std::int64_t now = kNow,
                    const std::string& dialect = "auto") {
  auto head = parse_response_head(raw);
  REQUIRE_MESSAGE(head.ok(), head.error());
  return observe_response(*head, now, dialect);
}

json observe_json(const std::string& raw, std::int64_t now = kNow,
                  const std::string& dialect = "auto") {
  return to_json(observe(raw, now, dialect));
}

bool same_number(const json& a, const json& b) {
  return a.is_number() && b.is_number() &&
         std::abs(a.get<double>() - b.get<double>()) < 1e-9;
}

bool same_value(const json& expected, const json& actual) {
  if (expected.is_number()) return same_number(expected, actual);
  return expected == actual;
}

// flags and warnings: the same strings, in any order.
bool same_set(const json& expected, const json& actual) {
  if (!actual.is_array()) return false;
  auto as_set = [](const json& a) {
    std::multiset<std::string> s;
    for (const auto& e : a) s.insert(e.dump());
    return s;
  };
  return as_set(expected) == as_set(actual);
}

// How the vectors are compared (the file's note: "keys not shown in an
// expectation are null, empty or false, retryable defaults to true"):
// - a key shown is compared exactly (numbers by value, flags and warnings as
//   sets: the same strings in any order);
// - a key not shown must have its default: null, [] or false, retryable
//   true, a limit's unit "requests";
// - except where the file is not consistent about showing a key:
//   retry_after_source (V01 shows "retry-after", V02 to V10 leave it out for
//   the same source) and, per limit, scope and reset_kind (V45 shows
//   "full_replenish" on its first entry only, although R12 makes all four
//   Anthropic entries full_replenish). Those three are compared only where
//   shown.
// - http_status and received_unix_ms are never shown; they must equal the
//   response's status and the file's now_ms.
// - limits are compared in order.
void compare(const json& expected, const json& actual,
             std::vector<std::string>& diffs) {
  static const std::vector<std::pair<std::string, json>> kTopDefaults = {
      {"server_skew_ms", nullptr}, {"verdict", "ok"},
      {"retryable", true},         {"blocking", false},
      {"retry_after_ms", nullptr}, {"server_should_retry", nullptr},
      {"reason", nullptr},         {"scope", nullptr},
      {"wait_ms", nullptr},        {"warnings", json::array()},
      {"flags", json::array()}};
  static const std::set<std::string> kShownOnly = {"retry_after_source"};
  for (auto it = expected.begin(); it != expected.end(); ++it) {
    if (it.key() == "limits") continue;
    bool known =
        std::any_of(kTopDefaults.begin(), kTopDefaults.end(),
                    [&](const auto& d) { return d.first == it.key(); }) ||
        kShownOnly.count(it.key());
    if (!known) diffs.push_back("unexpected key in the vector: " + it.key());
  }
  for (const auto& [key, def] : kTopDefaults) {
    const json& want = expected.contains(key) ? expected[key] : def;
    const json& got = actual.contains(key) ? actual[key] : json();
    bool ok = (key == "warnings" || key == "flags") ? same_set(want, got)
                                                    : same_value(want, got);
    if (!ok)
      diffs.push_back(key + ": expected " + want.dump() + ", got " +
                      got.dump());
  }
  for (const auto& key : kShownOnly) {
    if (expected.contains(key) && !same_value(expected[key], actual[key]))
      diffs.push_back(key + ": expected " + expected[key].dump() + ", got " +
                      actual[key].dump());
  }

  static const std::vector<std::pair<std::string, json>> kLimitDefaults = {
      {"source", nullptr},       {"name", nullptr},
      {"unit", "requests"},      {"limit", nullptr},
      {"remaining", nullptr},    {"used", nullptr},
      {"reset_in_ms", nullptr},  {"window_s", nullptr},
      {"refill_per_s", nullptr}, {"partition_key", nullptr},
      {"policy_only", false},    {"flags", json::array()}};
  static const std::set<std::string> kLimitShownOnly = {"scope", "reset_kind"};
  json want_limits = expected.value("limits", json::array());
  const json& got_limits = actual["limits"];
  if (want_limits.size() != got_limits.size()) {
    diffs.push_back("limits: expected " + std::to_string(want_limits.size()) +
                    " entries, got " + std::to_string(got_limits.size()));
    return;
  }
  for (std::size_t i = 0; i < want_limits.size(); ++i) {
    const json& w = want_limits[i];
    const json& g = got_limits[i];
    std::string at = "limits[" + std::to_string(i) + "].";
    for (auto it = w.begin(); it != w.end(); ++it) {
      bool known =
          std::any_of(kLimitDefaults.begin(), kLimitDefaults.end(),
                      [&](const auto& d) { return d.first == it.key(); }) ||
          kLimitShownOnly.count(it.key());
      if (!known)
        diffs.push_back("unexpected key in the vector: " + at + it.key());
    }
    for (const auto& [key, def] : kLimitDefaults) {
      const json& want = w.contains(key) ? w[key] : def;
      const json& got = g.contains(key) ? g[key] : json();
      bool ok = key == "flags" ? same_set(want, got) : same_value(want, got);
      if (!ok)
        diffs.push_back(at + key + ": expected " + want.dump() + ", got " +
                        got.dump());
    }
    for (const auto& key : kLimitShownOnly) {
      if (w.contains(key) && !same_value(w[key], g[key]))
        diffs.push_back(at + key + ": expected " + w[key].dump() + ", got " +
                        g[key].dump());
    }
  }
}

// V41 has no response in the file: its table (Go durations in
// x-ratelimit-reset-*) is here, run through the whole parser.
void go_duration_table() {
  struct Row {
    const char* input;
    std::optional<std::int64_t> ms;
    const char* flag;
  };
  const Row rows[] = {
      {"20ms", 20, nullptr},
      {"12ms", 12, nullptr},
      {"17.5ms", 18, nullptr},
      {"1s", 1000, nullptr},
      {"7.66s", 7660, nullptr},
      {"2m59.56s", 179560, nullptr},
      {"6m0s", 360000, nullptr},
      {"1h2m3.5s", 3723500, nullptr},
      {"0s", 0, nullptr},
      {"17", 17000, "bare_number"},
      {"1x", std::nullopt, nullptr},
  };
  for (const auto& row : rows) {
    CAPTURE(row.input);
    auto j = observe_json(std::string("HTTP/2 200\n"
                                      "x-ratelimit-limit-tokens: 30000\n"
                                      "x-ratelimit-remaining-tokens: 100\n"
                                      "x-ratelimit-reset-tokens: ") +
                          row.input + "\n");
    REQUIRE(j["limits"].size() == 1);
    const json& l = j["limits"][0];
    if (row.ms) {
      CHECK(l["reset_in_ms"] == *row.ms);
      CHECK(j["warnings"].empty());
    } else {
      CHECK(l["reset_in_ms"].is_null());
      REQUIRE(j["warnings"].size() == 1);
      CHECK(j["warnings"][0].get<std::string>().starts_with("unparseable"));
    }
    if (row.flag)
      CHECK(l["flags"] == json::array({row.flag}));
    else
      CHECK(l["flags"].empty());
  }
}

}  // namespace

TEST_CASE("every vector of tests/data/ratelimit-vectors.json") {
  json file = load_vectors();
  REQUIRE(file["now_ms"] == kNow);
  REQUIRE(file["vectors"].size() >= 50);
  for (const auto& v : file["vectors"]) {
    std::string id = v["id"].get<std::string>();
    std::string title = id + " " + v["title"].get<std::string>();
    SUBCASE(title.c_str()) {
      if (v["response"].is_null()) {
        REQUIRE(id == "V41");
        go_duration_table();
      }
      for (const auto& e : v["expected"]) {
        std::string when = e.value("when", "");
        std::string dialect = when.empty() ? "auto" : when;
        REQUIRE_MESSAGE(pacer::is_known_dialect(dialect),
                        "unknown 'when' in the vector: " << when);
        auto raw = v["response"].get<std::string>();
        auto head = parse_response_head(raw);
        REQUIRE_MESSAGE(head.ok(), head.error());
        json actual = to_json(observe_response(*head, kNow, dialect));
        std::vector<std::string> diffs;
        compare(e["expect"], actual, diffs);
        if (actual["http_status"] != head->status)
          diffs.push_back("http_status");
        if (actual["received_unix_ms"] != kNow)
          diffs.push_back("received_unix_ms");
        std::string text;
        for (const auto& d : diffs) text += "\n  " + d;
        CHECK_MESSAGE(diffs.empty(), id << " differs:" << text
                                        << "\nactual: " << actual.dump());
      }
    }
  }
}

TEST_CASE("the JSON has every key of the contract, absent optionals null") {
  auto j = observe_json("HTTP/1.1 200 OK\n");
  for (const char* key : {"http_status", "received_unix_ms", "server_skew_ms",
                          "verdict", "retryable", "blocking", "retry_after_ms",
                          "retry_after_source", "server_should_retry", "reason",
                          "wait_ms", "limits", "warnings", "flags", "scope",
                          "retry_after_precision_ms"})
    CHECK_MESSAGE(j.contains(key), key);
  CHECK(j.size() == 16);
  CHECK(j["retry_after_ms"].is_null());
  CHECK(j["retry_after_source"].is_null());
  CHECK(j["http_status"] == 200);
  CHECK(j["wait_ms"] == 0);

  auto l = observe_json("HTTP/1.1 200 OK\nRateLimit: \"d\";r=1\n")["limits"][0];
  for (const char* key :
       {"source", "name", "unit", "scope", "limit", "remaining", "used",
        "reset_in_ms", "window_s", "refill_per_s", "partition_key",
        "reset_kind", "policy_only", "flags", "reset_precision_ms"})
    CHECK_MESSAGE(l.contains(key), key);
  CHECK(l.size() == 15);
  CHECK(l["scope"] == "default");
  CHECK(l["reset_kind"] == "window_end");
  CHECK(l["limit"].is_null());
}

TEST_CASE("worth_reporting: limits, a verdict, a retry hint or warnings") {
  CHECK_FALSE(pacer::worth_reporting(observe("HTTP/1.1 200 OK\n")));
  CHECK_FALSE(pacer::worth_reporting(
      observe("HTTP/1.1 204 No Content\nContent-Type: text/plain\n")));
  CHECK(pacer::worth_reporting(observe("HTTP/1.1 404 Not Found\n")));
  CHECK(pacer::worth_reporting(observe("HTTP/1.1 200 OK\nRetry-After: 5\n")));
  CHECK(pacer::worth_reporting(
      observe("HTTP/1.1 200 OK\nX-RateLimit-Remaining: 5\n")));
  CHECK(pacer::worth_reporting(
      observe("HTTP/1.1 200 OK\nX-RateLimit-Limit: abc\n")));
}

TEST_CASE("dialect profiles settle ambiguous units") {
  SUBCASE("V29 without the GitLab profile: the R9 epoch heuristic") {
    auto j = observe_json(
        "HTTP/1.1 200 OK\nRateLimit-Limit: 600\nRateLimit-Remaining: 594\n"
        "RateLimit-Reset: 1735689660\n",
        kNow, "generic");
    REQUIRE(j["limits"].size() == 1);
    CHECK(j["limits"][0]["source"] == "ietf-sep");
    CHECK(j["limits"][0]["reset_in_ms"] == 60000);
    CHECK(j["limits"][0]["flags"] == json::array({"epoch_heuristic"}));
  }
  SUBCASE("gitlab forced: epoch seconds without markers") {
    auto j = observe_json(
        "HTTP/1.1 200 OK\nRateLimit-Limit: 600\nRateLimit-Reset: 1735689660\n",
        kNow, "gitlab");
    CHECK(j["limits"][0]["source"] == "gitlab");
    CHECK(j["limits"][0]["reset_in_ms"] == 60000);
    CHECK(j["limits"][0]["flags"].empty());
  }
  SUBCASE(
      "ietf forced: RateLimit-Reset is delta seconds, an epoch is beyond "
      "the cap") {
    auto j = observe_json(
        "HTTP/1.1 200 OK\nRateLimit-Limit: 600\nRateLimit-Reset: 1735689660\n",
        kNow, "ietf");
    CHECK(j["limits"][0]["reset_in_ms"].is_null());
    CHECK(j["warnings"] == json::array({"beyond_cap:RateLimit-Reset"}));
  }
  SUBCASE("prisjakt: X-Rate-Limit-Reset in delta milliseconds") {
    std::string raw =
        "HTTP/1.1 200 OK\nX-Rate-Limit-Limit: 10\nX-Rate-Limit-Remaining: 0\n"
        "X-Rate-Limit-Reset: 600000\n";
    auto p = observe_json(raw, kNow, "prisjakt");
    CHECK(p["limits"][0]["source"] == "prisjakt");
    CHECK(p["limits"][0]["reset_in_ms"] == 600000);
    CHECK(p["wait_ms"] == 600000);
    // Auto reads X's epoch seconds: 600000 s after 1970 is long past.
    auto a = observe_json(raw);
    CHECK(a["limits"][0]["source"] == "x");
    CHECK(a["limits"][0]["reset_in_ms"] == 0);
  }
  SUBCASE("reddit forced: delta seconds, window and inferred limit") {
    auto j = observe_json(
        "HTTP/1.1 200 OK\nx-ratelimit-used: 10\nx-ratelimit-remaining: 590\n"
        "x-ratelimit-reset: 30\n",
        kNow, "reddit");
    CHECK(j["limits"][0]["source"] == "reddit");
    CHECK(j["limits"][0]["limit"] == 600);
    CHECK(j["limits"][0]["window_s"] == 600);
  }
  SUBCASE("github forced: a bare 429 gets the secondary-limit default") {
    auto j = observe_json("HTTP/2 429\n", kNow, "github");
    CHECK(j["retry_after_ms"] == 60000);
    CHECK(j["retry_after_source"] == "vendor_default:github");
    CHECK(j["wait_ms"] == 60000);
    CHECK(j["reason"] == "secondary_rate_limit");
    // Without the profile nothing is inferred.
    CHECK(observe_json("HTTP/2 429\n")["retry_after_ms"].is_null());
  }
  SUBCASE("groq: windows for requests (per day) and tokens (per minute)") {
    auto j = observe_json(
        "HTTP/2 200\nx-ratelimit-limit-requests: 14400\n"
        "x-ratelimit-limit-tokens: 6000\nx-ratelimit-reset-tokens: 7.66s\n",
        kNow, "groq");
    REQUIRE(j["limits"].size() == 2);
    CHECK(j["limits"][0]["source"] == "groq");
    CHECK(j["limits"][0]["window_s"] == 86400);
    CHECK(j["limits"][1]["window_s"] == 60);
    CHECK(j["limits"][1]["reset_kind"] == "full_replenish");
  }
  SUBCASE("akamai: X-RateLimit-Next is the next allowed request") {
    auto j = observe_json(
        "HTTP/1.1 429 Too Many Requests\nX-RateLimit-Limit: 10\n"
        "X-RateLimit-Remaining: 0\nX-RateLimit-Next: 2025-01-01T00:00:02Z\n");
    CHECK(j["limits"][0]["source"] == "akamai");
    CHECK(j["limits"][0]["reset_kind"] == "next_request");
    CHECK(j["wait_ms"] == 2000);
  }
  SUBCASE("an unknown dialect is auto with a warning") {
    auto j = observe_json("HTTP/1.1 200 OK\n", kNow, "nope");
    CHECK(j["warnings"] == json::array({"unknown_dialect:nope"}));
  }
  CHECK(pacer::is_known_dialect("auto"));
  CHECK_FALSE(pacer::is_known_dialect("Auto"));
  CHECK(pacer::known_dialects_text().starts_with("auto, generic, github"));
}

TEST_CASE("Retry-After forms, caps and conflicts") {
  auto ra = [](const std::string& value) {
    return observe_json(
        "HTTP/1.1 429 Too Many Requests\nRetry-After: " + value + "\n");
  };
  CHECK(ra("Sun Nov  6 08:49:37 1994")["retry_after_ms"] == 0);
  CHECK(ra("Wed Jan  1 00:00:10 2025")["retry_after_ms"] == 10000);
  CHECK(ra("Wed, 01 Jan 2025 00:00:10 GMT")["retry_after_ms"] == 10000);
  CHECK(ra("Wednesday, 01-Jan-25 00:00:10 GMT")["retry_after_ms"] == 10000);
  // RFC 850: a two-digit year more than 50 years ahead is in the past.
  auto past = ra("Thursday, 01-Jan-80 00:00:00 GMT");
  CHECK(past["retry_after_ms"] == 0);
  CHECK(past["flags"] == json::array({"past_clamped"}));
  // 34560000 s is 400 days, the cap; one more second is beyond it.
  CHECK(ra("34560000")["retry_after_ms"] == kMaxObservedWaitMs);
  auto beyond = ra("34560001");
  CHECK(beyond["retry_after_ms"].is_null());
  CHECK(beyond["wait_ms"].is_null());
  CHECK(beyond["warnings"] == json::array({"beyond_cap:Retry-After"}));
  for (const char* junk :
       {"-5", "abc", "", "1e100", "5 s", "0x10", "+5",
        "Wed, 32 Jan 2025 00:00:00 GMT", "2025-01-01T00:00:10Z"}) {
    CAPTURE(junk);
    auto j = ra(junk);
    CHECK(j["retry_after_ms"].is_null());
    CHECK(j["warnings"] == json::array({"retry_after_malformed"}));
  }
  // Retry-After on a success is reported, not waited on.
  auto ok = observe_json("HTTP/1.1 200 OK\nRetry-After: 30\n");
  CHECK(ok["retry_after_ms"] == 30000);
  CHECK(ok["wait_ms"] == 0);
  // x-ms-retry-after-ms comes after retry-after-ms, before Retry-After.
  auto ms = observe_json(
      "HTTP/1.1 429 Too Many Requests\nRetry-After: 9\n"
      "x-ms-retry-after-ms: 250.5\n");
  CHECK(ms["retry_after_ms"] == 251);
  CHECK(ms["retry_after_source"] == "x-ms-retry-after-ms");
  // A malformed retry-after-ms falls through to Retry-After.
  auto fall = observe_json(
      "HTTP/1.1 429 Too Many Requests\nretry-after-ms: x\nRetry-After: 3\n");
  CHECK(fall["retry_after_ms"] == 3000);
  CHECK(fall["warnings"] == json::array({"retry_after_malformed"}));
}

TEST_CASE("R2: a Date too far from the local clock is ignored") {
  auto j = observe_json(
      "HTTP/1.1 429 Too Many Requests\nDate: Wed, 01 Jan 2025 02:00:00 GMT\n"
      "Retry-After: Wed, 01 Jan 2025 02:01:00 GMT\n");
  CHECK(j["server_skew_ms"].is_null());
  CHECK(j["retry_after_ms"] == 7'260'000);
  CHECK(j["warnings"] == json::array({"date_skew_ignored"}));
}

TEST_CASE("R7: sentinels, clamps and remaining above the limit") {
  auto azure = observe_json(
      "HTTP/1.1 429 Too Many Requests\nretry-after: 4\n"
      "x-ratelimit-limit-tokens: -1\nx-ratelimit-remaining-tokens: -1\n"
      "x-ratelimit-reset-tokens: 0\nx-ratelimit-limit-requests: 100\n"
      "x-ratelimit-remaining-requests: 0\n",
      kNow, "azure");
  REQUIRE(azure["limits"].size() == 1);
  CHECK(azure["limits"][0]["name"] == "requests");
  CHECK(azure["limits"][0]["source"] == "azure");
  CHECK(azure["warnings"] == json::array({"sentinel:tokens"}));
  CHECK(azure["wait_ms"] == 4000);

  auto over = observe_json(
      "HTTP/1.1 200 OK\nX-RateLimit-Limit: 10\nX-RateLimit-Remaining: 15\n");
  CHECK(over["limits"][0]["remaining"] == 10);
  CHECK(over["limits"][0]["flags"] == json::array({"remaining_gt_limit"}));
}

TEST_CASE("verdicts beyond the vectors") {
  // 403 without rate-limit evidence is an error, not a throttle.
  auto denied = observe_json(
      "HTTP/2 403\nx-ratelimit-limit: 5000\nx-ratelimit-remaining: 4999\n"
      "x-ratelimit-resource: core\n\n{\"message\":\"Resource not "
      "accessible\"}");
  CHECK(denied["verdict"] == "error");
  CHECK(denied["blocking"] == false);
  CHECK(denied["retry_after_ms"].is_null());
  // ... but a body that says "rate limit" is evidence.
  auto limited = observe_json(
      "HTTP/2 403\n\n{\"message\":\"API rate limit exceeded for user\"}");
  CHECK(limited["verdict"] == "throttled");
  // Server advice says no: not retryable, no wait.
  auto no = observe_json(
      "HTTP/1.1 429 Too Many Requests\nRetry-After: 5\nx-should-retry: "
      "false\n");
  CHECK(no["server_should_retry"] == false);
  CHECK(no["retryable"] == false);
  CHECK(no["wait_ms"].is_null());
  // AWS: the quota code is not retryable.
  auto quota = observe_json(
      "HTTP/1.1 400 Bad Request\n\n"
      "{\"__type\":\"com.amazon#ServiceQuotaExceededException\"}");
  CHECK(quota["verdict"] == "quota_exhausted");
  CHECK(quota["reason"] == "ServiceQuotaExceededException");
  CHECK(quota["retryable"] == false);
  // A plain 400 with an unrelated code stays an error.
  CHECK(observe_json("HTTP/1.1 400 Bad Request\n\n{\"__type\":\"Validation\"}")
            ["verdict"] == "error");
  // Discord's body retry_after when no header says it.
  auto discord = observe_json(
      "HTTP/1.1 429 Too Many Requests\n\n"
      "{\"message\":\"You are being rate limited.\",\"retry_after\":64.57,"
      "\"global\":true}");
  CHECK(discord["retry_after_ms"] == 64570);
  CHECK(discord["retry_after_source"] == "body:retry_after");
  CHECK(discord["scope"] == "global");
  // Google RetryInfo with a fraction.
  auto google = observe_json(
      "HTTP/1.1 429 Too Many Requests\n\n{\"error\":{\"details\":[{\"@type\":"
      "\"type.googleapis.com/"
      "google.rpc.RetryInfo\",\"retryDelay\":\"1.5s\"}]}}");
  CHECK(google["retry_after_ms"] == 1500);
  // IETF problem type on a 503.
  auto capacity = observe_json(
      "HTTP/1.1 503 Service Unavailable\n\n{\"type\":\"https://iana.org/"
      "assignments/http-problem-types#temporary-reduced-capacity\"}");
  CHECK(capacity["verdict"] == "unavailable");
  CHECK(capacity["reason"] == "temporary-reduced-capacity");
}

TEST_CASE("IETF details: several RateLimit lines, pk and binary keys") {
  auto j = observe_json(
      "HTTP/1.1 200 OK\n"
      "RateLimit-Policy: \"a\";q=10;w=1;pk=:AAEC:, \"b\";q=5;qu=\"concurrent-"
      "requests\"\nRateLimit: \"a\";r=0;t=1\n");
  REQUIRE(j["limits"].size() == 2);
  CHECK(j["limits"][0]["partition_key"] == ":AAEC:");
  CHECK(j["limits"][0]["window_s"] == 1);
  CHECK(j["limits"][1]["policy_only"] == true);
  CHECK(j["limits"][1]["unit"] == "concurrent_requests");
  CHECK(j["wait_ms"] == 1000);
  // A String where an Integer belongs invalidates the item.
  auto bad = observe_json("HTTP/1.1 200 OK\nRateLimit: \"a\";r=5;t=\"30\"\n");
  CHECK(bad["limits"].empty());
  CHECK(bad["warnings"] == json::array({"invalid_param:RateLimit:t"}));
  // Upper-case parameter keys are an SF syntax error.
  auto upper = observe_json("HTTP/1.1 200 OK\nRateLimit: \"a\";R=5\n");
  CHECK(upper["warnings"] == json::array({"sf_parse_error:RateLimit"}));
}

TEST_CASE("parse_response_head") {
  SUBCASE("CRLF, reason phrase, repeated names kept in order, body") {
    auto h = parse_response_head(
        "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nA: x\r\n"
        "retry-after: 2\r\n\r\n{\"a\":1}\r\n");
    REQUIRE(h.ok());
    CHECK(h->status == 429);
    REQUIRE(h->headers.size() == 3);
    CHECK(h->headers[0] ==
          std::pair<std::string, std::string>{"Retry-After", "1"});
    CHECK(h->headers[2] ==
          std::pair<std::string, std::string>{"retry-after", "2"});
    CHECK(h->body == "{\"a\":1}\r\n");
  }
  SUBCASE("HTTP/2 without a reason, LF only, no blank line, no body") {
    auto h = parse_response_head("HTTP/2 200\nx-a:  b  \n");
    REQUIRE(h.ok());
    CHECK(h->status == 200);
    CHECK(h->headers[0].second == "b");
    CHECK(h->body.empty());
  }
  SUBCASE("a status line alone, with leading blank lines") {
    auto h = parse_response_head("\n\nHTTP/1.0 503");
    REQUIRE(h.ok());
    CHECK(h->status == 503);
    CHECK(h->headers.empty());
  }
  SUBCASE("folded continuation lines join the previous header") {
    auto h = parse_response_head("HTTP/1.1 200 OK\nA: one\n  two\n\tthree\n");
    REQUIRE(h.ok());
    CHECK(h->headers[0].second == "one two three");
  }
  SUBCASE("curl -i output: 100 Continue, then the final response") {
    auto h = parse_response_head(
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 429 Too Many Requests\r\n"
        "Retry-After: 3\r\n\r\nslow down");
    REQUIRE(h.ok());
    CHECK(h->status == 429);
    REQUIRE(h->headers.size() == 1);
    CHECK(h->body == "slow down");
  }
  SUBCASE("errors name the line") {
    CHECK(parse_response_head("").error() == "empty response head");
    CHECK(parse_response_head("\n \n").error() == "empty response head");
    auto bad_status = parse_response_head("HTTP/1.1 OK\n");
    REQUIRE_FALSE(bad_status.ok());
    CHECK(bad_status.error().starts_with("line 1: expected a status line"));
    CHECK_FALSE(parse_response_head("HTTP/1.1 42 x\n").ok());
    CHECK_FALSE(parse_response_head("Retry-After: 5\n").ok());
    auto bad_header = parse_response_head("HTTP/1.1 200 OK\nA: b\nno colon\n");
    REQUIRE_FALSE(bad_header.ok());
    CHECK(bad_header.error() ==
          "line 3: expected 'Name: value', got 'no colon'");
    CHECK(parse_response_head("HTTP/1.1 200 OK\nBad Name: x\n").error() ==
          "line 2: expected 'Name: value', got 'Bad Name: x'");
    CHECK(parse_response_head("HTTP/1.1 200 OK\n x\n").error() ==
          "line 2: a continuation line before any header");
  }
}

namespace {

// Random input for the fuzz run: names from every dialect, values that are
// junk, huge, negative, fractional, dates in all forms, SF fragments.
class Fuzzer {
 public:
  explicit Fuzzer(std::uint64_t seed) : rng_(seed) {}

  std::size_t pick(std::size_t n) {
    return std::uniform_int_distribution<std::size_t>(0, n - 1)(rng_);
  }

  std::string name() {
    static const std::vector<std::string> kNames = {
        "Retry-After",
        "retry-after-ms",
        "x-ms-retry-after-ms",
        "Date",
        "RateLimit",
        "RateLimit-Policy",
        "RateLimit-Limit",
        "RateLimit-Remaining",
        "RateLimit-Reset",
        "RateLimit-Observed",
        "RateLimit-Name",
        "RateLimit-ResetTime",
        "X-RateLimit-Limit",
        "X-RateLimit-Remaining",
        "X-RateLimit-Reset",
        "X-RateLimit-Used",
        "X-RateLimit-Resource",
        "X-RateLimit-Reset-After",
        "X-RateLimit-Bucket",
        "X-RateLimit-Global",
        "X-RateLimit-Scope",
        "X-RateLimit-Next",
        "X-RateLimit-Limit-Minute",
        "X-RateLimit-Remaining-Minute",
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
        "x-ratelimit-reset-requests",
        "x-rate-limit-limit",
        "x-rate-limit-remaining",
        "x-rate-limit-reset",
        "x-user-limit-24hour-limit",
        "x-user-limit-24hour-remaining",
        "x-user-limit-24hour-reset",
        "anthropic-ratelimit-tokens-limit",
        "anthropic-ratelimit-tokens-remaining",
        "anthropic-ratelimit-tokens-reset",
        "anthropic-priority-input-tokens-reset",
        "X-Shopify-Shop-Api-Call-Limit",
        "x-should-retry",
        "Stripe-Should-Retry",
        "Stripe-Rate-Limited-Reason",
        "x-amzn-ErrorType",
        "Content-Type",
        "X-Junk",
        ""};
    return kNames[pick(kNames.size())];
  }

  std::string number() {
    switch (pick(8)) {
      case 0:
        return std::to_string(pick(100));
      case 1:
        return "-" + std::to_string(pick(100000));
      case 2:
        return std::to_string(rng_());
      case 3:
        return std::string(1 + pick(30), '9');
      case 4:
        return std::to_string(pick(1000)) + "." + std::to_string(rng_());
      case 5:
        return std::to_string(1'735'689'600 + pick(200000) - 100000);
      case 6:
        return std::to_string(1'735'689'600'000 + pick(2'000'000'000));
      default:
        return "1e" + std::to_string(pick(400));
    }
  }

  std::string value() {
    static const std::vector<std::string> kDates = {
        "Wed, 01 Jan 2025 00:02:00 GMT",  "Wednesday, 01-Jan-25 00:02:00 GMT",
        "Wed Jan  1 00:02:00 2025",       "2025-01-01T00:02:00.123456789Z",
        "2025-01-01T01:00:07+01:00",      "Fri, 31 Dec 9999 23:59:59 GMT",
        "Mon, 01 Jan 0001 00:00:00 GMT",  "Tue, 29 Feb 2100 00:00:00 GMT",
        "Sunday, 06-Nov-94 08:49:37 GMT", "9999-12-31T23:59:60-23:59"};
    static const std::vector<std::string> kSf = {
        "\"default\";r=50;t=30",
        "limit=10, remaining=1, reset=7",
        "10;w=1, 50;w=60",
        "default;q=100;w=60",
        "\"p\";q=65535;qu=\"content-bytes\";w=10;pk=:dHJpYWw=:",
        "\"x\";r=-5;t=\"30\"",
        "\"fixed window\";\"api\";q=500;w=300",
        "(1 2);a=?1, b",
        "\"a\";t=999999999999999",
        "\"a\";t=99999999999.999",
        ":////:",
        "@12345, %\"x\"",
        "\"unterminated",
        "\"a\"\\"};
    static const std::vector<std::string> kDurations = {
        "6m0s", "1h2m3.5s", "20ms", "7.66s",      "2562047h", "99999999999999h",
        "1.s",  ".5s",      "1x",   "5\xC2\xB5s", "0"};
    switch (pick(9)) {
      case 0:
        return number();
      case 1:
        return kDates[pick(kDates.size())];
      case 2:
        return kSf[pick(kSf.size())];
      case 3:
        return kDurations[pick(kDurations.size())];
      case 4: {
        std::string s;
        for (std::size_t n = pick(40); n > 0; --n)
          s += static_cast<char>(rng_() & 0xff);
        return s;
      }
      case 5:
        return number() + ", " + number() + ";w=" + number();
      case 6:
        return number() + "/" + number();
      case 7:
        return pick(2) ? "true" : "false";
      default:
        return std::string(pick(2) ? 9000 : 10, 'x');
    }
  }

  std::string body() {
    static const std::vector<std::string> kBodies = {
        "",
        "{\"error\":{\"type\":\"insufficient_quota\"}}",
        "{\"error\":{\"details\":[{\"@type\":\"type.googleapis.com/"
        "google.rpc.RetryInfo\",\"retryDelay\":\"NUMs\"}]}}",
        "{\"retry_after\":NUM,\"global\":true}",
        "{\"errors\":[{\"extensions\":{\"code\":\"THROTTLED\"}}],"
        "\"extensions\":{\"cost\":{\"requestedQueryCost\":NUM,"
        "\"throttleStatus\":{\"maximumAvailable\":NUM,\"currentlyAvailable\":"
        "NUM,\"restoreRate\":NUM}}}}",
        "<Error><Code>SlowDown</Code></Error>",
        "{\"__type\":\"ThrottlingException\"}",
        "You have exceeded a secondary rate limit",
        "{\"error\":{\"details\":[{\"@type\":\"x.google.rpc.RetryInfo\","
        "\"retryDelay\":{\"seconds\":NUM,\"nanos\":NUM}}]}}",
    };
    std::string b = kBodies[pick(kBodies.size())];
    for (std::size_t at; (at = b.find("NUM")) != std::string::npos;)
      b.replace(at, 3, number());
    if (pick(10) == 0) b = std::string(pick(20) ? 2000 : 100000, '[') + b;
    if (pick(10) == 0) b.resize(b.size() / 2);
    return b;
  }

  std::int64_t now() {
    switch (pick(6)) {
      case 0:
        return 0;
      case 1:
        return std::numeric_limits<std::int64_t>::max();
      case 2:
        return std::numeric_limits<std::int64_t>::min();
      case 3:
        return -static_cast<std::int64_t>(pick(1'000'000'000));
      default:
        return kNow + static_cast<std::int64_t>(pick(10'000'000)) - 5'000'000;
    }
  }

 private:
  std::mt19937_64 rng_;
};

// The first bound the observation breaks, or "" (asserting only on failure
// keeps tens of thousands of iterations fast, also under sanitizers).
std::string bounds_violation(const Observation& o) {
  auto in_range = [](std::optional<std::int64_t> v) {
    return !v || (*v >= 0 && *v <= kMaxObservedWaitMs);
  };
  if (!in_range(o.wait_ms)) return "wait_ms";
  if (!in_range(o.retry_after_ms)) return "retry_after_ms";
  if (o.server_skew_ms && std::abs(*o.server_skew_ms) > 3'600'000)
    return "server_skew_ms";
  for (const auto& l : o.limits) {
    if (!in_range(l.reset_in_ms)) return "reset_in_ms";
    if (l.window_s &&
        (*l.window_s <= 0 || *l.window_s * 1000 > kMaxObservedWaitMs))
      return "window_s";
    if (l.remaining && (!std::isfinite(*l.remaining) || *l.remaining < 0))
      return "remaining";
    if (l.refill_per_s && !std::isfinite(*l.refill_per_s))
      return "refill_per_s";
  }
  if (o.limits.size() > 64) return "too many limits";
  if (o.warnings.size() > 32) return "too many warnings";
  return "";
}

}  // namespace

TEST_CASE("fuzz: hostile responses never crash or yield a wait out of range") {
  const auto dialects = pacer::known_dialects();
  int iterations = 0, failures = 0;
  for (std::uint64_t seed : {1u, 2u, 3u, 4u}) {
    Fuzzer f(seed);
    for (int iteration = 0; iteration < 10'000; ++iteration) {
      HeaderFields headers;
      for (std::size_t n = f.pick(12); n > 0; --n) {
        std::string name = f.name();
        std::string value = f.value();
        for (std::size_t r = f.pick(3); r > 0; --r)  // repeated lines
          headers.emplace_back(name, f.value());
        headers.emplace_back(std::move(name), std::move(value));
      }
      static const int kStatuses[] = {0,   200, 204, 301, 400, 403, 404,
                                      429, 500, 503, 529, 999, -1};
      int status = kStatuses[f.pick(std::size(kStatuses))];
      std::string body = f.body();
      std::string dialect(dialects[f.pick(dialects.size())]);
      std::int64_t now = f.now();
      Observation o = observe_response(status, headers, body, now, dialect);
      std::string why = bounds_violation(o);
      try {
        if (to_json(o).dump().empty()) why = "empty JSON";
      } catch (const std::exception& e) {
        why = std::string("to_json threw: ") + e.what();
      }
      if (!why.empty()) {
        ++failures;
        FAIL_CHECK("seed " << seed << " iteration " << iteration << ": "
                           << why);
      }
      ++iterations;
    }
  }
  CHECK(iterations == 40'000);
  CHECK(failures == 0);
}

TEST_CASE("fuzz: parse_response_head on random bytes") {
  std::mt19937_64 rng(7);
  const std::string alphabet = "HTTP/1.2 0349:\r\n\t aZ-;,\"";
  int parsed = 0;
  for (int i = 0; i < 20'000; ++i) {
    std::string raw = i % 2 ? "HTTP/1.1 429 X\r\n" : "";
    for (std::size_t n = rng() % 200; n > 0; --n)
      raw += (rng() % 4 == 0) ? static_cast<char>(rng() & 0xff)
                              : alphabet[rng() % alphabet.size()];
    auto h = parse_response_head(raw);
    if (!h.ok()) continue;
    ++parsed;
    if (h->status < 100 || h->status > 999 ||
        !bounds_violation(observe_response(*h, kNow)).empty())
      FAIL_CHECK("input " << i << ": " << raw);
  }
  CHECK(parsed > 100);  // the generator does reach the header parser
}
