// End-to-end: real broker, workers and mock API processes on loopback, a real
// SQLite file. The three scenarios of the foundation: a paced run that the
// upstream never rejects, a worker killed mid-run, and the broker killed
// mid-run and restarted.
//
// The lanes use a 50 ms margin: here four processes share two cores (more
// under sanitizers), and a request can reach the upstream tens of
// milliseconds after the broker let it go. The margin is what absorbs that.
#include "tests/support/fleet.h"

#include <doctest/doctest.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <thread>

#include "tests/support/sql.h"

using namespace pacer::testing;
using pacer::protocol::Command;
using json = nlohmann::json;

namespace {

std::int64_t succeeded(Fleet& f, const std::vector<std::int64_t>& ids) {
  auto p = f.progress(ids);
  return p.is_object() ? p.value("succeeded", std::int64_t{-1}) : -1;
}

}  // namespace

TEST_CASE(
    "1000 jobs through a 50/s lane against a 50/s fixed-window API: none "
    "rejected") {
  Fleet f({.mock_args = {"--limit", "50/s", "--algorithm", "fixed", "--latency",
                         "5"},
           .api_toml =
               "limits = [\"50/s\"]\nconcurrency = 16\nmargin = \"50ms\"\n"});
  f.start_broker();
  f.start_worker(0);
  f.start_worker(1);
  REQUIRE(f.wait_workers(2));

  auto start = std::chrono::steady_clock::now();
  auto ids = f.submit_echo(1000, "paced");
  REQUIRE(ids.size() == 1000);
  REQUIRE(f.wait_done(ids, 180s));
  double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();

  auto p = f.progress(ids);
  CHECK(p["succeeded"] == 1000);
  auto stats = f.mock().stats();
  CHECK(stats["rejected"] == 0);
  CHECK(stats["accepted"] == 1000);
  // No second saw more than 50 requests arrive, refused ones included (the
  // mock counts attempts, so this can fail). How fast is bench/'s business.
  CHECK(stats["max_attempted_in_any_interval"].get<int>() <= 50);
  MESSAGE("1000 jobs in " << elapsed << " s; mock busiest second "
                          << stats["max_attempted_in_any_interval"]);

  // Every job has exactly one attempt, and it succeeded with the echoed body.
  CHECK(sql_count(f.db_path(), "SELECT COUNT(*) FROM attempts") == 1000);
  auto r = f.request(Command::kResult, {{"id", ids[7]}});
  REQUIRE(r);
  CHECK(r->value("ok", false));
  auto body = json::parse((*r)["job"]["body"].get<std::string>());
  CHECK(body["echo"]["n"] == 7);
}

TEST_CASE("a worker killed with SIGKILL mid-run: every job still succeeds") {
  Fleet f({.mock_args = {"--limit", "50/s", "--latency", "200"},
           .api_toml =
               "limits = [\"50/s\"]\nconcurrency = 16\nmargin = \"50ms\"\n"});
  f.start_broker();
  f.start_worker(0);
  f.start_worker(1);
  REQUIRE(f.wait_workers(2));
  auto ids = f.submit_echo(400, "kill-worker");
  REQUIRE(wait_until([&] { return succeeded(f, ids) >= 100; }, 60s, 20ms));
  f.worker(0).signal(SIGKILL);
  REQUIRE(f.worker(0).wait(10s).has_value());
  REQUIRE(f.wait_done(ids, 120s));
  CHECK(f.progress(ids)["succeeded"] == 400);
  // The killed worker had transfers in flight (200 ms latency at 50/s): they
  // were requeued as lost attempts and succeeded elsewhere.
  CHECK(sql_count(f.db_path(),
                  "SELECT COUNT(*) FROM attempts WHERE outcome = 'lost'") > 0);
  CHECK(sql_count(f.db_path(),
                  "SELECT COUNT(*) FROM (SELECT job_id FROM attempts WHERE "
                  "outcome = 'success'"
                  " GROUP BY job_id HAVING COUNT(*) > 1)") == 0);
  CHECK(f.mock().stats()["rejected"] == 0);
}

