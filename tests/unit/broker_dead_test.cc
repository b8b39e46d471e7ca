// Dead letters in the broker's store, against real SQLite files: the failure
// class of every outcome, DEAD_LIST's filters and paging, the jobs_dead index,
// and requeue_dead (what it resets, and that it keeps the fencing token).
#include <doctest/doctest.h>
#include <sqlite3.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "broker/store.h"
#include "common/job.h"
#include "schema_migrations.h"
#include "tests/support/process.h"

using nlohmann::json;
using pacer::DeadFilter;
using pacer::FailureClass;
using pacer::JobId;
using pacer::JobState;
using pacer::Millis;
using pacer::Outcome;
using pacer::Store;
using pacer::testing::TempDir;

namespace {

constexpr Millis t0 = 1'700'000'000'000;

JobId insert(Store& s, const std::string& api = "echo", int max_attempts = 5) {
  auto spec = pacer::parse_job_spec(
      {{"api", api}, {"method", "POST"}, {"path", "/v1/echo"}});
  REQUIRE(spec.ok());
  return s.insert_job(*spec, "g-dead", max_attempts, 30'000, t0).id;
}

// One attempt that ends the way `next` and `outcome` say.
int run_attempt(Store& s, JobId id, const std::string& api, Millis at,
                JobState next, Outcome outcome, int status,
                const std::string& error) {
  auto c = s.claim(id, api, "worker-a", at, 1000);
  REQUIRE(c.has_value());
  pacer::AttemptEnd e;
  e.id = id;
  e.attempt = c->attempt;
  e.next = next;
  e.outcome = outcome;
  e.uses_attempt = outcome != Outcome::kRateLimited;
  e.status = status;
  e.error = error;
  e.run_at = at;
  if (outcome == Outcome::kRateLimited) e.quota_deadline = at;
  REQUIRE(s.end_attempt(e, at + 5));
  return c->attempt;
}

JobId dead_job(Store& s, Outcome outcome, Millis at,
               const std::string& api = "echo", int status = 400) {
  JobId id = insert(s, api);
  run_attempt(s, id, api, at, JobState::kDead, outcome, status,
              "HTTP " + std::to_string(status));
  return id;
}

std::vector<JobId> ids_of(const json& reply) {
  std::vector<JobId> out;
  for (auto& j : reply["jobs"]) out.push_back(j["id"].get<JobId>());
  return out;
}

std::string query_plan(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) ==
          SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  REQUIRE(sqlite3_prepare_v2(db, ("EXPLAIN QUERY PLAN " + sql).c_str(), -1, &st,
                             nullptr) == SQLITE_OK);
  std::string plan;
  while (sqlite3_step(st) == SQLITE_ROW)
    plan += reinterpret_cast<const char*>(sqlite3_column_text(st, 3)) +
            std::string("\n");
  sqlite3_finalize(st);
  sqlite3_close(db);
  return plan;
}

}  // namespace

TEST_CASE("every outcome maps to one failure class, as documented") {
  CHECK(pacer::failure_class(Outcome::kRateLimited) ==
        FailureClass::kRateLimited);
  CHECK(pacer::failure_class(Outcome::kTransient) == FailureClass::kTransient);
  CHECK(pacer::failure_class(Outcome::kLost) == FailureClass::kTransient);
  CHECK(pacer::failure_class(Outcome::kPermanent) == FailureClass::kPermanent);
  CHECK(pacer::failure_class(Outcome::kCanceled) == FailureClass::kPermanent);
  CHECK(pacer::failure_class(Outcome::kSuccess) == FailureClass::kPermanent);
  for (const char* name : {"rate_limited", "transient", "permanent"}) {
    auto c = pacer::parse_failure_class(name);
    REQUIRE(c.has_value());
    CHECK(pacer::to_string(*c) == name);
  }
  CHECK_FALSE(pacer::parse_failure_class("lost").has_value());
  CHECK_FALSE(pacer::parse_failure_class("").has_value());
}

