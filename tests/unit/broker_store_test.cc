// The broker's job store against real SQLite files in temporary directories:
// migration, insertion and idempotency, the ready order and delayed jobs,
// claiming and fenced attempt ends, cancel, purge, the read queries, savepoint
// rollback, durability across close, crash and reopen, and the query plans of
// the hot queries.
#include <doctest/doctest.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "broker/store.h"
#include "common/job.h"
#include "schema_migrations.h"
#include "tests/support/process.h"

using nlohmann::json;
using pacer::Claimed;
using pacer::JobId;
using pacer::JobSpec;
using pacer::JobState;
using pacer::Millis;
using pacer::Outcome;
using pacer::ReadyEntry;
using pacer::Store;
using pacer::sqlite::StoreError;
using pacer::testing::TempDir;
using namespace std::chrono_literals;

namespace {

constexpr Millis t0 = 1'700'000'000'000;
// The schema version of a fully migrated database.
constexpr int kSchemaVersion =
    static_cast<int>(std::size(pacer::schema::kMigrations));

// A second, independent connection to the same file: what another process
// (or the next broker after a crash) would see.
class RawDb {
 public:
  explicit RawDb(const std::string& path) {
    int rc =
        sqlite3_open_v2(path.c_str(), &db_,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
    REQUIRE(rc == SQLITE_OK);
  }
  ~RawDb() { sqlite3_close_v2(db_); }
  RawDb(const RawDb&) = delete;
  RawDb& operator=(const RawDb&) = delete;

  void exec(const std::string& sql) {
    char* err = nullptr;
    int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err);
    std::string msg = err ? err : "";
    sqlite3_free(err);
    REQUIRE_MESSAGE(rc == SQLITE_OK, sql << ": " << msg);
  }

  std::vector<std::vector<std::string>> rows(const std::string& sql) {
    sqlite3_stmt* s = nullptr;
    int rc = sqlite3_prepare_v2(db_, sql.c_str(), -1, &s, nullptr);
    REQUIRE_MESSAGE(rc == SQLITE_OK, sql << ": " << sqlite3_errmsg(db_));
    std::vector<std::vector<std::string>> out;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
      std::vector<std::string> row;
      for (int i = 0; i < sqlite3_column_count(s); ++i) {
        auto* p = reinterpret_cast<const char*>(sqlite3_column_text(s, i));
        row.push_back(p ? p : "NULL");
      }
      out.push_back(std::move(row));
    }
    sqlite3_finalize(s);
    REQUIRE_MESSAGE(rc == SQLITE_DONE, sql << ": " << sqlite3_errmsg(db_));
    return out;
  }

  std::int64_t scalar(const std::string& sql) {
    auto r = rows(sql);
    REQUIRE(r.size() == 1);
    REQUIRE(r[0].size() == 1);
    return std::stoll(r[0][0]);
  }

 private:
  sqlite3* db_ = nullptr;
};

JobSpec spec(json j = json::object()) {
  if (!j.contains("api")) j["api"] = "echo";
  auto r = pacer::parse_job_spec(j);
  REQUIRE_MESSAGE(r.ok(), r.error());
  return *r;
}

JobId insert(Store& s, json j = json::object(), Millis now = t0,
             const std::string& group = "") {
  return s.insert_job(spec(std::move(j)), group, 5, 30'000, now).id;
}

std::vector<JobId> ids_of(const std::vector<ReadyEntry>& rows) {
  std::vector<JobId> out;
  for (auto& r : rows) out.push_back(r.id);
  return out;
}

std::vector<JobId> ids_of(const json& jobs) {
  std::vector<JobId> out;
  for (auto& j : jobs) out.push_back(j["id"].get<JobId>());
  return out;
}

pacer::AttemptEnd end_of(JobId id, int attempt, JobState next,
                         Outcome outcome) {
  pacer::AttemptEnd e;
  e.id = id;
  e.attempt = attempt;
  e.next = next;
  e.outcome = outcome;
  return e;
}

// Claims and ends one attempt, leaving the job in `next` (a final state).
void finish(Store& s, JobId id, JobState next, Millis at) {
  auto c = s.claim(id, "echo", "w", at, 1000);
  REQUIRE(c.has_value());
  auto e = end_of(
      id, c->attempt, next,
      next == JobState::kSucceeded ? Outcome::kSuccess : Outcome::kPermanent);
  e.run_at = at;
  REQUIRE(s.end_attempt(e, at));
}

// Claims and ends one attempt as a transient failure, to run again at
// `run_at`.
void retry_at(Store& s, JobId id, Millis run_at, Millis at) {
  auto c = s.claim(id, "echo", "w", at, 1000);
  REQUIRE(c.has_value());
  auto e = end_of(id, c->attempt, JobState::kRetrying, Outcome::kTransient);
  e.run_at = run_at;
  REQUIRE(s.end_attempt(e, at));
}

json info(Store& s, JobId id) {
  json infos = s.job_infos({id});
  REQUIRE(infos.size() == 1);
  return infos[0];
}

std::int64_t attempt_rows(RawDb& db, JobId id) {
  return db.scalar("SELECT COUNT(*) FROM attempts WHERE job_id = " +
                   std::to_string(id));
}

}  // namespace

TEST_CASE("a new database is migrated to the latest version, and only once") {
  TempDir dir;
  const std::string path = dir.file("pacer.db");
  {
    Store s(path, false);
    CHECK(s.schema_version() == kSchemaVersion);
  }
  {
    RawDb db(path);
    CHECK(db.scalar("PRAGMA user_version") == kSchemaVersion);
    CHECK(db.rows("PRAGMA journal_mode")[0][0] == "wal");
    for (const char* name :
         {"jobs", "attempts", "lanes", "jobs_ready", "jobs_due", "jobs_running",
          "jobs_finished", "attempts_started", "jobs_dead"}) {
      CAPTURE(std::string(name));
      CHECK(db.scalar(std::string(
                          "SELECT COUNT(*) FROM sqlite_master WHERE name = '") +
                      name + "'") == 1);
    }
    // A marker the migration would destroy (or trip over) if it ran again.
    db.exec("INSERT INTO lanes (api, updated_at) VALUES ('marker', 1)");
  }
  {
    Store s(path, true);
    CHECK(s.schema_version() == kSchemaVersion);
  }
  RawDb db(path);
  CHECK(db.scalar("SELECT COUNT(*) FROM lanes WHERE api = 'marker'") == 1);
  CHECK(db.scalar("PRAGMA user_version") == kSchemaVersion);
}

TEST_CASE("a database from a newer pacer is refused") {
  TempDir dir;
  {
    RawDb db(dir.file("pacer.db"));
    db.exec("PRAGMA user_version = 99");
  }
  try {
    Store s(dir.file("pacer.db"), false);
    FAIL("opened a database of schema version 99");
  } catch (const StoreError& e) {
    CHECK(std::string(e.what()).find("schema version 99") != std::string::npos);
  }
}

TEST_CASE("a database that cannot be opened is a StoreError naming the path") {
  TempDir dir;
  const std::string path = dir.file("no/such/dir/pacer.db");
  try {
    Store s(path, false);
    FAIL("opened " << path);
  } catch (const StoreError& e) {
    CHECK(std::string(e.what()).find(path) != std::string::npos);
  }
}

