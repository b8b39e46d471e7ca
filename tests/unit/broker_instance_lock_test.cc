// One broker per database, whatever name the database is reached by, and a
// database only its owner can read. Real files in a temporary directory;
// flock(2) locks belong to the open file, so two InstanceLocks in one
// process conflict as two brokers would.
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>

#include "broker/instance_lock.h"
#include "broker/store.h"
#include "tests/support/process.h"

namespace pacer {
namespace {

unsigned mode_of(const std::string& path) {
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  return st.st_mode & 0777;
}

}  // namespace

TEST_CASE("the lock is taken on the database's real path") {
  testing::TempDir dir;
  std::filesystem::create_directory(dir.file("data"));
  const std::string db = dir.file("data/pacer.db");
  auto first = std::make_unique<InstanceLock>(db);

  // Through a symlink to the file (created by then), and through a path
  // with "." and "..": the same database, refused.
  { Store s(db, false); }
  std::filesystem::create_symlink(db, dir.file("link.db"));
  CHECK_THROWS_WITH_AS(InstanceLock(dir.file("link.db")),
                       doctest::Contains("in use by another pacer-broker"),
                       std::runtime_error);
  CHECK_THROWS_AS(InstanceLock(dir.file("data/../data/./pacer.db")),
                  std::runtime_error);
  // Through a symlinked folder, before the file exists.
  const std::string fresh = dir.file("data/fresh.db");
  std::filesystem::create_directory_symlink(dir.file("data"),
                                            dir.file("alias"));
  InstanceLock fresh_lock(fresh);
  CHECK_THROWS_AS(InstanceLock(dir.file("alias/fresh.db")),
                  std::runtime_error);

  // Released with its holder: the next one starts.
  first.reset();
  CHECK_NOTHROW(InstanceLock(dir.file("link.db")));
}

TEST_CASE("a new database and its WAL are readable by their owner only") {
  testing::TempDir dir;
  const mode_t old = ::umask(022);
  const std::string db = dir.file("pacer.db");
  {
    Store s(db, false);
    CHECK(mode_of(db) == 0600);
    CHECK(mode_of(db + "-wal") == 0600);
  }
  // An existing database keeps the mode its owner gave it.
  const std::string shared = dir.file("shared.db");
  { Store s(shared, false); }
  REQUIRE(::chmod(shared.c_str(), 0640) == 0);
  { Store s(shared, false); }
  CHECK(mode_of(shared) == 0640);
  ::umask(old);
}

}  // namespace pacer
