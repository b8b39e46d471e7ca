#include "broker/metrics.h"

#include <httplib.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "broker/lane.h"
#include "common/config.h"
#include "common/job.h"

namespace pacer::metrics {

namespace {

// Seconds. Jobs can wait for quota for up to a day (quota_wait's default).
const std::vector<double> kDelayBounds = {
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,  1,     2.5,
    5,     10,   30,    60,   300, 900,  3600, 14400, 86400};
// Seconds an upstream call takes.
const std::vector<double> kDurationBounds = {
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300};
// Members per batch call (max_items is at most 10000).
const std::vector<double> kBatchBounds = {1,   2,   5,   10,   20,   50,
                                          100, 200, 500, 1000, 10000};

constexpr JobState kStates[] = {JobState::kQueued,       JobState::kRunning,
                                JobState::kSucceeded,    JobState::kRetrying,
                                JobState::kWaitingQuota, JobState::kDead,
                                JobState::kCanceled};
// The states whose jobs wait for dispatch (some of them not due yet).
constexpr JobState kReadyStates[] = {JobState::kQueued, JobState::kRetrying,
                                     JobState::kWaitingQuota};
constexpr const char* kCircuitStates[] = {"closed", "open", "half_open"};

std::string number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, v);  // shortest round trip
  return std::string(buf, r.ptr);
}

std::string escape_help(std::string_view v) {
  std::string out;
  for (char c : v) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

std::int64_t count_of(const LaneSnapshot& l, JobState s) {
  auto it = l.jobs.find(std::string(to_string(s)));
  return it == l.jobs.end() ? 0 : it->second;
}

}  // namespace

// ---------------------------------------------------------------- values

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double v) {
  if (std::isnan(v)) return;
  auto at = std::lower_bound(bounds_.begin(), bounds_.end(), v);
  ++counts_[static_cast<std::size_t>(at - bounds_.begin())];
  sum_ += v;
  ++count_;
}

LaneCounters::LaneCounters()
    : dispatch_delay(kDelayBounds),
      job_duration(kDurationBounds),
      batch_size(kBatchBounds) {}

void LaneCounters::on_answer(int status, bool limited, double duration_ms) {
  ++responses[status];
  if (limited) ++rate_limited;
  job_duration.observe(std::max(0.0, duration_ms) / 1000.0);
}

void LaneCounters::on_dispatch(Millis ready_at, Millis now) {
  dispatch_delay.observe(
      static_cast<double>(std::max<Millis>(0, now - ready_at)) / 1000.0);
}

LaneSnapshot lane_snapshot(Lane& lane, const LaneCounters& counters,
                           Millis now) {
  LaneSnapshot s;
  s.api = lane.name();
  s.batching = lane.batching();
  s.in_flight = lane.in_flight();
  s.dispatches = lane.requests_total();
  s.dispatched_jobs = lane.dispatched_total();
  s.batches = lane.batches_total();
  s.batch_items = lane.batch_items_total();
  QuotaState& q = lane.quota();
  if (auto until = q.paused_until(now)) {
    s.paused = true;
    s.paused_seconds = static_cast<double>(*until - now) / 1000.0;
  }
  s.circuit = q.circuit();
  // Two learned limits may read the same ("100/1m0s" from two header
  // families); one series each, showing the fuller.
  std::map<std::pair<std::string, std::string>, LimitSample> limits;
  for (const auto& u : lane.limiter().usage(now)) {
    LimitSample l{u.spec.to_string(),
                  u.learned.empty() ? "configured" : "learned",
                  u.spec.leaky() ? *u.spec.burst + 1 : u.spec.amount,
                  u.used,
                  u.spec.window_ms,
                  u.spec.unit,
                  u.margin_ms};
    auto [it, fresh] = limits.try_emplace({l.source, l.policy}, l);
    if (!fresh) it->second.used = std::max(it->second.used, l.used);
  }
  for (auto& [key, l] : limits) s.limits.push_back(std::move(l));
  const nlohmann::json quota = q.to_json(now);
  if (auto r = quota.find("pause_reason"); r != quota.end() && r->is_string())
    s.pause_reason = r->get<std::string>();
  for (const auto& u : quota.value("upstream", nlohmann::json::array())) {
    UpstreamSample up;
    up.policy = u.value("key", std::string());
    up.unit = u.value("unit", std::string("requests"));
    if (auto r = u.find("remaining"); r != u.end() && r->is_number())
      up.remaining = r->get<double>();
    if (auto l = u.find("limit"); l != u.end() && l->is_number_integer())
      up.limit = l->get<std::int64_t>();
    if (auto t = u.find("reset_in_ms"); t != u.end() && t->is_number())
      up.reset_seconds = t->get<double>() / 1000.0;
    s.upstream.push_back(std::move(up));
  }
  s.counters = counters;
  return s;
}

