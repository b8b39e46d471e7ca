#include <doctest/doctest.h>

#include <set>
#include <sstream>

#include "client/commands.h"
#include "client/jobs_file.h"
#include "tests/support/process.h"

using namespace pacer::client;

namespace {
JobsFile read(const std::string& text, const std::string& name = "jobs.jsonl") {
  std::istringstream in(text);
  return read_jobs(in, name);
}
}  // namespace

TEST_CASE(
    "valid lines are kept with their line numbers; blanks and comments "
    "skipped") {
  auto f = read(
      "# a comment\n"
      "{\"api\": \"echo\"}\n"
      "\n"
      "   \n"
      "  # indented comment\n"
      "{\"api\": \"slow\", \"key\": \"mine\", \"body\": {\"n\": 1}}\r\n"
      "{\"api\": \"echo\", \"key\": \"\"}");
  CHECK(f.errors.empty());
  REQUIRE(f.jobs.size() == 3);
  CHECK(f.jobs[0].line == 2);
  CHECK(f.jobs[0].api == "echo");
  CHECK_FALSE(f.jobs[0].has_key);
  CHECK(f.jobs[1].line == 6);
  CHECK(f.jobs[1].api == "slow");
  CHECK(f.jobs[1].has_key);
  CHECK(f.jobs[1].text.back() == '}');  // the CR is gone
  CHECK(f.jobs[2].line == 7);
  CHECK_FALSE(f.jobs[2].has_key);  // an empty key is no key
}

TEST_CASE("a UTF-8 byte order mark on the first line is ignored") {
  auto f = read("\xEF\xBB\xBF{\"api\": \"echo\"}\n");
  CHECK(f.errors.empty());
  CHECK(f.jobs.size() == 1);
}

TEST_CASE("bad lines are reported as FILE:LINE: reason") {
  auto f = read(
      "{\"api\": \"echo\"}\n"
      "{\"api\": \"echo\",}\n"
      "[1, 2]\n"
      "{\"method\": \"GET\"}\n"
      "{\"api\": \"echo\", \"colour\": 1}\n"
      "{\"api\": \"echo\", \"path\": \"no-slash\"}\n"
      "{\"api\": \"echo\", \"delay\": \"soon\"}\n",
      "data/jobs.jsonl");
  CHECK(f.jobs.size() == 1);
  REQUIRE(f.errors.count == 6);
  REQUIRE(f.errors.shown.size() == 6);
  CHECK(f.errors.shown[0].rfind("data/jobs.jsonl:2: not valid JSON: ", 0) == 0);
  CHECK(f.errors.shown[0].find("json.exception") == std::string::npos);
  CHECK(f.errors.shown[1] == "data/jobs.jsonl:3: a job must be a JSON object");
  CHECK(f.errors.shown[2].rfind("data/jobs.jsonl:4: 'api' is required", 0) ==
        0);
  CHECK(f.errors.shown[3] == "data/jobs.jsonl:5: unknown field 'colour'");
  CHECK(f.errors.shown[4].rfind("data/jobs.jsonl:6: 'path' must start", 0) ==
        0);
  CHECK(f.errors.shown[5].rfind("data/jobs.jsonl:7: 'delay'", 0) == 0);
}

TEST_CASE("at most ten bad lines are listed, all are counted") {
  std::string text;
  for (int i = 0; i < 25; ++i) text += "not json\n";
  auto f = read(text);
  CHECK(f.errors.count == 25);
  CHECK(f.errors.shown.size() == kMaxListedErrors);
  CHECK(f.errors.shown.back().rfind("jobs.jsonl:10: ", 0) == 0);
}

TEST_CASE("lines naming an API the broker does not know are listed by line") {
  auto f = read(
      "{\"api\": \"echo\"}\n{\"api\": \"nope\"}\n\n{\"api\": \"other\"}\n");
  auto errors = unknown_apis(f, {"echo", "other"});
  REQUIRE(errors.count == 1);
  CHECK(errors.shown[0] ==
        "jobs.jsonl:2: unknown api 'nope' (the broker knows: echo, other)");
  CHECK(unknown_apis(f, {}).count == 3);
  CHECK(unknown_apis(f, {}).shown[0].find("the broker knows: none") !=
        std::string::npos);
}