TEST_CASE("dead_list filters by api, class and since, in id order, paged") {
  TempDir dir;
  Store s(dir.file("pacer.db"), false);
  s.begin();
  JobId perm = dead_job(s, Outcome::kPermanent, t0 + 100);
  JobId trans = dead_job(s, Outcome::kTransient, t0 + 200, "echo", 503);
  JobId lost = dead_job(s, Outcome::kLost, t0 + 300, "echo", 0);
  JobId quota = dead_job(s, Outcome::kRateLimited, t0 + 400, "echo", 429);
  JobId other = dead_job(s, Outcome::kPermanent, t0 + 500, "other");
  JobId done = insert(s);
  run_attempt(s, done, "echo", t0, JobState::kSucceeded, Outcome::kSuccess, 200,
              "");
  insert(s);  // queued
  s.commit();

  DeadFilter all;
  all.limit = 100;
  auto r = s.dead_list(all, false);
  CHECK(ids_of(r) == std::vector<JobId>{perm, trans, lost, quota, other});
  CHECK(r["next"].is_null());
  auto& first = r["jobs"][0];
  CHECK(first["api"] == "echo");
  CHECK(first["method"] == "POST");
  CHECK(first["path"] == "/v1/echo");
  CHECK(first["group"] == "g-dead");
  CHECK(first["created_ms"] == t0);
  CHECK(first["finished_ms"] == t0 + 105);
  CHECK(first["attempts"] == 1);
  CHECK(first["max_attempts"] == 5);
  CHECK(first["dispatches"] == 1);
  CHECK(first["class"] == "permanent");
  CHECK(first["outcome"] == "permanent");
  CHECK(first["status"] == 400);
  CHECK(first["error"] == "HTTP 400");
  CHECK_FALSE(first.contains("attempt_rows"));
  CHECK(r["jobs"][2]["class"] == "transient");  // lost
  CHECK(r["jobs"][2]["status"].is_null());
  CHECK(r["jobs"][3]["class"] == "rate_limited");
  CHECK(r["jobs"][3]["attempts"] == 0);  // 429s use no attempt

  DeadFilter f = all;
  f.failure_class = FailureClass::kTransient;
  CHECK(ids_of(s.dead_list(f, false)) == std::vector<JobId>{trans, lost});
  f.failure_class = FailureClass::kPermanent;
  CHECK(ids_of(s.dead_list(f, false)) == std::vector<JobId>{perm, other});
  f.api = "echo";
  CHECK(ids_of(s.dead_list(f, false)) == std::vector<JobId>{perm});
  f = all;
  f.since = t0 + 305;
  CHECK(ids_of(s.dead_list(f, false)) ==
        std::vector<JobId>{lost, quota, other});
  f.api = "nope";
  CHECK(s.dead_list(f, false)["jobs"].empty());

  // Paging: `next` is the last id of a full page, `after` continues.
  f = all;
  f.limit = 2;
  auto p1 = s.dead_list(f, false);
  CHECK(ids_of(p1) == std::vector<JobId>{perm, trans});
  CHECK(p1["next"] == trans);
  f.after = trans;
  auto p2 = s.dead_list(f, false);
  CHECK(ids_of(p2) == std::vector<JobId>{lost, quota});
  f.after = quota;
  auto p3 = s.dead_list(f, false);
  CHECK(ids_of(p3) == std::vector<JobId>{other});
  CHECK(p3["next"].is_null());

  // dead_page gives the same jobs (ids and apis) for a replay step.
  f = all;
  f.failure_class = FailureClass::kPermanent;
  auto page = s.dead_page(f);
  REQUIRE(page.size() == 2);
  CHECK(page[1].id == other);
  CHECK(page[1].api == "other");
}

TEST_CASE("dead_jobs returns exactly the ids asked, with every attempt row") {
  TempDir dir;
  Store s(dir.file("pacer.db"), false);
  s.begin();
  JobId id = insert(s, "echo", 2);
  run_attempt(s, id, "echo", t0 + 10, JobState::kRetrying, Outcome::kTransient,
              500, "HTTP 500");
  run_attempt(s, id, "echo", t0 + 20, JobState::kDead, Outcome::kTransient, 503,
              "attempts exhausted (2): HTTP 503");
  JobId queued = insert(s);
  s.commit();

  auto r = s.dead_jobs({id, queued, 999}, true);
  REQUIRE(r["jobs"].size() == 1);
  CHECK(r["not_dead"] == json{queued, 999});
  auto& j = r["jobs"][0];
  CHECK(j["class"] == "transient");
  CHECK(j["attempts"] == 2);
  CHECK(j["dispatches"] == 2);
  CHECK(j["status"] == 503);
  REQUIRE(j["attempt_rows"].size() == 2);
  CHECK(j["attempt_rows"][0]["n"] == 1);
  CHECK(j["attempt_rows"][0]["worker"] == "worker-a");
  CHECK(j["attempt_rows"][0]["outcome"] == "transient");
  CHECK(j["attempt_rows"][0]["status"] == 500);
  CHECK(j["attempt_rows"][1]["n"] == 2);
  CHECK(j["attempt_rows"][1]["error"] == "attempts exhausted (2): HTTP 503");
  CHECK(j["attempt_rows"][1]["started_ms"] == t0 + 20);
  CHECK(j["attempt_rows"][1]["finished_ms"] == t0 + 25);
}