TEST_CASE("a full database is a StoreError naming the statement that failed") {
  // max_page_count stands in for a full disk: SQLite answers both with
  // SQLITE_FULL, "database or disk is full".
  TempDir dir;
  pacer::sqlite::Database db(dir.file("pacer.db"));
  db.exec("CREATE TABLE t (x BLOB)");
  db.exec("PRAGMA max_page_count = 8");
  std::string failed;
  for (int i = 0; i < 100 && failed.empty(); ++i) {
    try {
      db.exec("INSERT INTO t VALUES (zeroblob(1000))");
    } catch (const StoreError& e) {
      failed = e.what();
    }
  }
  CHECK(failed ==
        "INSERT INTO t VALUES (zeroblob(1000)): database or disk is full");
}

TEST_CASE("a failed migration is rolled back completely") {
  TempDir dir;
  {
    // A table the migration creates after `jobs` and `attempts` already exists.
    RawDb db(dir.file("pacer.db"));
    db.exec("CREATE TABLE lanes (x INTEGER)");
  }
  CHECK_THROWS_AS(Store(dir.file("pacer.db"), false), StoreError);
  RawDb db(dir.file("pacer.db"));
  CHECK(db.scalar("PRAGMA user_version") == 0);
  CHECK(db.scalar("SELECT COUNT(*) FROM sqlite_master WHERE name IN ('jobs', "
                  "'attempts')") == 0);
}