// ---------------------------------------------------------------- text

std::string escape_label_value(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '"')
      out += "\\\"";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

void TextWriter::family(std::string_view name, std::string_view type,
                        std::string_view help) {
  out_ += "# HELP ";
  out_ += name;
  out_ += ' ';
  out_ += escape_help(help);
  out_ += "\n# TYPE ";
  out_ += name;
  out_ += ' ';
  out_ += type;
  out_ += '\n';
}

void TextWriter::sample(std::string_view name, const Labels& labels,
                        double value) {
  out_ += name;
  if (!labels.empty()) {
    out_ += '{';
    for (std::size_t i = 0; i < labels.size(); ++i) {
      if (i > 0) out_ += ',';
      out_ += labels[i].first;
      out_ += "=\"";
      out_ += escape_label_value(labels[i].second);
      out_ += '"';
    }
    out_ += '}';
  }
  out_ += ' ';
  out_ += number(value);
  out_ += '\n';
}

void TextWriter::histogram(std::string_view name, const Labels& labels,
                           const Histogram& h) {
  const std::string bucket = std::string(name) + "_bucket";
  Labels with_le = labels;
  with_le.emplace_back("le", "");
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i < h.bounds().size(); ++i) {
    cumulative += h.counts()[i];
    with_le.back().second = number(h.bounds()[i]);
    sample(bucket, with_le, static_cast<double>(cumulative));
  }
  with_le.back().second = "+Inf";
  sample(bucket, with_le, static_cast<double>(h.count()));
  sample(std::string(name) + "_sum", labels, h.sum());
  sample(std::string(name) + "_count", labels, static_cast<double>(h.count()));
}

