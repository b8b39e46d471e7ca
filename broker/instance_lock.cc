#include "broker/instance_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <system_error>

namespace pacer {
namespace {

// The pid the holder wrote into the lock file, or "" when unreadable.
std::string holder_of(int fd) {
  char buf[32] = {};
  const auto n = ::pread(fd, buf, sizeof buf - 1, 0);
  std::string pid(buf, n > 0 ? static_cast<std::size_t>(n) : 0);
  while (!pid.empty() && (pid.back() == '\n' || pid.back() == ' '))
    pid.pop_back();
  return pid.find_first_not_of("0123456789") == std::string::npos ? pid : "";
}

// The database's path with every symlink and "." or ".." resolved (those
// of its folder when the file does not exist yet): two names for one file
// through a symlink must take one lock. (Hard links still name two.)
std::string real_path(const std::string& database) {
  std::error_code ec;
  auto p = std::filesystem::weakly_canonical(database, ec);
  return ec || p.empty() ? database : p.string();
}

}  // namespace

InstanceLock::InstanceLock(const std::string& database)
    : path_(real_path(database) + ".lock") {
  fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0)
    throw std::runtime_error("cannot open the lock file " + path_ + ": " +
                             std::strerror(errno));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    const std::string holder = holder_of(fd_);
    ::close(fd_);
    fd_ = -1;
    if (err != EWOULDBLOCK)
      throw std::runtime_error("cannot lock " + path_ + ": " +
                               std::strerror(err));
    throw std::runtime_error(
        "database " + database + " is in use by another pacer-broker" +
        (holder.empty() ? "" : " (pid " + holder + ")") +
        ": one broker per database (lock file " + path_ + ")");
  }
  // Written for the message above. The lock, not the text, is what counts,
  // so a failed write is no error.
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd_, 0) == 0) {
    [[maybe_unused]] const auto written =
        ::pwrite(fd_, pid.data(), pid.size(), 0);
  }
}

InstanceLock::~InstanceLock() {
  // Left in place: unlinking it could let a second broker lock a new file
  // while a third still holds the old one.
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace pacer
