#include <doctest/doctest.h>

#include <atomic>
#include <filesystem>
#include <mutex>

#include "tests/support/process.h"
#include "tests/unit/client_fake_broker.h"

// Runs the real `pacer` binary against an in-test fake broker and checks what
// a user sees: exit codes, stdout, stderr, and what reached the broker.

using namespace pacer;
using protocol::Command;
using testing::FakeBroker;
using testing::Frames;

namespace {

struct Env {
  testing::TempDir dir;
  std::string config;
  Env() {
    // An explicit empty config keeps $PACER_CONFIG and ./pacer.toml out of it.
    dir.write("pacer.toml", "");
    config = dir.file("pacer.toml");
  }
  testing::CommandResult pacer(const std::string& endpoint,
                               std::vector<std::string> args,
                               const std::string& timeout = "5s") {
    REQUIRE_MESSAGE(std::filesystem::exists(testing::binary("pacer")),
                    "build the pacer target first");
    std::vector<std::string> argv = {testing::binary("pacer"),
                                     "--config",
                                     config,
                                     "--broker",
                                     endpoint,
                                     "--timeout",
                                     timeout};
    argv.insert(argv.end(), args.begin(), args.end());
    return testing::run_command(argv, std::chrono::seconds(60));
  }
};

nlohmann::json job_info(std::int64_t id, const std::string& state) {
  return {
      {"id", id},
      {"api", "echo"},
      {"state", state},
      {"method", "GET"},
      {"path", "/"},
      {"priority", 0},
      {"cost", 1},
      {"group", "g-test"},
      {"key", nullptr},
      {"attempts", 1},
      {"max_attempts", 5},
      {"created_ms", 1764286000000},
      {"run_at_ms", 1764286000000},
      {"finished_ms",
       state == "succeeded" ? nlohmann::json(1764286001000) : nlohmann::json()},
      {"status", state == "succeeded" ? nlohmann::json(200) : nlohmann::json()},
      {"outcome",
       state == "succeeded" ? nlohmann::json("success") : nlohmann::json()},
      {"error", nullptr}};
}

// Answers APIS with "echo" and "slow", and SUBMIT with ids from 1.
struct SubmitBroker {
  std::atomic<std::int64_t> next_id{1};
  std::atomic<int> swallow_submits{0};  // SUBMITs to leave unanswered
  FakeBroker broker{[this](const protocol::Message& m) -> std::vector<Frames> {
    if (m.command == Command::kApis)
      return {testing::reply_to(
          m, {{"apis", {{{"name", "echo"}}, {{"name", "slow"}}}}})};
    if (m.command == Command::kSubmit) {
      if (swallow_submits > 0) {
        --swallow_submits;
        return {};
      }
      auto ids = nlohmann::json::array();
      for (std::size_t i = 0; i < m.body["jobs"].size(); ++i)
        ids.push_back(next_id++);
      return {testing::reply_to(m, {{"ids", ids},
                                    {"group", m.body.value("group", "")},
                                    {"duplicates", 0}})};
    }
    return {testing::error_to(m, "malformed", "unexpected")};
  }};
};

}  // namespace

TEST_CASE(
    "a bad line in a JSONL file reports FILE:LINE, exits 1 and sends nothing") {
  Env env;
  SubmitBroker b;
  env.dir.write("jobs.jsonl",
                "{\"api\": \"echo\"}\n"
                "# comment\n"
                "{\"api\": \"echo\", \"body\": {\"n\": 1}\n"
                "{\"api\": \"echo\", \"priority\": \"high\"}\n");
  auto path = env.dir.file("jobs.jsonl");
  auto r = env.pacer(b.broker.endpoint(), {"submit", "--file", path});
  CHECK(r.exit_code == 1);
  CHECK(r.out.empty());
  CHECK(r.err.find("pacer: " + path + ":3: not valid JSON: ") !=
        std::string::npos);
  CHECK(r.err.find("pacer: " + path + ":4: 'priority' must be an integer") !=
        std::string::npos);
  CHECK(r.err.find("2 bad lines; nothing was submitted") != std::string::npos);
  CHECK(b.broker.received().empty());
}

