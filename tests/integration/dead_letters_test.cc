// End-to-end dead letters: real broker, workers and mock API processes on
// loopback, a real SQLite file and the real `pacer` CLI. Jobs die on a
// permanent failure or on exhausted transient attempts; `pacer dead list` and
// `pacer dead show` report them with their class and attempts; `pacer dead
// replay` moves them back to the queue, where the lane paces them like new
// jobs and they succeed, each exactly once, with dispatch numbers that keep
// increasing (fencing).
//
// The lane and the mock share a 20/s fixed-window limit with a 50 ms margin
// (as in fleet_test), so a replay that burst past the lane's limiter would
// show up as rejections at the mock.
#include <doctest/doctest.h>

#include <chrono>
#include <set>
#include <string>
#include <vector>

#include "tests/support/fleet.h"
#include "tests/support/sql.h"

using namespace pacer::testing;
using json = nlohmann::json;

namespace {

FleetOptions options() {
  return {.mock_args = {"--limit", "20/s", "--algorithm", "fixed", "--latency",
                        "5"},
          .api_toml =
              "limits = [\"20/s\"]\nconcurrency = 16\n"
              "margin = \"50ms\"\nbackoff_base = \"10ms\"\n"
              "backoff_cap = \"50ms\"\n"};
}

void start(Fleet& f) {
  f.start_broker();
  f.start_worker(0);
  f.start_worker(1);
  REQUIRE(f.wait_workers(2));
}

// Makes the mock answer every /v1/* call with `status` (null: normally).
void fail_with(Fleet& f, const json& status) {
  auto r = http_json(f.mock().port(), "POST", "/admin/config",
                     json{{"fail_status", status}}.dump());
  REQUIRE(r.has_value());
  auto config = http_json(f.mock().port(), "GET", "/admin/config");
  REQUIRE(config.has_value());
  REQUIRE((*config)["fail_status"] == status);
}

// Runs `pacer ARGS...` expecting exit 0 and JSON on stdout.
json cli_json(Fleet& f, std::vector<std::string> args) {
  args.push_back("--json");
  auto r = f.cli(args);
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  return json::parse(r.out);
}

std::set<std::int64_t> ids_of(const json& jobs) {
  std::set<std::int64_t> out;
  for (const auto& j : jobs) out.insert(j["id"].get<std::int64_t>());
  return out;
}

std::string id_text(std::int64_t id) { return std::to_string(id); }

}  // namespace

