// `pacer probe`: the text a person reads for an observation, and the
// --headers mode with its errors, called in-process (the binary and URL mode
// are covered by tests/integration/probe_test.cc).
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "client/probe.h"
#include "tests/support/process.h"

using namespace pacer;
using namespace pacer::client;

namespace {

constexpr Millis kNow = 1'735'689'600'000;

std::string describe(const std::string& raw,
                     const std::string& dialect = "auto") {
  auto head = parse_response_head(raw);
  REQUIRE_MESSAGE(head.ok(), head.error());
  return describe_observation(observe_response(*head, kNow, dialect));
}

bool has(const std::string& text, const std::string& needle) {
  return text.find(needle) != std::string::npos;
}

struct Run {
  int code = 0;
  std::string out, err;
};

Run run_probe(const ProbeOptions& o, bool json = false) {
  std::ostringstream out, err;
  Io io{out, err, false};
  Session s(io, "tcp://127.0.0.1:1", 1000, json);
  Run r;
  r.code = probe(s, o);
  r.out = out.str();
  r.err = err.str();
  return r;
}

}  // namespace

TEST_CASE("wait_text: seconds with one decimal, a duration when long") {
  CHECK(wait_text(0) == "0.0 s");
  CHECK(wait_text(12'000) == "12.0 s");
  CHECK(wait_text(1'500) == "1.5 s");
  CHECK(wait_text(119'900) == "119.9 s");
  CHECK(wait_text(300'000) == "300.0 s (5m0s)");
  CHECK(wait_text(86'400'000) == "86400.0 s (24h0m)");
}

TEST_CASE("describe: an exhausted GitHub limit on a 403") {
  std::string t = describe(
      "HTTP/2 403\nx-ratelimit-limit: 60\nx-ratelimit-remaining: 0\n"
      "x-ratelimit-used: 60\nx-ratelimit-reset: 1735689900\n"
      "x-ratelimit-resource: core\n");
  INFO(t);
  CHECK(t.starts_with("HTTP 403: throttled (the response is a rejection)\n"));
  CHECK(has(t,
            "SOURCE/NAME  UNIT      LIMIT  REMAINING  WINDOW  RESETS IN  "
            "FLAGS\n"));
  CHECK(
      has(t, "github/core  requests     60          0  -       5m0s       -"));
  CHECK(has(t,
            "github/core: exhausted (0 of 60 requests left); the window "
            "ends in 5m0s"));
  CHECK(has(t, "lane would pause 300.0 s (5m0s) until reset"));
  CHECK(has(t, "github/core gives no window: pacer would learn it"));
}

TEST_CASE("describe: a plain response without headers") {
  std::string t = describe("HTTP/1.1 200 OK\nContent-Type: text/plain\n");
  CHECK(t ==
        "HTTP 200: ok\n\nWhat pacer would do:\n"
        "  no rate-limit headers: configure limits or let pacer learn them\n");
}

TEST_CASE("describe: a 429 with only Retry-After") {
  std::string t = describe("HTTP/1.1 429 Too Many Requests\nRetry-After: 12\n");
  CHECK(has(t, "retry hint: 12.0 s (retry-after)\n"));
  CHECK(has(t, "lane would pause 12.0 s as the server asks (retry-after)"));
  CHECK(has(t, "no limit counters, only a retry hint"));
}

TEST_CASE("describe: IETF policies pace, informative ones are said to be") {
  std::string t = describe(
      "HTTP/1.1 200 OK\nRateLimit: \"default\";r=50;t=30\n"
      "RateLimit-Policy: \"default\";q=100;w=60, \"daily\";q=1000;w=86400\n");
  INFO(t);
  CHECK(has(t,
            "ietf-08/default: 50 of 100 requests left; the window ends in "
            "30s"));
  CHECK(has(t,
            "ietf-08/daily: a policy of 1000 requests per 24h0m "
            "(informative: no live counters)"));
  CHECK(has(t, "would pace ietf-08/default at 100/1m0s"));
  CHECK_FALSE(has(t, "would pace ietf-08/daily"));
  CHECK(has(t, "policy only"));
}

TEST_CASE("describe: tokens without a window are spread over the reset") {
  std::string t = describe(
      "HTTP/2 200\nx-ratelimit-limit-tokens: 30000\n"
      "x-ratelimit-remaining-tokens: 29000\nx-ratelimit-reset-tokens: 2s\n");
  CHECK(has(t, "openai/tokens: 29000 of 30000 tokens left; full again in 2s"));
  CHECK(has(t,
            "would spread the 29000 tokens left of openai/tokens over the "
            "next 2s"));
}

TEST_CASE("describe: not retryable, global scope, errors, warnings") {
  std::string quota =
      describe("HTTP/2 429\n\n{\"error\":{\"type\":\"insufficient_quota\"}}");
  CHECK(has(quota, "HTTP 429: quota_exhausted"));
  CHECK(has(quota, "would not retry: the quota is exhausted"));

  std::string global = describe(
      "HTTP/1.1 429 Too Many Requests\nRetry-After: 65\n"
      "X-RateLimit-Global: true\nX-RateLimit-Scope: global\n");
  CHECK(has(global, "scope: global\n"));
  CHECK(has(global,
            "lane would pause 65.0 s as the server asks (retry-after) "
            "(every route of this credential)"));

  std::string nginx = describe("HTTP/1.1 503 Service Unavailable\n");
  CHECK(has(nginx, "lane would back off (exponential, with jitter)"));

  std::string missing = describe("HTTP/1.1 404 Not Found\n");
  CHECK(has(missing, "HTTP 404 is not a rate-limit answer"));

  std::string junk = describe(
      "HTTP/1.1 200 OK\nX-RateLimit-Limit: abc\nX-RateLimit-Remaining: 5\n");
  CHECK(has(junk, "\nWarnings:\n  malformed:X-RateLimit-Limit\n"));

  std::string skew = describe(
      "HTTP/1.1 200 OK\nDate: Wed, 01 Jan 2025 00:00:30 GMT\n"
      "X-RateLimit-Remaining: 0\nX-RateLimit-Reset: 60\n");
  CHECK(has(skew, "server clock: 30.0 s ahead of this machine"));
  CHECK(has(skew, "lane would pause 60.0 s until reset: a limit is exhausted"));
}

TEST_CASE("probe --headers: JSON of the observation, --status and --now-ms") {
  testing::TempDir dir;
  dir.write("head.txt", "HTTP/1.1 200 OK\r\nRetry-After: 5\r\n\r\n");
  ProbeOptions o;
  o.headers_file = dir.file("head.txt");
  o.now_ms = kNow;
  auto r = run_probe(o);
  REQUIRE(r.code == 0);
  CHECK(r.err.empty());
  auto j = nlohmann::json::parse(r.out);
  CHECK(j["http_status"] == 200);
  CHECK(j["received_unix_ms"] == kNow);
  CHECK(j["verdict"] == "ok");
  CHECK(j["wait_ms"] == 0);

  o.status = 429;
  j = nlohmann::json::parse(run_probe(o).out);
  CHECK(j["http_status"] == 429);
  CHECK(j["wait_ms"] == 5000);

  // Header lines alone are fine when --status gives the status.
  dir.write("lines.txt", "x-ratelimit-remaining: 0\nx-ratelimit-reset: 9\n");
  o.headers_file = dir.file("lines.txt");
  j = nlohmann::json::parse(run_probe(o).out);
  CHECK(j["http_status"] == 429);
  CHECK(j["wait_ms"] == 9000);

  // --dialect reaches the parser.
  dir.write("ms.txt",
            "HTTP/1.1 200 OK\nX-Rate-Limit-Remaining: 0\n"
            "X-Rate-Limit-Reset: 1500\n");
  ProbeOptions ms;
  ms.headers_file = dir.file("ms.txt");
  ms.now_ms = kNow;
  ms.dialect = "prisjakt";
  CHECK(nlohmann::json::parse(run_probe(ms).out)["wait_ms"] == 1500);
}

TEST_CASE("probe: usage errors exit 2, failures exit 1") {
  testing::TempDir dir;
  dir.write("bad.txt", "HTTP/1.1 200 OK\nno colon here\n");
  ProbeOptions none;
  auto r = run_probe(none);
  CHECK(r.code == 2);
  CHECK(r.err ==
        "pacer: probe needs a URL to request, or --headers FILE with a saved "
        "response head (see pacer probe --help)\n");

  ProbeOptions both;
  both.headers_file = "x";
  both.url = "http://127.0.0.1:1/";
  CHECK(run_probe(both).err ==
        "pacer: probe takes a URL or --headers FILE, not both\n");

  ProbeOptions missing;
  missing.headers_file = dir.file("missing.txt");
  r = run_probe(missing);
  CHECK(r.code == 2);
  CHECK(r.err.starts_with("pacer: cannot open " + dir.file("missing.txt")));

  ProbeOptions bad;
  bad.headers_file = dir.file("bad.txt");
  r = run_probe(bad);
  CHECK(r.code == 1);
  CHECK(r.err == "pacer: " + dir.file("bad.txt") +
                     ": line 2: expected 'Name: value', got 'no colon here'\n");

  ProbeOptions dialect;
  dialect.url = "http://127.0.0.1:1/";
  dialect.dialect = "nope";
  r = run_probe(dialect);
  CHECK(r.code == 2);
  CHECK(r.err.starts_with(
      "pacer: --dialect: unknown dialect 'nope' (known: auto, generic,"));

  ProbeOptions request_flags;
  request_flags.headers_file = dir.file("bad.txt");
  request_flags.headers = {"A: b"};
  CHECK(run_probe(request_flags).err ==
        "pacer: -X, -H and --data are for probing a URL, not --headers\n");

  ProbeOptions file_flags;
  file_flags.url = "http://127.0.0.1:1/";
  file_flags.now_ms = 5;
  CHECK(run_probe(file_flags).err ==
        "pacer: --status and --now-ms are for --headers, not for a URL\n");

  ProbeOptions header;
  header.url = "http://127.0.0.1:1/";
  header.headers = {"NoColon"};
  r = run_probe(header);
  CHECK(r.code == 2);
  CHECK(r.err ==
        "pacer: -H: 'NoColon' is not a header (expected 'Name: value')\n");

  ProbeOptions not_url;
  not_url.url = "example.com";
  CHECK(run_probe(not_url).code == 2);

  // Nothing listens on port 1: the request fails.
  ProbeOptions refused;
  refused.url = "http://127.0.0.1:1/";
  r = run_probe(refused);
  CHECK(r.code == 1);
  CHECK(r.err.starts_with("pacer: http://127.0.0.1:1/: "));
  CHECK(r.out.empty());
}
