// `pacer probe` as a user runs it: the real binary on a saved response head
// (a file and stdin), and on real requests to the mock API, which answers
// 429 with Retry-After once over its --limit and any status set through
// /admin/config.
#include <doctest/doctest.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/support/process.h"

using namespace pacer::testing;
using Json = nlohmann::json;

namespace {

constexpr std::int64_t kNow = 1'735'689'600'000;

struct Cli {
  TempDir dir;
  Cli() { dir.write("pacer.toml", ""); }  // keeps ./pacer.toml out of it
  CommandResult pacer(std::vector<std::string> args,
                      const std::string& stdin_text = "") {
    std::vector<std::string> argv = {binary("pacer"), "--config",
                                     dir.file("pacer.toml")};
    argv.insert(argv.end(), args.begin(), args.end());
    return run_command(argv, 60s, stdin_text);
  }
};

std::int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

TEST_CASE("probe --headers FILE prints the observation as JSON") {
  Cli cli;
  cli.dir.write("github.txt",
                "HTTP/2 403\r\n"
                "x-ratelimit-limit: 60\r\n"
                "x-ratelimit-remaining: 0\r\n"
                "x-ratelimit-used: 60\r\n"
                "x-ratelimit-reset: 1735689900\r\n"
                "x-ratelimit-resource: core\r\n"
                "\r\n");
  auto r = cli.pacer({"probe", "--headers", cli.dir.file("github.txt"),
                      "--now-ms", std::to_string(kNow)});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(r.err.empty());
  auto j = Json::parse(r.out);
  CHECK(j["http_status"] == 403);
  CHECK(j["received_unix_ms"] == kNow);
  CHECK(j["verdict"] == "throttled");
  CHECK(j["blocking"] == true);
  CHECK(j["wait_ms"] == 300000);
  REQUIRE(j["limits"].size() == 1);
  CHECK(j["limits"][0]["source"] == "github");
  CHECK(j["limits"][0]["name"] == "core");
  CHECK(j["limits"][0]["reset_in_ms"] == 300000);
}

TEST_CASE("probe --headers - reads stdin; --status and --dialect apply") {
  Cli cli;
  auto r = cli.pacer({"probe", "--headers", "-", "--status", "429", "--dialect",
                      "prisjakt", "--now-ms", std::to_string(kNow)},
                     "X-Rate-Limit-Limit: 10\nX-Rate-Limit-Remaining: 0\n"
                     "X-Rate-Limit-Reset: 2500\n");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  auto j = Json::parse(r.out);
  CHECK(j["http_status"] == 429);
  CHECK(j["limits"][0]["source"] == "prisjakt");
  CHECK(j["wait_ms"] == 2500);

  // Without --now-ms the receive time is now.
  std::int64_t before = wall_ms();
  r = cli.pacer({"probe", "--headers", "-"}, "HTTP/1.1 200 OK\n");
  REQUIRE(r.exit_code == 0);
  j = Json::parse(r.out);
  CHECK(j["received_unix_ms"].get<std::int64_t>() >= before);
  CHECK(j["received_unix_ms"].get<std::int64_t>() <= wall_ms());
}

TEST_CASE("probe: usage errors exit 2, an unreadable head or request 1") {
  Cli cli;
  auto none = cli.pacer({"probe"});
  CHECK(none.exit_code == 2);
  CHECK(none.err.starts_with("pacer: probe needs a URL"));
  auto status = cli.pacer({"probe", "--headers", "-", "--status", "42"}, "");
  CHECK(status.exit_code == 2);
  CHECK(status.err.find("--status") != std::string::npos);
  auto dialect = cli.pacer({"probe", "--dialect", "githbu", "http://x/"});
  CHECK(dialect.exit_code == 2);
  CHECK(dialect.err.starts_with("pacer: --dialect: unknown dialect 'githbu'"));
  auto junk = cli.pacer({"probe", "--headers", "-"}, "not a response\n");
  CHECK(junk.exit_code == 1);
  CHECK(junk.err ==
        "pacer: <stdin>: line 1: expected a status line like 'HTTP/1.1 429 "
        "Too Many Requests', got 'not a response'\n");
  auto refused = cli.pacer(
      {"probe", "http://127.0.0.1:" + std::to_string(free_port()) + "/"});
  CHECK(refused.exit_code == 1);
  CHECK(refused.err.starts_with("pacer: http://127.0.0.1:"));
  CHECK(refused.out.empty());
}

TEST_CASE("probe URL: one real request to the mock API, over its limit") {
  Cli cli;
  MockApi mock(cli.dir, {"--limit", "1/10min"});
  const std::string url = mock.base_url() + "/v1/echo";

  auto first = cli.pacer({"probe", "--data", "{\"n\":1}", url});
  INFO(first.err);
  REQUIRE(first.exit_code == 0);
  CHECK(first.out ==
        "HTTP 200: ok\n\nWhat pacer would do:\n"
        "  no rate-limit headers: configure limits or let pacer learn them\n");

  auto second = cli.pacer({"probe", "-X", "POST", "-H", "X-Trace: probe",
                           "--data", "{\"n\":2}", url});
  INFO(second.out);
  REQUIRE(second.exit_code == 0);
  CHECK(second.out.starts_with(
      "HTTP 429: throttled (the response is a rejection)\n"
      "retry hint: "));
  CHECK(second.out.find("lane would pause ") != std::string::npos);
  CHECK(second.out.find("as the server asks (retry-after)") !=
        std::string::npos);

  std::int64_t before = wall_ms();
  auto json = cli.pacer({"probe", "--json", "--data", "{}", url});
  REQUIRE(json.exit_code == 0);
  auto j = Json::parse(json.out);
  CHECK(j["http_status"] == 429);
  CHECK(j["verdict"] == "throttled");
  CHECK(j["retry_after_source"] == "retry-after");
  auto retry = j["retry_after_ms"].get<std::int64_t>();
  CHECK(retry > 0);
  CHECK(retry <= 600'000);
  CHECK(j["wait_ms"] == retry);
  CHECK(j["received_unix_ms"].get<std::int64_t>() >= before);
  // Three requests reached the mock; one was admitted.
  auto stats = mock.stats();
  CHECK(stats["accepted"] == 1);
  CHECK(stats["rejected"] == 2);
}

TEST_CASE("probe URL: a 503 from the mock API is unavailable, backed off") {
  Cli cli;
  MockApi mock(cli.dir, {});
  REQUIRE(http_json(mock.port(), "POST", "/admin/config",
                    R"({"fail_status": 503})"));
  auto r = cli.pacer({"probe", "--data", "{}", mock.base_url() + "/v1/echo"});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.starts_with(
      "HTTP 503: unavailable (the response is a rejection)\n"));
  CHECK(r.out.find("lane would back off (exponential, with jitter)") !=
        std::string::npos);
}
