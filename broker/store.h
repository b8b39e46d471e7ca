// Store: the broker's job store. All SQL of pacer lives here (and in
// schema/*.sql, the migrations it applies at open). SQLite in WAL mode; the
// broker groups every change of one loop turn into one transaction (begin /
// commit), so a client's SUBMIT is acknowledged only once it is durable.
// Errors throw sqlite::StoreError: fatal for the broker by design.
// Not thread-safe; owned by the broker loop.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "broker/sqlite.h"
#include "common/clock.h"
#include "common/job.h"

namespace pacer {

struct ReadyEntry {
  JobId id = 0;
  std::int64_t priority = 0;
  Millis run_at = 0;
  std::int64_t cost = 1;
  // Batching (only on lanes with a batch section; empty otherwise): the
  // job's batch key, what its body adds to a batch body
  // (batch_member_bytes), and why it can never go in a batch, if it cannot.
  std::string batch_key;
  std::int64_t batch_bytes = 0;
  std::string batch_error;
};

struct Inserted {
  JobId id = 0;
  bool duplicate = false;
  ReadyEntry entry;
};

// A job claimed for dispatch: its state is now running and an attempt row
// numbered `attempt` exists.
struct Claimed {
  JobId id = 0;
  int attempt = 0;  // dispatch number, the fencing token
  int attempts_used = 0;
  int max_attempts = 1;
  std::string method;
  std::string path;
  std::string headers_json;  // empty: none
  std::optional<std::string> body;
  Millis timeout_ms = 0;
  std::int64_t cost = 1;
  std::optional<Millis> quota_deadline;
  std::int64_t priority = 0;
  std::optional<std::string> group;
};

// What the lane's limits were charged for one dispatch (a job on its own, or
// a batch), as recorded; the limiters are rebuilt from these after a restart.
struct Start {
  Millis t = 0;
  std::int64_t units = 1;
  std::int64_t requests = 1;
  bool operator==(const Start&) const = default;
};

// The end of one attempt, and the state it moves the job to.
struct AttemptEnd {
  JobId id = 0;
  int attempt = 0;
  JobState next = JobState::kSucceeded;
  Outcome outcome = Outcome::kSuccess;
  bool uses_attempt = true;
  int status = 0;
  std::string error;
  std::string headers_json;
  std::optional<std::string> body;
  Millis run_at = 0;  // for retrying / waiting_quota
  std::optional<Millis> quota_deadline;
  double duration_ms = 0;
  std::string observation_json;
  // The job's group, when the caller knows it: ending a job in a final
  // state counts it in its group's progress, and the store need not read
  // the group again.
  bool group_known = false;
  std::optional<std::string> group;
};

struct RunningJob {
  JobId id = 0;
  std::string api;
  int attempt = 0;
  int attempts_used = 0;
  int max_attempts = 1;
  std::int64_t cost = 1;
  std::optional<Millis> lease_until;
  std::optional<Millis> quota_deadline;
  std::int64_t priority = 0;
  std::int64_t batch = 0;  // the batch of its current attempt, 0 = none
  std::string batch_key;
  std::optional<std::string> group;
};

struct ListFilter {
  std::optional<std::string> state;
  std::optional<std::string> api;
  std::optional<std::string> group;
  JobId after = 0;
  int limit = 100;
};

struct Progress {
  std::int64_t total = 0, succeeded = 0, dead = 0, canceled = 0, pending = 0;
};

// Which dead jobs a dead-letter listing or replay step covers: those with an
// id above `after`, in id order, at most `limit`.
struct DeadFilter {
  std::optional<std::string> api;
  std::optional<FailureClass> failure_class;
  std::optional<Millis> since;  // finished_at >= since
  JobId after = 0;
  int limit = 100;
};

// A dead job a replay step may move.
struct DeadRef {
  JobId id = 0;
  std::string api;
};

// When the WAL is checkpointed (its pages copied into the database file so
// that it can start over). Tests shrink these.
struct WalPolicy {
  // A thread of the store's own checkpoints once the WAL holds this many
  // pages (0: no such thread; the committing connection does it all).
  int background_pages = 4000;
  // The committing connection checkpoints in its commit, as SQLite's own
  // autocheckpoint does, once the WAL holds this many pages: the bound on
  // the WAL's size should the thread fall behind.
  int inline_pages = 16000;
};

class Store {
 public:
  // Opens (creating if needed) and migrates. `synchronous_full` trades
  // throughput for power-loss durability (NORMAL loses nothing on a crash of
  // the process).
  Store(const std::string& path, bool synchronous_full, WalPolicy wal = {});
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  int schema_version();
  // Checkpoint passes the background thread has completed.
  std::uint64_t background_checkpoints() const;

  void begin();
  void commit();
  void rollback();
  bool in_transaction() const { return in_tx_; }
  // A savepoint inside the turn's transaction: one SUBMIT is all or nothing.
  void savepoint();
  void release();
  void rollback_to_savepoint();

