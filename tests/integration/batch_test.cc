// End-to-end batching: real broker, workers and mock API processes on
// loopback, a real SQLite file. Jobs with a batch key go out as batched
// calls to the mock's POST /v1/batch ({"inputs": [...]} -> {"results":
// [...]}); the test checks the number of calls, that the mock refused none
// (or, where it is made to, that refusals lose nothing), that every job got
// its own share of the response, what becomes of members whose item failed
// or whose response did not split, and that a broker killed with batches
// in flight loses none of their members.
#include <doctest/doctest.h>
#include <signal.h>

#include <chrono>
#include <string>
#include <vector>

#include "tests/support/fleet.h"
#include "tests/support/sql.h"

using namespace pacer::testing;
using json = nlohmann::json;
using pacer::protocol::Command;

namespace {

constexpr const char* kBatch =
    "[api.echo.batch]\n"
    "path = \"/v1/batch\"\n"
    "max_items = 50\n"
    "max_wait = \"200ms\"\n"
    "request_array = \"/inputs\"\n"
    "response_array = \"/results\"\n";

FleetOptions options(const std::string& mock_limit,
                     const std::string& lane_limit, int max_attempts = 5,
                     const std::string& batch_extra = "") {
  return {.mock_args = {"--limit", mock_limit, "--algorithm", "fixed",
                        "--latency", "5"},
          .api_toml = "limits = [\"" + lane_limit +
                      "\"]\nconcurrency = 8\nmargin = \"50ms\"\n"
                      "backoff_base = \"10ms\"\nbackoff_cap = \"50ms\"\n"
                      "max_attempts = " +
                      std::to_string(max_attempts) + "\n",
          .extra_toml = std::string(kBatch) + batch_extra};
}

void start(Fleet& f) {
  f.start_broker();
  f.start_worker(0);
  f.start_worker(1);
  REQUIRE(f.wait_workers(2));
}

// Submits `n` jobs {"n": i} with batch key `key`, in SUBMITs of 1,000.
std::vector<std::int64_t> submit_batchable(Fleet& f, int n,
                                           const std::string& key) {
  std::vector<std::int64_t> ids;
  for (int from = 0; from < n; from += 1000) {
    json jobs = json::array();
    for (int i = from; i < std::min(n, from + 1000); ++i)
      jobs.push_back({{"api", "echo"},
                      {"path", "/v1/echo"},
                      {"body", {{"n", i}}},
                      {"batch_key", key}});
    auto r = f.request(Command::kSubmit, {{"jobs", jobs}, {"req", "s"}});
    REQUIRE(r.has_value());
    REQUIRE_MESSAGE((*r)["ok"] == true, r->dump());
    for (auto& id : (*r)["ids"]) ids.push_back(id.get<std::int64_t>());
  }
  return ids;
}

void set_mock(Fleet& f, const json& config) {
  auto r = http_json(f.mock().port(), "POST", "/admin/config", config.dump());
  REQUIRE(r.has_value());
}

// Every succeeded job's result is the mock's item for its own input.
void check_own_results(Fleet& f, int n) {
  auto rows = sql_rows(f.db_path(),
                       "SELECT body, result_body FROM jobs WHERE state = "
                       "'succeeded' ORDER BY id");
  REQUIRE(static_cast<int>(rows.size()) == n);
  int mismatched = 0;
  for (auto& row : rows) {
    json in = json::parse(row[0]);
    json out = json::parse(row[1], nullptr, false);
    if (out.is_discarded() || !out.contains("echo") || out["echo"] != in)
      ++mismatched;
  }
  CHECK(mismatched == 0);
}

}  // namespace

