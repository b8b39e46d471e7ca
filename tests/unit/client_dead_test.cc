// `pacer dead list | show | replay`: the --since parser, the filter
// validation, and the commands run in-process against a fake broker (what is
// sent, what is printed, the exit codes).
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <sstream>
#include <string>
#include <vector>

#include "client/cli.h"
#include "client/format.h"
#include "tests/support/process.h"
#include "tests/unit/client_cli_runner.h"
#include "tests/unit/client_fake_broker.h"

using namespace pacer;
using client::parse_since;
using protocol::Command;
using testing::FakeBroker;
using testing::Frames;

namespace {

constexpr Millis kNow = 1'764'286'000'000;
constexpr Millis kRfcExample = 1'764'286'862'000;  // 2025-11-27T23:41:02Z

Millis wall_now() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

nlohmann::json dead_job(std::int64_t id, const std::string& cls = "permanent",
                        const std::string& error = "HTTP 400") {
  return {{"id", id},
          {"api", "echo"},
          {"method", "POST"},
          {"path", "/v1/echo"},
          {"group", "g-test"},
          {"created_ms", 1764286000000},
          {"finished_ms", 1764286001000},
          {"attempts", 1},
          {"max_attempts", 5},
          {"dispatches", 1},
          {"class", cls},
          {"outcome", cls},
          {"status", 400},
          {"error", error}};
}

std::vector<protocol::Message> of(const FakeBroker& b, Command c) {
  std::vector<protocol::Message> out;
  for (auto& m : b.received())
    if (m.command == c) out.push_back(m);
  return out;
}

}  // namespace