namespace {

// One family with one sample per configured lane.
template <typename F>
void per_lane(TextWriter& w, const Snapshot& s, std::string_view name,
              std::string_view type, std::string_view help, F value) {
  w.family(name, type, help);
  for (const auto& l : s.lanes)
    if (l.configured)
      w.sample(name, {{"api", l.api}}, static_cast<double>(value(l)));
}

void render_broker(TextWriter& w, const Snapshot& s, Millis now) {
  w.family("pacer_up", "gauge", "1 while the broker serves metrics.");
  w.sample("pacer_up", {}, 1);
  w.family("pacer_build_info", "gauge", "The broker's version, as a label.");
  w.sample("pacer_build_info", {{"version", s.version}}, 1);
  w.family("pacer_start_time_seconds", "gauge",
           "When the broker started (Unix time); counters count since then.");
  w.sample("pacer_start_time_seconds", {},
           static_cast<double>(s.started_ms) / 1000.0);
  w.family("pacer_snapshot_age_seconds", "gauge",
           "Age of the numbers served: the broker loop publishes them every "
           "250 ms while busy and at least once a second; growing means the "
           "loop is stuck.");
  w.sample(
      "pacer_snapshot_age_seconds", {},
      static_cast<double>(std::max<Millis>(0, now - s.published_ms)) / 1000.0);
  w.family("pacer_workers_connected", "gauge", "Workers registered now.");
  w.sample("pacer_workers_connected", {},
           static_cast<double>(s.workers_connected));
  w.family("pacer_database_bytes", "gauge",
           "Size of the SQLite database file plus its -wal file.");
  w.sample("pacer_database_bytes", {}, static_cast<double>(s.database_bytes));
}

void render_jobs(TextWriter& w, const Snapshot& s) {
  w.family("pacer_jobs", "gauge",
           "Jobs in the database by API and state (counted every few "
           "seconds).");
  for (const auto& l : s.lanes)
    for (JobState st : kStates)
      w.sample("pacer_jobs",
               {{"api", l.api}, {"state", std::string(to_string(st))}},
               static_cast<double>(count_of(l, st)));
  w.family("pacer_queue_depth", "gauge",
           "Jobs waiting for dispatch: queued, retrying and waiting_quota "
           "(including those not due yet).");
  for (const auto& l : s.lanes) {
    std::int64_t n = 0;
    for (JobState st : kReadyStates) n += count_of(l, st);
    w.sample("pacer_queue_depth", {{"api", l.api}}, static_cast<double>(n));
  }
  per_lane(w, s, "pacer_in_flight", "gauge",
           "Calls sent to workers and not answered yet (a batch is one).",
           [](const LaneSnapshot& l) { return l.in_flight; });
}

void render_dispatch(TextWriter& w, const Snapshot& s) {
  per_lane(w, s, "pacer_dispatches_total", "counter",
           "Calls dispatched to workers (a batch is one call).",
           [](const LaneSnapshot& l) { return l.dispatches; });
  per_lane(w, s, "pacer_dispatched_jobs_total", "counter",
           "Jobs dispatched (each member of a batch counts).",
           [](const LaneSnapshot& l) { return l.dispatched_jobs; });
  per_lane(w, s, "pacer_batches_total", "counter", "Batch calls dispatched.",
           [](const LaneSnapshot& l) { return l.batches; });
  per_lane(w, s, "pacer_batch_items_total", "counter",
           "Jobs dispatched in batch calls.",
           [](const LaneSnapshot& l) { return l.batch_items; });
  w.family("pacer_batch_size", "histogram",
           "Members per batch call (lanes with batching).");
  for (const auto& l : s.lanes)
    if (l.configured && l.batching)
      w.histogram("pacer_batch_size", {{"api", l.api}}, l.counters.batch_size);
  w.family("pacer_dispatch_delay_seconds", "histogram",
           "From when a job became ready (submitted, or its delay, backoff or "
           "quota wait over) to when it was dispatched.");
  for (const auto& l : s.lanes)
    if (l.configured)
      w.histogram("pacer_dispatch_delay_seconds", {{"api", l.api}},
                  l.counters.dispatch_delay);
}

void render_answers(TextWriter& w, const Snapshot& s) {
  w.family("pacer_responses_total", "counter",
           "Answered calls by HTTP status; code=\"0\": no response (timeout, "
           "connection error).");
  for (const auto& l : s.lanes)
    for (const auto& [code, n] : l.counters.responses)
      w.sample("pacer_responses_total",
               {{"api", l.api}, {"code", std::to_string(code)}},
               static_cast<double>(n));
  per_lane(w, s, "pacer_rate_limited_total", "counter",
           "Answers that said the rate limit was hit (429, or 403/503 with "
           "rate-limit evidence, or a configured rate_limited status).",
           [](const LaneSnapshot& l) { return l.counters.rate_limited; });
  w.family("pacer_job_duration_seconds", "histogram",
           "How long each answered call took at the worker.");
  for (const auto& l : s.lanes)
    if (l.configured)
      w.histogram("pacer_job_duration_seconds", {{"api", l.api}},
                  l.counters.job_duration);
}

void render_feedback(TextWriter& w, const Snapshot& s) {
  per_lane(w, s, "pacer_lane_paused", "gauge",
           "1 while the lane is paused (a rejection, or an open circuit).",
           [](const LaneSnapshot& l) { return l.paused ? 1 : 0; });
  per_lane(w, s, "pacer_lane_paused_seconds", "gauge",
           "Seconds left of the lane's pause (0 when not paused).",
           [](const LaneSnapshot& l) { return l.paused_seconds; });
  w.family("pacer_circuit_state", "gauge",
           "The lane's circuit breaker: 1 for its current state.");
  for (const auto& l : s.lanes)
    if (l.configured)
      for (const char* st : kCircuitStates)
        w.sample("pacer_circuit_state", {{"api", l.api}, {"state", st}},
                 l.circuit == st ? 1 : 0);
}

void render_limits(TextWriter& w, const Snapshot& s) {
  w.family("pacer_limit", "gauge",
           "Each limit of the lane's limiter, configured or learned from the "
           "server: units per window, or a leaky bucket's room (burst + 1) "
           "(policy is the limit as written).");
  for (const auto& l : s.lanes)
    for (const auto& lim : l.limits)
      w.sample("pacer_limit",
               {{"api", l.api}, {"policy", lim.policy}, {"source", lim.source}},
               static_cast<double>(lim.limit));
  w.family("pacer_limit_used", "gauge",
           "Units of each limit started within its current window (a leaky "
           "bucket's level).");
  for (const auto& l : s.lanes)
    for (const auto& lim : l.limits)
      w.sample("pacer_limit_used",
               {{"api", l.api}, {"policy", lim.policy}, {"source", lim.source}},
               static_cast<double>(lim.used));
  w.family("pacer_limit_margin_seconds", "gauge",
           "The margin added to each limit's window against arrival jitter; "
           "it widens after refusals the limits should have prevented and "
           "narrows back after a quiet stretch.");
  for (const auto& l : s.lanes)
    for (const auto& lim : l.limits)
      w.sample("pacer_limit_margin_seconds",
               {{"api", l.api}, {"policy", lim.policy}, {"source", lim.source}},
               static_cast<double>(lim.margin_ms) / 1000.0);
  w.family("pacer_upstream_remaining", "gauge",
           "What the server's last answers said remains of its counter, less "
           "the lane's calls in flight (policy names the counter).");
  for (const auto& l : s.lanes)
    for (const auto& u : l.upstream)
      if (u.remaining)
        w.sample("pacer_upstream_remaining",
                 {{"api", l.api}, {"policy", u.policy}}, *u.remaining);
  w.family("pacer_upstream_limit", "gauge",
           "The limit the server advertises for its counter.");
  for (const auto& l : s.lanes)
    for (const auto& u : l.upstream)
      if (u.limit)
        w.sample("pacer_upstream_limit", {{"api", l.api}, {"policy", u.policy}},
                 static_cast<double>(*u.limit));
  w.family("pacer_upstream_reset_seconds", "gauge",
           "Seconds until the server's counter resets, when it says.");
  for (const auto& l : s.lanes)
    for (const auto& u : l.upstream)
      if (u.reset_seconds)
        w.sample("pacer_upstream_reset_seconds",
                 {{"api", l.api}, {"policy", u.policy}}, *u.reset_seconds);
}

void render_alerts(TextWriter& w, const Snapshot& s) {
  w.family("pacer_alert", "gauge",
           "1 while the alert fires, 0 once it cleared; a series appears when "
           "its alert first fires (docs/operations.md \"Alerts\").");
  for (const auto& a : s.alerts)
    w.sample("pacer_alert",
             {{"api", a.api}, {"alert", a.alert}, {"policy", a.policy}},
             a.firing ? 1 : 0);
  w.family("pacer_alerts_fired_total", "counter",
           "Times the alert fired (each crossing of its threshold).");
  for (const auto& a : s.alerts)
    w.sample("pacer_alerts_fired_total",
             {{"api", a.api}, {"alert", a.alert}, {"policy", a.policy}},
             static_cast<double>(a.fired_total));
  if (!s.webhook) return;
  w.family("pacer_alert_webhook_deliveries_total", "counter",
           "Alert notifications the webhook accepted (result=\"delivered\"), "
           "gave up on after its retries (\"failed\"), or never tried because "
           "its queue was full or the broker stopped (\"dropped\").");
  w.sample("pacer_alert_webhook_deliveries_total", {{"result", "delivered"}},
           static_cast<double>(s.webhook->delivered));
  w.sample("pacer_alert_webhook_deliveries_total", {{"result", "failed"}},
           static_cast<double>(s.webhook->failed));
  w.sample("pacer_alert_webhook_deliveries_total", {{"result", "dropped"}},
           static_cast<double>(s.webhook->dropped));
}

}  // namespace