TEST_CASE("2,000 batchable jobs through a 10 requests/s lane: ~40 calls") {
  Fleet f(options("10/s", "10/s"));
  start(f);
  auto ids = submit_batchable(f, 2000, "k");
  REQUIRE(f.wait_done(ids, 120s));
  auto p = f.progress(ids);
  CHECK(p["succeeded"] == 2000);
  check_own_results(f, 2000);

  auto stats = f.mock().stats();
  INFO(stats.dump());
  CHECK(stats["rejected"] == 0);
  CHECK(stats["batch_items"] == 2000);
  // 2,000 / 50 = 40 calls; the first ones may leave before the whole
  // submission is in the window.
  CHECK(stats["batch_requests"] >= 40);
  CHECK(stats["batch_requests"] <= 45);
  // Every call the lane sent, refused or not, in any second: the lane's
  // limit holds at the server (the mock counts attempts, not only what it
  // let through, so this can fail).
  CHECK(stats["max_attempted_in_any_interval"] <= 10);
  MESSAGE("2,000 jobs in " << stats["batch_requests"] << " calls, "
                           << stats["rejected"] << " refused");

  // Every member's attempt names its batch, and each batch row says how
  // many went in it.
  const std::string db = f.db_path();
  CHECK(sql_count(db, "SELECT COUNT(*) FROM attempts WHERE batch_id IS NULL") ==
        0);
  CHECK(sql_count(db, "SELECT COUNT(*) FROM batches") ==
        stats["batch_requests"].get<std::int64_t>());
  CHECK(sql_count(db, "SELECT SUM(items) FROM batches") == 2000);
  CHECK(sql_count(db, "SELECT MAX(items) FROM batches") == 50);

  // STATUS names the batch; STATS counts batches per lane.
  auto st = f.request(Command::kStatus, {{"ids", {ids[0]}}, {"req", "st"}});
  REQUIRE(st.has_value());
  CHECK((*st)["jobs"][0]["batch"]["size"].get<int>() >= 1);
  auto s = f.request(Command::kStats, {{"req", "x"}});
  REQUIRE(s.has_value());
  json lane;
  for (auto& l : (*s)["lanes"])
    if (l["api"] == "echo") lane = l;
  CHECK(lane["batches_total"] == stats["batch_requests"]);
  CHECK(lane["dispatched_total"] == 2000);
  CHECK(lane["mean_batch_size"].get<double>() > 40.0);
}

TEST_CASE("failed items are retried alone, the rest of their batch succeeds") {
  Fleet f(options("1000/s", "100/s", 10, "item_error = \"/error\"\n"));
  set_mock(f, {{"batch_item_error_every", 7}});
  start(f);
  auto ids = submit_batchable(f, 300, "k");
  REQUIRE(f.wait_done(ids, 120s));
  auto p = f.progress(ids);
  INFO(p.dump());
  CHECK(p["succeeded"] == 300);
  check_own_results(f, 300);
  const std::string db = f.db_path();
  // Some members failed and took another attempt; the failure is recorded
  // on their attempt rows with the item's error.
  CHECK(sql_count(db, "SELECT COUNT(*) FROM jobs WHERE dispatches > 1") > 0);
  CHECK(sql_count(db,
                  "SELECT COUNT(*) FROM attempts WHERE outcome = 'transient' "
                  "AND error LIKE 'batch item failed: %item_failed%'") > 0);
  // A failed item does not fail its batch: attempts that succeeded shared
  // a batch with attempts that failed.
  CHECK(sql_count(db,
                  "SELECT COUNT(DISTINCT a.batch_id) FROM attempts a JOIN "
                  "attempts b ON a.batch_id = b.batch_id WHERE a.outcome = "
                  "'success' AND b.outcome = 'transient'") > 0);
}

TEST_CASE("429s on batches lose nothing") {
  // The lane believes 10/s; the mock allows 2/s: batches are refused, their
  // members wait for quota and go again, possibly in other batches.
  Fleet f(options("2/s", "10/s", 3));
  f.start_broker();
  auto ids = submit_batchable(f, 300, "k");
  f.start_worker(0);
  f.start_worker(1);
  REQUIRE(f.wait_workers(2));
  REQUIRE(f.wait_done(ids, 180s));
  auto p = f.progress(ids);
  INFO(p.dump());
  CHECK(p["succeeded"] == 300);
  CHECK(p["dead"] == 0);
  check_own_results(f, 300);
  auto stats = f.mock().stats();
  INFO(stats.dump());
  CHECK(stats["rejected"].get<int>() > 0);
  // 429s used no attempt (members went to waiting_quota, not retrying):
  // the one attempt each job used is its success.
  CHECK(sql_count(f.db_path(),
                  "SELECT COUNT(*) FROM attempts WHERE outcome = "
                  "'rate_limited'") > 0);
  CHECK(sql_count(f.db_path(), "SELECT MAX(attempts) FROM jobs") == 1);
}

