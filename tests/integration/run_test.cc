// End-to-end `pacer run`: real broker, workers and mock API on loopback and
// the real `pacer` binary. A file of requests becomes a file of results, one
// per line, each answering its own line; an interrupted run (SIGINT, a cut
// output file, a broker restart) resumes with no line lost or submitted
// twice; lines that fail go dead and the run says how to replay them.
#include <doctest/doctest.h>

#include <csignal>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "tests/support/fleet.h"
#include "tests/support/sql.h"

using namespace pacer::testing;
using json = nlohmann::json;

namespace {

FleetOptions options(const std::string& limit) {
  return {
      .mock_args = {"--limit", limit, "--algorithm", "fixed", "--latency", "5"},
      .api_toml = "limits = [\"" + limit +
                  "\"]\nconcurrency = 16\nmargin = \"50ms\"\n"};
}

void start(Fleet& f) {
  f.start_broker();
  f.start_worker(0);
  f.start_worker(1);
  REQUIRE(f.wait_workers(2));
}

// n request bodies, one a line: {"k": i, "text": "line i"} (i from 1).
std::string bodies(int n) {
  std::string text;
  for (int i = 1; i <= n; ++i)
    text += json{{"k", i}, {"text", "line " + std::to_string(i)}}.dump() + "\n";
  return text;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::size_t complete_lines(const std::string& path) {
  std::size_t n = 0;
  for (char c : slurp(path)) n += c == '\n';
  return n;
}

std::vector<json> results(const std::string& path) {
  std::vector<json> out;
  std::istringstream in(slurp(path));
  std::string line;
  while (std::getline(in, line)) out.push_back(json::parse(line));
  return out;
}

// Every line 1..n has exactly one result, which echoes its own body.
void check_echoed(const std::string& path, int n) {
  auto lines = results(path);
  CHECK(lines.size() == static_cast<std::size_t>(n));
  std::set<int> seen;
  for (const auto& l : lines) {
    CAPTURE(l.dump());
    int line = l["line"].get<int>();
    CHECK(seen.insert(line).second);
    CHECK(l["outcome"] == "succeeded");
    CHECK(l["status"] == 200);
    CHECK(l["body"]["echo"] ==
          json{{"k", line}, {"text", "line " + std::to_string(line)}});
    CHECK(l["job"].is_number_integer());
    CHECK(l["attempts"].get<int>() >= 1);
  }
  CHECK(seen.size() == static_cast<std::size_t>(n));
  if (!seen.empty()) CHECK(*seen.rbegin() == n);
}

}  // namespace

TEST_CASE("200 requests become 200 result lines, each echoing its input") {
  Fleet f(options("100/s"));
  start(f);
  f.dir().write("requests.jsonl", bodies(200));
  const std::string out = f.dir().file("results.jsonl");
  auto r = f.cli({"run", f.dir().file("requests.jsonl"), "--api", "echo",
                  "--path", "/v1/echo", "-o", out});
  CHECK_MESSAGE(r.exit_code == 0, r.err);
  CHECK(r.out == "200 lines: 200 succeeded, 0 dead, 0 canceled; results in " +
                     out + "\n");
  check_echoed(out, 200);
  const std::string db = f.db_path();
  CHECK(sql_count(db, "SELECT COUNT(*) FROM jobs") == 200);
  CHECK(sql_count(db,
                  "SELECT COUNT(*) FROM jobs WHERE group_id LIKE "
                  "'run:%' AND idempotency_key LIKE 'run:%'") == 200);
}

TEST_CASE(
    "interrupted by SIGINT, then the broker restarts: the rerun finishes "
    "with one result per line and no job submitted twice") {
  Fleet f(options("20/s"));
  start(f);
  f.dir().write("requests.jsonl", bodies(200));
  const std::string out = f.dir().file("results.jsonl");
  const std::vector<std::string> args = {
      "run",    f.dir().file("requests.jsonl"),
      "--api",  "echo",
      "--path", "/v1/echo",
      "-o",     out};
  {
    std::vector<std::string> argv = {binary("pacer"), "--config",
                                     f.config_path()};
    argv.insert(argv.end(), args.begin(), args.end());
    Process client(argv, f.dir().path(), "run-1");
    REQUIRE(wait_until([&] { return complete_lines(out) >= 30; }, 60s));
    client.signal(SIGINT);
    auto code = client.wait(30s);
    REQUIRE(code.has_value());
    CHECK(*code == 130);
    CHECK(client.err().find("run the same command again to resume") !=
          std::string::npos);
  }
  const auto written = complete_lines(out);
  CHECK(written >= 30);
  CHECK(written < 200);
  // Every job was submitted before the results were fetched.
  const std::string db = f.db_path();
  CHECK(sql_count(db, "SELECT COUNT(*) FROM jobs") == 200);

  f.broker().signal(SIGKILL);
  REQUIRE(f.broker().wait(10s).has_value());
  f.start_broker();
  REQUIRE(f.wait_workers(2));

  auto r = f.cli(args);
  CHECK_MESSAGE(r.exit_code == 0, r.err);
  check_echoed(out, 200);
  CHECK(sql_count(db, "SELECT COUNT(*) FROM jobs") == 200);
}

TEST_CASE("an output cut short mid-line is completed without duplicates") {
  Fleet f(options("100/s"));
  start(f);
  f.dir().write("requests.jsonl", bodies(200));
  const std::string out = f.dir().file("results.jsonl");
  const std::vector<std::string> args = {
      "run",    f.dir().file("requests.jsonl"),
      "--api",  "echo",
      "--path", "/v1/echo",
      "-o",     out};
  REQUIRE(f.cli(args).exit_code == 0);

  // As if the client had died after 120 lines and half of the 121st.
  std::string text = slurp(out);
  std::size_t cut = 0;
  for (int i = 0; i < 120; ++i) cut = text.find('\n', cut) + 1;
  auto next_end = text.find('\n', cut);
  f.dir().write("results.jsonl", text.substr(0, cut + (next_end - cut) / 2));

  auto r = f.cli(args);
  CHECK_MESSAGE(r.exit_code == 0, r.err);
  check_echoed(out, 200);
  const std::string db = f.db_path();
  CHECK(sql_count(db, "SELECT COUNT(*) FROM jobs") == 200);
  // The rerun's submissions were all answered by existing keys.
  CHECK(sql_count(db,
                  "SELECT COUNT(*) FROM attempts WHERE outcome = "
                  "'success'") == 200);
}

TEST_CASE("lines sent to a path that 404s go dead; exit 1 names dead list") {
  Fleet f(options("100/s"));
  start(f);
  std::string input;
  for (int i = 1; i <= 30; ++i)
    input += json{{"api", "echo"},
                  {"id", "req-" + std::to_string(i)},
                  {"path", i % 5 == 0 ? "/v1/nope" : "/v1/echo"},
                  {"body", {{"k", i}}}}
                 .dump() +
             "\n";
  f.dir().write("jobs.jsonl", input);
  const std::string out = f.dir().file("results.jsonl");
  auto r = f.cli({"run", f.dir().file("jobs.jsonl"), "-o", out});
  CHECK(r.exit_code == 1);
  CHECK(r.out.find("30 lines: 24 succeeded, 6 dead, 0 canceled") == 0);
  CHECK(r.err.find("pacer: 6 lines went dead") != std::string::npos);
  CHECK(r.err.find("pacer dead list --api echo") != std::string::npos);
  CHECK(r.err.find("pacer dead replay ") != std::string::npos);
  auto lines = results(out);
  REQUIRE(lines.size() == 30);
  for (const auto& l : lines) {
    CAPTURE(l.dump());
    int line = l["line"].get<int>();
    CHECK(l["id"] == "req-" + std::to_string(line));
    if (line % 5 == 0) {
      CHECK(l["outcome"] == "dead");
      CHECK(l["status"] == 404);
      CHECK(l["error"].is_string());
    } else {
      CHECK(l["outcome"] == "succeeded");
      CHECK(l["body"]["echo"] == json{{"k", line}});
    }
  }
  CHECK(sql_count(f.db_path(),
                  "SELECT COUNT(*) FROM jobs WHERE state = "
                  "'dead'") == 6);
  auto dead = f.cli({"dead", "list", "--api", "echo"});
  CHECK(dead.exit_code == 0);
  CHECK(dead.out.find("permanent     404") != std::string::npos);
}

TEST_CASE("a malformed line stops the run before anything is submitted") {
  Fleet f(options("100/s"));
  start(f);
  f.dir().write("requests.jsonl", "{\"k\": 1}\n{\"k\": 2\n{\"k\": 3}\n");
  auto r = f.cli({"run", f.dir().file("requests.jsonl"), "--api", "echo", "-o",
                  f.dir().file("results.jsonl")});
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("requests.jsonl:2: not valid JSON") != std::string::npos);
  CHECK(sql_count(f.db_path(), "SELECT COUNT(*) FROM jobs") == 0);
}