TEST_CASE("keys are GROUP:LINE; group ids are fresh and well-formed") {
  CHECK(derive_key("g-abc", 17) == "g-abc:17");
  auto a = new_group_id();
  auto b = new_group_id();
  CHECK(a != b);
  CHECK(a.size() == 14);
  CHECK(a.rfind("g-", 0) == 0);
  CHECK(a.find_first_not_of("0123456789abcdef", 2) == std::string::npos);
  CHECK(check_group(a).ok());
  CHECK_FALSE(check_group("").ok());
  CHECK_FALSE(check_group("has space").ok());
  CHECK_FALSE(check_group(std::string(201, 'x')).ok());
}

TEST_CASE("chunk bodies carry the group and derive keys only where missing") {
  auto f = read(
      "{\"api\": \"echo\"}\n\n{\"api\": \"echo\", \"key\": \"own\"}\n{\"api\": "
      "\"echo\", \"body\": {\"key\": 1}}  \n{\"key\": \"\", \"api\": "
      "\"echo\"}\n"
      "{\"api\": \"echo\", \"key\": \"\"}\n");
  REQUIRE(f.errors.empty());
  auto chunks = plan_chunks(f.jobs);
  REQUIRE(chunks.size() == 1);
  const std::string text = chunk_body(f, chunks[0], "g-1");
  auto body = nlohmann::json::parse(text);
  CHECK(body["group"] == "g-1");
  REQUIRE(body["jobs"].size() == 5);
  CHECK(body["jobs"][0]["key"] == "g-1:1");
  CHECK(body["jobs"][1]["key"] == "own");
  CHECK(body["jobs"][2]["key"] == "g-1:4");
  CHECK(body["jobs"][2]["body"] == nlohmann::json{{"key", 1}});
  CHECK(body["jobs"][3]["key"] == "g-1:5");
  CHECK(body["jobs"][4]["key"] == "g-1:6");
  // An empty key is replaced, never left beside the derived one (a parser
  // keeping the first of two keys would see no key at all).
  CHECK(text.find("\"key\": \"\"") == std::string::npos);
  CHECK(text.find("\"key\":\"\"") == std::string::npos);
  // The same file and group always give the same keys: a resent chunk is a
  // duplicate.
  CHECK(chunk_body(f, chunks[0], "g-1") == text);
  // A chunk of the middle lines only, and a group that needs escaping.
  const auto mid = nlohmann::json::parse(chunk_body(f, {1, 3}, "g\"\\x"));
  REQUIRE(mid["jobs"].size() == 2);
  CHECK(mid["group"] == "g\"\\x");
  CHECK(mid["jobs"][0]["key"] == "own");
  CHECK(mid["jobs"][1]["key"] == "g\"\\x:4");
}

