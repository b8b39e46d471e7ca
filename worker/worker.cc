#include "worker/worker.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <random>

#include "common/json_reader.h"
#include "common/json_view.h"
#include "common/log.h"

#ifndef PACER_VERSION
#define PACER_VERSION "0.0.0"
#endif

namespace pacer::worker {
namespace {

using Clock = std::chrono::steady_clock;
using protocol::Command;
using protocol::Message;

constexpr Millis kBackoffBaseMs = 100;
constexpr Millis kBackoffCapMs = 5'000;
constexpr int kMaxMessagesPerTurn = 1'000;
// A turn starts at most this many transfers and handles at most 64 ready
// sockets (HttpExecutor::on_ready), so results go out while later work is
// still being started, instead of the broker and this worker taking turns
// at whole windows of jobs.
constexpr int kMaxStartsPerTurn = 32;
// Results wait at most this long for company, so the broker gets fewer,
// bigger RESULTS messages (one commit answers many) at a negligible delay
// next to any real API's latency.
constexpr auto kResultsLinger = std::chrono::milliseconds(2);
// RESULTS bodies stay well under the broker's 64 MiB receive limit.
constexpr std::size_t kMaxResultsBytes = 48u << 20;

Millis epoch_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// A string member of a message body, "" when absent or not a string.
std::string string_field(const nlohmann::json& body, const char* key) {
  if (!body.is_object()) return "";
  auto it = body.find(key);
  return it != body.end() && it->is_string() ? it->get<std::string>() : "";
}

}  // namespace

Worker::Worker(WorkerOptions options, std::unique_ptr<HttpExecutor> executor)
    : options_(std::move(options)),
      executor_(std::move(executor)),
      context_(1),
      heartbeat_ms_(options_.heartbeat_ms),
      liveness_(options_.liveness),
      redactor_(options_.routes) {}

Worker::~Worker() {
  socket_.reset();
  context_.close();
}

Result<std::unique_ptr<Worker>> Worker::create(WorkerOptions options) {
  if (options.concurrency < 1) return Error{"concurrency must be at least 1"};
  auto executor =
      HttpExecutor::create({options.concurrency, options.max_body_bytes,
                            options.connect_timeout_ms});
  if (!executor) return Error{executor.error()};
  std::unique_ptr<Worker> w(
      new Worker(std::move(options), std::move(*executor)));
  // Refuse a malformed endpoint now rather than on every reconnect.
  try {
    zmq::socket_t probe(w->context_, zmq::socket_type::dealer);
    probe.set(zmq::sockopt::linger, 0);
    probe.connect(w->options_.broker);
  } catch (const zmq::error_t& e) {
    return Error{"broker endpoint '" + w->options_.broker + "': " + e.what()};
  }
  return w;
}

std::chrono::milliseconds Worker::liveness_window() const {
  return std::chrono::milliseconds(heartbeat_ms_ * liveness_);
}

void Worker::connect(TimePoint now) {
  if (routing_id_.empty()) {
    // 16 random bytes; ZeroMQ reserves ids that start with a zero byte.
    std::random_device rd;
    std::uniform_int_distribution<int> byte(1, 255);
    for (int i = 0; i < 16; ++i)
      routing_id_.push_back(static_cast<char>(byte(rd)));
  }
  socket_.emplace(context_, zmq::socket_type::dealer);
  socket_->set(zmq::sockopt::linger, 0);
  socket_->set(zmq::sockopt::routing_id, zmq::buffer(routing_id_));
  // Unlimited queues: the credit bounds what we hold, and a full queue must
  // not drop (or block) a RESULTS message.
  socket_->set(zmq::sockopt::sndhwm, 0);
  socket_->set(zmq::sockopt::rcvhwm, 0);
  socket_->set(zmq::sockopt::maxmsgsize, protocol::kMaxMessageBytes);
  if (options_.curve) apply_curve_client(*socket_, *options_.curve);
  socket_->connect(options_.broker);
  ++session_;
  peer_seen_ = false;
  session_outstanding_ = 0;
  last_recv_ = now;
  nlohmann::json apis = nlohmann::json::array();
  for (const auto& a : options_.announced_apis) apis.push_back(a);
  send(Message{Command::kReady,
               {{"worker", options_.id},
                {"capacity", options_.concurrency},
                {"apis", std::move(apis)},
                {"heartbeat_ms", options_.heartbeat_ms},
                {"version", PACER_VERSION}}},
       now);
}

void Worker::drop_connection(TimePoint now, const std::string& reason) {
  socket_.reset();  // linger 0: whatever is queued for the old broker goes
  peer_seen_ = false;
  Millis delay =
      std::min(kBackoffCapMs, kBackoffBaseMs << std::min(reconnects_, 16));
  ++reconnects_;
  reconnect_at_ = now + std::chrono::milliseconds(delay);
  log::info("reconnecting",
            {{"reason", reason},
             {"delay_ms", delay},
             {"in_flight", executor_->running() + pending_.size()},
             {"unsent_results", outbox_.size()}});
}

bool Worker::send(const Message& m, TimePoint now) {
  if (!socket_) return false;
  return sent(m.command, protocol::send(*socket_, m), now);
}

bool Worker::send_text(Command command, const std::string& body,
                       TimePoint now) {
  if (!socket_) return false;
  return sent(command, protocol::send_text(*socket_, command, body), now);
}

bool Worker::sent(Command command, bool ok, TimePoint now) {
  if (!ok) {
    log::warn("send_failed",
              {{"command", std::string(protocol::to_string(command))}});
    return false;
  }
  last_send_ = now;
  return true;
}

void Worker::protocol_error(const std::string& code, const std::string& message,
                            TimePoint now) {
  // A misbehaving peer must not flood the log: one line per code per second.
  auto& gate = protocol_logs_[code];
  if (gate.last != TimePoint{} && now - gate.last < std::chrono::seconds(1)) {
    ++gate.suppressed;
    return;
  }
  nlohmann::json fields = {{"code", code}, {"message", message}};
  if (gate.suppressed) fields["suppressed"] = gate.suppressed;
  gate = {now, 0};
  log::warn("protocol_error", std::move(fields));
}

void Worker::receive(TimePoint now) {
  for (int i = 0; i < kMaxMessagesPerTurn && socket_ && !exit_code_; ++i) {
    auto frames = protocol::recv_frames(*socket_, false, nullptr);
    if (!frames) return;
    last_recv_ = now;  // any message is proof of life
    // JOBS is read with simdjson, its jobs straight into requests; what
    // simdjson does not take is decoded as a document, as any message.
    auto decoded = protocol::decode(*frames, Command::kJobs);
    if (decoded.message && decoded.message->command == Command::kJobs) {
      json_view::Parsed parsed(decoded.raw_body);
      if (parsed.ok() &&
          parsed.root().type() == json_view::element_type::OBJECT) {
        peer_seen_ = true;
        handle_jobs(parsed.root(), now);
        continue;
      }
      decoded = protocol::decode(*frames);
    }
    if (decoded.error) {
      const auto& e = *decoded.error;
      protocol_error(e.code, e.message, now);
      if (e.code != "foreign")
        send(protocol::make_error(e.code, e.message), now);
      continue;
    }
    handle(std::move(*decoded.message), now);
  }
}

void Worker::handle(Message m, TimePoint now) {
  switch (m.command) {
    case Command::kWelcome: {
      auto hb = m.body.value("heartbeat_ms", nlohmann::json());
      auto lv = m.body.value("liveness", nlohmann::json());
      if (hb.is_number_integer() && lv.is_number_integer()) {
        heartbeat_ms_ = std::clamp<Millis>(hb.get<Millis>(), 50, 60'000);
        liveness_ = static_cast<int>(
            std::clamp<std::int64_t>(lv.get<std::int64_t>(), 2, 100));
      } else {
        protocol_error("malformed",
                       "WELCOME without integer heartbeat_ms and liveness",
                       now);
      }
      peer_seen_ = true;
      reconnects_ = 0;
      log::info("connected", {{"broker", options_.broker},
                              {"heartbeat_ms", heartbeat_ms_},
                              {"liveness", liveness_},
                              {"unsent_results", outbox_.size()}});
      return;
    }
    case Command::kHeartbeat:
      peer_seen_ = true;
      return;
    case Command::kJobs:
      peer_seen_ = true;
      handle_jobs(m.body, now);
      return;
    case Command::kDisconnect: {
      std::string reason = "the broker sent DISCONNECT";
      if (auto why = string_field(m.body, "reason"); !why.empty())
        reason += ": " + why;
      drop_connection(now, reason);
      return;
    }
    case Command::kError: {
      std::string code = string_field(m.body, "code");
      std::string message = string_field(m.body, "message");
      if (code == "version") {
        log::error("protocol_error",
                   {{"code", code}, {"message", message}, {"fatal", true}});
        exit_code_ = 3;
        return;
      }
      protocol_error("broker_error", code + ": " + message, now);
      return;
    }
    default: {
      std::string what = "unexpected command " +
                         std::string(protocol::to_string(m.command)) +
                         " from the broker";
      protocol_error("malformed", what, now);
      send(protocol::make_error("malformed", what), now);
      return;
    }
  }
}

void Worker::handle_jobs(const nlohmann::json& body, TimePoint now) {
  auto it = body.find("jobs");
  if (it == body.end() || !it->is_array()) return refuse_jobs(now);
  for (const auto& j : *it) accept_job(j, now);
}

void Worker::handle_jobs(json_view::element body, TimePoint now) {
  auto jobs = json_view::find(body, "jobs");
  if (!jobs || jobs->type() != json_view::element_type::ARRAY)
    return refuse_jobs(now);
  for (json_view::element e : json_view::array_of(*jobs)) {
    // A batch job (rare, and read with the batch code) or an entry that is
    // not an object goes through a document of its own.
    const bool object = e.type() == json_view::element_type::OBJECT;
    const auto batch = object ? json_view::find(e, "batch") : std::nullopt;
    if (object &&
        (!batch || batch->type() == json_view::element_type::NULL_VALUE))
      accept_job(json_reader::ElementValue(e), now);
    else
      accept_job(json_view::to_document(e), now);
  }
}

void Worker::refuse_jobs(TimePoint now) {
  std::string what = "JOBS: 'jobs' must be an array";
  protocol_error("malformed", what, now);
  send(protocol::make_error("malformed", what), now);
}

void Worker::refuse(JobResult answer, Outcome outcome, std::string error) {
  answer.outcome = outcome;
  answer.error = std::move(error);
  answer.started_ms = epoch_ms();
  answer.session = session_;
  outbox_.push_back(std::move(answer));
}

void Worker::accept_job(const nlohmann::json& j, TimePoint now) {
  const bool batch = is_batch_job(j);
  admit(addressee(j), batch, now,
        [&] { return batch ? batch_request(j) : job_request(parse_job(j)); });
}

void Worker::accept_job(const json_reader::ElementValue& j, TimePoint now) {
  std::optional<JobResult> answer;
  if (auto ids = job_ids_element(j)) {
    answer.emplace();
    std::tie(answer->id, answer->attempt) = *ids;
  }
  admit(std::move(answer), false, now,
        [&] { return job_request(parse_job_element(j)); });
}

void Worker::admit(std::optional<JobResult> answer, bool batch, TimePoint now,
                   const std::function<Result<HttpRequest>()>& request_of) {
  if (!answer) {
    // Nothing to answer with; the broker's lease will requeue it.
    protocol_error("malformed",
                   batch ? "JOBS: a batch job without a positive batch id"
                         : "JOBS: a job without integer id and attempt",
                   now);
    return;
  }
  // Outstanding from JOBS until the RESULTS that answers it (the credit); a
  // batch is one transfer and takes one.
  const bool over = session_outstanding_ >= options_.concurrency;
  ++session_outstanding_;
  if (over)
    return refuse(std::move(*answer), Outcome::kTransient,
                  "worker over capacity");
  if (stopping_)
    return refuse(std::move(*answer), Outcome::kTransient,
                  "worker shutting down");
  auto request = request_of();
  if (!request)
    return refuse(std::move(*answer), Outcome::kPermanent, request.error());
  request->session = session_;
  pending_.push_back(std::move(*request));
}

Result<const ApiRoute*> Worker::route(const std::string& api) const {
  auto it = options_.routes.find(api);
  if (it != options_.routes.end()) return &it->second;
  if (options_.configured_apis.count(api))
    return Error{"api '" + api + "' is not served by this worker"};
  return Error{"unknown api '" + api +
               "' (not in this worker's configuration)"};
}

Result<HttpRequest> Worker::job_request(Result<Job> job) const {
  if (!job) return Error{"invalid job: " + job.error()};
  auto api = route(job->api);
  if (!api) return Error{api.error()};
  return prepare_request(*job, **api);
}

Result<HttpRequest> Worker::batch_request(const nlohmann::json& j) const {
  auto job = parse_batch_job(j);
  if (!job) return Error{"invalid batch job: " + job.error()};
  auto api = route(job->call.api);
  if (!api) return Error{api.error()};
  return prepare_batch_request(std::move(*job), **api);
}

void Worker::start_pending() {
  // Transfers of an earlier session still count: never more than
  // `concurrency` at once.
  int started = 0;
  while (!pending_.empty() && started++ < kMaxStartsPerTurn &&
         executor_->running() <
             static_cast<std::size_t>(options_.concurrency)) {
    executor_->start(std::move(pending_.front()));
    pending_.pop_front();
  }
}

void Worker::flush(TimePoint now, bool even_unanswered) {
  // Results wait in the outbox until the broker has answered this socket, so
  // none is queued into a socket that is then dropped.
  if (outbox_.empty() || !socket_ || !(peer_seen_ || even_unanswered)) return;
  for (auto& r : outbox_) {
    if (r.session == session_) --session_outstanding_;
    // Credentials never leave the worker, whatever the upstream echoes.
    // Logged for the first and then every 1000th such result.
    if (redactor_.scrub(r) && redacted_++ % 1000 == 0)
      log::warn("credentials_redacted",
                {{"job", r.id},
                 {"results", redacted_},
                 {"detail",
                  "a response repeated a credential of its API; it was "
                  "replaced by [redacted]"}});
  }
  std::size_t count = outbox_.size();
  outbox_since_ = TimePoint{};
  auto bodies = pack_results(std::exchange(outbox_, {}), kMaxResultsBytes);
  for (const auto& body : bodies) {
    if (!send_text(Command::kResults, body, now))
      log::error("results_lost", {{"count", count}});
  }
}

bool Worker::results_due(TimePoint now) const {
  if (outbox_.empty()) return false;
  // Nothing else is coming, or we are going: no reason to wait.
  if (stopping_ || (executor_->running() == 0 && pending_.empty())) return true;
  // A quarter of the credit (at most 32) makes a message worth sending.
  const auto enough =
      static_cast<std::size_t>(std::clamp(options_.concurrency / 4, 1, 32));
  return outbox_.size() >= enough || now - outbox_since_ >= kResultsLinger;
}

void Worker::on_stop_request(TimePoint now) {
  if (!stopping_) {
    stopping_ = true;
    shutdown_deadline_ =
        now + std::chrono::milliseconds(options_.shutdown_grace_ms);
    log::info("shutdown", {{"phase", "draining"},
                           {"in_flight", executor_->running()},
                           {"not_started", pending_.size()}});
    for (const auto& r : pending_)
      outbox_.push_back(
          refusal(r, Outcome::kTransient, "worker shutting down", epoch_ms()));
    pending_.clear();
  } else {
    log::info("shutdown",
              {{"phase", "abort"}, {"in_flight", executor_->running()}});
    executor_->abort_all("worker shutting down");
  }
}

int Worker::finish() {
  auto done = executor_->take_completed();
  outbox_.insert(outbox_.end(), std::make_move_iterator(done.begin()),
                 std::make_move_iterator(done.end()));
  std::size_t unsent = 0;
  if (socket_) {
    // Last words go out even if the broker has not answered this socket yet;
    // the I/O thread gets a bounded moment to deliver them (a bare
    // DISCONNECT to a broker that never answered is not worth waiting for).
    const bool worth_waiting = peer_seen_ || !outbox_.empty();
    flush(Clock::now(), /*even_unanswered=*/true);
    send(Message{Command::kDisconnect, {{"reason", "shutdown"}}}, Clock::now());
    socket_->set(zmq::sockopt::linger, worth_waiting ? 2000 : 0);
    socket_.reset();
  } else {
    unsent = outbox_.size();
  }
  log::info("shutdown", {{"phase", "done"}, {"unsent_results", unsent}});
  return 0;
}

std::optional<Worker::TimePoint> Worker::next_deadline() const {
  std::optional<TimePoint> next = executor_->deadline();
  auto consider = [&](TimePoint t) {
    if (!next || t < *next) next = t;
  };
  if (socket_) {
    consider(last_send_ + std::chrono::milliseconds(heartbeat_ms_));
    consider(last_recv_ + liveness_window());
  } else if (!stopping_) {
    consider(reconnect_at_);
  }
  if (stopping_) consider(shutdown_deadline_);
  // Only when flush() could send them: no spinning while disconnected.
  if (socket_ && peer_seen_ && !outbox_.empty() && outbox_since_ != TimePoint{})
    consider(outbox_since_ + kResultsLinger);
  return next;
}

int Worker::run() {
  nlohmann::json served = nlohmann::json::array();
  for (const auto& [name, route] : options_.routes) served.push_back(name);
  log::info("started", {{"worker", options_.id},
                        {"broker", options_.broker},
                        {"concurrency", options_.concurrency},
                        {"apis", served},
                        {"version", PACER_VERSION}});
  reconnect_at_ = Clock::now();
  std::vector<zmq::pollitem_t> items;
  while (true) {
    TimePoint now = Clock::now();
    if (!socket_ && !stopping_ && now >= reconnect_at_) {
      try {
        connect(now);
      } catch (const zmq::error_t& e) {  // e.g. out of file descriptors
        socket_.reset();
        drop_connection(now, std::string("cannot open a socket: ") + e.what());
      }
    }

    items.clear();
    items.push_back({nullptr, options_.stop_fd, ZMQ_POLLIN, 0});
    items.push_back({nullptr, executor_->poll_fd(), ZMQ_POLLIN, 0});
    const std::size_t zmq_index = items.size();
    if (socket_) items.push_back({socket_->handle(), 0, ZMQ_POLLIN, 0});
    long timeout = -1;
    if (!pending_.empty() &&
        executor_->running() < static_cast<std::size_t>(options_.concurrency))
      timeout = 0;
    else if (auto deadline = next_deadline()) {
      auto left = std::chrono::ceil<std::chrono::milliseconds>(*deadline - now);
      timeout = std::max<long>(0, static_cast<long>(left.count()));
    }
    if (zmq_poll(items.data(), static_cast<int>(items.size()), timeout) < 0 &&
        zmq_errno() != EINTR) {
      log::error("fatal", {{"message", std::string("zmq_poll: ") +
                                           zmq_strerror(zmq_errno())}});
      return 1;
    }
    now = Clock::now();

    if (items[0].revents & ZMQ_POLLIN) {
      char buf[256];
      [[maybe_unused]] auto n = ::read(options_.stop_fd, buf, sizeof buf);
      on_stop_request(now);
    }
    if (items[1].revents & ZMQ_POLLIN) executor_->on_ready();
    executor_->on_timer(now);
    if (socket_ && zmq_index < items.size() &&
        (items[zmq_index].revents & ZMQ_POLLIN))
      receive(now);
    if (exit_code_) return *exit_code_;

    auto done = executor_->take_completed();
    if (log::enabled(log::Level::kDebug)) {
      for (const auto& r : done) {  // never headers or bodies
        nlohmann::json fields = {{"status", r.status},
                                 {"outcome", std::string(to_string(r.outcome))},
                                 {"error", r.error},
                                 {"duration_ms", r.duration_ms}};
        if (r.batch) {
          fields["batch"] = *r.batch;
          if (r.members) fields["members"] = r.members->size();
          if (r.split_error)
            fields["split_failed"] = true;  // it quotes the body
        } else {
          fields["id"] = r.id;
          fields["attempt"] = r.attempt;
        }
        log::debug("job_done", std::move(fields));
      }
    }
    outbox_.insert(outbox_.end(), std::make_move_iterator(done.begin()),
                   std::make_move_iterator(done.end()));
    start_pending();

    if (socket_ && now - last_recv_ >= liveness_window())
      drop_connection(now, "no message from the broker for " +
                               std::to_string(liveness_window().count()) +
                               " ms");
    if (!outbox_.empty() && outbox_since_ == TimePoint{}) outbox_since_ = now;
    if (results_due(now)) flush(now);
    if (socket_ && now - last_send_ >= std::chrono::milliseconds(heartbeat_ms_))
      send(Message{Command::kHeartbeat, nullptr}, now);

    if (stopping_) {
      if (executor_->running() > 0 && now >= shutdown_deadline_) {
        log::info("shutdown",
                  {{"phase", "abort"}, {"in_flight", executor_->running()}});
        executor_->abort_all("worker shutting down");
      }
      if (executor_->running() == 0 && pending_.empty()) return finish();
    }
  }
}

}  // namespace pacer::worker