TEST_CASE("--since takes a duration ago, epoch milliseconds or RFC 3339") {
  CHECK(*parse_since("2h", kNow) == kNow - 7'200'000);
  CHECK(*parse_since(" 90s ", kNow) == kNow - 90'000);
  CHECK(*parse_since("1m30s", kNow) == kNow - 90'000);
  CHECK(*parse_since("1764286000123", kNow) == 1764286000123);
  CHECK(*parse_since("0", kNow) == 0);
  CHECK(*parse_since("2025-11-27T23:41:02Z", kNow) == kRfcExample);
  CHECK(*parse_since("2025-11-27t23:41:02z", kNow) == kRfcExample);
  CHECK(*parse_since("2025-11-27 23:41:02Z", kNow) == kRfcExample);
  CHECK(*parse_since("2025-11-27T23:41:02.250Z", kNow) == kRfcExample + 250);
  CHECK(*parse_since("2025-11-27T23:41:02.5Z", kNow) == kRfcExample + 500);
  CHECK(*parse_since("2025-11-28T00:41:02+01:00", kNow) == kRfcExample);
  CHECK(*parse_since("2025-11-27T18:11:02-05:30", kNow) == kRfcExample);
  CHECK(*parse_since("2000-02-29T00:00:00Z", kNow) == 951'782'400'000);
  CHECK(*parse_since("1970-01-01T00:00:00Z", kNow) == 0);

  for (const char* bad :
       {"", "  ", "yesterday", "-5s", "10", "2025-11-27", "2025-11-27T23:41:02",
        "2025-13-01T00:00:00Z", "2025-02-29T00:00:00Z", "2025-11-27T24:00:00Z",
        "2025-11-27T23:60:00Z", "2025-11-27T23:41:02.Z",
        "2025-11-27T23:41:02+1:00", "2025-11-27T23:41:02Zjunk",
        "12345678901234567"}) {
    CAPTURE(std::string(bad));
    auto r = parse_since(bad, kNow);
    if (std::string(bad) == "10") {
      CHECK(r.ok());  // bare digits are epoch milliseconds
      continue;
    }
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().rfind("--since '", 0) == 0);
  }
  CHECK(parse_since("2025-13-01T00:00:00Z", kNow).error().find("RFC 3339") !=
        std::string::npos);
  CHECK(parse_since("soon", kNow).error().find("a duration ago (2h)") !=
        std::string::npos);
}

TEST_CASE("the filter flags become the wire fields, validated") {
  client::DeadFilterOptions f;
  CHECK_FALSE(f.any());
  auto empty = client::dead_filter_body(f, kNow);
  REQUIRE(empty.ok());
  CHECK(*empty == nlohmann::json::object());

  f.api = "echo";
  f.failure_class = "transient";
  f.since = "1h";
  CHECK(f.any());
  auto body = client::dead_filter_body(f, kNow);
  REQUIRE(body.ok());
  CHECK(*body == nlohmann::json{{"api", "echo"},
                                {"class", "transient"},
                                {"since", kNow - 3'600'000}});

  f.failure_class = "lost";
  auto bad = client::dead_filter_body(f, kNow);
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error() ==
        "--class 'lost' is not a failure class (rate_limited, transient, "
        "permanent)");
}

TEST_CASE("shorten cuts long cells at code points and ends them with ...") {
  CHECK(client::shorten("short", 10) == "short");
  CHECK(client::shorten("exactly10!", 10) == "exactly10!");
  CHECK(client::shorten("abcdefghijk", 10) == "abcdefg...");
  CHECK(client::shorten("héllo wörld, encore", 8) == "héllo...");
  CHECK(client::shorten("two\nlines", 20) == "two lines");
}

TEST_CASE("dead list prints a table; --json asks for every attempt") {
  FakeBroker broker([](const protocol::Message& m) -> std::vector<Frames> {
    if (m.command != Command::kDeadList)
      return {testing::error_to(m, "malformed", "unexpected")};
    std::string long_error = "attempts exhausted (5): " + std::string(80, 'x');
    auto second = dead_job(9, "transient", long_error);
    second["status"] = 503;
    return {testing::reply_to(
        m, {{"jobs", {dead_job(3), second}}, {"next", nullptr}})};
  });
  auto r = testing::run_pacer(broker.endpoint(), {"dead", "list"});
  CHECK(r.code == 0);
  CHECK(r.err.empty());
  CAPTURE(r.out);
  CHECK(r.out.rfind("ID  API   CLASS      STATUS  ATTEMPTS  DEAD_SINCE", 0) ==
        0);
  CHECK(r.out.find(" 3  echo  permanent     400       1/5  ") !=
        std::string::npos);
  CHECK(r.out.find(" 9  echo  transient     503       1/5  ") !=
        std::string::npos);
  // The long error is cut to 60 characters.
  CHECK(r.out.find("attempts exhausted (5): " + std::string(33, 'x') +
                   "...\n") != std::string::npos);
  auto sent = of(broker, Command::kDeadList);
  REQUIRE(sent.size() == 1);
  CHECK(sent[0].body["limit"] == 100);
  CHECK(sent[0].body["attempts"] == false);
  CHECK_FALSE(sent[0].body.contains("class"));

  Millis before = wall_now();
  auto j = testing::run_pacer(broker.endpoint(),
                              {"dead", "list", "--api", "echo", "--class",
                               "transient", "--since", "2h", "--json"});
  Millis after = wall_now();
  CHECK(j.code == 0);
  auto arr = nlohmann::json::parse(j.out);
  REQUIRE(arr.is_array());
  CHECK(arr.size() == 2);
  sent = of(broker, Command::kDeadList);
  REQUIRE(sent.size() == 2);
  auto& body = sent[1].body;
  CHECK(body["attempts"] == true);
  CHECK(body["api"] == "echo");
  CHECK(body["class"] == "transient");
  CHECK(body["since"].get<Millis>() >= before - 7'200'000);
  CHECK(body["since"].get<Millis>() <= after - 7'200'000);
}

TEST_CASE("dead list follows pages up to --limit") {
  FakeBroker broker([](const protocol::Message& m) -> std::vector<Frames> {
    std::int64_t after = m.body.value("after", std::int64_t{0});
    std::int64_t limit =
        std::min<std::int64_t>(m.body.value("limit", std::int64_t{100}), 2);
    auto jobs = nlohmann::json::array();
    for (std::int64_t id = after + 1;
         id <= std::min<std::int64_t>(after + limit, 5); ++id)
      jobs.push_back(dead_job(id));
    nlohmann::json body = {{"jobs", jobs}, {"next", nullptr}};
    if (after + limit < 5) body["next"] = after + limit;
    return {testing::reply_to(m, body)};
  });
  auto all = testing::run_pacer(broker.endpoint(),
                                {"dead", "list", "--limit", "0", "--json"});
  CHECK(all.code == 0);
  CHECK(nlohmann::json::parse(all.out).size() == 5);
  CHECK(broker.count(Command::kDeadList) == 3);

  auto some =
      testing::run_pacer(broker.endpoint(), {"dead", "list", "--limit", "3"});
  CHECK(some.code == 0);
  int lines = 0;
  for (char c : some.out) lines += c == '\n';
  CHECK(lines == 4);  // header + 3 jobs
  CHECK(some.err ==
        "pacer: more dead jobs match; showing the first 3 (raise --limit, 0 "
        "for all)\n");
}

TEST_CASE("bad dead-letter arguments are usage errors; nothing is sent") {
  FakeBroker broker([](const protocol::Message& m) -> std::vector<Frames> {
    return {testing::error_to(m, "malformed", "unexpected")};
  });
  auto ep = broker.endpoint();
  auto no_sub = testing::run_pacer(ep, {"dead"});
  CHECK(no_sub.code == 2);
  CHECK(no_sub.err.rfind("pacer: ", 0) == 0);

  auto bare = testing::run_pacer(ep, {"dead", "replay"});
  CHECK(bare.code == 2);
  CHECK(bare.err ==
        "pacer: dead replay needs job ids, a filter (--api, --class, --since) "
        "or --all (every dead job)\n");
  auto dry = testing::run_pacer(ep, {"dead", "replay", "--dry-run"});
  CHECK(dry.code == 2);
  auto both = testing::run_pacer(ep, {"dead", "replay", "4", "--all"});
  CHECK(both.code == 2);
  CHECK(both.err == "pacer: give job ids, or --all and/or filters, not both\n");
  auto ids_filter =
      testing::run_pacer(ep, {"dead", "replay", "4", "--api", "echo"});
  CHECK(ids_filter.code == 2);
  auto bad_id = testing::run_pacer(ep, {"dead", "replay", "four"});
  CHECK(bad_id.code == 2);
  auto bad_class =
      testing::run_pacer(ep, {"dead", "replay", "--all", "--class", "fatal"});
  CHECK(bad_class.code == 2);
  CHECK(bad_class.err.find("--class 'fatal' is not a failure class") !=
        std::string::npos);
  auto bad_since =
      testing::run_pacer(ep, {"dead", "list", "--since", "last week"});
  CHECK(bad_since.code == 2);
  CHECK(bad_since.err.rfind("pacer: --since 'last week'", 0) == 0);
  auto bad_limit = testing::run_pacer(ep, {"dead", "list", "--limit", "-1"});
  CHECK(bad_limit.code == 2);
  auto no_id = testing::run_pacer(ep, {"dead", "show"});
  CHECK(no_id.code == 2);
  CHECK(broker.received().empty());
}

TEST_CASE("dead show prints the job and every attempt; not dead exits 1") {
  FakeBroker broker([](const protocol::Message& m) -> std::vector<Frames> {
    if (m.command == Command::kStatus) {
      auto jobs = nlohmann::json::array();
      if (m.body["ids"][0] == 8)
        jobs.push_back({{"id", 8}, {"state", "succeeded"}});
      return {testing::reply_to(m, {{"jobs", jobs}})};
    }
    JobId id = m.body["ids"][0].get<JobId>();
    if (id != 7)
      return {testing::reply_to(
          m, {{"jobs", nlohmann::json::array()}, {"not_dead", {id}}})};
    auto job = dead_job(7, "transient", "attempts exhausted (2): HTTP 503");
    job["attempts"] = 2;
    job["max_attempts"] = 2;
    job["dispatches"] = 2;
    job["status"] = 503;
    job["attempt_rows"] = {{{"n", 1},
                            {"worker", "worker-0"},
                            {"started_ms", 1764286000000},
                            {"finished_ms", 1764286000010},
                            {"outcome", "transient"},
                            {"status", 500},
                            {"error", "HTTP 500"}},
                           {{"n", 2},
                            {"worker", "worker-1"},
                            {"started_ms", 1764286000500},
                            {"finished_ms", 1764286000510},
                            {"outcome", "transient"},
                            {"status", 503},
                            {"error", "attempts exhausted (2): HTTP 503"}}};
    return {testing::reply_to(m, {{"jobs", {job}}, {"not_dead", {}}})};
  });
  auto r = testing::run_pacer(broker.endpoint(), {"dead", "show", "7"});
  CHECK(r.code == 0);
  CAPTURE(r.out);
  CHECK(r.out.rfind("job 7 (echo): dead since ", 0) == 0);
  CHECK(r.out.find(", class transient\n") != std::string::npos);
  CHECK(r.out.find("request:   POST /v1/echo\n") != std::string::npos);
  CHECK(r.out.find("attempts:  2 used of 2, dispatch number 2\n") !=
        std::string::npos);
  CHECK(r.out.find("last:      outcome transient, HTTP 503, error: attempts "
                   "exhausted (2): HTTP 503\n") != std::string::npos);
  CHECK(r.out.find("N  WORKER    STARTED") != std::string::npos);
  CHECK(r.out.find("1  worker-0  ") != std::string::npos);
  CHECK(r.out.find("transient     503  attempts exhausted (2): HTTP 503\n") !=
        std::string::npos);
  auto sent = of(broker, Command::kDeadList);
  REQUIRE(sent.size() == 1);
  CHECK(sent[0].body["ids"] == nlohmann::json{7});
  CHECK(sent[0].body["attempts"] == true);

  auto j =
      testing::run_pacer(broker.endpoint(), {"dead", "show", "7", "--json"});
  CHECK(j.code == 0);
  auto job = nlohmann::json::parse(j.out);
  CHECK(job["id"] == 7);
  CHECK(job["attempt_rows"].size() == 2);

  auto done = testing::run_pacer(broker.endpoint(), {"dead", "show", "8"});
  CHECK(done.code == 1);
  CHECK(done.out.empty());
  CHECK(done.err == "pacer: job 8 is succeeded, not dead\n");
  auto unknown = testing::run_pacer(broker.endpoint(), {"dead", "show", "9"});
  CHECK(unknown.code == 1);
  CHECK(unknown.err == "pacer: unknown job id: 9\n");
}

TEST_CASE("dead replay --all steps through the broker's cursor") {
  // Seven dead jobs, ids 1..7; each step moves at most three.
  FakeBroker broker([](const protocol::Message& m) -> std::vector<Frames> {
    std::int64_t after = m.body.value("after", std::int64_t{0});
    auto ids = nlohmann::json::array();
    for (std::int64_t id = after + 1;
         id <= std::min<std::int64_t>(after + 3, 7); ++id)
      ids.push_back(id);
    bool dry = m.body.value("dry_run", false);
    nlohmann::json body = {{"moved", dry ? 0 : ids.size()},
                           {"ids", ids},
                           {"ids_truncated", false},
                           {"not_dead", nlohmann::json::array()},
                           {"unknown_api", nlohmann::json::array()},
                           {"next", nullptr},
                           {"dry_run", dry}};
    if (dry) body["would_move"] = ids.size();
    if (ids.size() == 3) body["next"] = ids.back();
    return {testing::reply_to(m, body)};
  });
  auto r = testing::run_pacer(broker.endpoint(), {"dead", "replay", "--all"});
  CHECK(r.code == 0);
  CHECK(r.out == "moved 7 jobs back to queued\n");
  CHECK(r.err.empty());
  auto sent = of(broker, Command::kDeadReplay);
  REQUIRE(sent.size() == 3);
  CHECK(sent[0].body["all"] == true);
  CHECK(sent[0].body["dry_run"] == false);
  CHECK_FALSE(sent[0].body.contains("after"));
  CHECK(sent[1].body["after"] == 3);
  CHECK(sent[2].body["after"] == 6);

  // A filter alone implies --all over what matches.
  auto dry = testing::run_pacer(
      broker.endpoint(),
      {"dead", "replay", "--class", "permanent", "--dry-run", "--json"});
  CHECK(dry.code == 0);
  auto out = nlohmann::json::parse(dry.out);
  CHECK(out["dry_run"] == true);
  CHECK(out["moved"] == 0);
  CHECK(out["would_move"] == 7);
  CHECK(out["ids"] == nlohmann::json{1, 2, 3, 4, 5, 6, 7});
  sent = of(broker, Command::kDeadReplay);
  REQUIRE(sent.size() == 6);
  CHECK(sent[3].body["class"] == "permanent");
  CHECK(sent[3].body["all"] == true);
  CHECK(sent[3].body["dry_run"] == true);

  auto text = testing::run_pacer(
      broker.endpoint(), {"dead", "replay", "--api", "echo", "--dry-run"});
  CHECK(text.code == 0);
  CHECK(text.out == "would move 7 jobs back to queued\n");
}

TEST_CASE("dead replay by id: unique ids, not-dead ones named, exit 1") {
  FakeBroker broker([](const protocol::Message& m) -> std::vector<Frames> {
    auto moved = nlohmann::json::array();
    auto not_dead = nlohmann::json::array();
    for (auto& id : m.body["ids"])
      (id.get<int>() < 3 ? moved : not_dead).push_back(id);
    return {testing::reply_to(m, {{"moved", moved.size()},
                                  {"ids", moved},
                                  {"ids_truncated", false},
                                  {"not_dead", not_dead},
                                  {"unknown_api", nlohmann::json::array()},
                                  {"next", nullptr},
                                  {"dry_run", false}})};
  });
  auto ok = testing::run_pacer(broker.endpoint(), {"dead", "replay", "1"});
  CHECK(ok.code == 0);
  CHECK(ok.out == "moved 1 job back to queued\n");

  auto r = testing::run_pacer(broker.endpoint(),
                              {"dead", "replay", "1", "2", "2", "3"});
  CHECK(r.code == 1);
  CHECK(r.out == "moved 2 jobs back to queued\nnot dead: 3\n");
  auto sent = of(broker, Command::kDeadReplay);
  REQUIRE(sent.size() == 2);
  CHECK(sent[1].body["ids"] == nlohmann::json{1, 2, 3});
  CHECK(sent[1].body["dry_run"] == false);
  CHECK_FALSE(sent[1].body.contains("all"));

  auto j = testing::run_pacer(broker.endpoint(),
                              {"dead", "replay", "2", "9", "--json"});
  CHECK(j.code == 1);
  auto out = nlohmann::json::parse(j.out);
  CHECK(out["moved"] == 1);
  CHECK(out["ids"] == nlohmann::json{2});
  CHECK(out["not_dead"] == nlohmann::json{9});
}

TEST_CASE("a replay refused part way says how many jobs had moved") {
  std::atomic<int> calls{0};
  FakeBroker broker([&](const protocol::Message& m) -> std::vector<Frames> {
    if (calls++ > 0)
      return {testing::error_to(m, "invalid", "something went wrong")};
    return {testing::reply_to(m, {{"moved", 3},
                                  {"ids", {1, 2, 3}},
                                  {"not_dead", nlohmann::json::array()},
                                  {"unknown_api", nlohmann::json::array()},
                                  {"next", 3},
                                  {"dry_run", false}})};
  });
  auto r = testing::run_pacer(broker.endpoint(), {"dead", "replay", "--all"});
  CHECK(r.code == 1);
  CHECK(r.out.empty());
  CHECK(r.err ==
        "pacer: 3 jobs had been moved back to queued before this error\n"
        "pacer: something went wrong\n");
}