TEST_CASE(
    "requeue_dead resets attempts, deadline and times, keeps the fencing "
    "token") {
  TempDir dir;
  Store s(dir.file("pacer.db"), false);
  s.begin();
  JobId quota = dead_job(s, Outcome::kRateLimited, t0 + 10, "echo", 429);
  JobId id = insert(s, "echo", 2);
  run_attempt(s, id, "echo", t0 + 10, JobState::kRetrying, Outcome::kTransient,
              500, "HTTP 500");
  run_attempt(s, id, "echo", t0 + 20, JobState::kDead, Outcome::kTransient, 500,
              "attempts exhausted (2): HTTP 500");
  JobId done = insert(s);
  run_attempt(s, done, "echo", t0, JobState::kSucceeded, Outcome::kSuccess, 200,
              "");
  s.commit();

  const Millis now = t0 + 60'000;
  s.begin();
  CHECK_FALSE(s.requeue_dead(done, now).has_value());
  CHECK_FALSE(s.requeue_dead(424242, now).has_value());
  auto e = s.requeue_dead(id, now);
  REQUIRE(e.has_value());
  CHECK(e->id == id);
  CHECK(e->run_at == now);
  CHECK(e->priority == 0);
  CHECK(e->cost == 1);
  CHECK_FALSE(s.requeue_dead(id, now).has_value());  // no longer dead
  REQUIRE(s.requeue_dead(quota, now).has_value());
  s.commit();

  CHECK(s.state_of(id) == JobState::kQueued);
  CHECK(s.state_of(done) == JobState::kSucceeded);
  auto info = s.job_infos({id})[0];
  CHECK(info["attempts"] == 0);
  CHECK(info["run_at_ms"] == now);
  CHECK(info["finished_ms"].is_null());
  // The last error stays until the next attempt ends.
  CHECK(info["error"] == "attempts exhausted (2): HTTP 500");
  CHECK(s.dead_list(DeadFilter{}, false)["jobs"].empty());

  // Ready again at once, and the next dispatch continues the numbering.
  auto ready = s.ready("echo", now, 10);
  REQUIRE(ready.size() == 2);
  CHECK(ready[0].id == quota);
  CHECK(ready[1].id == id);
  s.begin();
  auto c = s.claim(id, "echo", "worker-b", now, 1000);
  REQUIRE(c.has_value());
  CHECK(c->attempt == 3);
  CHECK(c->attempts_used == 0);
  CHECK(c->max_attempts == 2);
  auto q = s.claim(quota, "echo", "worker-b", now, 1000);
  REQUIRE(q.has_value());
  CHECK_FALSE(q->quota_deadline.has_value());
  // A late result of the old attempt is refused (fencing).
  pacer::AttemptEnd stale;
  stale.id = id;
  stale.attempt = 2;
  stale.next = JobState::kSucceeded;
  stale.outcome = Outcome::kSuccess;
  CHECK_FALSE(s.end_attempt(stale, now));
  pacer::AttemptEnd ok = stale;
  ok.attempt = 3;
  ok.status = 200;
  CHECK(s.end_attempt(ok, now + 1));
  s.commit();
  auto after = s.job_result(id);
  REQUIRE(after.has_value());
  CHECK((*after)["job"]["state"] == "succeeded");
  CHECK((*after)["job"]["error"].is_null());
  CHECK((*after)["attempts"].size() == 3);
}

TEST_CASE("the dead-letter queries walk the jobs_dead index") {
  TempDir dir;
  const std::string path = dir.file("pacer.db");
  {
    Store s(path, false);
    s.begin();
    for (int i = 0; i < 20; ++i) dead_job(s, Outcome::kPermanent, t0 + i);
    s.commit();
    DeadFilter f;
    f.api = "echo";
    f.failure_class = FailureClass::kPermanent;
    f.since = t0;
    // The store's statements prepare (INDEXED BY fails otherwise).
    CHECK(s.dead_list(f, false)["jobs"].size() == 20);
    CHECK(s.dead_page(f).size() == 20);
  }
  std::string plan = query_plan(
      path,
      "SELECT id, api FROM jobs INDEXED BY jobs_dead WHERE state = 'dead' AND "
      "id > 0 AND (NULL IS NULL OR api = 'echo') ORDER BY id LIMIT 10");
  CAPTURE(plan);
  // Not reported as covering (the table has `state`), but SQLite defers the
  // row lookup until the filters on the index's columns have passed.
  CHECK(plan.find("USING INDEX jobs_dead (id>?)") != std::string::npos);
  CHECK(plan.find("SCAN jobs") == std::string::npos);
  CHECK(plan.find("TEMP B-TREE") == std::string::npos);
}

TEST_CASE("a version 1 database with dead jobs is migrated and lists them") {
  TempDir dir;
  const std::string path = dir.file("pacer.db");
  {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
    std::string sql = std::string(pacer::schema::kMigrations[0]) +
                      "; PRAGMA user_version = 1;"
                      " INSERT INTO jobs (api, state, method, path, run_at,"
                      " max_attempts, timeout_ms, attempts, dispatches,"
                      " created_at, updated_at, finished_at, last_outcome,"
                      " last_error, result_status) VALUES ('echo', 'dead',"
                      " 'GET', '/', 1, 5, 1000, 5, 5, 1, 2, 3, 'lost',"
                      " 'attempts exhausted (5): worker lost', NULL)";
    char* err = nullptr;
    int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
    std::string msg = err ? err : "";
    sqlite3_free(err);
    sqlite3_close(db);
    REQUIRE_MESSAGE(rc == SQLITE_OK, msg);
  }
  Store s(path, false);
  CHECK(s.schema_version() >= 2);
  DeadFilter f;
  f.failure_class = FailureClass::kTransient;
  auto r = s.dead_list(f, false);
  REQUIRE(r["jobs"].size() == 1);
  CHECK(r["jobs"][0]["dispatches"] == 5);
  CHECK(r["jobs"][0]["finished_ms"] == 3);
}
