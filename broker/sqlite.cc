#include "broker/sqlite.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>

#include "common/log.h"

namespace pacer::sqlite {

static void check(sqlite3* db, int rc, std::string_view what) {
  if (rc != SQLITE_OK && rc != SQLITE_ROW && rc != SQLITE_DONE)
    throw StoreError(std::string(what) + ": " + sqlite3_errmsg(db));
}

Statement::Statement(sqlite3* db, std::string_view sql) : db_(db) {
  check(db,
        sqlite3_prepare_v3(db, sql.data(), static_cast<int>(sql.size()),
                           SQLITE_PREPARE_PERSISTENT, &stmt_, nullptr),
        "prepare " + std::string(sql.substr(0, 60)));
}

Statement::~Statement() { sqlite3_finalize(stmt_); }

Statement& Statement::bind(int i, std::int64_t v) {
  check(db_, sqlite3_bind_int64(stmt_, i, v), "bind");
  return *this;
}
Statement& Statement::bind(int i, double v) {
  check(db_, sqlite3_bind_double(stmt_, i, v), "bind");
  return *this;
}
Statement& Statement::bind(int i, std::string_view v) {
  check(db_,
        sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()),
                          SQLITE_TRANSIENT),
        "bind");
  return *this;
}
Statement& Statement::bind_blob(int i, std::string_view v) {
  check(db_,
        sqlite3_bind_blob(stmt_, i, v.data(), static_cast<int>(v.size()),
                          SQLITE_TRANSIENT),
        "bind");
  return *this;
}
Statement& Statement::bind_null(int i) {
  check(db_, sqlite3_bind_null(stmt_, i), "bind");
  return *this;
}

bool Statement::step() {
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  std::string msg = sqlite3_errmsg(db_);
  sqlite3_reset(stmt_);
  throw StoreError("step: " + msg);
}

void Statement::exec() {
  while (step()) {
  }
  reset();
}

void Statement::reset() {
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
}

bool Statement::is_null(int col) const {
  return sqlite3_column_type(stmt_, col) == SQLITE_NULL;
}
std::int64_t Statement::i64(int col) const {
  return sqlite3_column_int64(stmt_, col);
}
double Statement::f64(int col) const {
  return sqlite3_column_double(stmt_, col);
}
std::string Statement::text(int col) const {
  auto* p = static_cast<const char*>(sqlite3_column_blob(stmt_, col));
  int n = sqlite3_column_bytes(stmt_, col);
  return p ? std::string(p, static_cast<std::size_t>(n)) : std::string();
}
std::optional<std::int64_t> Statement::opt_i64(int col) const {
  if (is_null(col)) return std::nullopt;
  return i64(col);
}

namespace {
// SQLite's allocation statistics take a process-wide mutex on every malloc
// and free (about 3% of the broker's time under load; 12% fewer
// instructions per job life in pacer-bench-store without them), and nothing
// in pacer reads them. Only possible before SQLite initializes, so done
// before the first open; a later call would fail harmlessly.
void configure_sqlite_once() {
  static const int rc = sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
  (void)rc;
}
}  // namespace

Database::Database(const std::string& path) {
  configure_sqlite_once();
  // A new database is the owner's alone (0600, whatever the umask): it
  // holds every job's body and results. SQLite gives its WAL and shared-
  // memory files the database's mode. An existing file keeps its own.
  if (!path.empty() && path != ":memory:" && path.rfind("file:", 0) != 0) {
    const int fd =
        ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0) ::close(fd);  // anything else is sqlite3_open's to report
  }
  int rc = sqlite3_open_v2(
      path.c_str(), &db_,
      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
      nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db_ ? sqlite3_errmsg(db_) : "out of memory";
    sqlite3_close(db_);
    db_ = nullptr;
    throw StoreError("cannot open database " + path + ": " + msg);
  }
  sqlite3_busy_timeout(db_, 5000);
  sqlite3_extended_result_codes(db_, 1);
}

Database::~Database() { sqlite3_close_v2(db_); }

void Database::exec(std::string_view sql) {
  char* err = nullptr;
  int rc = sqlite3_exec(db_, std::string(sql).c_str(), nullptr, nullptr, &err);
  if (rc != SQLITE_OK) {
    std::string msg = err ? err : sqlite3_errmsg(db_);
    sqlite3_free(err);
    // Name the statement, as step() and prepare do: "COMMIT: database or
    // disk is full" says which write failed.
    const auto head = sql.substr(0, std::min<std::size_t>(sql.find('\n'), 40));
    throw StoreError(std::string(head) + ": " + msg);
  }
}

std::int64_t Database::last_insert_rowid() const {
  return sqlite3_last_insert_rowid(db_);
}
int Database::changes() const { return sqlite3_changes(db_); }

Checkpointer::Checkpointer(const std::string& path, bool synchronous_full)
    : db_(path) {
  // The checkpoint's fsyncs follow the connection that runs it.
  db_.exec(synchronous_full ? "PRAGMA synchronous = FULL"
                            : "PRAGMA synchronous = NORMAL");
  // Never checkpoint from this connection's own commits (it makes none).
  sqlite3_wal_autocheckpoint(db_.handle(), 0);
  thread_ = std::thread([this] { run(); });
}

Checkpointer::~Checkpointer() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_one();
  thread_.join();
}

void Checkpointer::request() {
  {
    std::lock_guard lock(mu_);
    if (wanted_) return;
    wanted_ = true;
  }
  cv_.notify_one();
}

void Checkpointer::run() {
  auto last_warned = std::chrono::steady_clock::time_point{};
  for (;;) {
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [this] { return wanted_ || stop_; });
      if (stop_) return;
      wanted_ = false;
    }
    // Chase the writer a few times: each pass copies only what the last
    // one left, and the WAL can start over only once a pass has copied
    // everything before the writer's next transaction begins.
    for (int pass = 0; pass < 4; ++pass) {
      int log_frames = 0;
      int copied = 0;
      const int rc = sqlite3_wal_checkpoint_v2(db_.handle(), nullptr,
                                               SQLITE_CHECKPOINT_PASSIVE,
                                               &log_frames, &copied);
      if (rc != SQLITE_OK) {
        // SQLITE_BUSY: another checkpoint is running (the writer's own,
        // when the WAL outgrew what this thread keeps up with).
        const auto now = std::chrono::steady_clock::now();
        if (rc != SQLITE_BUSY && now - last_warned > std::chrono::minutes(1)) {
          last_warned = now;
          log::warn("checkpoint_failed",
                    {{"error", sqlite3_errmsg(db_.handle())}});
        }
        break;
      }
      passes_.fetch_add(1);
      if (copied >= log_frames) break;
    }
  }
}

}  // namespace pacer::sqlite