TEST_CASE(
    "the broker killed with SIGKILL mid-run and restarted: nothing "
    "acknowledged is lost") {
  Fleet f(
      {.mock_args = {"--limit", "50/s", "--algorithm", "fixed", "--latency",
                     "20"},
       .api_toml = "limits = [\"50/s\"]\nconcurrency = 16\nmargin = \"50ms\"\n",
       .broker_toml = "lease_grace = \"2s\"\n"});
  f.start_broker();
  f.start_worker(0);
  f.start_worker(1);
  REQUIRE(f.wait_workers(2));
  std::vector<std::int64_t> acked = f.submit_echo(500, "first");

  // A client keeps submitting small batches through the crash; a batch that
  // got no reply is resent with the same keys, so it is never doubled.
  std::mutex mu;
  std::atomic<bool> done{false};
  std::thread submitter([&] {
    for (int batch = 0; batch < 30 && !done; ++batch) {
      json jobs = json::array();
      for (int i = 0; i < 10; ++i)
        jobs.push_back({{"api", "echo"},
                        {"path", "/v1/echo"},
                        {"body", {{"batch", batch}, {"i", i}}},
                        {"key", "during:" + std::to_string(batch) + ":" +
                                    std::to_string(i)}});
      for (int tries = 0; tries < 200 && !done; ++tries) {
        auto r = f.request(Command::kSubmit, {{"jobs", jobs}}, 1s);
        if (r && r->value("ok", false)) {
          std::lock_guard lock(mu);
          for (auto& id : (*r)["ids"]) acked.push_back(id.get<std::int64_t>());
          break;
        }
      }
    }
  });

  REQUIRE(wait_until(
      [&] {
        return succeeded(f, {acked.begin(), acked.begin() + 500}) >= 150;
      },
      60s, 20ms));
  f.broker().signal(SIGKILL);
  REQUIRE(f.broker().wait(10s).has_value());
  f.start_broker();
  submitter.join();
  std::vector<std::int64_t> all;
  {
    std::lock_guard lock(mu);
    all = acked;
  }
  REQUIRE(all.size() == 800);
  REQUIRE(f.wait_workers(2, 30s));
  REQUIRE(f.wait_done(all, 180s));
  auto p = f.progress(all);
  CHECK(p["total"] == 800);
  CHECK(p["succeeded"] == 800);
  CHECK(std::set<std::int64_t>(all.begin(), all.end()).size() == 800);
  CHECK(sql_count(f.db_path(), "SELECT COUNT(*) FROM jobs") == 800);
  CHECK(sql_count(f.db_path(),
                  "SELECT COUNT(*) FROM (SELECT job_id FROM attempts WHERE "
                  "outcome = 'success'"
                  " GROUP BY job_id HAVING COUNT(*) > 1)") == 0);
  auto stats = f.mock().stats();
  CHECK(stats["rejected"] == 0);
  MESSAGE("mock accepted " << stats["accepted"]
                           << " (jobs re-run after the crash: "
                           << stats["accepted"].get<int>() - 800 << ")");
}

TEST_CASE(
    "a second broker on the same database refuses to start; after the first "
    "is killed it starts") {
  Fleet f({.workers = 0});
  f.start_broker();
  // The same database, endpoints of its own.
  const std::string endpoint = "ipc://" + f.dir().file("clients2.sock");
  f.dir().write("second.toml", "[broker]\ndatabase = \"" + f.db_path() +
                                   "\"\nworker_endpoint = \"ipc://" +
                                   f.dir().file("workers2.sock") +
                                   "\"\nclient_endpoint = \"" + endpoint +
                                   "\"\n[api.echo]\nbase_url = \"" +
                                   f.mock().base_url() + "\"\n");
  const std::vector<std::string> argv = {binary("pacer-broker"), "--config",
                                         f.dir().file("second.toml")};
  {
    Process second(argv, f.dir().path(), "broker-second");
    auto rc = second.wait(30s);
    REQUIRE(rc.has_value());
    CHECK(*rc == 1);
    CHECK_MESSAGE(second.err().find("database " + f.db_path() +
                                    " is in use by another pacer-broker (pid " +
                                    std::to_string(f.broker().pid()) + ")") !=
                      std::string::npos,
                  second.err());
  }
  // The first one never noticed.
  CHECK(f.request(Command::kApis, json::object()).has_value());

  // The kernel drops a killed broker's lock: no stale lock blocks a restart.
  f.broker().signal(SIGKILL);
  REQUIRE(f.broker().wait(10s).has_value());
  Process second(argv, f.dir().path(), "broker-second-again");
  CHECK(wait_until(
      [&] {
        return broker_request(endpoint, Command::kApis, json::object(), 500ms)
            .has_value();
      },
      30s));
  CHECK(second.stop(10s) == 0);
}