TEST_CASE(
    "jobs refused with 400 die at once; replay --all moves exactly them, "
    "paced, and each succeeds once") {
  Fleet f(options());
  start(f);
  const int n = 40;
  fail_with(f, 400);
  auto ids = f.submit_echo(n, "permanent");
  REQUIRE(f.wait_done(ids, 60s));
  CHECK(f.progress(ids)["dead"] == n);
  const std::string db = f.db_path();
  CHECK(sql_count(db, "SELECT COUNT(*) FROM attempts") == n);
  CHECK(sql_count(db,
                  "SELECT COUNT(*) FROM jobs WHERE state = 'dead' AND "
                  "attempts = 1 AND dispatches = 1 AND last_outcome = "
                  "'permanent' AND result_status = 400") == n);

  // The table lists every one of them.
  auto table = f.cli({"dead", "list", "--limit", "0"});
  CHECK(table.exit_code == 0);
  CHECK(table.out.rfind("ID  API   CLASS      STATUS  ATTEMPTS  DEAD_SINCE",
                        0) == 0);
  int lines = 0;
  for (char c : table.out) lines += c == '\n';
  CHECK(lines == n + 1);
  CHECK(table.out.find("echo  permanent     400       1/5") !=
        std::string::npos);

  // --json carries each job's attempts.
  auto listed = cli_json(f, {"dead", "list", "--limit", "0"});
  REQUIRE(listed.size() == static_cast<std::size_t>(n));
  CHECK(ids_of(listed) == std::set<std::int64_t>(ids.begin(), ids.end()));
  for (const auto& j : listed) {
    CAPTURE(j.dump());
    CHECK(j["class"] == "permanent");
    CHECK(j["outcome"] == "permanent");
    CHECK(j["status"] == 400);
    CHECK(j["attempts"] == 1);
    CHECK(j["dispatches"] == 1);
    REQUIRE(j["attempt_rows"].size() == 1);
    CHECK(j["attempt_rows"][0]["n"] == 1);
    CHECK(j["attempt_rows"][0]["status"] == 400);
    CHECK(j["attempt_rows"][0]["outcome"] == "permanent");
  }
  CHECK(cli_json(f, {"dead", "list", "--class", "transient"}).empty());
  CHECK(
      cli_json(f, {"dead", "list", "--api", "echo", "--since", "1h"}).size() ==
      static_cast<std::size_t>(n));
  auto later = std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::system_clock::now().time_since_epoch())
                   .count() +
               3'600'000;
  CHECK(
      cli_json(f, {"dead", "list", "--since", std::to_string(later)}).empty());

  // A dry run counts them and moves nothing.
  auto dry = f.cli({"dead", "replay", "--all", "--dry-run"});
  CHECK(dry.exit_code == 0);
  CHECK(dry.out == "would move 40 jobs back to queued\n");
  CHECK(sql_count(db, "SELECT COUNT(*) FROM jobs WHERE state = 'dead'") == n);
  CHECK(sql_count(db, "SELECT MAX(dispatches) FROM jobs") == 1);

  // The API recovers; everything dead goes back.
  fail_with(f, nullptr);
  auto replay = f.cli({"dead", "replay", "--all"});
  CHECK(replay.exit_code == 0);
  CHECK(replay.out == "moved 40 jobs back to queued\n");
  REQUIRE(f.wait_done(ids, 60s));
  auto p = f.progress(ids);
  CHECK(p["succeeded"] == n);
  CHECK(p["dead"] == 0);

  // Nothing lost, nothing run twice.
  CHECK(sql_count(db, "SELECT COUNT(*) FROM jobs") == n);
  CHECK(sql_count(db,
                  "SELECT COUNT(*) FROM attempts WHERE outcome = 'success'") ==
        n);
  CHECK(sql_count(db,
                  "SELECT COUNT(*) FROM (SELECT job_id FROM attempts WHERE "
                  "outcome = 'success' GROUP BY job_id HAVING COUNT(*) > 1)") ==
        0);
  auto stats = f.mock().stats();
  CHECK(stats["accepted"] == n);
  // Paced by the lane: no second saw more than 20 requests arrive (refused
  // ones included: the mock counts attempts).
  CHECK(stats["rejected"] == 0);
  CHECK(stats["max_attempted_in_any_interval"].get<int>() <= 20);
  // Fencing: the replayed dispatch got the next number; attempts were reset.
  CHECK(sql_count(db,
                  "SELECT COUNT(*) FROM jobs WHERE dispatches = 2 AND "
                  "attempts = 1 AND state = 'succeeded'") == n);
  CHECK(sql_count(db,
                  "SELECT COUNT(*) FROM attempts WHERE n = 1 AND outcome = "
                  "'permanent'") == n);
  CHECK(sql_count(db,
                  "SELECT COUNT(*) FROM attempts WHERE n = 2 AND outcome = "
                  "'success'") == n);
  CHECK(cli_json(f, {"dead", "list"}).empty());

  // A succeeded job is not dead.
  auto again = f.cli({"dead", "replay", id_text(ids[0])});
  CHECK(again.exit_code == 1);
  CHECK(again.out ==
        "moved 0 jobs back to queued\nnot dead: " + id_text(ids[0]) + "\n");
}

TEST_CASE("replay by id moves only those jobs; a dry run by id moves none") {
  Fleet f(options());
  start(f);
  fail_with(f, 400);
  auto ids = f.submit_echo(5, "by-id");
  REQUIRE(f.wait_done(ids, 60s));
  REQUIRE(f.progress(ids)["dead"] == 5);
  fail_with(f, nullptr);

  auto dry =
      f.cli({"dead", "replay", id_text(ids[1]), id_text(ids[3]), "--dry-run"});
  CHECK(dry.exit_code == 0);
  CHECK(dry.out == "would move 2 jobs back to queued\n");
  CHECK(f.progress(ids)["dead"] == 5);

  auto r = f.cli({"dead", "replay", id_text(ids[1]), id_text(ids[3])});
  CHECK(r.exit_code == 0);
  CHECK(r.out == "moved 2 jobs back to queued\n");
  REQUIRE(f.wait_done({ids[1], ids[3]}, 60s));
  CHECK(f.progress({ids[1], ids[3]})["succeeded"] == 2);
  CHECK(ids_of(cli_json(f, {"dead", "list"})) ==
        std::set<std::int64_t>{ids[0], ids[2], ids[4]});

  // One dead, one no longer: the dead one moves, the other is named.
  auto mixed = f.cli({"dead", "replay", id_text(ids[1]), id_text(ids[2])});
  CHECK(mixed.exit_code == 1);
  CHECK(mixed.out ==
        "moved 1 job back to queued\nnot dead: " + id_text(ids[1]) + "\n");
  REQUIRE(f.wait_done({ids[2]}, 60s));
  CHECK(f.progress({ids[2]})["succeeded"] == 1);

  auto show = f.cli({"dead", "show", id_text(ids[0])});
  CHECK(show.exit_code == 0);
  CAPTURE(show.out);
  CHECK(show.out.rfind("job " + id_text(ids[0]) + " (echo): dead since ", 0) ==
        0);
  CHECK(show.out.find(", class permanent\n") != std::string::npos);
  CHECK(show.out.find("last:      outcome permanent, HTTP 400") !=
        std::string::npos);
  auto not_dead = f.cli({"dead", "show", id_text(ids[1])});
  CHECK(not_dead.exit_code == 1);
  CHECK(not_dead.err ==
        "pacer: job " + id_text(ids[1]) + " is succeeded, not dead\n");

  auto usage = f.cli({"dead", "replay"});
  CHECK(usage.exit_code == 2);
  CHECK(f.progress(ids)["dead"] == 2);
  CHECK(f.mock().stats()["accepted"] == 3);
}

