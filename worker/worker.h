// Worker: the pacer-worker event loop and its broker session. One thread
// polls, with zmq_poll, the DEALER to the broker, the sockets curl watches
// (one epoll descriptor, through HttpExecutor) and a stop fd (signalfd);
// timers are poll timeouts,
// never sleeps. It owns the ZeroMQ context and socket (recreated on every
// reconnect), the executor, the jobs waiting for a transfer slot and the
// outbox of results not yet sent. Not thread-safe: run() owns the thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "common/protocol.h"
#include "common/result.h"
#include "common/security.h"
#include "worker/http_executor.h"
#include "worker/request.h"

namespace simdjson::dom {
class element;
}

namespace pacer::worker {

struct WorkerOptions {
  std::string broker;    // ZeroMQ endpoint of the broker
  std::string id;        // announced in READY
  int concurrency = 64;  // transfers at once = READY capacity
  std::vector<std::string> announced_apis;  // READY "apis"; empty = all
  std::map<std::string, ApiRoute> routes;   // the APIs served
  std::set<std::string> configured_apis;    // to tell "not served" from unknown
  std::int64_t max_body_bytes = 1 << 20;
  Millis connect_timeout_ms = 10'000;
  Millis heartbeat_ms = 1000;  // proposed in READY; WELCOME decides
  int liveness = 3;
  Millis shutdown_grace_ms = 10'000;
  int stop_fd = -1;  // readable when a stop is requested; owned by the caller
  // [security]: the broker's public key (pinned) and this worker's keys.
  std::optional<CurveClient> curve;
};

class Worker {
 public:
  static Result<std::unique_ptr<Worker>> create(WorkerOptions options);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Runs until stopped. Returns the process exit code: 0 after a clean
  // shutdown, 3 when the broker refuses our protocol version, 1 on a fatal
  // error.
  int run();

 private:
  using TimePoint = std::chrono::steady_clock::time_point;

  Worker(WorkerOptions options, std::unique_ptr<HttpExecutor> executor);

  void connect(TimePoint now);
  void drop_connection(TimePoint now, const std::string& reason);
  bool send(const protocol::Message& m, TimePoint now);
  // A message whose body is already JSON text (RESULTS).
  bool send_text(protocol::Command command, const std::string& body,
                 TimePoint now);
  // Logs a failed send; notes the time of a good one.
  bool sent(protocol::Command command, bool ok, TimePoint now);
  void receive(TimePoint now);
  void handle(protocol::Message m, TimePoint now);
  void handle_jobs(const nlohmann::json& body, TimePoint now);
  void handle_jobs(simdjson::dom::element body, TimePoint now);
  void refuse_jobs(TimePoint now);
  void accept_job(const nlohmann::json& j, TimePoint now);
  void accept_job(const json_reader::ElementValue& j, TimePoint now);
  // Takes a JOBS entry within the credit, or answers it with a refusal;
  // `answer`: whom to answer (none when the entry says too little).
  void admit(std::optional<JobResult> answer, bool batch, TimePoint now,
             const std::function<Result<HttpRequest>()>& request_of);
  // The route of a served API; the error is a `permanent` refusal's text.
  Result<const ApiRoute*> route(const std::string& api) const;
  Result<HttpRequest> job_request(Result<Job> job) const;
  Result<HttpRequest> batch_request(const nlohmann::json& j) const;
  // Answers `answer`'s job or batch at once, without a request.
  void refuse(JobResult answer, Outcome outcome, std::string error);
  void start_pending();
  void flush(TimePoint now, bool even_unanswered = false);
  // Whether the outbox goes to the broker now (see run()).
  bool results_due(TimePoint now) const;
  void on_stop_request(TimePoint now);
  int finish();
  void protocol_error(const std::string& code, const std::string& message,
                      TimePoint now);
  std::optional<TimePoint> next_deadline() const;
  std::chrono::milliseconds liveness_window() const;

  WorkerOptions options_;
  std::unique_ptr<HttpExecutor> executor_;
  zmq::context_t context_;
  std::optional<zmq::socket_t> socket_;  // absent while waiting to reconnect

  // The broker session: a fresh socket and READY each time.
  std::uint64_t session_ = 0;
  // This process's routing id at the broker, random and kept across
  // reconnects: the broker takes an attempt's result only from the peer it
  // sent the attempt to.
  std::string routing_id_;
  bool peer_seen_ = false;       // the broker answered on this socket
  int session_outstanding_ = 0;  // jobs of this session not yet answered
  Millis heartbeat_ms_;
  int liveness_;
  TimePoint last_recv_{};
  TimePoint last_send_{};
  TimePoint reconnect_at_{};
  int reconnects_ = 0;  // since the last WELCOME

  std::deque<HttpRequest> pending_;  // accepted, waiting for a transfer slot
  std::vector<JobResult> outbox_;    // not yet sent
  Redactor redactor_;                // the routes' credentials
  std::int64_t redacted_ = 0;        // results that held a credential
  TimePoint outbox_since_{};         // when the oldest of them was added

  bool stopping_ = false;
  TimePoint shutdown_deadline_{};
  std::optional<int> exit_code_;

  struct LogGate {
    TimePoint last{};
    int suppressed = 0;
  };
  std::map<std::string, LogGate> protocol_logs_;
};

}  // namespace pacer::worker