std::string render(const Snapshot& s, Millis now_ms) {
  TextWriter w;
  render_broker(w, s, now_ms);
  render_jobs(w, s);
  render_dispatch(w, s);
  render_answers(w, s);
  render_feedback(w, s);
  render_limits(w, s);
  render_alerts(w, s);
  return w.text();
}

// ---------------------------------------------------------------- server

struct Server::Impl {
  httplib::Server http;
  std::thread thread;
  std::atomic<bool> finished{false};
  SystemClock clock;  // dates each scrape; safe to share
  std::mutex mu;
  std::shared_ptr<const Snapshot> latest;  // guarded by mu

  std::shared_ptr<const Snapshot> snapshot() {
    std::lock_guard lock(mu);
    return latest;
  }
};

namespace {

// httplib's default sets SO_REUSEPORT, which would let a second broker bind
// the same port and share the scrapes; SO_REUSEADDR only lets a restarted
// broker bind while old connections linger.
void socket_options(socket_t fd) {
  int yes = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
}

}  // namespace

Server::Server(const std::string& address) : impl_(std::make_unique<Impl>()) {
  auto hp = parse_host_port(address);
  if (!hp) throw std::runtime_error("broker.metrics_address: " + hp.error());
  auto& http = impl_->http;
  // Scrapes are rare and small: two threads, one request per connection (so
  // stopping never waits for an idle keep-alive connection), short timeouts.
  http.new_task_queue = [] { return new httplib::ThreadPool(2); };
  http.set_keep_alive_max_count(1);
  http.set_keep_alive_timeout(2);
  http.set_read_timeout(2, 0);
  http.set_write_timeout(5, 0);
  http.set_socket_options(socket_options);
  Impl* impl = impl_.get();
  http.Get("/metrics", [impl](const httplib::Request&, httplib::Response& res) {
    auto s = impl->snapshot();
    if (!s) {
      res.status = 503;
      res.set_content("the broker has not published metrics yet\n",
                      "text/plain");
      return;
    }
    res.set_content(render(*s, impl->clock.now_ms()), kContentType);
  });
  http.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (res.status == 404)
      res.set_content("not found: metrics are at /metrics\n", "text/plain");
  });
  errno = 0;
  if (!http.bind_to_port(hp->host, hp->port)) {
    const int err = errno;
    throw std::runtime_error(
        "cannot bind the metrics address " + address +
        (err ? std::string(": ") + std::strerror(err) : std::string()));
  }
  // The broker's SIGINT and SIGTERM must reach its loop, not these threads
  // (the pool's threads inherit the mask of the one that starts them).
  sigset_t block, old;
  sigemptyset(&block);
  sigaddset(&block, SIGINT);
  sigaddset(&block, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &block, &old);
  impl_->thread = std::thread([impl] {
    impl->http.listen_after_bind();
    impl->finished = true;
  });
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

Server::~Server() {
  // stop() does nothing until listening has begun.
  while (!impl_->finished && !impl_->http.is_running())
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  impl_->http.stop();
  impl_->thread.join();
}

void Server::publish(std::shared_ptr<const Snapshot> s) {
  std::lock_guard lock(impl_->mu);
  impl_->latest = std::move(s);
}

}  // namespace pacer::metrics