TEST_CASE(
    "jobs that exhaust their attempts on 500s are listed as transient with "
    "every attempt, and a class filter replays them") {
  Fleet f(options());
  start(f);
  fail_with(f, 500);
  // Two jobs of two attempts: four failures in a row.
  auto ids = f.submit_echo(2, "transient", {{"max_attempts", 2}});
  REQUIRE(f.wait_done(ids, 60s));
  REQUIRE(f.progress(ids)["dead"] == 2);

  auto listed = cli_json(f, {"dead", "list", "--class", "transient"});
  REQUIRE(listed.size() == 2);
  CHECK(ids_of(listed) == std::set<std::int64_t>(ids.begin(), ids.end()));
  for (const auto& j : listed) {
    CAPTURE(j.dump());
    CHECK(j["class"] == "transient");
    CHECK(j["outcome"] == "transient");
    CHECK(j["status"] == 500);
    CHECK(j["attempts"] == 2);
    CHECK(j["max_attempts"] == 2);
    CHECK(j["dispatches"] == 2);
    CHECK(j["error"].get<std::string>().rfind("attempts exhausted (2)", 0) ==
          0);
    REQUIRE(j["attempt_rows"].size() == 2);
    for (int i = 0; i < 2; ++i) {
      CHECK(j["attempt_rows"][i]["n"] == i + 1);
      CHECK(j["attempt_rows"][i]["outcome"] == "transient");
      CHECK(j["attempt_rows"][i]["status"] == 500);
      CHECK(j["attempt_rows"][i]["worker"].get<std::string>().rfind("worker-",
                                                                    0) == 0);
    }
  }
  CHECK(cli_json(f, {"dead", "list", "--class", "permanent"}).empty());
  CHECK(cli_json(f, {"dead", "list", "--class", "rate_limited"}).empty());

  auto show = f.cli({"dead", "show", id_text(ids[0])});
  CHECK(show.exit_code == 0);
  CAPTURE(show.out);
  CHECK(show.out.find(", class transient\n") != std::string::npos);
  CHECK(show.out.find("attempts:  2 used of 2, dispatch number 2\n") !=
        std::string::npos);
  CHECK(show.out.find("\n1  worker-") != std::string::npos);
  CHECK(show.out.find("\n2  worker-") != std::string::npos);

  fail_with(f, nullptr);
  auto r = f.cli({"dead", "replay", "--class", "transient"});
  CHECK(r.exit_code == 0);
  CHECK(r.out == "moved 2 jobs back to queued\n");
  REQUIRE(f.wait_done(ids, 60s));
  CHECK(f.progress(ids)["succeeded"] == 2);
  // A whole new attempt budget, numbering continued from the old dispatches.
  const std::string db = f.db_path();
  CHECK(sql_count(db,
                  "SELECT COUNT(*) FROM jobs WHERE state = 'succeeded' AND "
                  "attempts = 1 AND dispatches = 3") == 2);
  CHECK(sql_count(db,
                  "SELECT COUNT(*) FROM attempts WHERE n = 3 AND outcome = "
                  "'success'") == 2);
  CHECK(sql_count(db, "SELECT COUNT(*) FROM attempts") == 6);
  CHECK(f.mock().stats()["accepted"] == 2);
}