TEST_CASE("unknown apis in a file are refused by line before any SUBMIT") {
  Env env;
  SubmitBroker b;
  env.dir.write("jobs.jsonl", "{\"api\": \"echo\"}\n{\"api\": \"nope\"}\n");
  auto path = env.dir.file("jobs.jsonl");
  auto r = env.pacer(b.broker.endpoint(), {"submit", "--file", path});
  CHECK(r.exit_code == 1);
  CHECK(r.err.find(path +
                   ":2: unknown api 'nope' (the broker knows: echo, slow)") !=
        std::string::npos);
  CHECK(b.broker.count(Command::kApis) == 1);
  CHECK(b.broker.count(Command::kSubmit) == 0);
}

TEST_CASE("a file is submitted in chunks of 10,000 with GROUP:LINE keys") {
  Env env;
  SubmitBroker b;
  std::string text = "# header comment\n";
  for (int i = 0; i < 10'001; ++i) text += "{\"api\": \"echo\"}\n";
  text += "{\"api\": \"slow\", \"key\": \"mine\"}\n";
  env.dir.write("jobs.jsonl", text);
  auto r = env.pacer(
      b.broker.endpoint(),
      {"submit", "--file", env.dir.file("jobs.jsonl"), "--group", "g-test"});
  CHECK(r.exit_code == 0);
  CHECK(r.out == "g-test\n");
  CHECK(r.err.empty());
  std::vector<protocol::Message> submits;
  for (auto& m : b.broker.received())
    if (m.command == Command::kSubmit) submits.push_back(m);
  REQUIRE(submits.size() == 2);
  CHECK(submits[0].body["group"] == "g-test");
  CHECK(submits[0].body["jobs"].size() == 10'000);
  CHECK(submits[1].body["jobs"].size() == 2);
  CHECK(submits[0].body["jobs"][0]["key"] == "g-test:2");
  CHECK(submits[0].body["jobs"][9'999]["key"] == "g-test:10001");
  CHECK(submits[1].body["jobs"][0]["key"] == "g-test:10002");
  CHECK(submits[1].body["jobs"][1]["key"] == "mine");
}

TEST_CASE(
    "a chunk that times out is resent with the same keys; --json reports the "
    "group") {
  Env env;
  SubmitBroker b;
  b.swallow_submits = 1;
  env.dir.write("jobs.jsonl", "{\"api\": \"echo\"}\n{\"api\": \"echo\"}\n");
  auto r = env.pacer(b.broker.endpoint(),
                     {"submit", "--file", env.dir.file("jobs.jsonl"), "--json"},
                     "400ms");
  CHECK(r.exit_code == 0);
  CHECK(r.err.find("sending chunk 1 of 1 again (try 2 of 3)") !=
        std::string::npos);
  auto out = nlohmann::json::parse(r.out);
  CHECK(out["jobs"] == 2);
  std::string group = out["group"];
  CHECK(group.rfind("g-", 0) == 0);
  std::vector<protocol::Message> submits;
  for (auto& m : b.broker.received())
    if (m.command == Command::kSubmit) submits.push_back(m);
  REQUIRE(submits.size() == 2);
  CHECK(submits[0].body["jobs"] == submits[1].body["jobs"]);
  CHECK(submits[1].body["jobs"][1]["key"] == group + ":2");
}

TEST_CASE("a refused job in a chunk is named by its line") {
  Env env;
  FakeBroker broker([](const protocol::Message& m) -> std::vector<Frames> {
    if (m.command == Command::kApis)
      return {testing::reply_to(m, {{"apis", {{{"name", "echo"}}}}})};
    return {testing::error_to(m, "invalid", "body too large for this API",
                              {{"index", 1}})};
  });
  env.dir.write("jobs.jsonl", "{\"api\": \"echo\"}\n\n{\"api\": \"echo\"}\n");
  auto path = env.dir.file("jobs.jsonl");
  auto r = env.pacer(broker.endpoint(), {"submit", "--file", path});
  CHECK(r.exit_code == 1);
  CHECK(r.err ==
        "pacer: " + path +
            ":3: the broker refused the job: body too large for this API\n");
}

TEST_CASE("a refused first chunk stops the file while the next is built") {
  Env env;
  FakeBroker broker([](const protocol::Message& m) -> std::vector<Frames> {
    if (m.command == Command::kApis)
      return {testing::reply_to(m, {{"apis", {{{"name", "echo"}}}}})};
    return {testing::error_to(m, "invalid", "no room", {{"index", 0}})};
  });
  std::string text;
  for (int i = 0; i < 25'000; ++i) text += "{\"api\": \"echo\"}\n";
  env.dir.write("jobs.jsonl", text);
  auto path = env.dir.file("jobs.jsonl");
  auto r = env.pacer(broker.endpoint(), {"submit", "--file", path});
  CHECK(r.exit_code == 1);
  CHECK(r.err ==
        "pacer: " + path + ":1: the broker refused the job: no room\n");
  int submits = 0;
  for (auto& m : broker.received())
    if (m.command == Command::kSubmit) ++submits;
  CHECK(submits == 1);
}

TEST_CASE("submit one job: prints the id, --json the id and duplicate flag") {
  Env env;
  FakeBroker broker([](const protocol::Message& m) -> std::vector<Frames> {
    bool dup = m.body["jobs"][0].value("key", "") == "seen";
    return {testing::reply_to(
        m, {{"ids", {42}}, {"group", ""}, {"duplicates", dup ? 1 : 0}})};
  });
  auto r = env.pacer(
      broker.endpoint(),
      {"submit", "--api", "echo", "--method", "POST", "--path", "/v1/echo",
       "-H", "X-Trace: abc", "--body", "{\"n\": 1}", "--priority", "3",
       "--delay", "2s", "--max-attempts", "2", "--timeout-job", "5s"});
  CHECK(r.exit_code == 0);
  CHECK(r.out == "42\n");
  auto got = broker.received();
  REQUIRE(got.size() == 1);
  auto job = got[0].body["jobs"][0];
  CHECK(job["api"] == "echo");
  CHECK(job["headers"]["X-Trace"] == "abc");
  CHECK(job["body"]["n"] == 1);
  CHECK(job["priority"] == 3);
  CHECK(job["delay"] == "2s");
  CHECK(job["timeout"] == "5s");
  CHECK_FALSE(got[0].body.contains("group"));

  auto j = env.pacer(broker.endpoint(),
                     {"--json", "submit", "--api", "echo", "--key", "seen"});
  CHECK(j.exit_code == 0);
  auto out = nlohmann::json::parse(j.out);
  CHECK(out == nlohmann::json{{"id", 42}, {"duplicate", true}});
}

TEST_CASE("submit refuses bad input before talking to the broker") {
  Env env;
  SubmitBroker b;
  auto bad_body = env.pacer(b.broker.endpoint(),
                            {"submit", "--api", "echo", "--body", "{nope"});
  CHECK(bad_body.exit_code == 2);
  CHECK(bad_body.err.rfind("pacer: --body is not valid JSON: ", 0) == 0);
  auto no_api = env.pacer(b.broker.endpoint(), {"submit"});
  CHECK(no_api.exit_code == 2);
  CHECK(no_api.err.find("--api NAME") != std::string::npos);
  auto mixed = env.pacer(b.broker.endpoint(),
                         {"submit", "--file", "x.jsonl", "--api", "echo"});
  CHECK(mixed.exit_code == 2);
  auto bad_flag = env.pacer(b.broker.endpoint(), {"submit", "--frobnicate"});
  CHECK(bad_flag.exit_code == 2);
  CHECK(bad_flag.err.rfind("pacer: ", 0) == 0);
  auto missing = env.pacer(b.broker.endpoint(),
                           {"submit", "--file", env.dir.file("missing.jsonl")});
  CHECK(missing.exit_code == 2);
  CHECK(missing.err.find("cannot open") != std::string::npos);
  CHECK(b.broker.received().empty());
}

TEST_CASE("no broker: exit 2 with the not-reachable message") {
  Env env;
  std::string endpoint =
      "tcp://127.0.0.1:" + std::to_string(testing::free_port());
  auto r = env.pacer(endpoint, {"stats"}, "300ms");
  CHECK(r.exit_code == 2);
  CHECK(r.err == "pacer: broker not reachable at " + endpoint +
                     " (no reply within 300ms)\n");
  CHECK(r.out.empty());
}

TEST_CASE("a broker speaking PACER2 gives exit 2 and a version message") {
  Env env;
  FakeBroker broker([](const protocol::Message& m) -> std::vector<Frames> {
    nlohmann::json body = {{"req", m.body.value("req", "")}, {"ok", true}};
    return {{"PACER2", std::string(1, '\x20'), body.dump()}};
  });
  auto r = env.pacer(broker.endpoint(), {"apis"});
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("pacer: protocol version mismatch") == 0);
  CHECK(r.err.find("PACER2") != std::string::npos);
}

TEST_CASE(
    "status prints a table; unknown ids exit 1; --json after the command "
    "works") {
  Env env;
  FakeBroker broker([](const protocol::Message& m) -> std::vector<Frames> {
    auto jobs = nlohmann::json::array();
    for (auto& id : m.body["ids"])
      if (id.get<int>() < 100)
        jobs.push_back(job_info(id.get<int>(),
                                id.get<int>() == 1 ? "succeeded" : "queued"));
    return {testing::reply_to(m, {{"jobs", jobs}})};
  });
  auto r = env.pacer(broker.endpoint(), {"status", "1", "2"});
  CHECK(r.exit_code == 0);
  CHECK(r.out.rfind("ID  API   STATE      ATTEMPTS  STATUS  CREATED", 0) == 0);
  CHECK(r.out.find("succeeded       1/5     200") != std::string::npos);
  CHECK(r.out.find("queued          1/5       -") != std::string::npos);

  auto missing = env.pacer(broker.endpoint(), {"status", "1", "500", "501"});
  CHECK(missing.exit_code == 1);
  CHECK(missing.err == "pacer: unknown job ids: 500 501\n");

  auto j = env.pacer(broker.endpoint(), {"status", "2", "--json"});
  CHECK(j.exit_code == 0);
  auto arr = nlohmann::json::parse(j.out);
  REQUIRE(arr.is_array());
  CHECK(arr[0]["state"] == "queued");
}

TEST_CASE("wait polls PROGRESS until nothing is pending") {
  Env env;
  std::atomic<int> polls{0};
  std::atomic<bool> with_dead{false};
  FakeBroker broker([&](const protocol::Message& m) -> std::vector<Frames> {
    int n = polls++;
    std::int64_t pending = std::max(0, 2 - n);
    std::int64_t dead = with_dead && pending == 0 ? 1 : 0;
    return {testing::reply_to(m, {{"total", 3},
                                  {"succeeded", 3 - pending - dead},
                                  {"dead", dead},
                                  {"canceled", 0},
                                  {"pending", pending}})};
  });
  auto r = env.pacer(broker.endpoint(), {"wait", "--group", "g-1"});
  CHECK(r.exit_code == 0);
  CHECK(r.out == "3 jobs: 3 succeeded, 0 dead, 0 canceled\n");
  CHECK(polls == 3);
  auto got = broker.received();
  CHECK(got[0].body["group"] == "g-1");

  polls = 0;
  with_dead = true;
  auto d = env.pacer(broker.endpoint(), {"wait", "1", "2", "3"});
  CHECK(d.exit_code == 1);
  CHECK(d.out == "3 jobs: 2 succeeded, 1 dead, 0 canceled\n");
  CHECK(broker.received().back().body["ids"] == nlohmann::json{1, 2, 3});
}

TEST_CASE("wait --timeout-wait gives up with exit 124") {
  Env env;
  FakeBroker broker([](const protocol::Message& m) -> std::vector<Frames> {
    return {testing::reply_to(m, {{"total", 5},
                                  {"succeeded", 1},
                                  {"dead", 0},
                                  {"canceled", 0},
                                  {"pending", 4}})};
  });
  auto r = env.pacer(broker.endpoint(),
                     {"wait", "--all", "--timeout-wait", "500ms"});
  CHECK(r.exit_code == 124);
  CHECK(r.out == "5 jobs: 1 succeeded, 0 dead, 0 canceled, 4 pending\n");
  CHECK(r.err.find("pacer: gave up waiting after ") == 0);
  CHECK(broker.received().front().body["all"] == true);
  // 200 ms between polls: about 3 or 4 polls in 500 ms, never a busy loop.
  CHECK(broker.count(Command::kProgress) >= 2);
  CHECK(broker.count(Command::kProgress) <= 5);
}

TEST_CASE("result prints the raw body on stdout and a header on stderr") {
  Env env;
  FakeBroker broker([](const protocol::Message& m) -> std::vector<Frames> {
    if (m.body["id"] == 7) {
      auto job = job_info(7, "succeeded");
      job["body"] = "{\"echo\":1}";
      return {testing::reply_to(
          m, {{"job", job}, {"attempts", {{{"attempt", 1}}}}})};
    }
    if (m.body["id"] == 8)
      return {testing::reply_to(m, {{"job", job_info(8, "running")},
                                    {"attempts", nlohmann::json::array()}})};
    return {testing::error_to(m, "not_found",
                              "job " + m.body["id"].dump() + " not found")};
  });
  auto r = env.pacer(broker.endpoint(), {"result", "7"});
  CHECK(r.exit_code == 0);
  CHECK(r.out == "{\"echo\":1}");
  CHECK(r.err ==
        "job 7 (echo): succeeded, HTTP 200, outcome success, 1 attempt\n");

  auto running = env.pacer(broker.endpoint(), {"result", "8"});
  CHECK(running.exit_code == 1);
  CHECK(running.out.empty());
  CHECK(running.err.find("no result yet") != std::string::npos);

  auto j = env.pacer(broker.endpoint(), {"result", "7", "--json"});
  CHECK(j.exit_code == 0);
  auto body = nlohmann::json::parse(j.out);
  CHECK(body["attempts"].size() == 1);
  CHECK_FALSE(body.contains("req"));

  auto missing = env.pacer(broker.endpoint(), {"result", "9"});
  CHECK(missing.exit_code == 1);
  CHECK(missing.err == "pacer: job 9 not found\n");
}

TEST_CASE("list follows next pages up to the limit") {
  Env env;
  FakeBroker broker([](const protocol::Message& m) -> std::vector<Frames> {
    std::int64_t after = m.body.value("after", std::int64_t{0});
    std::int64_t limit =
        std::min<std::int64_t>(m.body.value("limit", std::int64_t{100}), 2);
    auto jobs = nlohmann::json::array();
    for (std::int64_t id = after + 1;
         id <= std::min<std::int64_t>(after + limit, 5); ++id)
      jobs.push_back(job_info(id, "queued"));
    nlohmann::json body = {{"jobs", jobs}};
    if (after + limit < 5) body["next"] = after + limit;
    return {testing::reply_to(m, body)};
  });
  auto all =
      env.pacer(broker.endpoint(), {"list", "--state", "queued", "--json"});
  CHECK(all.exit_code == 0);
  auto arr = nlohmann::json::parse(all.out);
  CHECK(arr.size() == 5);
  CHECK(broker.count(Command::kList) == 3);
  CHECK(broker.received().front().body["state"] == "queued");

  auto some = env.pacer(broker.endpoint(), {"list", "--limit", "3"});
  CHECK(some.exit_code == 0);
  CHECK(some.out.rfind("ID  API   STATE   ATTEMPTS  STATUS  GROUP", 0) == 0);
  int lines = 0;
  for (char c : some.out) lines += c == '\n';
  CHECK(lines == 4);  // header + 3 jobs
  CHECK(some.err.find("more jobs match") != std::string::npos);

  auto bad = env.pacer(broker.endpoint(), {"list", "--state", "sleeping"});
  CHECK(bad.exit_code == 2);
}

TEST_CASE(
    "cancel reports both lists and exits 1 if any job was not cancelable") {
  Env env;
  FakeBroker broker([](const protocol::Message& m) -> std::vector<Frames> {
    auto canceled = nlohmann::json::array();
    auto refused = nlohmann::json::array();
    for (auto& id : m.body["ids"])
      (id.get<int>() % 2 ? canceled : refused).push_back(id);
    return {testing::reply_to(
        m, {{"canceled", canceled}, {"not_cancelable", refused}})};
  });
  auto ok = env.pacer(broker.endpoint(), {"cancel", "1", "3"});
  CHECK(ok.exit_code == 0);
  CHECK(ok.out == "canceled: 1 3\n");
  auto mixed = env.pacer(broker.endpoint(), {"cancel", "1", "2"});
  CHECK(mixed.exit_code == 1);
  CHECK(mixed.out == "canceled: 1\nnot cancelable: 2\n");
}

TEST_CASE("stats prints lanes and workers, '-' for what is missing") {
  Env env;
  FakeBroker broker([](const protocol::Message& m) -> std::vector<Frames> {
    nlohmann::json lanes = nlohmann::json::array();
    lanes.push_back(
        {{"api", "echo"},
         {"limits", {"50/1s"}},
         {"concurrency", 16},
         {"in_flight", 3},
         {"states", {{"queued", 10}, {"running", 3}, {"succeeded", 99}}},
         {"rate_per_s", 48.3},
         {"paused_until_ms", nullptr}});
    lanes.push_back({{"api", "bare"}});
    nlohmann::json workers = {{{"id", "w1"},
                               {"apis", nlohmann::json::array()},
                               {"capacity", 64},
                               {"outstanding", 3}}};
    return {testing::reply_to(m, {{"lanes", lanes},
                                  {"states", {{"queued", 10}}},
                                  {"workers", workers}})};
  });
  auto r = env.pacer(broker.endpoint(), {"stats"});
  CHECK(r.exit_code == 0);
  CHECK(r.out.find(
            "LANE  LIMITS  CONCURRENCY  IN_FLIGHT  QUEUED  RUNNING  RETRYING  "
            "WAITING_QUOTA  DEAD  SUCCEEDED  RATE/S") == 0);
  CHECK(r.out.find(
            "echo  50/1s            16          3      10        3         -"
            "              -     -         99    48.3") != std::string::npos);
  CHECK(r.out.find(
            "bare  -                 -          -       -        -         -"
            "              -     -          -       -") != std::string::npos);
  CHECK(r.out.find("all lanes: queued 10") != std::string::npos);
  CHECK(r.out.find("w1      all         64            3") != std::string::npos);

  FakeBroker empty([](const protocol::Message& m) -> std::vector<Frames> {
    return {testing::reply_to(m, nlohmann::json::object())};
  });
  auto e = env.pacer(empty.endpoint(), {"stats"});
  CHECK(e.exit_code == 0);
  CHECK(e.out.find("no workers connected") != std::string::npos);
}

TEST_CASE("apis prints a table") {
  Env env;
  FakeBroker broker([](const protocol::Message& m) -> std::vector<Frames> {
    nlohmann::json echo = {{"name", "echo"},
                           {"preset", nullptr},
                           {"base_url", "http://127.0.0.1:9"},
                           {"limits", {"50/1s", "1000/1h0m"}},
                           {"concurrency", 0},
                           {"dialect", "auto"},
                           {"max_attempts", 5},
                           {"backoff_base_ms", 500},
                           {"backoff_cap_ms", 60000},
                           {"batch",
                            {{"method", "POST"},
                             {"path", "/v1/batch"},
                             {"max_items", 50},
                             {"max_wait_ms", 200}}}};
    nlohmann::json llm = {{"name", "llm"},
                          {"preset", "openai"},
                          {"base_url", "https://api.openai.com"},
                          {"limits", nlohmann::json::array()},
                          {"concurrency", 8},
                          {"dialect", "openai"},
                          {"max_attempts", 6},
                          {"backoff_base_ms", 1000},
                          {"backoff_cap_ms", 60000},
                          {"batch", nullptr}};
    return {testing::reply_to(m, {{"apis", {echo, llm}}})};
  });
  auto r = env.pacer(broker.endpoint(), {"apis"});
  CHECK(r.exit_code == 0);
  INFO(r.out);
  CHECK(r.out.find("NAME  PRESET  BASE_URL") == 0);
  CHECK(r.out.find("echo  -       http://127.0.0.1:9      50/1s, 1000/1h0m") !=
        std::string::npos);
  CHECK(r.out.find("5 x 500ms..1m0s  50 per POST /v1/batch, wait 200ms\n") !=
        std::string::npos);
  CHECK(r.out.find("llm   openai  https://api.openai.com") !=
        std::string::npos);
  CHECK(r.out.find("openai   6 x 1s..1m0s     -\n") != std::string::npos);
}

TEST_CASE(
    "the config file supplies the broker endpoint; a bad config exits 2") {
  Env env;
  SubmitBroker b;
  env.dir.write("client.toml", "[client]\nbroker = \"" + b.broker.endpoint() +
                                   "\"\ntimeout = \"5s\"\n");
  auto r = testing::run_command({testing::binary("pacer"), "--config",
                                 env.dir.file("client.toml"), "apis"});
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("echo") != std::string::npos);

  env.dir.write("bad.toml", "[client]\ntimeout = 5\n");
  auto bad = testing::run_command(
      {testing::binary("pacer"), "--config", env.dir.file("bad.toml"), "apis"});
  CHECK(bad.exit_code == 2);
  CHECK(bad.err.find("pacer: " + env.dir.file("bad.toml") +
                     ":2: client.timeout") == 0);

  auto missing = testing::run_command({testing::binary("pacer"), "--config",
                                       env.dir.file("none.toml"), "apis"});
  CHECK(missing.exit_code == 2);
  CHECK(missing.err.rfind("pacer: ", 0) == 0);

  auto bad_timeout = env.pacer(b.broker.endpoint(), {"apis"}, "soon");
  CHECK(bad_timeout.exit_code == 2);
  CHECK(bad_timeout.err.rfind("pacer: --timeout: ", 0) == 0);
}