  Inserted insert_job(const JobSpec& spec, const std::string& group,
                      int max_attempts, Millis timeout_ms, Millis now);
  // The lane's best ready jobs. With `bodies`, also the body of each job
  // that has a batch key (nullopt for the others), index for index.
  std::vector<ReadyEntry> ready(
      const std::string& api, Millis now, int limit,
      std::vector<std::optional<std::string>>* bodies = nullptr);
  // A job's request body (nullopt: none, or no such job).
  std::optional<std::string> body_of(JobId id);
  // When the lane's next waiting job (a delay, a backoff, a quota's reset)
  // becomes ready: the smallest run_at after `now` of its ready jobs. Only
  // jobs with run_at > updated_at are indexed for this, which is all of them
  // while one process writes them (its clock never steps back, so
  // updated_at <= now). `any` reads all the lane's ready jobs instead (a
  // scan of its part of jobs_ready): for the first call after a start, when
  // rows written before a step back of the wall clock may have
  // updated_at > now.
  std::optional<Millis> next_due(const std::string& api, Millis now,
                                 bool any = false);
  // The lease runs for the job's own timeout plus `lease_grace_ms`. `batch`:
  // the batch the attempt goes in (0: none), recorded on the attempt row.
  std::optional<Claimed> claim(JobId id, const std::string& api,
                               const std::string& worker, Millis now,
                               Millis lease_grace_ms, std::int64_t batch = 0);
  // A batch row (migration 003): created before its members are claimed,
  // completed with what it was charged once they are, deleted when none
  // could be claimed.
  std::int64_t insert_batch(const std::string& api,
                            const std::string& batch_key,
                            const std::string& worker, Millis now);
  void complete_batch(std::int64_t id, std::int64_t items,
                      std::int64_t requests, std::int64_t units);
  void delete_batch(std::int64_t id);
  // Applies the end of an attempt if `attempt` is still the job's current
  // one and it is running. Returns whether it applied (fencing).
  bool end_attempt(const AttemptEnd& end, Millis now);
  std::vector<RunningJob> running_jobs();
  // The lane's dispatches since `since`, oldest first: single attempts
  // and batches (one entry per batch, charged as it was).
  std::vector<Start> attempt_starts(const std::string& api, Millis since);
  // Moves a job from any non-final state to canceled.
  bool cancel(JobId id, Millis now);
  std::optional<JobState> state_of(JobId id);
  std::int64_t purge_finished(Millis before, int limit);
  std::map<std::string, std::int64_t> apis_with_ready_jobs();

  nlohmann::json job_infos(const std::vector<JobId>& ids);
  std::optional<nlohmann::json> job_result(JobId id);
  nlohmann::json list(const ListFilter& f);
  Progress progress_ids(const std::vector<JobId>& ids);
  // A group's counts (and all jobs'): the first call counts the rows, later
  // ones read a tally every change of a job's state or existence keeps up to
  // date, so polling a group of a million jobs does not stall the broker.
  Progress progress_group(const std::string& group);
  Progress progress_all();
  // api -> state -> count
  std::map<std::string, std::map<std::string, std::int64_t>> state_counts();
  // Dead jobs per API, from the dead letters' index (it reads only them).
  std::map<std::string, std::int64_t> dead_counts();

  // Per-lane state that survives a restart (pauses, learned limits, the
  // server's last counts), as the broker's QuotaState persists it.
  void save_lane(const std::string& api, std::optional<Millis> paused_until,
                 const std::string& pause_reason, const std::string& state_json,
                 Millis now);
  // api -> state JSON
  std::map<std::string, std::string> load_lanes();

  // --- dead letters (DEAD_LIST / DEAD_REPLAY, schema/wire_protocol.md) ---
  // {"jobs": [DeadJob...], "next": id or null}; `with_attempts` adds each
  // job's attempt rows.
  nlohmann::json dead_list(const DeadFilter& f, bool with_attempts);
  // {"jobs": [DeadJob...], "not_dead": [ids]} for exactly these ids.
  nlohmann::json dead_jobs(const std::vector<JobId>& ids, bool with_attempts);
  // The ids and APIs of the dead jobs the filter covers.
  std::vector<DeadRef> dead_page(const DeadFilter& f);
  // The API of a job if it is dead.
  std::optional<std::string> dead_api(JobId id);
  // Moves a dead job back to queued: attempts used 0, no quota deadline,
  // run_at now, not finished. Dispatches (the fencing token), the attempt
  // rows and the last outcome, error and response are kept. Returns its
  // ready entry, or nothing if it was not dead.
  std::optional<ReadyEntry> requeue_dead(JobId id, Millis now);

 private:
  sqlite::Statement& stmt(int which);
  void migrate();
  nlohmann::json info_row(sqlite::Statement& s, bool with_result);
  nlohmann::json dead_row(sqlite::Statement& s, bool with_attempts);
  nlohmann::json attempt_rows(JobId id);

  // --- progress tallies (progress_group / progress_all) ---
  // One change to the counts: +1 / -1 in one column of a group's tally.
  enum class Column { kTotal, kSucceeded, kDead, kCanceled };
  struct Tally {
    Progress counts;         // pending is derived on read
    std::uint64_t used = 0;  // for eviction: the last read, as a tick
  };
  bool tallying() const { return all_tally_ || !tallies_.empty(); }
  // Applies one change to the group's tally (if kept) and to all jobs'.
  void tally(const std::optional<std::string>& group, Column c, int delta);
  void tally_final(const std::optional<std::string>& group,
                   std::string_view state, int delta);
  std::optional<std::string> group_of(JobId id);
  // The one text column statement `which` reads for job `id` (nullopt: no
  // such job, or NULL).
  std::optional<std::string> text_of(int which, JobId id);

  static int on_wal_commit(void* self, sqlite3* db, const char* name,
                           int pages);

  sqlite::Database db_;
  WalPolicy wal_;
  // After db_: stopped before the connection it checkpoints for closes.
  std::unique_ptr<sqlite::Checkpointer> checkpointer_;
  std::vector<std::unique_ptr<sqlite::Statement>> stmts_;
  bool in_tx_ = false;
  std::unordered_map<std::string, Tally> tallies_;
  std::optional<Progress> all_tally_;
  std::uint64_t tally_tick_ = 0;
  // Changes made since savepoint(), undone by rollback_to_savepoint().
  struct Change {
    std::optional<std::string> group;
    Column column;
    int delta;
  };
  bool in_savepoint_ = false;
  std::vector<Change> savepoint_changes_;
};

}  // namespace pacer