TEST_CASE(
    "insert_job stores the spec; an idempotency key returns the existing job") {
  TempDir dir;
  Store s(dir.file("pacer.db"), false);

  auto a = s.insert_job(spec({{"path", "/v1/x"},
                              {"priority", 5},
                              {"cost", 3},
                              {"key", "k1"},
                              {"batch_key", "b"},
                              {"body", {{"n", 1}}}}),
                        "g1", 7, 1234, t0);
  CHECK(a.id > 0);
  CHECK_FALSE(a.duplicate);
  CHECK(a.entry.id == a.id);
  CHECK(a.entry.priority == 5);
  CHECK(a.entry.run_at == t0);
  CHECK(a.entry.cost == 3);

  // Same key, different everything else: the first job wins, unchanged.
  auto dup = s.insert_job(
      spec({{"priority", 9}, {"cost", 1}, {"key", "k1"}, {"delay", 5000}}),
      "g2", 1, 1, t0 + 50);
  CHECK(dup.duplicate);
  CHECK(dup.id == a.id);
  CHECK(dup.entry.id == a.id);
  CHECK(dup.entry.priority == 5);
  CHECK(dup.entry.run_at == t0);
  CHECK(dup.entry.cost == 3);

  json j = info(s, a.id);
  CHECK(j["api"] == "echo");
  CHECK(j["state"] == "queued");
  CHECK(j["method"] == "POST");
  CHECK(j["path"] == "/v1/x");
  CHECK(j["priority"] == 5);
  CHECK(j["cost"] == 3);
  CHECK(j["group"] == "g1");
  CHECK(j["key"] == "k1");
  CHECK(j["batch_key"] == "b");
  CHECK(j["attempts"] == 0);
  CHECK(j["max_attempts"] == 7);
  CHECK(j["created_ms"] == t0);
  CHECK(j["run_at_ms"] == t0);
  CHECK(j["finished_ms"].is_null());
  CHECK(j["status"].is_null());
  CHECK(j["outcome"].is_null());
  CHECK(j["error"].is_null());

  // Without a key (or with an empty one) every insert is a new job.
  auto n1 = s.insert_job(spec(), "", 5, 30'000, t0);
  auto n2 = s.insert_job(spec(), "", 5, 30'000, t0);
  auto e1 = s.insert_job(spec({{"key", ""}}), "", 5, 30'000, t0);
  auto e2 = s.insert_job(spec({{"key", ""}}), "", 5, 30'000, t0);
  CHECK_FALSE(n1.duplicate);
  CHECK_FALSE(n2.duplicate);
  CHECK_FALSE(e1.duplicate);
  CHECK_FALSE(e2.duplicate);
  CHECK(n1.id != n2.id);
  CHECK(e1.id != e2.id);
  CHECK(info(s, n1.id)["group"].is_null());
  CHECK(info(s, n1.id)["key"].is_null());
  CHECK(info(s, n1.id)["method"] == "GET");

  // A delayed job's entry carries its run_at.
  auto d = s.insert_job(spec({{"delay", "2s"}}), "", 5, 30'000, t0);
  CHECK(d.entry.run_at == t0 + 2000);
  CHECK(info(s, d.id)["run_at_ms"] == t0 + 2000);

  // The same key under another API is still the same job (keys are global).
  auto other =
      s.insert_job(spec({{"api", "other"}, {"key", "k1"}}), "", 5, 30'000, t0);
  CHECK(other.duplicate);
  CHECK(other.id == a.id);
}

TEST_CASE(
    "ready() orders by priority desc, run_at, id; delayed jobs wait for their "
    "time") {
  TempDir dir;
  Store s(dir.file("pacer.db"), false);
  JobId j1 = insert(s, {{"priority", 0}});
  JobId j2 = insert(s, {{"priority", 5}});
  JobId j3 = insert(s, {{"priority", 0}});
  JobId j4 = insert(s, {{"priority", 0}}, t0 - 100);  // older run_at, larger id
  JobId j5 = insert(s, {{"priority", 5}, {"delay", 1000}});
  JobId j6 = insert(s, {{"priority", 9}, {"delay", "500ms"}});
  JobId j7 = insert(s, {{"api", "other"}, {"priority", 100}});
  JobId j8 = insert(s, {{"priority", -3}});

  CHECK(ids_of(s.ready("echo", t0, 100)) ==
        std::vector<JobId>{j2, j4, j1, j3, j8});
  CHECK(ids_of(s.ready("echo", t0, 2)) == std::vector<JobId>{j2, j4});
  auto rows = s.ready("echo", t0, 1);
  REQUIRE(rows.size() == 1);
  CHECK(rows[0].priority == 5);
  CHECK(rows[0].run_at == t0);
  CHECK(rows[0].cost == 1);

  // The delayed jobs: not ready before their time, reported by next_due.
  CHECK(s.next_due("echo", t0) == std::optional<Millis>(t0 + 500));
  CHECK(ids_of(s.ready("echo", t0 + 499, 100)) ==
        std::vector<JobId>{j2, j4, j1, j3, j8});
  CHECK(ids_of(s.ready("echo", t0 + 500, 100)) ==
        std::vector<JobId>{j6, j2, j4, j1, j3, j8});
  CHECK(s.next_due("echo", t0 + 499) == std::optional<Millis>(t0 + 500));
  CHECK(s.next_due("echo", t0 + 500) == std::optional<Millis>(t0 + 1000));
  CHECK(ids_of(s.ready("echo", t0 + 1000, 100)) ==
        std::vector<JobId>{j6, j2, j5, j4, j1, j3, j8});
  CHECK_FALSE(s.next_due("echo", t0 + 1000).has_value());

  CHECK(ids_of(s.ready("other", t0, 100)) == std::vector<JobId>{j7});
  CHECK(s.ready("nobody", t0, 100).empty());
  CHECK_FALSE(s.next_due("other", t0).has_value());
  CHECK_FALSE(s.next_due("nobody", t0).has_value());
  // Delayed jobs count as waiting for dispatch in the per-API summary.
  CHECK(s.apis_with_ready_jobs() ==
        std::map<std::string, std::int64_t>{{"echo", 7}, {"other", 1}});

  // Running and finished jobs are not ready, and a running delayed job is
  // not due.
  REQUIRE(s.claim(j2, "echo", "w", t0, 1000));
  finish(s, j4, JobState::kSucceeded, t0);
  REQUIRE(s.claim(j6, "echo", "w", t0 + 500, 1000));
  CHECK(ids_of(s.ready("echo", t0 + 1000, 100)) ==
        std::vector<JobId>{j5, j1, j3, j8});
  CHECK(s.next_due("echo", t0) == std::optional<Millis>(t0 + 1000));
}

TEST_CASE(
    "only waiting jobs are indexed for next_due; at a start all ready jobs "
    "count") {
  TempDir dir;
  const std::string path = dir.file("pacer.db");
  {
    Store s(path, false);
    // Written at t0 + 1000 by a broker whose clock then stepped back to t0:
    // ready at t0 + 1000, with run_at = updated_at.
    insert(s, {}, t0 + 1000);
    JobId delayed = insert(s, {{"delay", 5000}});
    JobId now = insert(s);
    JobId retried = insert(s);
    retry_at(s, retried, t0 + 3000, t0);
    // A retry without backoff is ready at once, like a job without delay.
    retry_at(s, now, t0, t0);
    CHECK(s.next_due("echo", t0) == std::optional<Millis>(t0 + 3000));
    CHECK(s.next_due("echo", t0, /*any=*/true) ==
          std::optional<Millis>(t0 + 1000));
    CHECK(s.next_due("echo", t0 + 3000) == std::optional<Millis>(t0 + 5000));
    CHECK(s.next_due("echo", t0 + 3000, true) ==
          std::optional<Millis>(t0 + 5000));
    CHECK(s.claim(delayed, "echo", "w", t0 + 5000, 1000));
    CHECK_FALSE(s.next_due("echo", t0 + 3000).has_value());
  }
  // The index holds the waiting jobs only: the backed-off retry.
  RawDb db(path);
  CHECK(db.scalar("SELECT COUNT(*) FROM jobs INDEXED BY jobs_due WHERE "
                  "(state = 'queued' OR state = 'retrying' OR "
                  "state = 'waiting_quota') AND run_at > updated_at") == 1);
}

TEST_CASE("claim moves a ready job to running with a new attempt row") {
  TempDir dir;
  Store s(dir.file("pacer.db"), false);
  JobId id = s.insert_job(spec({{"path", "/v1/echo"},
                                {"headers", {{"X-Trace", "abc"}}},
                                {"body", {{"n", 1}}},
                                {"priority", 3},
                                {"cost", 2}}),
                          "", 4, 5000, t0)
                 .id;
  JobId plain = insert(s);

  auto c = s.claim(id, "echo", "w1", t0 + 10, 35'000);
  REQUIRE(c.has_value());
  CHECK(c->id == id);
  CHECK(c->attempt == 1);
  CHECK(c->attempts_used == 0);
  CHECK(c->max_attempts == 4);
  CHECK(c->method == "POST");
  CHECK(c->path == "/v1/echo");
  CHECK(json::parse(c->headers_json) == json{{"X-Trace", "abc"}});
  CHECK(c->body == std::optional<std::string>("{\"n\":1}"));
  CHECK(c->timeout_ms == 5000);
  CHECK(c->cost == 2);
  CHECK(c->priority == 3);
  CHECK_FALSE(c->quota_deadline.has_value());
  CHECK(s.state_of(id) == JobState::kRunning);
  CHECK(ids_of(s.ready("echo", t0 + 10, 100)) == std::vector<JobId>{plain});

  // The same job cannot be claimed twice.
  CHECK_FALSE(s.claim(id, "echo", "w2", t0 + 11, 35'000).has_value());

  RawDb db(dir.file("pacer.db"));
  CHECK(attempt_rows(db, id) == 1);
  auto row = db.rows(
      "SELECT n, api, cost, worker, started_at, finished_at FROM attempts"
      " WHERE job_id = " +
      std::to_string(id));
  REQUIRE(row.size() == 1);
  CHECK(row[0] == std::vector<std::string>{"1", "echo", "2", "w1",
                                           std::to_string(t0 + 10), "NULL"});

  auto running = s.running_jobs();
  REQUIRE(running.size() == 1);
  CHECK(running[0].id == id);
  CHECK(running[0].api == "echo");
  CHECK(running[0].attempt == 1);
  CHECK(running[0].attempts_used == 0);
  CHECK(running[0].max_attempts == 4);
  CHECK(running[0].cost == 2);
  // The lease is the job's own timeout (5 s) plus the grace given to claim.
  CHECK(running[0].lease_until ==
        std::optional<Millis>(t0 + 10 + 5'000 + 35'000));
  CHECK_FALSE(running[0].quota_deadline.has_value());
  CHECK(running[0].priority == 3);

  // A job without headers or body.
  auto p = s.claim(plain, "echo", "w1", t0 + 20, 1000);
  REQUIRE(p.has_value());
  CHECK(p->headers_json.empty());
  CHECK_FALSE(p->body.has_value());
  CHECK(p->method == "GET");
  CHECK(s.running_jobs().size() == 2);

  // Bodies are bytes: NULs and invalid UTF-8 come back unchanged.
  const std::string bytes(
      "a\0b\xFF\xFE"
      "c",
      6);
  JobId binary = insert(s, {{"body_text", bytes}});
  auto b = s.claim(binary, "echo", "w1", t0 + 30, 1000);
  REQUIRE(b.has_value());
  CHECK(b->body == std::optional<std::string>(bytes));

  // An unknown job cannot be claimed and leaves no attempt row.
  CHECK_FALSE(s.claim(9999, "echo", "w1", t0, 1000).has_value());
  CHECK(attempt_rows(db, 9999) == 0);
}

TEST_CASE("end_attempt applies only to the current attempt (fencing)") {
  TempDir dir;
  Store s(dir.file("pacer.db"), false);
  JobId id = insert(s);
  auto c1 = s.claim(id, "echo", "w1", t0, 1000);
  REQUIRE(c1.has_value());

  auto retry = end_of(id, 1, JobState::kRetrying, Outcome::kTransient);
  retry.status = 503;
  retry.error = "boom";
  retry.run_at = t0 + 2000;
  retry.duration_ms = 12.5;
  REQUIRE(s.end_attempt(retry, t0 + 100));
  json j = info(s, id);
  CHECK(j["state"] == "retrying");
  CHECK(j["attempts"] == 1);
  CHECK(j["status"] == 503);
  CHECK(j["outcome"] == "transient");
  CHECK(j["error"] == "boom");
  CHECK(j["finished_ms"].is_null());
  CHECK(j["run_at_ms"] == t0 + 2000);
  CHECK(s.running_jobs().empty());

  // Ready again at run_at, not before.
  CHECK(s.ready("echo", t0 + 1999, 10).empty());
  CHECK(s.next_due("echo", t0 + 100) == std::optional<Millis>(t0 + 2000));
  CHECK(ids_of(s.ready("echo", t0 + 2000, 10)) == std::vector<JobId>{id});

  // Ending attempt 1 again does nothing: the job is not running.
  CHECK_FALSE(s.end_attempt(
      end_of(id, 1, JobState::kSucceeded, Outcome::kSuccess), t0 + 150));
  CHECK(s.state_of(id) == JobState::kRetrying);

  auto c2 = s.claim(id, "echo", "w2", t0 + 2000, 1000);
  REQUIRE(c2.has_value());
  CHECK(c2->attempt == 2);
  CHECK(c2->attempts_used == 1);

  // A late result of attempt 1 (from a worker presumed dead) is ignored.
  auto stale = end_of(id, 1, JobState::kSucceeded, Outcome::kSuccess);
  stale.status = 200;
  CHECK_FALSE(s.end_attempt(stale, t0 + 2001));
  CHECK(s.state_of(id) == JobState::kRunning);
  // As is an attempt that has not happened.
  CHECK_FALSE(s.end_attempt(
      end_of(id, 3, JobState::kSucceeded, Outcome::kSuccess), t0 + 2001));
  CHECK(s.state_of(id) == JobState::kRunning);

  auto ok = end_of(id, 2, JobState::kSucceeded, Outcome::kSuccess);
  ok.status = 200;
  ok.headers_json = R"({"content-type":"text/plain"})";
  ok.body = std::string("hello\0world", 11);
  ok.duration_ms = 3.25;
  ok.observation_json = R"({"remaining":4})";
  ok.run_at = t0 + 2000;
  REQUIRE(s.end_attempt(ok, t0 + 2050));
  CHECK_FALSE(s.end_attempt(ok, t0 + 2060));  // final: nothing more applies

  auto r = s.job_result(id);
  REQUIRE(r.has_value());
  const json& job = (*r)["job"];
  CHECK(job["state"] == "succeeded");
  CHECK(job["attempts"] == 2);
  CHECK(job["finished_ms"] == t0 + 2050);
  CHECK(job["status"] == 200);
  CHECK(job["outcome"] == "success");
  CHECK(job["error"].is_null());
  CHECK(job["headers"] == json{{"content-type", "text/plain"}});
  CHECK(job["body"] == std::string("hello\0world", 11));
  const json& attempts = (*r)["attempts"];
  REQUIRE(attempts.size() == 2);
  CHECK(attempts[0]["n"] == 1);
  CHECK(attempts[0]["worker"] == "w1");
  CHECK(attempts[0]["started_ms"] == t0);
  CHECK(attempts[0]["finished_ms"] == t0 + 100);
  CHECK(attempts[0]["outcome"] == "transient");
  CHECK(attempts[0]["status"] == 503);
  CHECK(attempts[0]["error"] == "boom");
  CHECK(attempts[0]["duration_ms"] == 12.5);
  CHECK(attempts[1]["n"] == 2);
  CHECK(attempts[1]["worker"] == "w2");
  CHECK(attempts[1]["finished_ms"] == t0 + 2050);
  CHECK(attempts[1]["outcome"] == "success");
  CHECK(attempts[1]["status"] == 200);
  CHECK(attempts[1]["error"].is_null());
  CHECK(attempts[1]["duration_ms"] == 3.25);

  RawDb db(dir.file("pacer.db"));
  CHECK(db.rows("SELECT observation FROM attempts WHERE job_id = " +
                std::to_string(id) + " AND n = 2")[0][0] ==
        R"({"remaining":4})");
  CHECK_FALSE(s.job_result(9999).has_value());
}

TEST_CASE("a rate-limited end (uses_attempt = false) does not use an attempt") {
  TempDir dir;
  Store s(dir.file("pacer.db"), false);
  JobId id = insert(s);
  REQUIRE(s.claim(id, "echo", "w", t0, 1000));

  auto wait = end_of(id, 1, JobState::kWaitingQuota, Outcome::kRateLimited);
  wait.uses_attempt = false;
  wait.status = 429;
  wait.run_at = t0 + 500;
  wait.quota_deadline = t0 + 60'000;
  REQUIRE(s.end_attempt(wait, t0 + 10));
  json j = info(s, id);
  CHECK(j["state"] == "waiting_quota");
  CHECK(j["attempts"] == 0);
  CHECK(j["outcome"] == "rate_limited");
  CHECK(s.ready("echo", t0 + 499, 10).empty());
  CHECK(ids_of(s.ready("echo", t0 + 500, 10)) == std::vector<JobId>{id});

  // The dispatch number still grows (it is the fencing token); the deadline
  // travels with the claim.
  auto c = s.claim(id, "echo", "w", t0 + 500, 1000);
  REQUIRE(c.has_value());
  CHECK(c->attempt == 2);
  CHECK(c->attempts_used == 0);
  CHECK(c->quota_deadline == std::optional<Millis>(t0 + 60'000));
  auto running = s.running_jobs();
  REQUIRE(running.size() == 1);
  CHECK(running[0].quota_deadline == std::optional<Millis>(t0 + 60'000));

  auto fail = end_of(id, 2, JobState::kDead, Outcome::kPermanent);
  fail.status = 400;
  fail.error = "bad request";
  fail.run_at = t0 + 600;
  REQUIRE(s.end_attempt(fail, t0 + 600));
  j = info(s, id);
  CHECK(j["state"] == "dead");
  CHECK(j["attempts"] == 1);
  CHECK(j["finished_ms"] == t0 + 600);
  CHECK(s.ready("echo", t0 + 10'000, 10).empty());
  CHECK_FALSE(s.next_due("echo", t0).has_value());
}

TEST_CASE(
    "cancel: queued, retrying, waiting and running jobs; never finished ones") {
  TempDir dir;
  Store s(dir.file("pacer.db"), false);
  JobId queued = insert(s);
  JobId delayed = insert(s, {{"delay", "1h"}});
  JobId running = insert(s);
  JobId done = insert(s);
  JobId dead = insert(s);
  JobId retrying = insert(s);
  finish(s, done, JobState::kSucceeded, t0);
  finish(s, dead, JobState::kDead, t0);
  retry_at(s, retrying, t0 + 5000, t0);
  auto c = s.claim(running, "echo", "w", t0, 1000);
  REQUIRE(c.has_value());

  CHECK(s.cancel(queued, t0 + 1));
  json j = info(s, queued);
  CHECK(j["state"] == "canceled");
  CHECK(j["finished_ms"] == t0 + 1);
  CHECK(j["outcome"] == "canceled");
  CHECK(s.cancel(delayed, t0 + 1));
  CHECK(s.cancel(retrying, t0 + 1));
  CHECK(s.cancel(running, t0 + 2));
  CHECK(s.state_of(running) == JobState::kCanceled);
  CHECK(s.running_jobs().empty());
  // The canceled job's late result does not resurrect it.
  CHECK_FALSE(s.end_attempt(
      end_of(running, c->attempt, JobState::kSucceeded, Outcome::kSuccess),
      t0 + 3));
  CHECK(s.state_of(running) == JobState::kCanceled);

  CHECK_FALSE(s.cancel(done, t0 + 4));
  CHECK(s.state_of(done) == JobState::kSucceeded);
  CHECK_FALSE(s.cancel(dead, t0 + 4));
  CHECK(s.state_of(dead) == JobState::kDead);
  CHECK_FALSE(s.cancel(queued, t0 + 4));  // already canceled
  CHECK(info(s, queued)["finished_ms"] == t0 + 1);
  CHECK_FALSE(s.cancel(9999, t0 + 4));
  CHECK_FALSE(s.state_of(9999).has_value());

  CHECK(s.ready("echo", t0 + 10'000'000, 100).empty());
  CHECK_FALSE(s.next_due("echo", t0).has_value());
  CHECK_FALSE(s.claim(queued, "echo", "w", t0 + 5, 1000).has_value());
}

TEST_CASE("attempt_starts returns the starts after `since`, oldest first") {
  TempDir dir;
  Store s(dir.file("pacer.db"), false);
  JobId a = insert(s, {{"cost", 1}});
  JobId b = insert(s, {{"cost", 2}});
  JobId c = insert(s, {{"cost", 3}});
  JobId o = insert(s, {{"api", "other"}, {"cost", 9}});
  REQUIRE(s.claim(c, "echo", "w", t0 + 20, 1000));
  REQUIRE(s.claim(a, "echo", "w", t0, 1000));
  REQUIRE(s.claim(o, "other", "w", t0 + 15, 1000));
  REQUIRE(s.claim(b, "echo", "w", t0 + 10, 1000));

  using Starts = std::vector<pacer::Start>;
  CHECK(s.attempt_starts("echo", t0 - 1) ==
        Starts{{t0, 1, 1}, {t0 + 10, 2, 1}, {t0 + 20, 3, 1}});
  CHECK(s.attempt_starts("echo", t0) ==
        Starts{{t0 + 10, 2, 1}, {t0 + 20, 3, 1}});
  CHECK(s.attempt_starts("echo", t0 + 20).empty());
  CHECK(s.attempt_starts("other", 0) == Starts{{t0 + 15, 9, 1}});
  CHECK(s.attempt_starts("nobody", 0).empty());
}

TEST_CASE("a batch is one start as charged, and its members name it") {
  TempDir dir;
  Store s(dir.file("pacer.db"), false);
  JobId single = insert(s, {{"cost", 1}});
  JobId m1 = insert(s, {{"cost", 2}, {"batch_key", "k"}});
  JobId m2 = insert(s, {{"cost", 3}, {"batch_key", "k"}});
  JobId gone = insert(s, {{"batch_key", "k"}});
  REQUIRE(s.cancel(gone, t0));

  auto ready = s.ready("echo", t0, 10);
  REQUIRE(ready.size() == 3);
  CHECK(ready[0].batch_key.empty());
  CHECK(ready[1].batch_key == "k");
  std::vector<std::optional<std::string>> bodies;
  s.ready("echo", t0, 10, &bodies);
  CHECK(bodies.size() == 3);

  REQUIRE(s.claim(single, "echo", "w", t0 + 5, 1000));
  const std::int64_t b = s.insert_batch("echo", "k", "w", t0 + 10);
  CHECK(b > 0);
  REQUIRE(s.claim(m1, "echo", "w", t0 + 10, 1000, b));
  REQUIRE(s.claim(m2, "echo", "w", t0 + 10, 1000, b));
  CHECK_FALSE(s.claim(gone, "echo", "w", t0 + 10, 1000, b));
  s.complete_batch(b, 2, 1, 5);

  // One entry for the batch, charged one request and the members' units;
  // the members' own attempt rows are not counted again.
  using Starts = std::vector<pacer::Start>;
  CHECK(s.attempt_starts("echo", t0) ==
        Starts{{t0 + 5, 1, 1}, {t0 + 10, 5, 1}});

  CHECK(info(s, m1)["batch"] == json{{"id", b}, {"size", 2}});
  CHECK(info(s, single)["batch"].is_null());
  auto result = s.job_result(m2);
  REQUIRE(result);
  CHECK((*result)["attempts"][0]["batch"] == b);
  bool found = false;
  for (auto& r : s.running_jobs()) {
    if (r.id != m1) continue;
    found = true;
    CHECK(r.batch == b);
    CHECK(r.batch_key == "k");
  }
  CHECK(found);

  // A batch whose members could not be claimed leaves no row.
  const std::int64_t empty = s.insert_batch("echo", "k", "w", t0 + 20);
  s.delete_batch(empty);
  CHECK(s.attempt_starts("echo", t0 + 10).empty());
}

TEST_CASE(
    "purge_finished removes finished jobs older than the cutoff, `limit` at a "
    "time") {
  TempDir dir;
  Store s(dir.file("pacer.db"), false);
  JobId s1 = insert(s);
  JobId d1 = insert(s);
  JobId c1 = insert(s);
  JobId s2 = insert(s);
  JobId queued = insert(s, {}, t0 - 1'000'000);  // old, but not finished
  JobId running = insert(s, {}, t0 - 1'000'000);
  JobId retrying = insert(s, {}, t0 - 1'000'000);
  finish(s, d1, JobState::kDead, t0 + 200);
  finish(s, s1, JobState::kSucceeded, t0 + 100);
  REQUIRE(s.cancel(c1, t0 + 300));
  finish(s, s2, JobState::kSucceeded, t0 + 1000);
  REQUIRE(s.claim(running, "echo", "w", t0 - 500'000, 1000));
  auto rc = s.claim(retrying, "echo", "w", t0 - 500'000, 1000);
  REQUIRE(rc);
  auto e =
      end_of(retrying, rc->attempt, JobState::kRetrying, Outcome::kTransient);
  e.run_at = t0;
  REQUIRE(s.end_attempt(e, t0 - 500'000));

  RawDb db(dir.file("pacer.db"));
  CHECK(db.scalar("SELECT COUNT(*) FROM attempts") == 5);

  // Oldest finished first, one per call.
  CHECK(s.purge_finished(t0 + 1000, 1) == 1);
  CHECK_FALSE(s.state_of(s1).has_value());
  CHECK(attempt_rows(db, s1) == 0);
  CHECK(s.state_of(d1) == JobState::kDead);
  CHECK(s.purge_finished(t0 + 1000, 1) == 1);
  CHECK_FALSE(s.state_of(d1).has_value());
  CHECK(attempt_rows(db, d1) == 0);
  CHECK(s.purge_finished(t0 + 1000, 1) == 1);
  CHECK_FALSE(s.state_of(c1).has_value());
  // s2 finished exactly at the cutoff: kept.
  CHECK(s.purge_finished(t0 + 1000, 1) == 0);
  CHECK(s.state_of(s2) == JobState::kSucceeded);
  CHECK(attempt_rows(db, s2) == 1);
  CHECK(s.purge_finished(t0 + 1001, 10) == 1);
  CHECK_FALSE(s.state_of(s2).has_value());
  CHECK(attempt_rows(db, s2) == 0);

  // Unfinished jobs and their attempts are never purged.
  CHECK(s.purge_finished(t0 + 100'000'000, 100) == 0);
  CHECK(s.state_of(queued) == JobState::kQueued);
  CHECK(s.state_of(running) == JobState::kRunning);
  CHECK(s.state_of(retrying) == JobState::kRetrying);
  CHECK(attempt_rows(db, running) == 1);
  CHECK(attempt_rows(db, retrying) == 1);
  CHECK(db.scalar("SELECT COUNT(*) FROM attempts") == 2);

  // Several in one step.
  std::vector<JobId> many;
  for (int i = 0; i < 5; ++i) {
    many.push_back(insert(s));
    finish(s, many.back(), JobState::kSucceeded, t0 + i);
  }
  CHECK(s.purge_finished(t0 + 100, 3) == 3);
  CHECK(s.purge_finished(t0 + 100, 3) == 2);
  CHECK(s.purge_finished(t0 + 100, 3) == 0);
  for (JobId id : many) CHECK(attempt_rows(db, id) == 0);
}

TEST_CASE(
    "job_infos, list with filters and paging, progress and state counts") {
  TempDir dir;
  Store s(dir.file("pacer.db"), false);
  JobId a = insert(s, {}, t0, "g1");
  JobId b = insert(s, {}, t0, "g1");
  JobId c = insert(s, {}, t0, "g1");
  JobId d = insert(s, {{"api", "other"}}, t0, "g2");
  JobId e = insert(s, {}, t0);
  finish(s, a, JobState::kSucceeded, t0);
  REQUIRE(s.cancel(c, t0));
  finish(s, e, JobState::kDead, t0);

  // Unknown ids are omitted; the order is the request's.
  CHECK(ids_of(s.job_infos({e, 9999, a})) == std::vector<JobId>{e, a});
  CHECK(s.job_infos({}).empty());
  CHECK(s.job_infos({}).is_array());

  auto list = [&](pacer::ListFilter f) { return s.list(f); };
  json all = list({});
  CHECK(ids_of(all["jobs"]) == std::vector<JobId>{a, b, c, d, e});
  CHECK(all["next"].is_null());

  // Paging: `next` is the last id of the page; the last page has none.
  pacer::ListFilter page;
  page.limit = 2;
  json p1 = list(page);
  CHECK(ids_of(p1["jobs"]) == std::vector<JobId>{a, b});
  CHECK(p1["next"] == b);
  page.after = p1["next"].get<JobId>();
  json p2 = list(page);
  CHECK(ids_of(p2["jobs"]) == std::vector<JobId>{c, d});
  CHECK(p2["next"] == d);
  page.after = p2["next"].get<JobId>();
  json p3 = list(page);
  CHECK(ids_of(p3["jobs"]) == std::vector<JobId>{e});
  CHECK(p3["next"].is_null());
  page.after = c;  // exactly one full page left: no next
  json exact = list(page);
  CHECK(ids_of(exact["jobs"]) == std::vector<JobId>{d, e});
  CHECK(exact["next"].is_null());
  page.after = e;
  CHECK(list(page)["jobs"].empty());

  pacer::ListFilter f;
  f.state = "queued";
  CHECK(ids_of(list(f)["jobs"]) == std::vector<JobId>{b, d});
  f = {};
  f.api = "other";
  CHECK(ids_of(list(f)["jobs"]) == std::vector<JobId>{d});
  f = {};
  f.group = "g1";
  CHECK(ids_of(list(f)["jobs"]) == std::vector<JobId>{a, b, c});
  f.state = "canceled";
  CHECK(ids_of(list(f)["jobs"]) == std::vector<JobId>{c});
  f = {};
  f.group = "g1";
  f.api = "echo";
  f.limit = 1;
  f.after = a;
  json g = list(f);
  CHECK(ids_of(g["jobs"]) == std::vector<JobId>{b});
  CHECK(g["next"] == b);
  f = {};
  f.api = "nobody";
  CHECK(list(f)["jobs"].empty());

  auto same = [](const pacer::Progress& p, std::int64_t total,
                 std::int64_t succeeded, std::int64_t dead,
                 std::int64_t canceled, std::int64_t pending) {
    CHECK(p.total == total);
    CHECK(p.succeeded == succeeded);
    CHECK(p.dead == dead);
    CHECK(p.canceled == canceled);
    CHECK(p.pending == pending);
  };
  same(s.progress_ids({a, b, 9999}), 2, 1, 0, 0, 1);
  same(s.progress_ids({}), 0, 0, 0, 0, 0);
  same(s.progress_group("g1"), 3, 1, 0, 1, 1);
  same(s.progress_group("g2"), 1, 0, 0, 0, 1);
  same(s.progress_group("none"), 0, 0, 0, 0, 0);
  same(s.progress_all(), 5, 1, 1, 1, 2);
  // A running job is pending.
  REQUIRE(s.claim(b, "echo", "w", t0, 1000));
  same(s.progress_group("g1"), 3, 1, 0, 1, 1);

  using Counts = std::map<std::string, std::map<std::string, std::int64_t>>;
  CHECK(
      s.state_counts() ==
      Counts{{"echo",
              {{"succeeded", 1}, {"running", 1}, {"canceled", 1}, {"dead", 1}}},
             {"other", {{"queued", 1}}}});
  // The dead letters' count agrees, per API, without the other states.
  CHECK(s.dead_counts() == std::map<std::string, std::int64_t>{{"echo", 1}});
}

TEST_CASE(
    "progress tallies agree with a fresh count through every kind of change") {
  // After the first PROGRESS of a group (and of all jobs), the store answers
  // from tallies it keeps up to date; a second Store on the file counts the
  // rows afresh. They must agree after any sequence of inserts, claims, ends
  // (final or not), cancels, purges, dead replays, and submissions rolled
  // back to their savepoint.
  TempDir dir;
  const std::string path = dir.file("pacer.db");
  Store s(path, false);
  const std::vector<std::string> groups = {"g0", "g1", "g2", ""};
  std::mt19937 rng(20261128);
  auto pick = [&](std::size_t n) {
    return std::uniform_int_distribution<std::size_t>(0, n - 1)(rng);
  };
  std::vector<JobId> ids;
  Millis now = t0;
  auto agree = [&](const std::string& when) {
    CAPTURE(when);
    Store fresh(path, false);
    for (const auto& g : {"g0", "g1", "g2", "unused"}) {
      CAPTURE(g);
      auto kept = s.progress_group(g);
      auto counted = fresh.progress_group(g);
      CHECK(kept.total == counted.total);
      CHECK(kept.succeeded == counted.succeeded);
      CHECK(kept.dead == counted.dead);
      CHECK(kept.canceled == counted.canceled);
      CHECK(kept.pending == counted.pending);
    }
    auto kept = s.progress_all();
    auto counted = fresh.progress_all();
    CHECK(kept.total == counted.total);
    CHECK(kept.succeeded == counted.succeeded);
    CHECK(kept.dead == counted.dead);
    CHECK(kept.canceled == counted.canceled);
    CHECK(kept.pending == counted.pending);
  };
  // Some jobs before the first count, so the tallies start from a scan.
  for (int i = 0; i < 20; ++i)
    ids.push_back(insert(s, {}, now, groups[pick(groups.size())]));
  agree("first count");
  for (int round = 0; round < 40; ++round) {
    s.begin();
    for (int op = 0; op < 25; ++op) {
      now += 10;
      const JobId id = ids[pick(ids.size())];
      switch (pick(7)) {
        case 0:
          ids.push_back(insert(s, {}, now, groups[pick(groups.size())]));
          break;
        case 1:
        case 2: {  // claim and end: succeeded, dead or back to retrying
          auto c = s.claim(id, "echo", "w", now, 1000);
          if (!c) break;
          static const JobState next[] = {JobState::kSucceeded, JobState::kDead,
                                          JobState::kRetrying};
          JobState n = next[pick(3)];
          auto e = end_of(id, c->attempt, n,
                          n == JobState::kSucceeded ? Outcome::kSuccess
                                                    : Outcome::kTransient);
          e.run_at = now;
          REQUIRE(s.end_attempt(e, now));
          break;
        }
        case 3:  // a claim left running, sometimes canceled
          if (s.claim(id, "echo", "w", now, 1000) && pick(2) == 0)
            REQUIRE(s.cancel(id, now));
          break;
        case 4:
          s.cancel(id, now);
          break;
        case 5:
          s.requeue_dead(id, now);
          break;
        case 6:
          s.purge_finished(now - 200, static_cast<int>(pick(4)));
          break;
      }
    }
    // A submission that fails halfway is undone, tallies included.
    s.savepoint();
    for (int i = 0; i < 3; ++i) insert(s, {}, now, groups[pick(groups.size())]);
    if (pick(2) == 0) {
      s.rollback_to_savepoint();
    } else {
      s.release();
    }
    s.commit();
    agree("round " + std::to_string(round));
  }
  // A rolled-back turn leaves no trace in them either.
  s.begin();
  insert(s, {}, now, "g0");
  CHECK(s.progress_group("g0").total > 0);
  s.rollback();
  agree("after a rollback");
}

TEST_CASE("rollback_to_savepoint undoes one submission and nothing before it") {
  TempDir dir;
  const std::string path = dir.file("pacer.db");
  Store s(path, false);

  SUBCASE("inside the turn's transaction") {
    s.begin();
    CHECK(s.in_transaction());
    JobId before = insert(s, {{"key", "before"}});
    s.savepoint();
    JobId x = insert(s, {{"key", "kx"}});
    JobId y = insert(s);
    s.rollback_to_savepoint();
    CHECK(s.state_of(before) == JobState::kQueued);
    CHECK_FALSE(s.state_of(x).has_value());
    CHECK_FALSE(s.state_of(y).has_value());
    s.savepoint();
    JobId z = insert(s);
    s.release();
    s.commit();
    CHECK_FALSE(s.in_transaction());
    CHECK(s.state_of(z) == JobState::kQueued);
    RawDb db(path);
    CHECK(db.scalar("SELECT COUNT(*) FROM jobs") == 2);
    // The rolled-back key is free again.
    CHECK_FALSE(s.insert_job(spec({{"key", "kx"}}), "", 5, 1000, t0).duplicate);
  }

  SUBCASE("on its own, it leaves no rows at all") {
    s.savepoint();
    JobId x = insert(s);
    REQUIRE(s.claim(x, "echo", "w", t0, 1000));
    insert(s);
    s.rollback_to_savepoint();
    RawDb db(path);
    CHECK(db.scalar("SELECT COUNT(*) FROM jobs") == 0);
    CHECK(db.scalar("SELECT COUNT(*) FROM attempts") == 0);
    CHECK(s.ready("echo", t0, 10).empty());
  }

  SUBCASE("a rolled-back turn leaves nothing either") {
    s.begin();
    insert(s);
    s.rollback();
    CHECK_FALSE(s.in_transaction());
    RawDb db(path);
    CHECK(db.scalar("SELECT COUNT(*) FROM jobs") == 0);
  }
}

TEST_CASE(
    "committed transactions survive close and reopen; uncommitted ones do "
    "not") {
  TempDir dir;
  const std::string path = dir.file("pacer.db");
  JobId committed = 0, uncommitted = 0;
  {
    Store s(path, false);
    s.begin();
    committed = insert(s, {{"key", "committed"}});
    auto c = s.claim(committed, "echo", "w", t0, 1000);
    REQUIRE(c);
    s.commit();
    s.begin();
    uncommitted = insert(s, {{"key", "uncommitted"}});
    auto e =
        end_of(committed, c->attempt, JobState::kSucceeded, Outcome::kSuccess);
    REQUIRE(s.end_attempt(e, t0 + 1));
    // Another connection sees only what was committed.
    RawDb other(path);
    CHECK(other.scalar("SELECT COUNT(*) FROM jobs") == 1);
    CHECK(other.rows("SELECT state FROM jobs")[0][0] == "running");
  }  // closed with the second transaction open
  Store s(path, false);
  CHECK(s.state_of(committed) == JobState::kRunning);
  CHECK_FALSE(s.state_of(uncommitted).has_value());
  CHECK(s.running_jobs().size() == 1);
  CHECK(s.insert_job(spec({{"key", "committed"}}), "", 5, 1000, t0).duplicate);
  CHECK_FALSE(
      s.insert_job(spec({{"key", "uncommitted"}}), "", 5, 1000, t0).duplicate);
}

TEST_CASE("committed transactions survive a crash of the process") {
  TempDir dir;
  const std::string path = dir.file("pacer.db");
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    // The child commits one job, starts another transaction and dies without
    // closing anything (no destructors, no rollback, no checkpoint).
    int code = 0;
    try {
      auto* s = new Store(path, false);
      s->begin();
      s->insert_job(spec({{"key", "durable"}}), "", 5, 1000, t0);
      s->commit();
      s->begin();
      s->insert_job(spec({{"key", "lost"}}), "", 5, 1000, t0);
    } catch (...) {
      code = 1;
    }
    _exit(code);
  }
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);

  Store s(path, false);
  CHECK(s.insert_job(spec({{"key", "durable"}}), "", 5, 1000, t0).duplicate);
  CHECK_FALSE(s.insert_job(spec({{"key", "lost"}}), "", 5, 1000, t0).duplicate);
  RawDb db(path);
  CHECK(db.scalar("SELECT COUNT(*) FROM jobs") == 2);
}

TEST_CASE("writing a job builds no temporary b-tree") {
  // A constant IN list of more than two values, in a statement, a CHECK
  // constraint or a partial index's predicate, makes SQLite build a
  // temporary b-tree each time the statement runs (OpenEphemeral); writes
  // of jobs are the broker's hot path (schema/004).
  TempDir dir;
  const std::string path = dir.file("pacer.db");
  { Store s(path, false); }
  RawDb db(path);
  auto opcodes = [&](const std::string& sql) {
    std::string all;
    for (auto& row : db.rows("EXPLAIN " + sql)) all += row[1] + "\n";
    return all;
  };
  const std::string ready =
      "(state = 'queued' OR state = 'retrying' OR state = 'waiting_quota')";
  for (const std::string& sql : std::vector<std::string>{
           "INSERT INTO jobs (api, state, method, path, run_at, max_attempts,"
           " timeout_ms, created_at, updated_at, idempotency_key)"
           " VALUES ('echo', 'queued', 'POST', '/', 1, 1, 1, 1, 1, 'k')"
           " ON CONFLICT (idempotency_key) DO NOTHING",
           "SELECT dispatches + 1, body FROM jobs WHERE id = 1 AND " + ready,
           "UPDATE jobs SET state = 'running', dispatches = 2 WHERE id = 1",
           "UPDATE jobs SET state = 'succeeded', finished_at = 5 WHERE id = 1"
           " AND dispatches = 1 AND state = 'running'",
           "UPDATE jobs SET state = 'retrying' WHERE id = 1"}) {
    CAPTURE(sql);
    const std::string ops = opcodes(sql);
    CHECK(ops.find("OpenEphemeral") == std::string::npos);
  }
  // The copy of migration 4 kept every job and index.
  CHECK(db.scalar("SELECT COUNT(*) FROM sqlite_schema WHERE type = 'index'"
                  " AND tbl_name = 'jobs' AND name LIKE 'jobs_%'") == 6);
}

TEST_CASE("the hot queries use their partial indexes, not a table scan") {
  TempDir dir;
  const std::string path = dir.file("pacer.db");
  {
    Store s(path, false);
    for (int i = 0; i < 50; ++i)
      insert(s, {{"priority", i % 3}, {"delay", i % 5}});
    for (int i = 0; i < 10; ++i) finish(s, insert(s), JobState::kSucceeded, t0);
    // The store's own statements must prepare (INDEXED BY fails otherwise).
    CHECK(s.ready("echo", t0, 10).size() == 10);
    CHECK(s.next_due("echo", t0).has_value());
  }
  RawDb db(path);
  // The text of store.cc's kReady and kNextDue statements.
  const std::string ready_states =
      "(state = 'queued' OR state = 'retrying' OR state = 'waiting_quota')";
  const std::string ready_sql =
      "SELECT id, priority, run_at, cost FROM jobs INDEXED BY jobs_ready"
      " WHERE api = ?1 AND " +
      ready_states +
      " AND run_at <= ?2"
      " ORDER BY priority DESC, run_at, id LIMIT ?3";
  const std::string due_sql =
      "SELECT MIN(run_at) FROM jobs INDEXED BY jobs_due"
      " WHERE api = ?1 AND " +
      ready_states + " AND run_at > updated_at AND run_at > ?2";
  const std::string starts_sql =
      "SELECT started_at, cost FROM attempts WHERE api = ?1 AND started_at > ?2"
      " ORDER BY started_at";

  auto plan = [&](const std::string& sql) {
    std::string all;
    for (auto& row : db.rows("EXPLAIN QUERY PLAN " + sql))
      all += row.back() + "\n";
    return all;
  };
  std::string ready_plan = plan(ready_sql);
  CAPTURE(ready_plan);
  CHECK(ready_plan.find("USING INDEX jobs_ready (api=?)") != std::string::npos);
  CHECK(ready_plan.find("SCAN jobs") == std::string::npos);
  CHECK(ready_plan.find("TEMP B-TREE") ==
        std::string::npos);  // the index gives the order

  std::string due_plan = plan(due_sql);
  CAPTURE(due_plan);
  CHECK(due_plan.find("INDEX jobs_due (api=? AND run_at>?)") !=
        std::string::npos);
  CHECK(due_plan.find("SCAN jobs") == std::string::npos);

  std::string starts_plan = plan(starts_sql);
  CAPTURE(starts_plan);
  CHECK(starts_plan.find("INDEX attempts_started (api=? AND started_at>?)") !=
        std::string::npos);
  CHECK(starts_plan.find("TEMP B-TREE") == std::string::npos);
}

namespace {

// Writes `jobs` jobs with bodies of `body_bytes`, `per_tx` to a transaction.
void write_jobs(Store& s, int jobs, int per_tx, std::size_t body_bytes) {
  const std::string body(body_bytes, 'x');
  for (int i = 0; i < jobs; i += per_tx) {
    s.begin();
    for (int k = 0; k < per_tx && i + k < jobs; ++k)
      insert(s, {{"body", body + std::to_string(i + k)}});
    s.commit();
  }
}

std::uintmax_t size_of(const std::string& path) {
  std::error_code ec;
  auto n = std::filesystem::file_size(path, ec);
  return ec ? 0 : n;
}

}  // namespace

TEST_CASE("a thread of the store's own checkpoints the WAL into the file") {
  TempDir dir;
  const std::string path = dir.file("pacer.db");
  pacer::WalPolicy wal;
  wal.background_pages = 50;
  wal.inline_pages = 1'000'000;  // the committing connection never does
  Store s(path, false, wal);
  const auto before = size_of(path);
  // About 4 MiB of bodies: the database file can only grow by that much
  // through a checkpoint, and only the thread checkpoints here.
  write_jobs(s, 2000, 50, 2000);
  CHECK(pacer::testing::wait_until(
      [&] { return size_of(path) > before + 3'000'000; }, 20s));
  CHECK(s.background_checkpoints() > 0);
  // Everything committed is readable from another connection afterwards.
  RawDb raw(path);
  CHECK(raw.scalar("SELECT COUNT(*) FROM jobs") == 2000);
}

TEST_CASE("the WAL stays bounded when the committing connection checkpoints") {
  TempDir dir;
  const std::string path = dir.file("pacer.db");
  pacer::WalPolicy wal;
  wal.background_pages = 0;  // no thread: every checkpoint is inline
  wal.inline_pages = 200;
  {
    Store s(path, false, wal);
    write_jobs(s, 2000, 50, 2000);  // ~1,000 pages of WAL without checkpoints
    // A WAL starts over from its top after a complete checkpoint, so its
    // file is no longer than the most it ever held: the bound plus one
    // transaction (~30 pages of 4 KiB) and the header.
    CHECK(size_of(path + "-wal") < 300u * 4120u);
    CHECK(size_of(path) > 3'000'000u);
    CHECK(s.background_checkpoints() == 0);
  }
  RawDb raw(path);
  CHECK(raw.scalar("SELECT COUNT(*) FROM jobs") == 2000);
}

TEST_CASE("claimed and running jobs carry their group, which ends count in") {
  TempDir dir;
  Store s(dir.file("pacer.db"), false);
  const JobId a = insert(s, {}, t0, "g1");
  const JobId b = insert(s, {}, t0, "g1");
  const JobId c = insert(s, {}, t0);
  // Start the tallies, then run the jobs.
  CHECK(s.progress_group("g1").pending == 2);
  auto ca = s.claim(a, "echo", "w", t0, 1000);
  auto cb = s.claim(b, "echo", "w", t0, 1000);
  auto cc = s.claim(c, "echo", "w", t0, 1000);
  REQUIRE((ca && cb && cc));
  CHECK(ca->group == "g1");
  CHECK_FALSE(cc->group.has_value());
  auto running = s.running_jobs();
  REQUIRE(running.size() == 3);
  for (const auto& r : running)
    CHECK(r.group ==
          (r.id == c ? std::nullopt : std::optional<std::string>("g1")));
  // The group given with the end is the one counted; without it the store
  // reads it.
  auto ea = end_of(a, ca->attempt, JobState::kSucceeded, Outcome::kSuccess);
  ea.group_known = true;
  ea.group = ca->group;
  REQUIRE(s.end_attempt(ea, t0 + 10));
  REQUIRE(s.end_attempt(
      end_of(b, cb->attempt, JobState::kDead, Outcome::kPermanent), t0 + 10));
  auto ec = end_of(c, cc->attempt, JobState::kSucceeded, Outcome::kSuccess);
  ec.group_known = true;
  REQUIRE(s.end_attempt(ec, t0 + 10));
  const auto g = s.progress_group("g1");
  CHECK(g.succeeded == 1);
  CHECK(g.dead == 1);
  CHECK(g.pending == 0);
  CHECK(s.progress_all().succeeded == 2);
}
