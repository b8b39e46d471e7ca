// Thin RAII wrappers over the SQLite C API: a connection and prepared
// statements with bind/column helpers. Errors throw StoreError, which the
// broker treats as fatal (crash-only: the database is the truth and a restart
// rebuilds everything from it). Not thread-safe; one connection per thread.
#pragma once

#include <sqlite3.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>

namespace pacer::sqlite {

class StoreError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Statement {
 public:
  Statement(sqlite3* db, std::string_view sql);
  ~Statement();
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  Statement& bind(int i, std::int64_t v);
  Statement& bind(int i, int v) {
    return bind(i, static_cast<std::int64_t>(v));
  }
  Statement& bind(int i, double v);
  Statement& bind(int i, std::string_view v);
  Statement& bind(int i, const char* v) { return bind(i, std::string_view(v)); }
  Statement& bind(int i, const std::string& v) {
    return bind(i, std::string_view(v));
  }
  Statement& bind_blob(int i, std::string_view v);
  Statement& bind_null(int i);
  template <typename T>
  Statement& bind(int i, const std::optional<T>& v) {
    return v ? bind(i, *v) : bind_null(i);
  }

  // Steps once: true while a row is available.
  bool step();
  // Runs to completion, then resets.
  void exec();
  void reset();

  bool is_null(int col) const;
  std::int64_t i64(int col) const;
  double f64(int col) const;
  std::string text(int col) const;
  std::optional<std::int64_t> opt_i64(int col) const;

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
};

class Database {
 public:
  explicit Database(const std::string& path);
  ~Database();
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;

  void exec(std::string_view sql);
  sqlite3* handle() const { return db_; }
  std::int64_t last_insert_rowid() const;
  int changes() const;

 private:
  sqlite3* db_ = nullptr;
};

// Checkpoints a WAL database from a thread of its own, on a connection of
// its own: copying the WAL's pages into the database file, and the fsyncs
// around it, happen beside the connection that commits instead of inside
// one of its commits. Wake it with request(); it checkpoints (PASSIVE: never
// waits for the writer) until the WAL is copied or the writer has appended
// more, then sleeps again. The writer's next transaction starts the WAL
// from the top once all of it has been copied.
class Checkpointer {
 public:
  Checkpointer(const std::string& path, bool synchronous_full);
  ~Checkpointer();  // stops and joins the thread
  Checkpointer(const Checkpointer&) = delete;
  Checkpointer& operator=(const Checkpointer&) = delete;

  // Asks for a checkpoint; never blocks.
  void request();
  // Checkpoint passes completed so far.
  std::uint64_t passes() const { return passes_.load(); }

 private:
  void run();

  Database db_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool wanted_ = false;
  bool stop_ = false;
  std::atomic<std::uint64_t> passes_{0};
  std::thread thread_;  // last: started once everything else exists
};

}  // namespace pacer::sqlite
