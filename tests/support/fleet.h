// Test support: a whole pacer fleet on loopback — a mock API, a broker on a
// SQLite file, workers — built from the real binaries, plus a minimal
// protocol client that speaks to the broker directly (independent of the
// `pacer` CLI, so the tests check the wire contract too). Everything started
// is stopped by the destructor. Not thread-safe.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/protocol.h"
#include "common/security.h"
#include "tests/support/process.h"

namespace pacer::testing {

// One request/reply on the client endpoint. Empty on timeout. With
// `curve`, as a CURVE client (common/security.h).
std::optional<nlohmann::json> broker_request(
    const std::string& endpoint, protocol::Command command, nlohmann::json body,
    std::chrono::milliseconds timeout = 10s,
    const CurveClient* curve = nullptr);

struct FleetOptions {
  std::vector<std::string> mock_args = {};  // e.g. {"--limit", "50/s"}
  std::string api_toml = {};                // extra lines for [api.echo]
  std::string broker_toml = {};             // extra lines for [broker]
  std::string extra_toml =
      {};  // appended: more [api.*] tables; "{mock}" = mock URL
  int workers = 2;
  int worker_concurrency = 16;
};

class Fleet {
 public:
  explicit Fleet(FleetOptions options);
  ~Fleet();

  TempDir& dir() { return dir_; }
  MockApi& mock() { return *mock_; }
  const std::string& config_path() const { return config_path_; }
  std::string db_path() const { return dir_.file("pacer.db"); }
  std::string client_endpoint() const {
    return "ipc://" + dir_.file("clients.sock");
  }

  void start_broker();
  Process& broker() { return *broker_; }
  void start_worker(int index, std::vector<std::string> extra_args = {});
  Process& worker(int index) { return *workers_.at(index); }
  // Waits until the broker reports `n` connected workers.
  bool wait_workers(std::size_t n, std::chrono::milliseconds timeout = 30s);

  std::optional<nlohmann::json> request(
      protocol::Command c, nlohmann::json body,
      std::chrono::milliseconds timeout = 10s) {
    return broker_request(client_endpoint(), c, std::move(body), timeout,
                          client_curve ? &*client_curve : nullptr);
  }
  // The keys request() uses, for a broker with [security].
  std::optional<CurveClient> client_curve;
  // Submits `n` echo jobs {"n": i} in one SUBMIT (keys "<prefix>:i"); returns
  // ids.
  std::vector<std::int64_t> submit_echo(int n, const std::string& prefix,
                                        const nlohmann::json& extra = {});
  // PROGRESS for a set of ids.
  nlohmann::json progress(const std::vector<std::int64_t>& ids);
  // Waits until none of `ids` is pending.
  bool wait_done(const std::vector<std::int64_t>& ids,
                 std::chrono::milliseconds timeout);
  // Runs the `pacer` CLI with this fleet's configuration.
  CommandResult cli(std::vector<std::string> args,
                    std::chrono::milliseconds timeout = 120s);

 private:
  FleetOptions options_;
  TempDir dir_;
  std::unique_ptr<MockApi> mock_;
  std::string config_path_;
  std::unique_ptr<Process> broker_;
  std::map<int, std::unique_ptr<Process>> workers_;
  int broker_starts_ = 0;
};

}  // namespace pacer::testing