TEST_CASE("chunks hold at most max_jobs jobs and stay under the byte budget") {
  std::vector<FileJob> jobs(25'001);
  for (std::size_t i = 0; i < jobs.size(); ++i) {
    jobs[i].line = static_cast<int>(i + 1);
    jobs[i].text = "{\"api\":\"echo\"}";
  }
  auto chunks = plan_chunks(jobs);
  REQUIRE(chunks.size() == 3);
  CHECK(chunks[0].begin == 0);
  CHECK(chunks[0].size() == 10'000);
  CHECK(chunks[1].begin == 10'000);
  CHECK(chunks[1].size() == 10'000);
  CHECK(chunks[2].size() == 5'001);
  CHECK(chunks[2].end == jobs.size());

  CHECK(plan_chunks({}).empty());
  CHECK(plan_chunks(jobs, 7).size() == (jobs.size() + 6) / 7);

  // Byte budget: 100-byte texts (+64 overhead each) in 500 bytes: 3 per chunk;
  // a job bigger than the budget travels alone.
  std::vector<FileJob> big(7);
  for (auto& j : big) j.text = std::string(100, 'x');
  big[3].text = std::string(1000, 'y');
  auto by_size = plan_chunks(big, 10'000, 500);
  REQUIRE(by_size.size() == 3);
  CHECK(by_size[0].size() == 3);
  CHECK(by_size[1].size() == 1);
  CHECK(by_size[1].begin == 3);
  CHECK(by_size[2].size() == 3);
  CHECK(by_size[2].end == big.size());
}

TEST_CASE("build_job turns flags into a validated JobSpec") {
  SubmitOptions o;
  o.api = "echo";
  o.method = "put";
  o.path = "/v1/items";
  o.headers = {"X-Trace: abc", "Accept:application/json"};
  o.body = R"({"n": 1})";
  o.priority = 5;
  o.delay = "10s";
  o.cost = 3;
  o.key = "k1";
  o.batch_key = "b";
  o.max_attempts = 4;
  o.timeout = "2500";
  auto j = build_job(o);
  REQUIRE(j.ok());
  CHECK((*j)["api"] == "echo");
  CHECK((*j)["method"] == "put");
  CHECK((*j)["path"] == "/v1/items");
  CHECK((*j)["headers"]["X-Trace"] == "abc");
  CHECK((*j)["headers"]["Accept"] == "application/json");
  CHECK((*j)["body"] == nlohmann::json{{"n", 1}});
  CHECK((*j)["priority"] == 5);
  CHECK((*j)["delay"] == "10s");
  CHECK((*j)["cost"] == 3);
  CHECK((*j)["key"] == "k1");
  CHECK((*j)["batch_key"] == "b");
  CHECK((*j)["max_attempts"] == 4);
  CHECK((*j)["timeout"] == 2500);  // digits are milliseconds
  CHECK(pacer::parse_job_spec(*j).ok());

  SubmitOptions minimal;
  minimal.api = "echo";
  auto m = build_job(minimal);
  REQUIRE(m.ok());
  CHECK(*m == nlohmann::json{{"api", "echo"}});
}

TEST_CASE("build_job refuses bad flags with a clear message") {
  SubmitOptions o;
  o.api = "echo";
  o.body = "{not json";
  auto bad_body = build_job(o);
  REQUIRE_FALSE(bad_body.ok());
  CHECK(bad_body.error().rfind("--body is not valid JSON: ", 0) == 0);

  o.body.reset();
  o.headers = {"no-colon"};
  auto bad_header = build_job(o);
  REQUIRE_FALSE(bad_header.ok());
  CHECK(bad_header.error().find("NAME:VALUE") != std::string::npos);

  o.headers.clear();
  o.delay = "soon";
  auto bad_delay = build_job(o);
  REQUIRE_FALSE(bad_delay.ok());
  CHECK(bad_delay.error().rfind("invalid job: 'delay'", 0) == 0);

  o.delay.reset();
  o.path = "relative";
  CHECK_FALSE(build_job(o).ok());
}

TEST_CASE("--body @FILE reads JSON from the file") {
  pacer::testing::TempDir dir;
  dir.write("body.json", "{\n  \"prompt\": \"hi\"\n}\n");
  dir.write("bad.json", "{\n  \"prompt\": \n");
  SubmitOptions o;
  o.api = "echo";
  o.body = "@" + dir.file("body.json");
  auto ok = build_job(o);
  REQUIRE(ok.ok());
  CHECK((*ok)["body"]["prompt"] == "hi");

  o.body = "@" + dir.file("bad.json");
  auto bad = build_job(o);
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().rfind("--body is not valid JSON: " + dir.file("bad.json"),
                          0) == 0);

  o.body = "@" + dir.file("missing.json");
  auto missing = build_job(o);
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.error().find("cannot read") != std::string::npos);
}
