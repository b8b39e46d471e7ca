// Broker: the single event loop that owns all mutable state of pacer-broker:
// the store, the lanes, the worker registry and the jobs in flight. Two ROUTER
// sockets (workers, clients); every loop turn reads what is waiting, applies
// it in one database transaction, commits, and only then sends replies and
// jobs (group commit: an acknowledged SUBMIT is durable, and a dispatched job
// has its attempt row before a worker can see it).
// Time comes from the injected Clock. Not thread-safe: run() owns the thread;
// stop() may be called from a signal handler.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>
#include <zmq.hpp>

#include "broker/lane.h"
#include "broker/store.h"
#include "common/backoff.h"
#include "common/clock.h"
#include "common/config.h"
#include "common/protocol.h"

namespace pacer {

class Broker {
 public:
  // Opens the database and binds both endpoints; throws with a clear message
  // on failure (the caller prints it and exits).
  Broker(Config config, Clock& clock);
  ~Broker();
  Broker(const Broker&) = delete;
  Broker& operator=(const Broker&) = delete;

  // Runs until stop(). Returns the exit code.
  int run();
  void stop() { stopping_ = true; }

 private:
  struct Outstanding {
    JobId id;
    int attempt;
  };
  struct WorkerRec {
    std::string routing_id;
    std::string name;
    int capacity = 0;
    std::set<std::string> apis;        // empty: all
    std::map<JobId, int> outstanding;  // job -> attempt
    Millis last_seen = 0;
    Millis last_sent = 0;
    nlohmann::json pending_jobs = nlohmann::json::array();
    std::size_t pending_bytes = 0;
    bool serves(const std::string& api) const {
      return apis.empty() || apis.count(api) > 0;
    }
    int free_credit() const {
      return capacity - static_cast<int>(outstanding.size());
    }
  };
  struct InFlight {
    std::string api;
    int attempt = 0;
    int attempts_used = 0;
    int max_attempts = 1;
    std::int64_t cost = 1;
    std::int64_t priority = 0;
    Millis lease_until = 0;
    std::string worker;  // routing id; empty when it predates a restart
    std::optional<Millis> quota_deadline;
    // Its place in the lane's sequence of starts, and when it left: the
    // answer's remaining count is read against it.
    QuotaState::Mark mark;
    Millis started = 0;
  };
  struct Outgoing {
    zmq::socket_t* socket;
    std::string routing_id;
    protocol::Message message;
  };

  void recover();
  void turn();
  Millis next_wakeup(Millis now);

  void on_worker_message(const std::string& rid,
                         std::vector<zmq::message_t>& frames, Millis now);
  void handle_worker(const std::string& rid, protocol::Message& m, Millis now);
  void on_ready(const std::string& rid, const nlohmann::json& body, Millis now);
  void on_results(WorkerRec& w, const nlohmann::json& body, Millis now);
  void apply_result(const nlohmann::json& r, WorkerRec* w, Millis now);
  void on_client_message(const std::string& rid,
                         std::vector<zmq::message_t>& frames, Millis now);
  nlohmann::json handle_client(protocol::Command cmd,
                               const nlohmann::json& body, Millis now,
                               std::string& error_code);
  nlohmann::json submit(const nlohmann::json& body, Millis now,
                        std::string& code);
  nlohmann::json stats(Millis now);
  // Dead letters (schema/wire_protocol.md, DEAD_LIST and DEAD_REPLAY).
  nlohmann::json dead_list(const nlohmann::json& body);
  nlohmann::json dead_replay(const nlohmann::json& body, Millis now,
                             std::string& code);

  // Ends an attempt that produced no usable answer (worker lost, lease
  // expired): a used attempt, then retry or dead.
  void fail_in_flight(JobId id, const std::string& why, Outcome outcome,
                      Millis now);
  void forget_worker(const std::string& rid, const std::string& why,
                     Millis now);
  void release(const std::string& api, JobId id, std::int64_t priority,
               Millis run_at, std::int64_t cost, Millis now);
  void dispatch(Millis now);
  void timers(Millis now);
  void flush();
  void reply(zmq::socket_t& s, const std::string& rid, protocol::Message m);

  Lane* lane(const std::string& api);

  Config config_;
  Clock& clock_;
  std::unique_ptr<Store> store_;
  zmq::context_t ctx_;
  zmq::socket_t workers_sock_;
  zmq::socket_t clients_sock_;
  std::map<std::string, std::unique_ptr<Lane>> lanes_;
  std::vector<Lane*> lane_order_;
  std::size_t rr_ = 0;
  std::unordered_map<std::string, WorkerRec> workers_;
  std::unordered_map<JobId, InFlight> in_flight_;
  std::vector<Outgoing> outbox_;
  // Lanes that dispatched in this turn, and the time their starts were
  // recorded at; flush() restamps them to when the jobs actually left.
  std::set<Lane*> dispatched_lanes_;
  std::vector<JobId> dispatched_ids_;
  Millis dispatch_time_ = 0;
  std::map<std::string, Millis> lane_paused_logged_;
  Millis next_lane_save_ = 0;
  Backoff backoff_;
  std::atomic<bool> stopping_{false};
  Millis next_lease_check_ = 0;
  Millis next_purge_ = 0;
  Millis started_ms_ = 0;
  std::map<std::string, Millis> malformed_logged_;
  std::int64_t results_total_ = 0;
};

}  // namespace pacer
