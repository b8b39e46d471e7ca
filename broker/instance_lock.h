// One broker per database. Two brokers on one SQLite file would both
// dispatch its jobs, each with a limiter of its own: jobs run twice and
// quotas are spent twice over. InstanceLock holds an exclusive flock(2) on
// "<database>.lock", the database's real path (symlinks resolved), for the
// life of the process; the kernel releases it
// however the process ends, so a crash never leaves a stale lock behind.
// Like SQLite's own locking, it needs a local filesystem.
#pragma once

#include <string>

namespace pacer {

class InstanceLock {
 public:
  // Throws std::runtime_error naming the database, and the holder's pid
  // when it is known, if another process holds the lock.
  explicit InstanceLock(const std::string& database);
  ~InstanceLock();
  InstanceLock(const InstanceLock&) = delete;
  InstanceLock& operator=(const InstanceLock&) = delete;

 private:
  std::string path_;
  int fd_ = -1;
};

}  // namespace pacer