TEST_CASE("a response that does not split fails each member, saying why") {
  Fleet f(options("1000/s", "100/s", 1));
  start(f);
  SUBCASE("a result missing") { set_mock(f, {{"batch_short", true}}); }
  SUBCASE("not JSON") { set_mock(f, {{"batch_non_json", true}}); }
  auto ids = submit_batchable(f, 20, "k");
  REQUIRE(f.wait_done(ids, 60s));
  auto p = f.progress(ids);
  CHECK(p["dead"] == 20);
  auto rows = sql_rows(f.db_path(),
                       "SELECT DISTINCT last_error FROM jobs WHERE state = "
                       "'dead'");
  REQUIRE(!rows.empty());
  for (auto& r : rows) {
    INFO(r[0]);
    CHECK(r[0].find("batch response: ") != std::string::npos);
    CHECK(r[0].find("attempts exhausted (1)") != std::string::npos);
  }
}

TEST_CASE("jobs without a key and keyed jobs share the lane") {
  Fleet f(options("50/s", "50/s"));
  start(f);
  auto batched = submit_batchable(f, 200, "k");
  auto single = f.submit_echo(50, "single");
  auto all = batched;
  all.insert(all.end(), single.begin(), single.end());
  REQUIRE(f.wait_done(all, 60s));
  CHECK(f.progress(all)["succeeded"] == 250);
  auto stats = f.mock().stats();
  CHECK(stats["rejected"] == 0);
  CHECK(stats["batch_items"] == 200);
  CHECK(sql_count(f.db_path(),
                  "SELECT COUNT(*) FROM attempts WHERE batch_id IS NULL") ==
        50);

  // APIS reports the lane's batch settings as loaded.
  auto apis = f.request(Command::kApis, {{"req", "a"}});
  REQUIRE(apis.has_value());
  const json& a = (*apis)["apis"][0];
  CHECK(a["name"] == "echo");
  CHECK(a["batch"]["path"] == "/v1/batch");
  CHECK(a["batch"]["max_items"] == 50);
  CHECK(a["batch"]["max_wait_ms"] == 200);
  CHECK(a["batch"]["cost"] == "request");
  CHECK(a["limits"] == json::array({"50/1s"}));
  CHECK(a["max_attempts"] == 5);

  // pacer top, off a terminal: one frame of the lane, and exit 0.
  auto top = f.cli({"top"});
  INFO(top.out << top.err);
  CHECK(top.exit_code == 0);
  CHECK(top.out.find("LANE") != std::string::npos);
  CHECK(top.out.find("echo") != std::string::npos);
  CHECK(top.out.find("done") != std::string::npos);
}

TEST_CASE("the broker killed with batches in flight: nothing is lost") {
  // 300 ms per call, so batches are on the wire when the broker dies. The
  // next broker regroups the running members into their batches; the
  // workers reconnect and deliver the answers (fencing accepts them), or
  // the leases requeue the members.
  FleetOptions o = options("10/s", "10/s");
  o.mock_args = {"--limit", "10/s", "--algorithm", "fixed", "--latency", "300"};
  o.broker_toml = "lease_grace = \"2s\"\n";
  o.extra_toml = std::string(kBatch) + "\n";
  Fleet f(o);
  start(f);
  auto ids = submit_batchable(f, 1000, "k");
  REQUIRE(wait_until(
      [&] {
        auto s = f.mock().stats();
        return s["batch_requests"].get<int>() >= 3;
      },
      60s, 5ms));
  f.broker().signal(SIGKILL);
  REQUIRE(f.broker().wait(10s).has_value());
  // What was running when it died: members of batches.
  CHECK(sql_count(f.db_path(),
                  "SELECT COUNT(*) FROM jobs j JOIN attempts a ON a.job_id = "
                  "j.id AND a.n = j.dispatches WHERE j.state = 'running' AND "
                  "a.batch_id IS NOT NULL") > 0);
  f.start_broker();
  REQUIRE(f.wait_workers(2, 30s));
  REQUIRE(f.wait_done(ids, 180s));
  auto p = f.progress(ids);
  CHECK(p["succeeded"] == 1000);
  check_own_results(f, 1000);
  CHECK(sql_count(f.db_path(), "SELECT COUNT(*) FROM jobs") == 1000);
  CHECK(sql_count(f.db_path(),
                  "SELECT COUNT(*) FROM (SELECT job_id FROM attempts WHERE "
                  "outcome = 'success' GROUP BY job_id HAVING COUNT(*) > 1)") ==
        0);
  auto stats = f.mock().stats();
  INFO(stats.dump());
  CHECK(stats["rejected"] == 0);
}
