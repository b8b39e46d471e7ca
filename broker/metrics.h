// Metrics: the broker's Prometheus endpoint (text exposition format 0.0.4,
// GET /metrics on broker.metrics_address).
//
// The broker loop stays the only owner of its state. It counts what happens
// (LaneCounters), and at most every kPublishMs it copies what it knows into
// a Snapshot of plain values and hands it to the Server. The server answers
// scrapes on threads of its own from the latest snapshot, so a scrape never
// touches SQLite or the loop's state and never delays a dispatch; the price
// is that a scrape sees numbers up to a publication interval old (and job
// counts up to Broker's count interval old). Counters count since the broker
// started: a restart resets them, which Prometheus' rate() understands.
//
// Snapshot, LaneCounters and render() are values and a pure function
// (unit-tested without sockets); Server is thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/clock.h"

namespace pacer {
class Lane;
}

namespace pacer::metrics {

// How often the loop publishes a snapshot while it is busy (an idle loop
// turns, and publishes, at least once a second).
constexpr Millis kPublishMs = 250;

// A histogram with fixed upper bounds; render() writes it cumulative.
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double v);
  const std::vector<double>& bounds() const { return bounds_; }
  // Observations per bucket, not cumulative: counts()[i] fell in
  // (bounds[i-1], bounds[i]]; the last entry counts those above every bound.
  const std::vector<std::uint64_t>& counts() const { return counts_; }
  double sum() const { return sum_; }
  std::uint64_t count() const { return count_; }

 private:
  std::vector<double> bounds_;
  std::vector<std::uint64_t> counts_;
  double sum_ = 0;
  std::uint64_t count_ = 0;
};

// What the loop counts for one lane as it happens.
struct LaneCounters {
  LaneCounters();
  // HTTP status of each answered call -> calls; 0: no response (timeout,
  // connection error).
  std::map<int, std::int64_t> responses;
  std::int64_t rate_limited = 0;  // answers classed rate limited
  // From when a job became ready (its run_at) to when it left.
  Histogram dispatch_delay;
  // The worker's duration of each answered call.
  Histogram job_duration;
  Histogram batch_size;  // members per batch call

  void on_answer(int status, bool rate_limited, double duration_ms);
  void on_dispatch(Millis ready_at, Millis now);
  void on_batch(std::int64_t items) { batch_size.observe(double(items)); }
};

struct LimitSample {
  std::string policy;  // the limit as written, e.g. "50/1s"
  std::string source;  // "configured" or "learned"
  // Units per window; for a leaky bucket ("20/1s burst 10") its room,
  // burst + 1, which `used` (its level) is measured against.
  std::int64_t limit = 0;
  std::int64_t used = 0;  // units counted in the current window
  Millis window_ms = 0;
  std::string unit = "requests";
  Millis margin_ms = 0;  // the effective margin (widened after refusals)
};

// One of the server's own counters, from its rate-limit headers.
struct UpstreamSample {
  std::string policy;  // the counter's key: source/name/unit
  std::optional<double> remaining;
  std::optional<std::int64_t> limit;
  std::optional<double> reset_seconds;
  std::string unit = "requests";
};

struct LaneSnapshot {
  std::string api;
  // False for an API that has jobs in the database but no [api.NAME]: only
  // its job counts are known.
  bool configured = true;
  bool batching = false;
  std::map<std::string, std::int64_t> jobs;  // state -> jobs
  std::int64_t in_flight = 0;
  std::int64_t dispatches = 0;       // calls
  std::int64_t dispatched_jobs = 0;  // jobs in them
  std::int64_t batches = 0;
  std::int64_t batch_items = 0;
  bool paused = false;
  double paused_seconds = 0;  // left
  std::string pause_reason;
  std::string circuit = "closed";
  std::vector<LimitSample> limits;
  std::vector<UpstreamSample> upstream;
  LaneCounters counters;
};

// One alert (broker/alerts.h) that has fired since the broker started.
struct AlertSample {
  std::string api;
  std::string alert;
  std::string policy;  // the limit it is about; empty for lane-wide alerts
  bool firing = false;
  std::int64_t fired_total = 0;
};

// The webhook's deliveries (broker/webhook.h).
struct WebhookSample {
  std::int64_t delivered = 0;
  std::int64_t failed = 0;
  std::int64_t dropped = 0;
};

struct Snapshot {
  std::string version;
  Millis published_ms = 0;
  Millis started_ms = 0;
  std::int64_t workers_connected = 0;
  std::int64_t database_bytes = 0;
  std::vector<LaneSnapshot> lanes;
  std::vector<AlertSample> alerts;
  std::optional<WebhookSample> webhook;  // empty: no webhook configured
};

// The live part of a lane's snapshot (in flight, dispatches, pause, circuit,
// limits and their use, the server's counters) and its counters; the caller
// adds the job counts. Reads the lane only; runs on the loop's thread.
LaneSnapshot lane_snapshot(Lane& lane, const LaneCounters& counters,
                           Millis now);

// The snapshot as Prometheus text; `now_ms` dates the snapshot's age.
std::string render(const Snapshot& s, Millis now_ms);

// A label value escaped for the exposition format: \ " and newline.
std::string escape_label_value(std::string_view v);

using Labels = std::vector<std::pair<std::string_view, std::string>>;

// Writes metric families in the text format: HELP and TYPE once per family,
// then its samples. A family's samples must be written together.
class TextWriter {
 public:
  void family(std::string_view name, std::string_view type,
              std::string_view help);
  void sample(std::string_view name, const Labels& labels, double value);
  // name_bucket (cumulative, le="+Inf" last), name_sum, name_count.
  void histogram(std::string_view name, const Labels& labels,
                 const Histogram& h);
  const std::string& text() const { return out_; }

 private:
  std::string out_;
};

// Content-Type of the text format.
inline constexpr const char* kContentType =
    "text/plain; version=0.0.4; charset=utf-8";

// The HTTP endpoint: GET /metrics renders the latest published snapshot;
// any other path is a 404. Its own threads; publish() from the loop.
class Server {
 public:
  // Binds `address` ("host:port", already validated by the configuration)
  // at once; throws std::runtime_error saying what could not be bound.
  explicit Server(const std::string& address);
  ~Server();  // stops listening, waits for its threads
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  void publish(std::shared_ptr<const Snapshot> s);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace pacer::metrics
