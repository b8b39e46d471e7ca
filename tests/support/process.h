// Test support: real child processes (broker, workers, mock API), temporary
// directories, loopback ports and deadline-bounded waits. Everything a test
// starts is stopped by the destructors here, even when an assertion fails.
// Not thread-safe; one test thread drives these.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace pacer::testing {

using namespace std::chrono_literals;

// Path of a built binary ("pacer-broker", "pacer-worker", "pacer",
// "pacer-mock-api").
std::string binary(const std::string& name);

// A fresh directory under /tmp, removed with its contents on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  void write(const std::string& name, const std::string& text) const;

 private:
  std::string path_;
};

// A child process whose stdout and stderr go to files (read them any time).
// The destructor sends SIGKILL if it is still running and reaps it.
class Process {
 public:
  Process(std::vector<std::string> argv, const std::string& log_dir,
          const std::string& name, std::map<std::string, std::string> env = {});
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  bool running();
  void signal(int sig);
  // Waits for exit; returns the exit code (128+signal when killed), or
  // nothing if the deadline passed.
  std::optional<int> wait(std::chrono::milliseconds timeout);
  // SIGTERM, then SIGKILL if it has not exited within `grace`.
  int stop(std::chrono::milliseconds grace = 10s);
  std::string out() const;
  std::string err() const;
  // Waits until stdout contains `needle`; returns the whole line holding it.
  std::optional<std::string> wait_for_output(const std::string& needle,
                                             std::chrono::milliseconds timeout);
  const std::string& name() const { return name_; }

 private:
  std::string name_;
  std::string out_path_;
  std::string err_path_;
  pid_t pid_ = -1;
  std::optional<int> status_;
};

// Polls `done` until it returns true or the deadline passes. The poll interval
// is short and bounded; nothing waits a fixed time for something to happen.
bool wait_until(const std::function<bool()>& done,
                std::chrono::milliseconds timeout,
                std::chrono::milliseconds interval = 10ms);

// A TCP port on 127.0.0.1 that was free a moment ago.
int free_port();

// Runs a command to completion (for the `pacer` CLI); captures its output.
struct CommandResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};
CommandResult run_command(const std::vector<std::string>& argv,
                          std::chrono::milliseconds timeout = 120s,
                          const std::string& stdin_text = "");

// A plain HTTP GET/POST on loopback (the mock API's /stats and /admin).
std::optional<nlohmann::json> http_json(int port, const std::string& method,
                                        const std::string& path,
                                        const std::string& body = "");

// Starts `pacer-mock-api --port 0 ARGS...` and reads the port it chose.
class MockApi {
 public:
  MockApi(const TempDir& dir, std::vector<std::string> args);
  int port() const { return port_; }
  std::string base_url() const;
  nlohmann::json stats() const;
  Process& process() { return *proc_; }

 private:
  std::unique_ptr<Process> proc_;
  int port_ = 0;
};

}  // namespace pacer::testing
