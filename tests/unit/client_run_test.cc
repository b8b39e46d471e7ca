// `pacer run`: the run's name and keys, reading back an output file after an
// interruption, result lines, the progress line (with a fake clock), and the
// whole command against a fake broker (what is submitted, what is written).
#include <doctest/doctest.h>

#include <fstream>
#include <sstream>

#include "client/cli.h"
#include "client/jobs_file.h"
#include "client/run.h"
#include "client/sha256.h"
#include "tests/support/process.h"
#include "tests/unit/client_cli_runner.h"
#include "tests/unit/client_fake_broker.h"

using namespace pacer;
using namespace pacer::client;
using pacer::protocol::Command;
using pacer::testing::FakeBroker;
using pacer::testing::Frames;
using pacer::testing::reply_to;
using json = nlohmann::json;

TEST_CASE("sha256 matches the FIPS 180-4 examples") {
  CHECK(sha256_hex("") ==
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(sha256_hex("abc") ==
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(
      sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") ==
      "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  // 55 and 56 bytes: the length fits in the last block, or needs another.
  CHECK(sha256_hex(std::string(55, 'a')) ==
        "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318");
  CHECK(sha256_hex(std::string(56, 'a')) ==
        "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a");
}

TEST_CASE("a run is named by its file's content; keys add the line") {
  const std::string content = "{\"api\": \"echo\"}\n";
  const std::string group = run_group(content);
  CHECK(group == "run:" + sha256_hex(content).substr(0, 16));
  CHECK(group.size() == 4 + 16);
  CHECK(run_group(content) == group);  // the same file resumes
  CHECK(run_group(content + "{\"api\": \"echo\"}\n") != group);  // a new run
  CHECK(derive_key(group, 17) == group + ":17");
  CHECK(check_group(group));
}

TEST_CASE("job lines lose their own id; --api lines become the body") {
  std::istringstream in(
      "{\"api\": \"echo\", \"id\": \"a-1\", \"body\": {\"n\": 1}}\n"
      "# comment\n"
      "{\"api\": \"echo\", \"key\": \"mine\"}\n");
  auto f = read_jobs(in, "in.jsonl", run_line_to_job({}));
  REQUIRE(f.errors.empty());
  REQUIRE(f.jobs.size() == 2);
  CHECK(f.jobs[0].ref_id == "\"a-1\"");
  CHECK_FALSE(json::parse(f.jobs[0].text).contains("id"));
  CHECK(json::parse(f.jobs[0].text)["body"] == json{{"n", 1}});
  CHECK(f.jobs[1].line == 3);
  CHECK(f.jobs[1].ref_id.empty());
  CHECK(f.jobs[1].has_key);

  std::istringstream bodies(
      "{\"id\": 7, \"text\": \"hi\"}\n"
      "\"just a string\"\n"
      "[1, 2]\n");
  auto b = read_jobs(bodies, "b.jsonl",
                     run_line_to_job({.api = "echo", .path = "/v1/echo"}));
  REQUIRE(b.errors.empty());
  REQUIRE(b.jobs.size() == 3);
  auto j0 = json::parse(b.jobs[0].text);
  CHECK(j0["api"] == "echo");
  CHECK(j0["path"] == "/v1/echo");
  CHECK(j0["method"] == "POST");
  // The body is the user's request: its "id" is sent, and also echoed.
  CHECK(j0["body"] == json{{"id", 7}, {"text", "hi"}});
  CHECK(b.jobs[0].ref_id == "7");
  CHECK(json::parse(b.jobs[1].text)["body"] == "just a string");
  CHECK(b.jobs[2].ref_id.empty());
}

TEST_CASE("a malformed line is reported with its number") {
  std::istringstream in(
      "{\"api\": \"echo\"}\n"
      "{\"api\": \"echo\",\n"
      "{\"api\": \"echo\", \"colour\": 1}\n");
  auto f = read_jobs(in, "in.jsonl", run_line_to_job({}));
  REQUIRE(f.errors.count == 2);
  CHECK(f.errors.shown[0].rfind("in.jsonl:2: not valid JSON", 0) == 0);
  CHECK(f.errors.shown[1] == "in.jsonl:3: unknown field 'colour'");
}

TEST_CASE("an output file is trusted up to its last complete line") {
  const std::string complete =
      "{\"line\":1,\"job\":11,\"outcome\":\"succeeded\"}\n"
      "\n"
      "{\"line\":4,\"job\":14,\"outcome\":\"dead\"}\n";
  SUBCASE("a partial last line is dropped") {
    auto st = parse_output(complete + "{\"line\":5,\"job\":15,\"outc", "o");
    REQUIRE(st);
    CHECK(st->partial);
    CHECK(st->keep_bytes == complete.size());
    CHECK(st->outcomes ==
          std::map<int, std::string>{{1, "succeeded"}, {4, "dead"}});
    CHECK(st->jobs.at(4) == 14);
  }
  SUBCASE("complete lines only") {
    auto st = parse_output(complete, "o");
    REQUIRE(st);
    CHECK_FALSE(st->partial);
    CHECK(st->keep_bytes == complete.size());
    CHECK(st->outcomes.size() == 2);
  }
  SUBCASE("an empty file") {
    auto st = parse_output("", "o");
    REQUIRE(st);
    CHECK(st->outcomes.empty());
    CHECK(st->keep_bytes == 0);
  }
  SUBCASE("a complete line that is not a result is refused") {
    auto st = parse_output(complete + "hello\n", "out.jsonl");
    REQUIRE_FALSE(st);
    CHECK(st.error().rfind("out.jsonl:4: not a result line", 0) == 0);
  }
}

TEST_CASE("result lines: body as JSON when it is JSON, error when failed") {
  json ok = {{"state", "succeeded"},
             {"status", 200},
             {"attempts", 1},
             {"body", "{\"echo\":{\"n\":1},\"n\":3}"}};
  CHECK(result_line(2, "\"a\"", 11, ok) ==
        "{\"line\":2,\"id\":\"a\",\"job\":11,\"outcome\":\"succeeded\","
        "\"status\":200,\"body\":{\"echo\":{\"n\":1},\"n\":3},\"attempts\":1}");
  ok["body"] = "plain text";
  CHECK(result_line(2, "", 11, ok) ==
        "{\"line\":2,\"job\":11,\"outcome\":\"succeeded\",\"status\":200,"
        "\"body\":\"plain text\",\"attempts\":1}");
  ok["body"] = "{\"cut";
  ok["body_truncated"] = true;
  CHECK(json::parse(result_line(2, "", 11, ok))["body"] == "{\"cut");
  CHECK(json::parse(result_line(2, "", 11, ok))["body_truncated"] == true);

  json dead = {{"state", "dead"},
               {"status", 404},
               {"attempts", 1},
               {"error", "HTTP 404"},
               {"body", "{\"error\":\"not_found\"}"}};
  CHECK(result_line(9, "{\"k\":1}", 12, dead) ==
        "{\"line\":9,\"id\":{\"k\":1},\"job\":12,\"outcome\":\"dead\","
        "\"status\":404,\"error\":\"HTTP 404\",\"body\":{\"error\":"
        "\"not_found\"},\"attempts\":1}");
  json canceled = {{"state", "canceled"}, {"status", 0}, {"attempts", 0}};
  CHECK(result_line(3, "", 13, canceled) ==
        "{\"line\":3,\"job\":13,\"outcome\":\"canceled\",\"status\":null,"
        "\"error\":\"canceled\",\"attempts\":0}");
}

TEST_CASE("429s are counted from a RESULT's attempts") {
  json reply = {{"attempts",
                 {{{"outcome", "rate_limited"}},
                  {{"outcome", "rate_limited"}},
                  {{"outcome", "success"}}}}};
  CHECK(rate_limited_attempts(reply) == 2);
  CHECK(rate_limited_attempts(json::object()) == 0);
}

TEST_CASE("lanes of the run are read from STATS") {
  json stats = {{"lanes",
                 {{{"api", "other"}, {"rate_per_s", 1.0}},
                  {{"api", "echo"},
                   {"rate_per_s", 9.75},
                   {"limits", {"10/1s", "600/1m0s"}},
                   {"paused_until_ms", 1'700'000'002'300},
                   {"states", {{"waiting_quota", 4}, {"queued", 10}}}}}}};
  auto lanes = lane_views(stats, {"echo", "missing"});
  REQUIRE(lanes.size() == 1);
  CHECK(lanes[0].api == "echo");
  CHECK(lanes[0].rate_per_s == doctest::Approx(9.75));
  CHECK(lanes[0].limits == "10/1s, 600/1m0s");
  CHECK(lanes[0].paused_until_ms == 1'700'000'002'300);
  CHECK(lanes[0].waiting_quota == 4);
}

TEST_CASE("the progress line: counts, rate against the limit, 429s, ETA") {
  FakeClock clock(1'700'000'000'000);
  ProgressMeter meter(clock, 20);  // 20 lines were in the output already
  RunCounts c{.total = 200, .done = 20, .succeeded = 20};
  LaneView echo{.api = "echo", .rate_per_s = 0, .limits = "10/1s"};
  CHECK(meter.line(c, {echo}) ==
        "20/200 lines: 20 succeeded, 0 failed | echo 0.0/s of 10/1s | "
        "429s: 0 | ETA -");

  clock.advance(10'000);  // 90 more lines in 10 s: 90 left take 10 s
  c = {.total = 200,
       .done = 110,
       .succeeded = 108,
       .failed = 2,
       .rate_limited = 3};
  echo.rate_per_s = 9.04;
  echo.paused_until_ms = clock.now_ms() + 2'345;
  echo.waiting_quota = 5;
  CHECK(meter.line(c, {echo}) ==
        "110/200 lines: 108 succeeded, 2 failed | echo 9.0/s of 10/1s, "
        "paused: resets in 2.3s | 429s: 3, 5 waiting for quota | ETA 10s");

  echo.paused_until_ms = clock.now_ms() - 1;  // a pause that has ended
  LaneView open{.api = "open", .rate_per_s = 1.25};
  CHECK(meter.line(c, {echo, open}) ==
        "110/200 lines: 108 succeeded, 2 failed | echo 9.0/s of 10/1s | "
        "open 1.2/s (no limit) | 429s: 3, 5 waiting for quota | ETA 10s");
}

TEST_CASE("plain progress lines come every interval") {
  FakeClock clock;
  ProgressMeter meter(clock, 0);
  CHECK_FALSE(meter.plain_due(5000));
  clock.advance(4999);
  CHECK_FALSE(meter.plain_due(5000));
  clock.advance(1);
  CHECK(meter.plain_due(5000));
  CHECK_FALSE(meter.plain_due(5000));
  clock.advance(5000);
  CHECK(meter.plain_due(5000));
}

// ---- the whole command against a fake broker ------------------------------

namespace {

// A broker whose echo jobs finish at once: job i+100 answers line i's body.
// Jobs whose path is /missing die with a 404.
struct EchoBroker {
  std::map<std::string, json> by_key;  // key -> job spec
  std::map<std::int64_t, json> by_id;
  std::int64_t next_id = 100;
  std::size_t jobs_submitted = 0;
  FakeBroker broker{[this](const protocol::Message& m) { return handle(m); }};

  std::vector<Frames> handle(const protocol::Message& m) {
    const auto& b = m.body;
    switch (m.command) {
      case Command::kApis:
        return {reply_to(m, {{"apis", {{{"name", "echo"}}}}})};
      case Command::kSubmit: {
        json ids = json::array();
        for (const auto& j : b["jobs"]) {
          ++jobs_submitted;
          auto key = j["key"].get<std::string>();
          if (!by_key.count(key)) {
            by_key[key] = j;
            by_id[next_id] = j;
            by_key[key]["id"] = next_id++;
          }
          ids.push_back(by_key[key]["id"]);
        }
        return {reply_to(m, {{"ids", ids}, {"duplicates", 0}})};
      }
      case Command::kProgress:
        return {reply_to(m, {{"pending", 0}})};
      case Command::kStatus: {
        json jobs = json::array();
        for (const auto& id : b["ids"])
          jobs.push_back(
              {{"id", id}, {"state", state(id.get<std::int64_t>())}});
        return {reply_to(m, {{"jobs", jobs}})};
      }
      case Command::kResult: {
        auto id = b["id"].get<std::int64_t>();
        const auto& spec = by_id.at(id);
        json job = {{"id", id}, {"state", state(id)}, {"attempts", 1}};
        if (job["state"] == "succeeded") {
          job["status"] = 200;
          job["body"] = json{{"echo", spec.value("body", json())}}.dump();
        } else {
          job["status"] = 404;
          job["error"] = "HTTP 404";
        }
        return {reply_to(
            m, {{"job", job}, {"attempts", {{{"outcome", "success"}}}}})};
      }
      default:
        return {reply_to(m, {{"lanes", json::array()}})};
    }
  }
  std::string state(std::int64_t id) const {
    return by_id.at(id).value("path", "/") == "/missing" ? "dead" : "succeeded";
  }
};

testing::CliRun pacer_run(const std::string& endpoint,
                          std::vector<std::string> args) {
  args.insert(args.begin(), "run");
  return testing::run_pacer(endpoint, args);
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<json> lines_of(const std::string& text) {
  std::vector<json> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) out.push_back(json::parse(line));
  return out;
}

}  // namespace

TEST_CASE(
    "run writes a result per line; a rerun submits only what is "
    "missing and appends only that") {
  pacer::testing::TempDir dir;
  std::string input;
  for (int i = 1; i <= 5; ++i)
    input += "{\"id\": \"r" + std::to_string(i) +
             "\", \"n\": " + std::to_string(i) + "}\n";
  dir.write("in.jsonl", input);
  const std::string out = dir.file("out.jsonl");
  EchoBroker eb;
  // Two lines were written before an interruption, the third only in part.
  const std::string group = run_group(input);
  dir.write("out.jsonl",
            "{\"line\":1,\"id\":\"r1\",\"job\":1,\"outcome\":\"succeeded\"}\n"
            "{\"line\":4,\"id\":\"r4\",\"job\":4,\"outcome\":\"succeeded\"}\n"
            "{\"line\":2,\"id\":\"r2\",\"jo");
  auto r = pacer_run(
      eb.broker.endpoint(),
      {dir.file("in.jsonl"), "-o", out, "--api", "echo", "--path", "/v1/echo"});
  CHECK_MESSAGE(r.code == 0, r.err);
  CHECK(r.out ==
        "5 lines: 5 succeeded, 0 dead, 0 canceled; results in " + out + "\n");
  CHECK(eb.jobs_submitted == 3);  // lines 2, 3 and 5
  CHECK(eb.by_key.count(group + ":2"));
  CHECK(eb.by_key.count(group + ":5"));
  auto lines = lines_of(slurp(out));
  REQUIRE(lines.size() == 5);
  std::set<int> seen;
  for (const auto& l : lines) seen.insert(l["line"].get<int>());
  CHECK(seen == std::set<int>{1, 2, 3, 4, 5});
  for (std::size_t i = 2; i < 5; ++i) {
    const auto& l = lines[i];
    int n = l["line"].get<int>();
    CHECK(l["id"] == "r" + std::to_string(n));
    CHECK(l["body"]["echo"] == json{{"id", "r" + std::to_string(n)}, {"n", n}});
    CHECK(l["status"] == 200);
  }

  // Everything is there: nothing is asked of the broker.
  const auto received = eb.broker.received().size();
  r = pacer_run(eb.broker.endpoint(),
                {dir.file("in.jsonl"), "-o", out, "--api", "echo"});
  CHECK(r.code == 0);
  CHECK(eb.broker.received().size() == received);
  CHECK(lines_of(slurp(out)).size() == 5);
}

TEST_CASE("dead lines: exit 1 and the commands to list and replay them") {
  pacer::testing::TempDir dir;
  dir.write("in.jsonl",
            "{\"api\": \"echo\", \"path\": \"/v1/echo\", \"body\": 1}\n"
            "{\"api\": \"echo\", \"path\": \"/missing\", \"id\": \"x\"}\n");
  EchoBroker eb;
  auto r = pacer_run(eb.broker.endpoint(),
                     {dir.file("in.jsonl"), "-o", dir.file("out.jsonl")});
  CHECK(r.code == kExitNo);
  CHECK(r.out.find("2 lines: 1 succeeded, 1 dead") == 0);
  CHECK(r.err.find("pacer: 1 line went dead") != std::string::npos);
  CHECK(r.err.find("pacer dead list --api echo") != std::string::npos);
  CHECK(r.err.find("pacer dead replay 101") != std::string::npos);
  // The line's own id went to the output, not to the broker.
  for (const auto& [id, spec] : eb.by_id) CHECK_FALSE(spec.contains("id"));
  auto lines = lines_of(slurp(dir.file("out.jsonl")));
  REQUIRE(lines.size() == 2);
  auto dead = lines[0]["line"] == 2 ? lines[0] : lines[1];
  CHECK(dead["id"] == "x");
  CHECK(dead["outcome"] == "dead");
  CHECK(dead["error"] == "HTTP 404");
}

TEST_CASE("a bad line: its number is named and nothing is submitted") {
  pacer::testing::TempDir dir;
  dir.write("in.jsonl",
            "{\"api\": \"echo\"}\n"
            "{\"api\": \"echo\", \"path\": \"no-slash\"}\n");
  EchoBroker eb;
  auto r = pacer_run(eb.broker.endpoint(),
                     {dir.file("in.jsonl"), "-o", dir.file("out.jsonl")});
  CHECK(r.code == kExitNo);
  CHECK(r.err.find(dir.file("in.jsonl") + ":2: 'path' must start") !=
        std::string::npos);
  CHECK(r.err.find("1 bad line; nothing was submitted") != std::string::npos);
  CHECK(eb.broker.received().empty());
}

TEST_CASE("an output file of something else is left alone") {
  pacer::testing::TempDir dir;
  dir.write("in.jsonl", "{\"api\": \"echo\"}\n");
  dir.write("out.jsonl", "{\"line\": 7}\n");
  EchoBroker eb;
  auto r = pacer_run(eb.broker.endpoint(),
                     {dir.file("in.jsonl"), "-o", dir.file("out.jsonl")});
  CHECK(r.code == kExitError);
  CHECK(r.err.find("has a result for line 7") != std::string::npos);
  CHECK(slurp(dir.file("out.jsonl")) == "{\"line\": 7}\n");
  CHECK(eb.broker.received().empty());
}
