#include "broker/store.h"

#include <algorithm>
#include <string_view>
#include <utility>

#include "schema_migrations.h"

namespace pacer {
namespace {

// Written exactly as the partial indexes' predicates (schema/004), and as
// OR chains: a constant IN list costs SQLite a temporary b-tree per run.
constexpr std::string_view kReadyStates =
    "(state = 'queued' OR state = 'retrying' OR state = 'waiting_quota')";
constexpr std::string_view kFinishedStates =
    "(state = 'succeeded' OR state = 'dead' OR state = 'canceled')";

// total, succeeded, dead, canceled (Store::progress_*).
constexpr std::string_view kProgressSums =
    "SELECT COUNT(*), TOTAL(state = 'succeeded'), TOTAL(state = 'dead'),"
    " TOTAL(state = 'canceled') FROM jobs";

constexpr std::string_view kInfoColumns =
    "id, api, state, method, path, priority, cost, group_id, idempotency_key, "
    "attempts, max_attempts, created_at, run_at, finished_at, result_status, "
    "last_outcome, last_error, updated_at, batch_key, "
    // The batch of the latest dispatch and its size, when it went in one.
    "(SELECT batch_id FROM attempts WHERE job_id = jobs.id"
    " AND n = jobs.dispatches), "
    "(SELECT items FROM batches WHERE id = (SELECT batch_id FROM attempts"
    " WHERE job_id = jobs.id AND n = jobs.dispatches))";

// DEAD_LIST entries (dead_row() reads them in this order).
constexpr std::string_view kDeadColumns =
    "id, api, method, path, group_id, created_at, finished_at, attempts, "
    "max_attempts, dispatches, last_outcome, result_status, last_error";

enum Stmt : int {
  kInsert,
  kFindKey,
  kReady,
  kNextDue,
  kClaimRead,
  kClaim,
  kInsertAttempt,
  kEndJob,
  kEndAttempt,
  kRunning,
  kStarts,
  kCancel,
  kStateOf,
  kPurgeJobs,
  kPurgeAttempts,
  kReadyApis,
  kInfo,
  kResult,
  kAttempts,
  kProgressGroup,
  kProgressAll,
  kStateCounts,
  kDeadCounts,
  kDeadList,
  kDeadPage,
  kDeadOne,
  kDeadApi,
  kRequeueDead,
  kReadyBodies,
  kBodyOf,
  kInsertBatch,
  kCompleteBatch,
  kDeleteBatch,
  kBatchStarts,
  kPurgeBatches,
  kGroupOf,
  kNextDueAny,
  kCount,
};

// The failure class of a job as SQL, generated from failure_class() so the
// filter and the listing can never disagree.
std::string failure_class_sql() {
  std::string sql = "CASE last_outcome";
  for (Outcome o : kAllOutcomes)
    sql += " WHEN '" + std::string(to_string(o)) + "' THEN '" +
           std::string(to_string(failure_class(o))) + "'";
  return sql + " ELSE '" + std::string(to_string(FailureClass::kPermanent)) +
         "' END";
}

// The dead jobs a DeadFilter covers: ?1 after, ?2 api, ?3 class, ?4 since
// (null: any), ?5 limit. The index holds every filter column.
std::string dead_filter_sql(std::string_view columns) {
  return "SELECT " + std::string(columns) +
         " FROM jobs INDEXED BY jobs_dead"
         " WHERE state = 'dead' AND id > ?1"
         " AND (?2 IS NULL OR api = ?2)"
         " AND (?3 IS NULL OR " +
         failure_class_sql() +
         " = ?3)"
         " AND (?4 IS NULL OR finished_at >= ?4)"
         " ORDER BY id LIMIT ?5";
}

std::string sql_for(int which) {
  std::string ready(kReadyStates);
  std::string info(kInfoColumns);
  switch (which) {
    case kInsert:
      return "INSERT INTO jobs (api, state, method, path, headers, body, "
             "priority,"
             " run_at, cost, batch_key, idempotency_key, group_id, "
             "max_attempts,"
             " timeout_ms, created_at, updated_at)"
             " VALUES (?1, 'queued', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, "
             "?12,"
             " ?13, ?14, ?14)"
             " ON CONFLICT (idempotency_key) DO NOTHING";
    case kFindKey:
      return "SELECT id, priority, run_at, cost, batch_key FROM jobs WHERE "
             "idempotency_key = ?1";
    case kReady:
    case kReadyBodies:
      return std::string("SELECT id, priority, run_at, cost, batch_key") +
             (which == kReadyBodies
                  ? ", CASE WHEN batch_key IS NOT NULL THEN body END"
                  : "") +
             " FROM jobs INDEXED BY jobs_ready WHERE api = ?1 AND " + ready +
             " AND run_at <= ?2 ORDER BY priority DESC, run_at, id LIMIT ?3";
    case kBodyOf:
      return "SELECT body FROM jobs WHERE id = ?1";
    case kInsertBatch:
      return "INSERT INTO batches (api, batch_key, worker, started_at)"
             " VALUES (?1, ?2, ?3, ?4) RETURNING id";
    case kCompleteBatch:
      return "UPDATE batches SET items = ?2, requests = ?3, units = ?4"
             " WHERE id = ?1";
    case kDeleteBatch:
      return "DELETE FROM batches WHERE id = ?1";
    case kBatchStarts:
      return "SELECT started_at, units, requests FROM batches"
             " WHERE api = ?1 AND started_at > ?2 ORDER BY started_at";
    case kGroupOf:
      return "SELECT group_id FROM jobs WHERE id = ?1";
    case kPurgeBatches:
      return "DELETE FROM batches WHERE id IN (SELECT id FROM batches"
             " WHERE started_at < ?1 LIMIT ?2)";
    // jobs_due holds the ready jobs with run_at > updated_at
    // (schema/005_due_index.sql); the query states that predicate so SQLite
    // may use the partial index.
    case kNextDue:
      return "SELECT MIN(run_at) FROM jobs INDEXED BY jobs_due"
             " WHERE api = ?1 AND " +
             ready + " AND run_at > updated_at AND run_at > ?2";
    case kNextDueAny:
      return "SELECT MIN(run_at) FROM jobs INDEXED BY jobs_ready"
             " WHERE api = ?1 AND " +
             ready + " AND run_at > ?2";
    // Claiming reads the job, then updates it (the read's state test guards
    // the update: one connection, one transaction): RETURNING would cost a
    // temporary table opened and closed per job, part of the sixth of the
    // broker's time temporary b-trees took in bench/e2e_throughput.sh.
    case kClaimRead:
      return "SELECT dispatches + 1, attempts, max_attempts, method, path,"
             " headers, body, timeout_ms, cost, quota_deadline, priority,"
             " group_id FROM jobs WHERE id = ?1 AND " +
             ready;
    case kClaim:
      return "UPDATE jobs SET state = 'running', dispatches = ?4,"
             " lease_until = ?2 + timeout_ms, updated_at = ?3"
             " WHERE id = ?1";
    case kInsertAttempt:
      return "INSERT INTO attempts (job_id, n, api, cost, worker, started_at,"
             " batch_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
    case kEndJob:
      return "UPDATE jobs SET state = ?3, attempts = attempts + ?4, run_at = "
             "?5,"
             " lease_until = NULL, updated_at = ?6, finished_at = ?7,"
             " last_outcome = ?8, last_error = ?9, result_status = ?10,"
             " result_headers = ?11, result_body = ?12, quota_deadline = ?13"
             " WHERE id = ?1 AND dispatches = ?2 AND state = 'running'";
    case kEndAttempt:
      return "UPDATE attempts SET finished_at = ?3, outcome = ?4, status = ?5,"
             " error = ?6, duration_ms = ?7, observation = ?8"
             " WHERE job_id = ?1 AND n = ?2";
    case kRunning:
      return "SELECT id, api, dispatches, attempts, max_attempts, cost, "
             "lease_until,"
             " quota_deadline, priority, (SELECT batch_id FROM attempts"
             " WHERE job_id = jobs.id AND n = jobs.dispatches), batch_key,"
             " group_id FROM jobs WHERE state = 'running'";
    case kStarts:
      return "SELECT started_at, cost FROM attempts"
             " WHERE api = ?1 AND started_at > ?2 AND batch_id IS NULL"
             " ORDER BY started_at";
    case kCancel:
      // RETURNING costs a temporary table, which a rare cancel can afford.
      return "UPDATE jobs SET state = 'canceled', lease_until = NULL,"
             " updated_at = ?2, finished_at = ?2, last_outcome = 'canceled'"
             " WHERE id = ?1 AND NOT " +
             std::string(kFinishedStates) + " RETURNING group_id";
    case kStateOf:
      return "SELECT state FROM jobs WHERE id = ?1";
    case kPurgeJobs:
      return "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs INDEXED BY "
             "jobs_finished WHERE " +
             std::string(kFinishedStates) +
             " AND finished_at < ?1"
             " ORDER BY finished_at LIMIT ?2) RETURNING id, group_id, state";
    case kPurgeAttempts:
      return "DELETE FROM attempts WHERE job_id = ?1";
    case kReadyApis:
      return "SELECT api, COUNT(*) FROM jobs WHERE " + ready + " GROUP BY api";
    case kInfo:
      return "SELECT " + info + " FROM jobs WHERE id = ?1";
    case kResult:
      return "SELECT " + info +
             ", result_headers, result_body FROM jobs WHERE id = ?1";
    case kAttempts:
      return "SELECT n, worker, started_at, finished_at, outcome, status, "
             "error,"
             " duration_ms, batch_id FROM attempts WHERE job_id = ?1"
             " ORDER BY n";
    // Sums in one pass rather than GROUP BY state, which sorts every row
    // through a temporary b-tree (twice the time for a group of 100,000).
    case kProgressGroup:
      return std::string(kProgressSums) + " WHERE group_id = ?1";
    case kProgressAll:
      return std::string(kProgressSums);
    case kStateCounts:
      return "SELECT api, state, COUNT(*) FROM jobs GROUP BY api, state";
    case kDeadCounts:
      return "SELECT api, COUNT(*) FROM jobs INDEXED BY jobs_dead"
             " WHERE state = 'dead' GROUP BY api";
    case kDeadList:
      return dead_filter_sql(kDeadColumns);
    case kDeadPage:
      return dead_filter_sql("id, api");
    case kDeadOne:
      return "SELECT " + std::string(kDeadColumns) +
             " FROM jobs WHERE id = ?1 AND state = 'dead'";
    case kDeadApi:
      return "SELECT api FROM jobs WHERE id = ?1 AND state = 'dead'";
    case kRequeueDead:
      return "UPDATE jobs SET state = 'queued', attempts = 0,"
             " quota_deadline = NULL, run_at = ?2, finished_at = NULL,"
             " lease_until = NULL, updated_at = ?2"
             " WHERE id = ?1 AND state = 'dead' RETURNING priority, run_at, "
             "cost, batch_key, group_id";
  }
  return "";
}

ReadyEntry ready_entry(JobId id, std::int64_t priority, Millis run_at,
                       std::int64_t cost, std::string batch_key) {
  ReadyEntry e;
  e.id = id;
  e.priority = priority;
  e.run_at = run_at;
  e.cost = cost;
  e.batch_key = std::move(batch_key);
  return e;
}

void add_progress(Progress& p, const std::string& state, std::int64_t n) {
  p.total += n;
  if (state == "succeeded")
    p.succeeded += n;
  else if (state == "dead")
    p.dead += n;
  else if (state == "canceled")
    p.canceled += n;
  else
    p.pending += n;
}

}  // namespace

Store::Store(const std::string& path, bool synchronous_full, WalPolicy wal)
    : db_(path), wal_(wal) {
  db_.exec("PRAGMA journal_mode = WAL");
  db_.exec(synchronous_full ? "PRAGMA synchronous = FULL"
                            : "PRAGMA synchronous = NORMAL");
  db_.exec("PRAGMA foreign_keys = ON");
  // Bounded page cache: SQLite is the queue, memory is not (8 MiB).
  db_.exec("PRAGMA cache_size = -8192");
  migrate();
  // Checkpoints leave the commit path: a thread copies the WAL into the
  // database file beside the broker's loop (SQLite's autocheckpoint would do
  // it, and its fsyncs, inside one commit in every few thousand pages,
  // stalling dispatch meanwhile). This hook replaces the autocheckpoint.
  if (wal_.background_pages > 0)
    checkpointer_ =
        std::make_unique<sqlite::Checkpointer>(path, synchronous_full);
  sqlite3_wal_hook(db_.handle(), &Store::on_wal_commit, this);
  stmts_.resize(kCount);
}

int Store::on_wal_commit(void* self, sqlite3* db, const char* name, int pages) {
  auto* store = static_cast<Store*>(self);
  const WalPolicy& p = store->wal_;
  if (store->checkpointer_ && pages >= p.background_pages)
    store->checkpointer_->request();
  if (pages >= p.inline_pages) {
    // What SQLite's autocheckpoint does. SQLITE_BUSY (the thread is in a
    // checkpoint, so the WAL is being copied) is no error.
    const int rc = sqlite3_wal_checkpoint_v2(
        db, name, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
    (void)rc;
  }
  return SQLITE_OK;
}

std::uint64_t Store::background_checkpoints() const {
  return checkpointer_ ? checkpointer_->passes() : 0;
}

Store::~Store() {
  if (in_tx_) {
    try {
      db_.exec("ROLLBACK");
    } catch (...) {
    }
  }
  stmts_.clear();
}

int Store::schema_version() {
  sqlite::Statement s(db_.handle(), "PRAGMA user_version");
  s.step();
  return static_cast<int>(s.i64(0));
}

void Store::migrate() {
  int version = schema_version();
  const int available = static_cast<int>(std::size(schema::kMigrations));
  if (version > available)
    throw sqlite::StoreError(
        "the database has schema version " + std::to_string(version) +
        " but this pacer-broker knows only " + std::to_string(available) +
        ": use a newer pacer-broker");
  for (int v = version; v < available; ++v) {
    db_.exec("BEGIN IMMEDIATE");
    try {
      db_.exec(schema::kMigrations[v]);
      db_.exec("PRAGMA user_version = " + std::to_string(v + 1));
      db_.exec("COMMIT");
    } catch (...) {
      db_.exec("ROLLBACK");
      throw;
    }
  }
}

sqlite::Statement& Store::stmt(int which) {
  auto& s = stmts_[static_cast<std::size_t>(which)];
  if (!s) s = std::make_unique<sqlite::Statement>(db_.handle(), sql_for(which));
  return *s;
}

void Store::begin() {
  if (in_tx_) return;
  db_.exec("BEGIN IMMEDIATE");
  in_tx_ = true;
}

void Store::commit() {
  if (!in_tx_) return;
  in_tx_ = false;
  db_.exec("COMMIT");
}

void Store::rollback() {
  if (!in_tx_) return;
  in_tx_ = false;
  // The tallies counted what is now undone: count afresh when next asked.
  tallies_.clear();
  all_tally_.reset();
  db_.exec("ROLLBACK");
}

void Store::savepoint() {
  db_.exec("SAVEPOINT submit");
  in_savepoint_ = true;
  savepoint_changes_.clear();
}
void Store::release() {
  db_.exec("RELEASE submit");
  in_savepoint_ = false;
  savepoint_changes_.clear();
}
void Store::rollback_to_savepoint() {
  db_.exec("ROLLBACK TO submit");
  db_.exec("RELEASE submit");
  in_savepoint_ = false;
  auto undo = std::exchange(savepoint_changes_, {});
  for (auto it = undo.rbegin(); it != undo.rend(); ++it)
    tally(it->group, it->column, -it->delta);
}

// ---------------------------------------------------------------- tallies

namespace {

// At most this many groups keep a tally; the least recently read one makes
// room (it is counted afresh if asked again).
constexpr std::size_t kMaxTallies = 1000;

std::int64_t& column_of(Progress& p, int column) {
  switch (column) {
    case 1:
      return p.succeeded;
    case 2:
      return p.dead;
    case 3:
      return p.canceled;
    default:
      return p.total;
  }
}

Progress with_pending(Progress p) {
  p.pending = p.total - p.succeeded - p.dead - p.canceled;
  return p;
}

}  // namespace

void Store::tally(const std::optional<std::string>& group, Column c,
                  int delta) {
  const int column = static_cast<int>(c);
  if (all_tally_) column_of(*all_tally_, column) += delta;
  if (group) {
    if (auto it = tallies_.find(*group); it != tallies_.end())
      column_of(it->second.counts, column) += delta;
  }
  if (in_savepoint_) savepoint_changes_.push_back({group, c, delta});
}

void Store::tally_final(const std::optional<std::string>& group,
                        std::string_view state, int delta) {
  if (state == to_string(JobState::kSucceeded))
    tally(group, Column::kSucceeded, delta);
  else if (state == to_string(JobState::kDead))
    tally(group, Column::kDead, delta);
  else if (state == to_string(JobState::kCanceled))
    tally(group, Column::kCanceled, delta);
}

std::optional<std::string> Store::group_of(JobId id) {
  return text_of(kGroupOf, id);
}

std::optional<std::string> Store::text_of(int which, JobId id) {
  auto& s = stmt(which);
  s.bind(1, id);
  std::optional<std::string> r;
  if (s.step() && !s.is_null(0)) r = s.text(0);
  s.reset();
  return r;
}

Inserted Store::insert_job(const JobSpec& spec, const std::string& group,
                           int max_attempts, Millis timeout_ms, Millis now) {
  Inserted r;
  r.entry.priority = spec.priority;
  r.entry.run_at = now + spec.delay_ms;
  r.entry.cost = spec.cost;
  r.entry.batch_key = spec.batch_key;
  auto& s = stmt(kInsert);
  s.bind(1, spec.api).bind(2, spec.method).bind(3, spec.path);
  if (spec.headers.empty())
    s.bind_null(4);
  else
    s.bind(4, nlohmann::json(spec.headers).dump());
  if (spec.body)
    s.bind_blob(5, *spec.body);
  else
    s.bind_null(5);
  s.bind(6, spec.priority).bind(7, r.entry.run_at).bind(8, spec.cost);
  if (spec.batch_key.empty())
    s.bind_null(9);
  else
    s.bind(9, spec.batch_key);
  if (spec.key.empty())
    s.bind_null(10);
  else
    s.bind(10, spec.key);
  if (group.empty())
    s.bind_null(11);
  else
    s.bind(11, group);
  s.bind(12, max_attempts).bind(13, timeout_ms).bind(14, now);
  // No RETURNING (a temporary table per row): the new rowid, or no change
  // when the key exists.
  s.exec();
  if (db_.changes() == 1) {
    r.id = db_.last_insert_rowid();
    if (tallying())
      tally(group.empty() ? std::nullopt : std::optional<std::string>(group),
            Column::kTotal, 1);
  } else {
    auto& f = stmt(kFindKey);
    f.bind(1, spec.key);
    if (!f.step()) {
      f.reset();
      throw sqlite::StoreError("insert of job with key '" + spec.key +
                               "' failed");
    }
    r.id = f.i64(0);
    r.duplicate = true;
    r.entry = ready_entry(f.i64(0), f.i64(1), f.i64(2), f.i64(3),
                          f.is_null(4) ? std::string() : f.text(4));
    f.reset();
  }
  r.entry.id = r.id;
  return r;
}

std::vector<ReadyEntry> Store::ready(
    const std::string& api, Millis now, int limit,
    std::vector<std::optional<std::string>>* bodies) {
  std::vector<ReadyEntry> out;
  auto& s = stmt(bodies ? kReadyBodies : kReady);
  s.bind(1, api).bind(2, now).bind(3, limit);
  if (bodies) bodies->clear();
  while (s.step()) {
    out.push_back(ready_entry(s.i64(0), s.i64(1), s.i64(2), s.i64(3),
                              s.is_null(4) ? std::string() : s.text(4)));
    if (bodies)
      bodies->push_back(s.is_null(5) ? std::nullopt
                                     : std::optional<std::string>(s.text(5)));
  }
  s.reset();
  return out;
}

std::optional<std::string> Store::body_of(JobId id) {
  return text_of(kBodyOf, id);
}

std::int64_t Store::insert_batch(const std::string& api,
                                 const std::string& batch_key,
                                 const std::string& worker, Millis now) {
  auto& s = stmt(kInsertBatch);
  s.bind(1, api).bind(2, batch_key).bind(3, worker).bind(4, now);
  if (!s.step()) {
    s.reset();
    throw sqlite::StoreError("insert of a batch row returned no id");
  }
  std::int64_t id = s.i64(0);
  s.reset();
  return id;
}

void Store::complete_batch(std::int64_t id, std::int64_t items,
                           std::int64_t requests, std::int64_t units) {
  auto& s = stmt(kCompleteBatch);
  s.bind(1, id).bind(2, items).bind(3, requests).bind(4, units);
  s.exec();
}

void Store::delete_batch(std::int64_t id) {
  auto& s = stmt(kDeleteBatch);
  s.bind(1, id);
  s.exec();
}

std::optional<Millis> Store::next_due(const std::string& api, Millis now,
                                      bool any) {
  auto& s = stmt(any ? kNextDueAny : kNextDue);
  s.bind(1, api).bind(2, now);
  std::optional<Millis> r;
  if (s.step()) r = s.opt_i64(0);
  s.reset();
  return r;
}

std::optional<Claimed> Store::claim(JobId id, const std::string& api,
                                    const std::string& worker, Millis now,
                                    Millis lease_grace_ms, std::int64_t batch) {
  auto& s = stmt(kClaimRead);
  s.bind(1, id);
  if (!s.step()) {
    s.reset();
    return std::nullopt;
  }
  Claimed c;
  c.id = id;
  c.attempt = static_cast<int>(s.i64(0));
  c.attempts_used = static_cast<int>(s.i64(1));
  c.max_attempts = static_cast<int>(s.i64(2));
  c.method = s.text(3);
  c.path = s.text(4);
  if (!s.is_null(5)) c.headers_json = s.text(5);
  if (!s.is_null(6)) c.body = s.text(6);
  c.timeout_ms = s.i64(7);
  c.cost = s.i64(8);
  c.quota_deadline = s.opt_i64(9);
  c.priority = s.i64(10);
  if (!s.is_null(11)) c.group = s.text(11);
  s.reset();
  stmt(kClaim)
      .bind(1, id)
      .bind(2, now + lease_grace_ms)
      .bind(3, now)
      .bind(4, c.attempt)
      .exec();
  auto& a = stmt(kInsertAttempt);
  a.bind(1, id)
      .bind(2, c.attempt)
      .bind(3, api)
      .bind(4, c.cost)
      .bind(5, worker)
      .bind(6, now);
  if (batch > 0)
    a.bind(7, batch);
  else
    a.bind_null(7);
  a.exec();
  return c;
}

bool Store::end_attempt(const AttemptEnd& e, Millis now) {
  auto& s = stmt(kEndJob);
  s.bind(1, e.id).bind(2, e.attempt).bind(3, to_string(e.next));
  s.bind(4, e.uses_attempt ? 1 : 0).bind(5, e.run_at).bind(6, now);
  if (is_final(e.next))
    s.bind(7, now);
  else
    s.bind_null(7);
  s.bind(8, to_string(e.outcome));
  if (e.error.empty())
    s.bind_null(9);
  else
    s.bind(9, e.error);
  if (e.status)
    s.bind(10, e.status);
  else
    s.bind_null(10);
  if (e.headers_json.empty())
    s.bind_null(11);
  else
    s.bind(11, e.headers_json);
  if (e.body)
    s.bind_blob(12, *e.body);
  else
    s.bind_null(12);
  s.bind(13, e.quota_deadline);
  s.exec();
  if (db_.changes() != 1) return false;
  if (is_final(e.next) && tallying())
    tally_final(e.group_known ? e.group : group_of(e.id), to_string(e.next), 1);
  auto& a = stmt(kEndAttempt);
  a.bind(1, e.id).bind(2, e.attempt).bind(3, now).bind(4, to_string(e.outcome));
  if (e.status)
    a.bind(5, e.status);
  else
    a.bind_null(5);
  if (e.error.empty())
    a.bind_null(6);
  else
    a.bind(6, e.error);
  a.bind(7, e.duration_ms);
  if (e.observation_json.empty())
    a.bind_null(8);
  else
    a.bind(8, e.observation_json);
  a.exec();
  return true;
}

std::vector<RunningJob> Store::running_jobs() {
  std::vector<RunningJob> out;
  auto& s = stmt(kRunning);
  while (s.step()) {
    RunningJob r;
    r.id = s.i64(0);
    r.api = s.text(1);
    r.attempt = static_cast<int>(s.i64(2));
    r.attempts_used = static_cast<int>(s.i64(3));
    r.max_attempts = static_cast<int>(s.i64(4));
    r.cost = s.i64(5);
    r.lease_until = s.opt_i64(6);
    r.quota_deadline = s.opt_i64(7);
    r.priority = s.i64(8);
    r.batch = s.is_null(9) ? 0 : s.i64(9);
    if (!s.is_null(10)) r.batch_key = s.text(10);
    if (!s.is_null(11)) r.group = s.text(11);
    out.push_back(std::move(r));
  }
  s.reset();
  return out;
}

std::vector<Start> Store::attempt_starts(const std::string& api, Millis since) {
  std::vector<Start> out;
  auto& s = stmt(kStarts);
  s.bind(1, api).bind(2, since);
  while (s.step()) out.push_back({s.i64(0), s.i64(1), 1});
  s.reset();
  auto& b = stmt(kBatchStarts);
  b.bind(1, api).bind(2, since);
  while (b.step()) out.push_back({b.i64(0), b.i64(1), b.i64(2)});
  b.reset();
  std::stable_sort(out.begin(), out.end(),
                   [](const Start& x, const Start& y) { return x.t < y.t; });
  return out;
}

bool Store::cancel(JobId id, Millis now) {
  auto& s = stmt(kCancel);
  s.bind(1, id).bind(2, now);
  const bool canceled = s.step();
  std::optional<std::string> group;
  if (canceled && !s.is_null(0)) group = s.text(0);
  s.reset();
  if (canceled) tally(group, Column::kCanceled, 1);
  return canceled;
}

std::optional<JobState> Store::state_of(JobId id) {
  auto& s = stmt(kStateOf);
  s.bind(1, id);
  std::optional<JobState> r;
  if (s.step()) r = parse_job_state(s.text(0));
  s.reset();
  return r;
}

std::int64_t Store::purge_finished(Millis before, int limit) {
  std::vector<JobId> ids;
  auto& s = stmt(kPurgeJobs);
  s.bind(1, before).bind(2, limit);
  while (s.step()) {
    ids.push_back(s.i64(0));
    if (tallying()) {
      std::optional<std::string> group;
      if (!s.is_null(1)) group = s.text(1);
      tally_final(group, s.text(2), -1);
      tally(group, Column::kTotal, -1);
    }
  }
  s.reset();
  auto& a = stmt(kPurgeAttempts);
  for (JobId id : ids) {
    a.bind(1, id);
    a.exec();
  }
  // Batch rows outlive their members' retention by a day, so a job kept a
  // little longer than its batch's start still shows its batch's size.
  auto& b = stmt(kPurgeBatches);
  b.bind(1, before - 86'400'000).bind(2, limit);
  b.exec();
  return static_cast<std::int64_t>(ids.size());
}

std::map<std::string, std::int64_t> Store::apis_with_ready_jobs() {
  std::map<std::string, std::int64_t> out;
  auto& s = stmt(kReadyApis);
  while (s.step()) out[s.text(0)] = s.i64(1);
  s.reset();
  return out;
}

nlohmann::json Store::info_row(sqlite::Statement& s, bool with_result) {
  auto opt = [&](int col) -> nlohmann::json {
    if (s.is_null(col)) return nullptr;
    return s.i64(col);
  };
  auto opt_text = [&](int col) -> nlohmann::json {
    if (s.is_null(col)) return nullptr;
    return s.text(col);
  };
  nlohmann::json j = {{"id", s.i64(0)},
                      {"api", s.text(1)},
                      {"state", s.text(2)},
                      {"method", s.text(3)},
                      {"path", s.text(4)},
                      {"priority", s.i64(5)},
                      {"cost", s.i64(6)},
                      {"group", opt_text(7)},
                      {"key", opt_text(8)},
                      {"attempts", s.i64(9)},
                      {"max_attempts", s.i64(10)},
                      {"created_ms", s.i64(11)},
                      {"run_at_ms", s.i64(12)},
                      {"finished_ms", opt(13)},
                      {"status", opt(14)},
                      {"outcome", opt_text(15)},
                      {"error", opt_text(16)},
                      {"updated_ms", s.i64(17)},
                      {"batch_key", opt_text(18)}};
  j["batch"] = s.is_null(19)
                   ? nlohmann::json()
                   : nlohmann::json{{"id", s.i64(19)}, {"size", opt(20)}};
  if (with_result) {
    j["headers"] = nlohmann::json::object();
    if (!s.is_null(21)) {
      auto h = nlohmann::json::parse(s.text(21), nullptr, false);
      if (!h.is_discarded()) j["headers"] = h;
    }
    j["body"] = opt_text(22);
  }
  return j;
}

nlohmann::json Store::job_infos(const std::vector<JobId>& ids) {
  nlohmann::json out = nlohmann::json::array();
  auto& s = stmt(kInfo);
  for (JobId id : ids) {
    s.bind(1, id);
    if (s.step()) out.push_back(info_row(s, false));
    s.reset();
  }
  return out;
}

std::optional<nlohmann::json> Store::job_result(JobId id) {
  auto& s = stmt(kResult);
  s.bind(1, id);
  if (!s.step()) {
    s.reset();
    return std::nullopt;
  }
  nlohmann::json job = info_row(s, true);
  s.reset();
  return nlohmann::json{{"job", job}, {"attempts", attempt_rows(id)}};
}

nlohmann::json Store::attempt_rows(JobId id) {
  nlohmann::json attempts = nlohmann::json::array();
  auto& a = stmt(kAttempts);
  a.bind(1, id);
  while (a.step()) {
    attempts.push_back(
        {{"n", a.i64(0)},
         {"worker", a.text(1)},
         {"started_ms", a.i64(2)},
         {"finished_ms",
          a.is_null(3) ? nlohmann::json() : nlohmann::json(a.i64(3))},
         {"outcome",
          a.is_null(4) ? nlohmann::json() : nlohmann::json(a.text(4))},
         {"status", a.is_null(5) ? nlohmann::json() : nlohmann::json(a.i64(5))},
         {"error", a.is_null(6) ? nlohmann::json() : nlohmann::json(a.text(6))},
         {"duration_ms", a.f64(7)},
         {"batch",
          a.is_null(8) ? nlohmann::json() : nlohmann::json(a.i64(8))}});
  }
  a.reset();
  return attempts;
}

nlohmann::json Store::list(const ListFilter& f) {
  // Built per call: filters vary and listing is not on the hot path.
  std::string sql =
      "SELECT " + std::string(kInfoColumns) + " FROM jobs WHERE id > ?1";
  int n = 2;
  int state_i = 0, api_i = 0, group_i = 0;
  if (f.state) {
    sql += " AND state = ?" + std::to_string(n);
    state_i = n++;
  }
  if (f.api) {
    sql += " AND api = ?" + std::to_string(n);
    api_i = n++;
  }
  if (f.group) {
    sql += " AND group_id = ?" + std::to_string(n);
    group_i = n++;
  }
  sql += " ORDER BY id LIMIT ?" + std::to_string(n);
  sqlite::Statement s(db_.handle(), sql);
  s.bind(1, f.after);
  if (state_i) s.bind(state_i, *f.state);
  if (api_i) s.bind(api_i, *f.api);
  if (group_i) s.bind(group_i, *f.group);
  s.bind(n, f.limit + 1);
  nlohmann::json jobs = nlohmann::json::array();
  nlohmann::json next = nullptr;
  while (s.step()) {
    if (static_cast<int>(jobs.size()) == f.limit) {
      next = jobs.back()["id"];
      break;
    }
    jobs.push_back(info_row(s, false));
  }
  return {{"jobs", jobs}, {"next", next}};
}

Progress Store::progress_ids(const std::vector<JobId>& ids) {
  Progress p;
  for (JobId id : ids) {
    if (auto st = state_of(id)) add_progress(p, std::string(to_string(*st)), 1);
  }
  return p;
}

namespace {

Progress progress_of(sqlite::Statement& s) {
  Progress p;
  if (s.step()) {
    p.total = s.i64(0);
    p.succeeded = static_cast<std::int64_t>(s.f64(1));
    p.dead = static_cast<std::int64_t>(s.f64(2));
    p.canceled = static_cast<std::int64_t>(s.f64(3));
    p.pending = p.total - p.succeeded - p.dead - p.canceled;
  }
  s.reset();
  return p;
}

}  // namespace

Progress Store::progress_group(const std::string& group) {
  if (auto it = tallies_.find(group); it != tallies_.end()) {
    it->second.used = ++tally_tick_;
    return with_pending(it->second.counts);
  }
  auto& s = stmt(kProgressGroup);
  s.bind(1, group);
  Progress p = progress_of(s);
  if (tallies_.size() >= kMaxTallies) {
    auto oldest = std::min_element(tallies_.begin(), tallies_.end(),
                                   [](const auto& a, const auto& b) {
                                     return a.second.used < b.second.used;
                                   });
    tallies_.erase(oldest);
  }
  tallies_[group] = Tally{p, ++tally_tick_};
  return p;
}

Progress Store::progress_all() {
  if (!all_tally_) all_tally_ = progress_of(stmt(kProgressAll));
  return with_pending(*all_tally_);
}

std::map<std::string, std::map<std::string, std::int64_t>>
Store::state_counts() {
  std::map<std::string, std::map<std::string, std::int64_t>> out;
  auto& s = stmt(kStateCounts);
  while (s.step()) out[s.text(0)][s.text(1)] = s.i64(2);
  s.reset();
  return out;
}

std::map<std::string, std::int64_t> Store::dead_counts() {
  std::map<std::string, std::int64_t> out;
  auto& s = stmt(kDeadCounts);
  while (s.step()) out[s.text(0)] = s.i64(1);
  s.reset();
  return out;
}

// ---------------------------------------------------------------- dead letters

namespace {

void bind_dead_filter(sqlite::Statement& s, const DeadFilter& f, int limit) {
  s.bind(1, f.after).bind(2, f.api);
  if (f.failure_class)
    s.bind(3, to_string(*f.failure_class));
  else
    s.bind_null(3);
  s.bind(4, f.since).bind(5, limit);
}

}  // namespace

nlohmann::json Store::dead_row(sqlite::Statement& s, bool with_attempts) {
  auto opt = [&](int col) -> nlohmann::json {
    if (s.is_null(col)) return nullptr;
    return s.i64(col);
  };
  auto opt_text = [&](int col) -> nlohmann::json {
    if (s.is_null(col)) return nullptr;
    return s.text(col);
  };
  std::optional<Outcome> last;
  if (!s.is_null(10)) last = parse_outcome(s.text(10));
  FailureClass c = last ? failure_class(*last) : FailureClass::kPermanent;
  const JobId id = s.i64(0);
  nlohmann::json j = {{"id", id},
                      {"api", s.text(1)},
                      {"method", s.text(2)},
                      {"path", s.text(3)},
                      {"group", opt_text(4)},
                      {"created_ms", s.i64(5)},
                      {"finished_ms", opt(6)},
                      {"attempts", s.i64(7)},
                      {"max_attempts", s.i64(8)},
                      {"dispatches", s.i64(9)},
                      {"class", to_string(c)},
                      {"outcome", opt_text(10)},
                      {"status", opt(11)},
                      {"error", opt_text(12)}};
  if (with_attempts) j["attempt_rows"] = attempt_rows(id);
  return j;
}

nlohmann::json Store::dead_list(const DeadFilter& f, bool with_attempts) {
  auto& s = stmt(kDeadList);
  bind_dead_filter(s, f, f.limit + 1);
  nlohmann::json jobs = nlohmann::json::array();
  nlohmann::json next = nullptr;
  while (s.step()) {
    if (static_cast<int>(jobs.size()) == f.limit) {
      next = jobs.back()["id"];
      break;
    }
    jobs.push_back(dead_row(s, with_attempts));
  }
  s.reset();
  return {{"jobs", jobs}, {"next", next}};
}

nlohmann::json Store::dead_jobs(const std::vector<JobId>& ids,
                                bool with_attempts) {
  nlohmann::json jobs = nlohmann::json::array();
  nlohmann::json not_dead = nlohmann::json::array();
  auto& s = stmt(kDeadOne);
  for (JobId id : ids) {
    s.bind(1, id);
    if (s.step())
      jobs.push_back(dead_row(s, with_attempts));
    else
      not_dead.push_back(id);
    s.reset();
  }
  return {{"jobs", jobs}, {"not_dead", not_dead}};
}

std::vector<DeadRef> Store::dead_page(const DeadFilter& f) {
  std::vector<DeadRef> out;
  auto& s = stmt(kDeadPage);
  bind_dead_filter(s, f, f.limit);
  while (s.step()) out.push_back({s.i64(0), s.text(1)});
  s.reset();
  return out;
}

std::optional<std::string> Store::dead_api(JobId id) {
  auto& s = stmt(kDeadApi);
  s.bind(1, id);
  std::optional<std::string> r;
  if (s.step()) r = s.text(0);
  s.reset();
  return r;
}

std::optional<ReadyEntry> Store::requeue_dead(JobId id, Millis now) {
  auto& s = stmt(kRequeueDead);
  s.bind(1, id).bind(2, now);
  std::optional<ReadyEntry> r;
  std::optional<std::string> group;
  if (s.step()) {
    r = ready_entry(id, s.i64(0), s.i64(1), s.i64(2),
                    s.is_null(3) ? std::string() : s.text(3));
    if (!s.is_null(4)) group = s.text(4);
  }
  s.reset();
  if (r) tally(group, Column::kDead, -1);
  return r;
}

void Store::save_lane(const std::string& api,
                      std::optional<Millis> paused_until,
                      const std::string& pause_reason,
                      const std::string& state_json, Millis now) {
  sqlite::Statement s(
      db_.handle(),
      "INSERT INTO lanes (api, paused_until, pause_reason, state, updated_at)"
      " VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (api) DO UPDATE SET"
      " paused_until = ?2, pause_reason = ?3, state = ?4, updated_at = ?5");
  s.bind(1, api).bind(2, paused_until).bind(3, pause_reason);
  s.bind(4, state_json).bind(5, now);
  s.exec();
}

std::map<std::string, std::string> Store::load_lanes() {
  std::map<std::string, std::string> out;
  sqlite::Statement s(db_.handle(),
                      "SELECT api, state FROM lanes WHERE state IS NOT NULL");
  while (s.step()) out[s.text(0)] = s.text(1);
  return out;
}

}  // namespace pacer
