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

#include "broker/zap.h"
#include "broker/alerts.h"
#include "broker/instance_lock.h"
#include "broker/lane.h"
#include "broker/metrics.h"
#include "broker/store.h"
#include "broker/webhook.h"
#include "common/backoff.h"
#include "common/clock.h"
#include "common/config.h"
#include "common/protocol.h"
#include "common/results_body.h"
#include "common/submit_body.h"

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
  // Re-read the allowed keys ([security]) at the next turn (SIGHUP).
  void reload_keys() { reload_keys_ = true; }

  // The endpoints and keys the configuration asks for, checked before
  // anything starts: without [security] only loopback endpoints unless
  // broker.allow_insecure; with it, the broker's secret key and both key
  // folders. The error is a line for the operator.
  static Result<Ok> check_security(const Config& config);

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
    std::map<JobId, int> outstanding;  // job -> attempt (jobs sent alone)
    std::set<std::int64_t> batches;    // batch jobs sent to it
    Millis last_seen = 0;
    Millis last_sent = 0;
    // The JOBS entries of this turn not yet sent: their JSON text, joined
    // by commas (written directly, not built as documents).
    std::string pending_jobs;
    bool serves(const std::string& api) const {
      return apis.empty() || apis.count(api) > 0;
    }
    int free_credit() const {
      // A batch is one transfer: one credit.
      return capacity - static_cast<int>(outstanding.size()) -
             static_cast<int>(batches.size());
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
    std::int64_t batch = 0;  // the batch it went in, 0 = sent alone
    std::string batch_key;
    std::optional<std::string> group;
  };
  // A batch job in flight: one call, one credit, one concurrency slot, one
  // quota mark; its members are in in_flight_ with `batch` set.
  struct BatchFlight {
    std::string api;
    std::vector<JobId> members;
    std::string worker;  // routing id; empty when it predates a restart
    QuotaState::Mark mark;
    Millis started = 0;
    std::int64_t units = 0;
    std::int64_t requests = 1;  // charged to request limits
  };
  // What one HTTP answer (a job's, or a batch call's) said.
  struct Answer {
    int status = 0;
    Outcome outcome = Outcome::kTransient;
    std::optional<QuotaObservation> obs;
    std::string observation_json;
    std::string headers_json;  // empty: none
    std::string error;
    double duration_ms = 0;
    std::optional<double> actual_cost;
    Millis server_floor = 0;  // the server's retry hint
  };
  struct Outgoing {
    zmq::socket_t* socket;
    std::string routing_id;
    protocol::Message message;
    std::string text;  // when set, the body as JSON text (message.body null)
  };

  void recover();
  void turn();
  Millis next_wakeup(Millis now);

  void on_worker_message(const std::string& rid,
                         std::vector<zmq::message_t>& frames, Millis now);
  // `results`: a RESULTS message's entries (read by parse_results).
  void handle_worker(const std::string& rid, protocol::Message& m,
                     std::vector<protocol::WireResult>& results, Millis now);
  void on_ready(const std::string& rid, const nlohmann::json& body, Millis now);
  // These take what they keep (bodies, headers) out of `r`.
  // `rid` is the sender: a result counts only from the peer its attempt
  // was sent to (result_from says which).
  void apply_result(protocol::WireResult& r, const std::string& rid,
                    WorkerRec* w, Millis now);
  void apply_batch_result(protocol::WireResult& r, const std::string& rid,
                          WorkerRec* w, Millis now);
  // Whether a result for an attempt sent to `sent_to` may come from `rid`;
  // counts and logs (once a minute per sender) the ones that may not.
  bool result_from(const std::string& sent_to, const std::string& rid,
                   WorkerRec* w, Millis now);
  Answer read_answer(protocol::WireResult& r, const ApiConfig* api) const;
  // Counts an answer for the metrics and feeds it to the lane's quota state
  // (and corrects unit limits by the stated cost); returns the end of the
  // lane's pause if it paused.
  std::optional<Millis> note_answer(Lane* l, const std::string& api,
                                    const Answer& a, QuotaState::Mark mark,
                                    std::int64_t units, std::int64_t requests,
                                    Millis started, Millis now);
  AttemptEnd answer_end(JobId id, int attempt, const Answer& a,
                        Millis now) const;
  // Ends one attempt by its outcome (succeeded, dead, waiting for quota or
  // retrying) and puts the job back in its lane when it goes on.
  void end_job(const InFlight& job, AttemptEnd end,
               std::optional<Millis> lane_paused, Millis server_floor,
               Millis now);
  void end_lost(JobId id, const InFlight& job, const std::string& why,
                Outcome outcome, Millis now);
  static ReadyEntry ready_entry(JobId id, const InFlight& job, Millis run_at);
  // Batch size and validity of a keyed job on a batching lane.
  void annotate(const Lane& l, ReadyEntry& e,
                const std::optional<std::string>& body) const;
  void refill(Lane* l, Millis now);
  void on_client_message(const std::string& rid,
                         std::vector<zmq::message_t>& frames, Millis now);
  // `submit`: a SUBMIT body already read (parse_submit); otherwise a SUBMIT
  // is read from `body`.
  nlohmann::json handle_client(protocol::Command cmd,
                               const nlohmann::json& body,
                               protocol::WireSubmit* submit, Millis now,
                               std::string& error_code);
  nlohmann::json submit(protocol::WireSubmit& body, Millis now,
                        std::string& code);
  nlohmann::json stats(Millis now);
  // The jobs per API and state for STATS: counted again only once the last
  // count is older than 20 times what it took, so STATS polled every second
  // (pacer top) costs at most ~5% of the loop however big the table; on a
  // small table that is every time.
  const std::map<std::string, std::map<std::string, std::int64_t>>&
  stats_counts(Millis now);
  // One lane's configuration as loaded, for APIS.
  static nlohmann::json api_json(const ApiConfig& a);
  // Dead letters (schema/wire_protocol.md, DEAD_LIST and DEAD_REPLAY).
  nlohmann::json dead_list(const nlohmann::json& body);
  nlohmann::json dead_replay(const nlohmann::json& body, Millis now,
                             std::string& code);

  // Ends an attempt that produced no usable answer (worker lost, lease
  // expired): a used attempt, then retry or dead.
  void fail_in_flight(JobId id, const std::string& why, Outcome outcome,
                      Millis now);
  void fail_batch(std::int64_t batch, const std::string& why, Outcome outcome,
                  Millis now);
  void forget_worker(const std::string& rid, const std::string& why,
                     Millis now);
  // A job became ready again (or is due later): tells its lane. `body`:
  // the job's body when at hand (a keyed job's batch size is read from it;
  // otherwise it is read from the store).
  void release(const std::string& api, ReadyEntry e, Millis now,
               const std::optional<std::string>* body = nullptr);
  void dispatch(Millis now);
  // A single job's JOBS entry, written as JSON text.
  static std::string job_entry(JobId id, const std::string& api,
                               const Claimed& c);
  void dispatch_one(Lane& l, const ReadyEntry& e, WorkerRec& w, bool never,
                    Millis now);
  void dispatch_batch(Lane& l, const Lane::Selection& sel, WorkerRec& w,
                      bool never, Millis now);
  // Ends a claimed job that must not be sent (its cost can never fit, its
  // quota wait is over, it cannot go in a batch); false if it may be sent.
  bool end_unsendable(const ReadyEntry& e, const Claimed& c, bool never,
                      Millis now);
  // Adds one JOBS entry (its JSON text) to what the worker is sent this
  // turn; send_jobs moves them to the outbox as one message.
  void queue_job(WorkerRec& w, const std::string& entry);
  void send_jobs(WorkerRec& w);
  void note_start(Lane& l, std::int64_t units, std::int64_t requests,
                  std::int64_t items, bool batch, Millis now);
  InFlight in_flight_for(const Lane& l, const Claimed& c,
                         const std::string& worker, Millis now);
  void timers(Millis now);
  void flush();
  void reply(zmq::socket_t& s, const std::string& rid, protocol::Message m);
  // The counters of a configured lane (broker/metrics.h); null for an API
  // without [api.NAME].
  metrics::LaneCounters* counters(const std::string& api);
  // What the loop knows, as the metrics snapshot: published for scrapes
  // every metrics::kPublishMs, and checked for alerts every kAlertCheckMs.
  void observe(Millis now);
  // An alert fired or cleared: to the log and the webhook.
  void notify(const alerts::Event& e);

  Lane* lane(const std::string& api);

  Config config_;
  Clock& clock_;
  // Before store_: taken before the database is opened, released after it
  // is closed.
  std::optional<InstanceLock> lock_;
  std::unique_ptr<Store> store_;
  zmq::context_t ctx_;
  zmq::socket_t workers_sock_;
  zmq::socket_t clients_sock_;
  // After the sockets: stopped before they close and the context ends.
  std::unique_ptr<ZapHandler> zap_;
  std::map<std::string, std::unique_ptr<Lane>> lanes_;
  std::vector<Lane*> lane_order_;
  std::size_t rr_ = 0;
  std::unordered_map<std::string, WorkerRec> workers_;
  std::unordered_map<JobId, InFlight> in_flight_;
  std::map<std::int64_t, BatchFlight> batches_;
  std::vector<Outgoing> outbox_;
  // Bytes of client replies held in outbox_ this turn: past
  // kMaxClientReplyBytesPerTurn the turn reads no more client requests.
  std::size_t client_reply_bytes_ = 0;
  // Lanes that dispatched in this turn, and the time their starts were
  // recorded at; flush() restamps them to when the jobs actually left.
  std::set<Lane*> dispatched_lanes_;
  std::vector<JobId> dispatched_ids_;
  Millis dispatch_time_ = 0;
  std::map<std::string, Millis> lane_paused_logged_;
  Millis next_lane_save_ = 0;
  Backoff backoff_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> reload_keys_{false};
  Millis next_lease_check_ = 0;
  Millis next_purge_ = 0;
  Millis started_ms_ = 0;
  std::map<std::string, Millis> malformed_logged_;
  std::int64_t results_total_ = 0;
  // RESULTS for attempts sent to another peer: dropped.
  std::int64_t results_refused_total_ = 0;
  std::int64_t client_requests_total_ = 0;  // messages on the client endpoint
  std::map<std::string, Millis> refused_logged_;
  // Metrics: null when broker.metrics_address is empty. The counters are
  // kept either way (STATS and the alerts read them).
  std::unique_ptr<metrics::Server> metrics_;
  std::map<std::string, metrics::LaneCounters> lane_counters_;
  Millis next_metrics_ = 0;
  alerts::Engine alerts_;
  std::unique_ptr<WebhookSender> webhook_;  // null: no [alerts] webhook
  Millis next_alert_check_ = 0;
  // What costs I/O is read less often than the snapshot is published.
  std::map<std::string, std::map<std::string, std::int64_t>> job_counts_;
  Millis next_job_count_ = 0;
  // STATS' jobs per API and state (stats_counts()).
  std::map<std::string, std::map<std::string, std::int64_t>> stats_counts_;
  std::optional<Millis> stats_counted_at_;
  Millis stats_count_took_ = 0;
  std::int64_t database_bytes_ = 0;
  Millis next_database_size_ = 0;
};

}  // namespace pacer
