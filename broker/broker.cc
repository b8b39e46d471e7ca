#include "broker/broker.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <climits>
#include <cmath>
#include <filesystem>
#include <stdexcept>
#include <type_traits>

#include "common/batch.h"
#include "common/json_text.h"
#include "common/log.h"
#include "common/security.h"
#include "common/units.h"

#ifndef PACER_VERSION
#define PACER_VERSION "0.0.0"
#endif

namespace pacer {

using protocol::Command;
using protocol::Message;
using json = nlohmann::json;

namespace {

constexpr int kMaxWorkerMessagesPerTurn = 4000;
constexpr int kMaxClientMessagesPerTurn = 200;
// Job ids one STATUS, PROGRESS or CANCEL may name (the CLI sends 10,000).
constexpr std::size_t kMaxIdsPerRequest = 10'000;
// Client replies a turn holds until its commit: past this, the rest of the
// client requests wait for the next turn (workers' messages do not).
constexpr std::size_t kMaxClientReplyBytesPerTurn = 8u << 20;
constexpr Millis kMaxPollMs = 1000;
constexpr Millis kDefaultQuotaWaitMs = 24LL * 3600 * 1000;
constexpr int kPurgeStep = 500;
constexpr Millis kRestartSkewMs = 1000;
constexpr std::size_t kMaxJobsMessageBytes = 16u << 20;
// Metrics read from the database's files: job counts by state (a scan of
// the jobs table, so also spaced by how long it took) and the files' size.
constexpr Millis kJobCountMs = 2000;
constexpr Millis kDatabaseSizeMs = 5000;
// How often alert conditions are checked (the idle loop turns this often).
constexpr Millis kAlertCheckMs = 1000;

std::string lower(std::string s) {
  for (char& c : s)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Seconds form of Retry-After only; the full header parser arrives with the
// quota feedback loop.
std::optional<Millis> retry_after_ms(const std::optional<std::string>& header) {
  if (!header) return std::nullopt;
  const std::string& v = *header;
  if (v.empty() || v.size() > 9 || !std::all_of(v.begin(), v.end(), [](char c) {
        return std::isdigit(static_cast<unsigned char>(c));
      }))
    return std::nullopt;
  return std::stoll(v) * 1000;
}

// Fields a peer sent, read without trusting their types: nlohmann's value()
// throws when a key exists with another type, and a peer must not be able to
// crash the broker with "status": null.
template <typename T>
T field(const json& obj, const char* key, T fallback) {
  auto it = obj.find(key);
  if (it == obj.end()) return fallback;
  if constexpr (std::is_same_v<T, std::string>) {
    return it->is_string() ? it->template get<std::string>() : fallback;
  } else if constexpr (std::is_same_v<T, double>) {
    return it->is_number() ? it->template get<double>() : fallback;
  } else if constexpr (std::is_same_v<T, bool>) {
    return it->is_boolean() ? it->template get<bool>() : fallback;
  } else {
    return it->is_number_integer() ? it->template get<T>() : fallback;
  }
}

std::string random_group() {
  static std::mt19937_64 rng{std::random_device{}()};
  char buf[24];
  std::snprintf(buf, sizeof buf, "g-%012llx",
                static_cast<unsigned long long>(rng() & 0xFFFFFFFFFFFFULL));
  return buf;
}

// Messages queued per client connection, each way. The CLI has one request
// out at a time; a client that sends more than this without reading loses
// the excess replies (its requests time out), not the broker's memory.
constexpr int kClientHighWaterMark = 32;

// CURVE server settings of an endpoint: the broker's secret key and the
// endpoint's ZAP domain (broker/zap.h).
struct CurveServer {
  std::string secret_key;
  std::string domain;
};

zmq::socket_t bind_router(zmq::context_t& ctx, const std::string& endpoint,
                          const char* what,
                          const std::optional<CurveServer>& curve, int hwm) {
  zmq::socket_t s(ctx, zmq::socket_type::router);
  if (curve) {
    s.set(zmq::sockopt::curve_server, 1);
    s.set(zmq::sockopt::curve_secretkey, curve->secret_key);
    s.set(zmq::sockopt::zap_domain, curve->domain);
    // A peer that connects and never completes the handshake is dropped.
    s.set(zmq::sockopt::handshake_ivl, 5000);
  }
  s.set(zmq::sockopt::router_mandatory, 1);
  // A peer that reconnects with its routing id (a worker does) takes it
  // over at once, before the old connection is seen to be gone.
  s.set(zmq::sockopt::router_handover, 1);
  s.set(zmq::sockopt::maxmsgsize, protocol::kMaxMessageBytes);
  s.set(zmq::sockopt::linger, 0);
  // Workers (hwm 0): credit, not the high-water mark, bounds what is queued
  // for a worker; a silently dropped JOBS message would strand its jobs
  // until their lease. Clients: a client that never reads its replies
  // loses them past the mark (it times out and asks again) instead of
  // growing the broker's memory without bound.
  s.set(zmq::sockopt::sndhwm, hwm);
  s.set(zmq::sockopt::rcvhwm, hwm);
  try {
    s.bind(endpoint);
  } catch (const zmq::error_t& e) {
    throw std::runtime_error(std::string("cannot bind the ") + what +
                             " endpoint " + endpoint + ": " + e.what());
  }
  return s;
}

}  // namespace

Broker::Broker(Config config, Clock& clock)
    : config_(std::move(config)), clock_(clock), alerts_(config_.apis) {
  lock_.emplace(config_.broker.database);
  try {
    store_ = std::make_unique<Store>(config_.broker.database,
                                     config_.broker.synchronous == "full");
  } catch (const sqlite::StoreError& e) {
    throw std::runtime_error(e.what());
  }
  std::optional<CurveServer> workers_curve, clients_curve;
  const auto& sec = config_.security;
  // main() checked it all first (exit 2); without keys the loopback rule
  // still holds for any caller, and with them the keys are read here.
  if (!sec.enabled)
    if (auto ok = check_security(config_); !ok)
      throw std::runtime_error(ok.error());
  if (sec.enabled) {
    auto secret = read_secret_key(sec.broker_secret_key);
    if (!secret)
      throw std::runtime_error("security.broker_secret_key: " + secret.error());
    auto zap = ZapHandler::start(ctx_, {{ZapHandler::kWorkers, sec.worker_keys},
                                        {ZapHandler::kClients, sec.client_keys}});
    if (!zap) throw std::runtime_error(zap.error());
    zap_ = std::move(*zap);
    workers_curve = CurveServer{*secret, ZapHandler::kWorkers};
    clients_curve = CurveServer{*secret, ZapHandler::kClients};
  }
  workers_sock_ = bind_router(ctx_, config_.broker.worker_endpoint, "worker",
                              workers_curve, 0);
  clients_sock_ = bind_router(ctx_, config_.broker.client_endpoint, "client",
                              clients_curve, kClientHighWaterMark);
  for (auto& [name, api] : config_.apis) {
    lanes_[name] = std::make_unique<Lane>(api, config_.broker.window);
    lane_order_.push_back(lanes_[name].get());
  }
  // Last, so a refused address leaves nothing else half started.
  if (!config_.broker.metrics_address.empty())
    metrics_ =
        std::make_unique<metrics::Server>(config_.broker.metrics_address);
  if (!config_.alerts.webhook.empty()) {
    WebhookSender::Options o;
    o.url = config_.alerts.webhook;
    o.timeout_ms = config_.alerts.webhook_timeout_ms;
    o.max_attempts = config_.alerts.webhook_attempts;
    webhook_ = std::make_unique<WebhookSender>(std::move(o));
  }
}

Broker::~Broker() = default;

Lane* Broker::lane(const std::string& api) {
  auto it = lanes_.find(api);
  return it == lanes_.end() ? nullptr : it->second.get();
}

void Broker::recover() {
  Millis now = clock_.now_ms();
  started_ms_ = now;
  // Jobs that were running when the broker stopped: their workers may still
  // answer (fencing accepts a current attempt); otherwise the lease requeues
  // them. They keep their concurrency slots until then.
  int orphans = 0;
  for (auto& r : store_->running_jobs()) {
    InFlight f;
    f.api = r.api;
    f.attempt = r.attempt;
    f.attempts_used = r.attempts_used;
    f.max_attempts = r.max_attempts;
    f.cost = r.cost;
    f.lease_until = r.lease_until.value_or(now + config_.broker.lease_grace_ms);
    f.quota_deadline = r.quota_deadline;
    f.priority = r.priority;
    f.batch = r.batch;
    f.batch_key = r.batch_key;
    f.group = r.group;
    if (r.batch != 0) {
      // Members of one call: one concurrency slot for the batch.
      auto [b, fresh] = batches_.try_emplace(r.batch);
      b->second.api = r.api;
      b->second.members.push_back(r.id);
      b->second.units += r.cost;
      if (fresh)
        if (auto* l = lane(r.api)) l->started();
    } else if (auto* l = lane(r.api)) {
      l->started();
    }
    in_flight_[r.id] = std::move(f);
    ++orphans;
  }
  // What the servers said before the restart: pauses, learned limits and
  // their last counts (which the first answer after the restart refreshes).
  auto saved = store_->load_lanes();
  for (auto& [name, l] : lanes_) {
    auto it = saved.find(name);
    if (it == saved.end()) continue;
    json state = json::parse(it->second, nullptr, false);
    try {
      l->quota().restore(state, now);
    } catch (const json::exception& e) {
      log::warn("lane_state_unreadable", {{"api", name}, {"error", e.what()}});
    }
    l->sync_learned(now);
  }
  // Rebuild each limiter from the starts inside its longest window, so a
  // restart never bursts past a quota.
  for (auto& [name, l] : lanes_) {
    Millis span = l->limiter().longest_span();
    if (span > 0) {
      // Attempt rows hold the dispatch decision time; the jobs left a little
      // later (after the commit). Replaying them later than they were errs
      // on the safe side.
      for (const Start& s : store_->attempt_starts(name, now - span))
        l->limiter().record(s.units, s.t + kRestartSkewMs, s.requests);
    }
    l->set_next_due(store_->next_due(name, now, /*any=*/true));
  }
  for (auto& [api, n] : store_->apis_with_ready_jobs()) {
    if (!lane(api))
      log::warn(
          "jobs_for_unknown_api",
          {{"api", api},
           {"jobs", n},
           {"hint", "add [api." + api + "] to the configuration to run them"}});
  }
  log::info("recovered", {{"running_jobs", orphans},
                          {"schema_version", store_->schema_version()}});
}

Result<Ok> Broker::check_security(const Config& config) {
  const auto& sec = config.security;
  if (!sec.enabled) {
    if (config.broker.allow_insecure) return Ok{};
    for (const auto& ep :
         {config.broker.worker_endpoint, config.broker.client_endpoint})
      if (!loopback_endpoint(ep))
        return Error{"endpoint " + ep +
                     " is reachable from other hosts, and without "
                     "[security] anyone who reaches it can run jobs with "
                     "the workers' credentials: configure [security] "
                     "(docs/operations.md, \"A fleet across hosts\"), or "
                     "set broker.allow_insecure = true on a network you "
                     "trust"};
    return Ok{};
  }
  for (auto [key, value] :
       {std::pair{"broker_secret_key", &sec.broker_secret_key},
        std::pair{"worker_keys", &sec.worker_keys},
        std::pair{"client_keys", &sec.client_keys}})
    if (value->empty())
      return Error{std::string("security.") + key +
                   ": required by pacer-broker with [security]"};
  if (auto s = read_secret_key(sec.broker_secret_key); !s)
    return Error{"security.broker_secret_key: " + s.error()};
  for (auto [key, value] : {std::pair{"worker_keys", &sec.worker_keys},
                            std::pair{"client_keys", &sec.client_keys}})
    if (auto k = read_key_folder(*value); !k)
      return Error{std::string("security.") + key + ": " + k.error()};
  return Ok{};
}

int Broker::run() {
  recover();
  log::info(
      "listening",
      {{"workers", config_.broker.worker_endpoint},
       {"clients", config_.broker.client_endpoint},
       {"database", config_.broker.database},
       {"metrics", metrics_ ? json(config_.broker.metrics_address) : json()},
       {"apis", lanes_.size()}});
  if (zap_) {
    auto n = zap_->sizes();
    log::info("security", {{"mechanism", "CURVE"},
                           {"worker_keys", n[ZapHandler::kWorkers]},
                           {"client_keys", n[ZapHandler::kClients]}});
  } else if (config_.broker.allow_insecure) {
    log::warn("security",
              {{"mechanism", "none"},
               {"detail",
                "no [security]: any peer that reaches the endpoints is "
                "trusted (broker.allow_insecure = true)"}});
  }
  while (!stopping_) {
    if (reload_keys_.exchange(false) && zap_) {
      auto r = zap_->reload();
      auto n = zap_->sizes();
      if (r)
        log::info("keys_reloaded", {{"worker_keys", n[ZapHandler::kWorkers]},
                                    {"client_keys", n[ZapHandler::kClients]}});
      else
        log::error("keys_reload_failed",
                   {{"error", r.error()},
                    {"detail", "the previous keys stay in force"}});
    }
    turn();
  }
  Millis end = clock_.now_ms();
  store_->begin();
  for (Lane* l : lane_order_)
    store_->save_lane(l->name(), l->quota().paused_until(end),
                      l->quota().pause_reason(),
                      l->quota().persisted(end).dump(), end);
  // Tell workers we are going; they reconnect to the next broker.
  for (auto& [rid, w] : workers_)
    protocol::send(
        workers_sock_,
        Message{Command::kDisconnect, {{"reason", "broker shutting down"}}},
        &rid);
  store_->commit();
  log::info("stopped", {{"in_flight", in_flight_.size()}});
  return 0;
}

void Broker::turn() {
  Millis now = clock_.now_ms();
  Millis wake = next_wakeup(now);
  long timeout =
      static_cast<long>(std::clamp<Millis>(wake - now, 0, kMaxPollMs));
  zmq::pollitem_t items[] = {
      {workers_sock_.handle(), 0, ZMQ_POLLIN, 0},
      {clients_sock_.handle(), 0, ZMQ_POLLIN, 0},
  };
  try {
    zmq::poll(items, 2, std::chrono::milliseconds(timeout));
  } catch (const zmq::error_t& e) {
    if (e.num() != EINTR) throw;
    return;
  }
  now = clock_.now_ms();
  store_->begin();
  std::string rid;
  for (int i = 0; i < kMaxWorkerMessagesPerTurn; ++i) {
    auto frames = protocol::recv_frames(workers_sock_, true, &rid);
    if (!frames) break;
    on_worker_message(rid, *frames, now);
  }
  for (int i = 0; i < kMaxClientMessagesPerTurn &&
                  client_reply_bytes_ < kMaxClientReplyBytesPerTurn;
       ++i) {
    auto frames = protocol::recv_frames(clients_sock_, true, &rid);
    if (!frames) break;
    on_client_message(rid, *frames, now);
  }
  timers(now);
  // A fresh reading: processing a turn's messages (a big SUBMIT) takes time,
  // and starts must not be recorded earlier than they happen.
  dispatch(clock_.now_ms());
  store_->commit();
  flush();
  // After the commit: the snapshot shows nothing that could still roll back.
  observe(clock_.now_ms());
}

Millis Broker::next_wakeup(Millis now) {
  Millis wake = now + kMaxPollMs;
  for (auto& [rid, w] : workers_) {
    wake = std::min(wake, w.last_sent + config_.broker.heartbeat_ms);
    wake = std::min(
        wake, w.last_seen +
                  config_.broker.heartbeat_ms * config_.broker.liveness + 1);
  }
  for (Lane* l : lane_order_) {
    if (l->next_due()) wake = std::min(wake, *l->next_due());
    bool credit = std::any_of(workers_.begin(), workers_.end(), [&](auto& kv) {
      return kv.second.serves(l->name()) && kv.second.free_credit() > 0;
    });
    if (credit && l->has_ready() && l->under_concurrency()) {
      const Lane::Selection sel = l->select(now);
      Millis t = l->gate(sel.units, now, sel.requests);
      if (t != Limiter::kNever)
        wake = std::min(wake, t);
      else
        wake = now;  // dispatch() fails the job that can never fit
    }
  }
  wake = std::min(wake, next_lease_check_);
  wake = std::min(wake, next_purge_);
  return std::max(wake, now);
}

// ---------------------------------------------------------------- workers

void Broker::on_worker_message(const std::string& rid,
                               std::vector<zmq::message_t>& frames,
                               Millis now) {
  // RESULTS, one per job run, are read without building a document.
  auto decoded = protocol::decode(frames, Command::kResults);
  std::vector<protocol::WireResult> results;
  if (decoded.message && decoded.message->command == Command::kResults) {
    auto parsed = protocol::parse_results(decoded.raw_body);
    if (parsed)
      results = std::move(*parsed);
    else
      decoded.error = protocol::DecodeError{"malformed", parsed.error(), {}};
  }
  if (decoded.error) {
    auto& err = *decoded.error;
    if (err.code == "foreign") {
      log::warn("foreign_message", {{"socket", "workers"}});
      return;
    }
    auto& last = malformed_logged_[rid];
    if (now - last > 60'000) {
      last = now;
      log::warn("protocol_error", {{"socket", "workers"},
                                   {"code", err.code},
                                   {"message", err.message}});
    }
    reply(workers_sock_, rid, protocol::make_error(err.code, err.message));
    if (err.code == "version")
      forget_worker(rid, "protocol version mismatch", now);
    return;
  }
  try {
    handle_worker(rid, *decoded.message, results, now);
  } catch (const json::exception& e) {
    // Every field is read defensively; this is the backstop that keeps one
    // odd message from taking the broker down.
    reply(workers_sock_, rid, protocol::make_error("malformed", e.what()));
  }
}

void Broker::handle_worker(const std::string& rid, Message& m,
                           std::vector<protocol::WireResult>& results,
                           Millis now) {
  if (m.command == Command::kReady) {
    on_ready(rid, m.body, now);
    return;
  }
  auto it = workers_.find(rid);
  WorkerRec* w = it == workers_.end() ? nullptr : &it->second;
  if (w) w->last_seen = now;
  switch (m.command) {
    case Command::kHeartbeat:
      break;
    case Command::kResults:
      // Only from the peer each attempt was sent to (a worker keeps its
      // routing id across reconnects); an attempt recovered after a broker
      // restart has no peer on record, and its answer is taken from
      // whoever was running it when its attempt is current (fencing).
      // Credit is not tracked for an unregistered sender.
      for (auto& r : results) apply_result(r, rid, w, now);
      break;
    case Command::kDisconnect:
      if (w) forget_worker(rid, "worker disconnected", now);
      return;
    default:
      reply(workers_sock_, rid,
            protocol::make_error("malformed",
                                 std::string(protocol::to_string(m.command)) +
                                     " is not a worker command"));
      return;
  }
  if (!w) {
    reply(workers_sock_, rid,
          Message{Command::kDisconnect, {{"reason", "unknown worker"}}});
  }
}

void Broker::on_ready(const std::string& rid, const json& body, Millis now) {
  auto cap = body.find("capacity");
  if (cap == body.end() || !cap->is_number_integer() ||
      cap->get<std::int64_t>() < 1 || cap->get<std::int64_t>() > 100'000) {
    reply(workers_sock_, rid,
          protocol::make_error(
              "malformed",
              "READY: 'capacity' must be an integer from 1 to 100000"));
    return;
  }
  std::set<std::string> apis;
  if (auto a = body.find("apis"); a != body.end()) {
    if (!a->is_array()) {
      reply(
          workers_sock_, rid,
          protocol::make_error("malformed", "READY: 'apis' must be an array"));
      return;
    }
    for (auto& v : *a) {
      if (!v.is_string()) {
        reply(workers_sock_, rid,
              protocol::make_error("malformed",
                                   "READY: 'apis' must hold strings"));
        return;
      }
      apis.insert(v.get<std::string>());
    }
  }
  auto& w = workers_[rid];
  bool fresh = w.routing_id.empty();
  w.routing_id = rid;
  w.name = field(body, "worker", std::string("worker"));
  if (w.name.size() > 200) w.name.resize(200);
  w.capacity = static_cast<int>(cap->get<std::int64_t>());
  w.apis = std::move(apis);
  w.last_seen = now;
  for (auto& a : w.apis)
    if (!lane(a))
      log::warn("worker_serves_unknown_api", {{"worker", w.name}, {"api", a}});
  log::info(
      fresh ? "worker_connected" : "worker_ready_again",
      {{"worker", w.name},
       {"capacity", w.capacity},
       {"apis", json(std::vector<std::string>(w.apis.begin(), w.apis.end()))}});
  reply(workers_sock_, rid,
        Message{Command::kWelcome,
                {{"heartbeat_ms", config_.broker.heartbeat_ms},
                 {"liveness", config_.broker.liveness}}});
}

bool Broker::result_from(const std::string& sent_to, const std::string& rid,
                         WorkerRec* w, Millis now) {
  if (sent_to.empty() || sent_to == rid) return true;
  ++results_refused_total_;
  auto& last = refused_logged_[rid];
  if (now - last > 60'000) {
    last = now;
    if (refused_logged_.size() > 1000) refused_logged_.clear();
    log::warn("result_refused",
              {{"worker", w ? w->name : "(not registered)"},
               {"reason", "the attempt was sent to another peer"}});
  }
  return false;
}

void Broker::apply_result(protocol::WireResult& r, const std::string& rid,
                          WorkerRec* w, Millis now) {
  if (r.is_object && r.has_batch) {
    apply_batch_result(r, rid, w, now);
    return;
  }
  if (!r.is_object || !r.id || !r.attempt || *r.attempt < INT_MIN ||
      *r.attempt > INT_MAX) {
    log::warn("malformed_result", {{"worker", w ? w->name : "?"}});
    return;
  }
  JobId id = *r.id;
  int attempt = static_cast<int>(*r.attempt);
  auto f = in_flight_.find(id);
  if (f != in_flight_.end() && !result_from(f->second.worker, rid, w, now))
    return;
  if (w) {
    auto o = w->outstanding.find(id);
    if (o != w->outstanding.end() && o->second == attempt)
      w->outstanding.erase(o);
  }
  if (f == in_flight_.end() || f->second.attempt != attempt ||
      f->second.batch != 0) {
    log::debug("stale_result", {{"job", id}, {"attempt", attempt}});
    return;
  }
  InFlight job = std::move(f->second);
  in_flight_.erase(f);
  Lane* l = lane(job.api);
  if (l) l->finished();
  ++results_total_;

  const ApiConfig* api = config_.api(job.api);
  Answer a = read_answer(r, api);
  auto lane_paused =
      note_answer(l, job.api, a, job.mark, job.cost, 1, job.started, now);
  AttemptEnd end = answer_end(id, attempt, a, now);
  end.body = std::move(r.body);
  end_job(job, std::move(end), lane_paused, a.server_floor, now);
}

void Broker::apply_batch_result(protocol::WireResult& r, const std::string& rid,
                                WorkerRec* w, Millis now) {
  const std::int64_t batch = r.batch.value_or(0);
  auto bf = batches_.find(batch);
  if (bf != batches_.end() && !result_from(bf->second.worker, rid, w, now))
    return;
  if (w) w->batches.erase(batch);
  if (batch <= 0 || bf == batches_.end()) {
    log::debug("stale_batch_result", {{"batch", batch}});
    return;
  }
  BatchFlight b = std::move(bf->second);
  batches_.erase(bf);
  Lane* l = lane(b.api);
  if (l) l->finished();
  ++results_total_;

  const ApiConfig* api = config_.api(b.api);
  Answer a = read_answer(r, api);
  auto lane_paused =
      note_answer(l, b.api, a, b.mark, b.units, b.requests, b.started, now);

  // Each member's share, by job id, when the response was split.
  std::map<JobId, const protocol::WireMember*> shares;
  if (r.has_members)
    for (const auto& s : r.members)
      if (s.is_object && s.id) shares[*s.id] = &s;
  const std::string split_error = r.split_error.value_or(std::string());
  for (JobId id : b.members) {
    auto f = in_flight_.find(id);
    if (f == in_flight_.end() || f->second.batch != batch) continue;
    InFlight job = std::move(f->second);
    in_flight_.erase(f);
    AttemptEnd end = answer_end(id, job.attempt, a, now);
    if (a.outcome == Outcome::kSuccess) {
      auto s = shares.find(id);
      if (s == shares.end() || s->second->attempt != job.attempt) {
        // The call succeeded but this member got no usable share: not the
        // job's fault, so it is retried (and dead once its attempts are
        // used, with the message).
        end.outcome = Outcome::kTransient;
        end.error = !split_error.empty()
                        ? "batch response: " + split_error
                        : (r.has_members
                               ? "batch response: no result for this member"
                               : "batch response: the worker sent no members");
        end.body = r.body;
      } else {
        const protocol::WireMember& share = *s->second;
        end.body = share.body;
        if (!share.ok.value_or(false)) {
          // A failed item: its own status when it has one, else retried.
          const std::int64_t st = share.status.value_or(0);
          end.outcome = st >= 100 && st <= 999 ? classify_status(st)
                                               : Outcome::kTransient;
          if (end.outcome == Outcome::kSuccess)
            end.outcome = Outcome::kTransient;
          if (st >= 100 && st <= 999) end.status = static_cast<int>(st);
          end.error = "batch item failed: " +
                      share.error.value_or(std::string("no error given"));
        }
      }
    } else {
      end.body = r.body;
    }
    end_job(job, end, lane_paused, a.server_floor, now);
  }
}

Broker::Answer Broker::read_answer(protocol::WireResult& r,
                                   const ApiConfig* api) const {
  Answer a;
  const std::int64_t status = r.status.value_or(0);
  a.status = status < 0 || status > 999 ? 0 : static_cast<int>(status);
  if (!r.observation.is_null()) {
    a.obs = QuotaObservation::from_json(r.observation);
    a.observation_json = r.observation.dump();
  }
  a.headers_json = std::move(r.headers_json);
  if (!a.obs) {
    // A worker that sent no observation: Retry-After in seconds is the
    // least it can tell.
    if (auto ra = retry_after_ms(r.retry_after)) {
      a.obs.emplace();
      a.obs->retry_after_ms = ra;
    }
  }
  // The outcome class (DESIGN §6): the API's configured statuses first,
  // then what the headers prove (a 403 or 503 with rate-limit evidence is
  // a rate limit; OpenAI's insufficient_quota is not retryable), then the
  // default classes.
  const std::string verdict = a.obs ? a.obs->verdict : "ok";
  if (a.status > 0) {
    a.outcome = classify_status(a.status);
    if (api && api->statuses.count(a.status)) {
      a.outcome = api->statuses.at(a.status);
    } else if (verdict == "throttled") {
      a.outcome = Outcome::kRateLimited;
    } else if (verdict == "quota_exhausted") {
      a.outcome = Outcome::kPermanent;
    }
  } else if (auto o = parse_outcome(r.outcome.value_or("transient"))) {
    a.outcome = *o == Outcome::kSuccess ? Outcome::kTransient : *o;
  }
  a.error = r.error.value_or(std::string());
  if (a.error.empty() && a.outcome != Outcome::kSuccess)
    a.error = "HTTP " + std::to_string(a.status);
  a.duration_ms = r.duration_ms.value_or(0.0);
  if (r.actual_cost) {
    double v = *r.actual_cost;
    if (std::isfinite(v) && v >= 0 && v < 1e15) a.actual_cost = v;
  }
  a.server_floor = a.obs && a.obs->retry_after_ms ? *a.obs->retry_after_ms : 0;
  return a;
}

std::optional<Millis> Broker::note_answer(Lane* l, const std::string& api,
                                          const Answer& a,
                                          QuotaState::Mark mark,
                                          std::int64_t units,
                                          std::int64_t requests, Millis started,
                                          Millis now) {
  if (auto* c = counters(api))
    c->on_answer(a.status, a.outcome == Outcome::kRateLimited, a.duration_ms);
  if (!l) return std::nullopt;
  QuotaState::Answer q;
  q.obs = a.obs ? &*a.obs : nullptr;
  q.at = mark;
  q.success = a.outcome == Outcome::kSuccess;
  q.rate_limited = a.outcome == Outcome::kRateLimited;
  q.transient = a.outcome == Outcome::kTransient;
  q.overloaded = !q.rate_limited && (a.status == 503 || a.status == 529);
  // An answer (not a lost worker) says when the request can have arrived.
  if (a.status > 0)
    q.late_ms = l->note_answered(started, now, a.duration_ms, units, requests);
  auto paused = l->quota().on_answer(q, now);
  if (paused && lane_paused_logged_[api] != *paused) {
    lane_paused_logged_[api] = *paused;
    log::info("lane_paused", {{"api", api},
                              {"for_ms", *paused - now},
                              {"reason", l->quota().pause_reason()},
                              {"status", a.status}});
  }
  // The real cost, when the response states it: correct the unit limits.
  if (a.actual_cost)
    l->limiter().correct(
        static_cast<std::int64_t>(std::ceil(*a.actual_cost)) - units, started,
        now);
  l->sync_learned(now);
  return paused;
}

AttemptEnd Broker::answer_end(JobId id, int attempt, const Answer& a,
                              Millis now) const {
  AttemptEnd end;
  end.id = id;
  end.attempt = attempt;
  end.outcome = a.outcome;
  end.status = a.status;
  end.error = a.error;
  end.headers_json = a.headers_json;
  end.duration_ms = a.duration_ms;
  end.observation_json = a.observation_json;
  end.run_at = now;
  return end;
}

void Broker::end_job(const InFlight& job, AttemptEnd end,
                     std::optional<Millis> lane_paused, Millis server_floor,
                     Millis now) {
  const ApiConfig* api = config_.api(job.api);
  Millis base = api ? api->backoff_base_ms : 500;
  Millis cap = api ? api->backoff_cap_ms : 60'000;
  switch (end.outcome) {
    case Outcome::kSuccess:
      end.next = JobState::kSucceeded;
      break;
    case Outcome::kPermanent:
      end.next = JobState::kDead;
      break;
    case Outcome::kRateLimited: {
      // Not the job's fault: no attempt used, but the wait has a deadline.
      end.uses_attempt = false;
      Millis deadline = job.quota_deadline.value_or(
          now + (api ? api->quota_wait_ms : kDefaultQuotaWaitMs));
      end.quota_deadline = deadline;
      if (now >= deadline) {
        end.next = JobState::kDead;
        end.error = "quota wait deadline passed: " + end.error;
      } else {
        end.next = JobState::kWaitingQuota;
        // Due when the lane reopens; the lane's limits then release the
        // waiting jobs at its rate, never as a burst.
        end.run_at = std::max(lane_paused.value_or(now),
                              now + std::max<Millis>(server_floor, 0));
        if (end.run_at <= now) end.run_at = now + base;
      }
      break;
    }
    default: {
      int used = job.attempts_used + 1;
      if (used >= job.max_attempts) {
        end.next = JobState::kDead;
        end.error =
            "attempts exhausted (" + std::to_string(used) + "): " + end.error;
      } else {
        end.next = JobState::kRetrying;
        end.run_at = now + backoff_.next(used, base, cap, server_floor);
      }
      break;
    }
  }
  end.group_known = true;
  end.group = job.group;
  if (!store_->end_attempt(end, now)) return;
  if (end.next == JobState::kRetrying || end.next == JobState::kWaitingQuota)
    release(job.api, ready_entry(end.id, job, end.run_at), now);
}

ReadyEntry Broker::ready_entry(JobId id, const InFlight& job, Millis run_at) {
  ReadyEntry e;
  e.id = id;
  e.priority = job.priority;
  e.run_at = run_at;
  e.cost = job.cost;
  e.batch_key = job.batch_key;
  return e;
}

void Broker::annotate(const Lane& l, ReadyEntry& e,
                      const std::optional<std::string>& body) const {
  e.batch_bytes = 0;
  e.batch_error.clear();
  if (!l.batching() || e.batch_key.empty()) {
    e.batch_key.clear();  // a key means nothing on a lane without batches
    return;
  }
  const BatchConfig& b = *l.config().batch;
  auto bytes = batch_member_bytes(b, body);
  if (!bytes) {
    e.batch_error =
        "cannot go in a batch of api '" + l.name() + "': " + bytes.error();
    return;
  }
  e.batch_bytes = static_cast<std::int64_t>(*bytes);
  const auto alone =
      static_cast<std::int64_t>(batch_envelope_bytes(b)) + e.batch_bytes - 1;
  if (alone > b.max_bytes)
    e.batch_error = "cannot go in a batch of api '" + l.name() +
                    "': a batch of this job alone would be " +
                    std::to_string(alone) + " bytes, over max_bytes (" +
                    std::to_string(b.max_bytes) + ")";
}

void Broker::release(const std::string& api, ReadyEntry e, Millis now,
                     const std::optional<std::string>* body) {
  Lane* l = lane(api);
  if (!l) return;
  if (e.run_at > now) {
    l->note_future(e.run_at);
    return;
  }
  if (l->batching() && !e.batch_key.empty())
    annotate(*l, e, body ? *body : store_->body_of(e.id));
  else
    e.batch_key.clear();
  l->offer(e);
}

void Broker::refill(Lane* l, Millis now) {
  std::vector<std::optional<std::string>> bodies;
  auto rows = store_->ready(l->name(), now, l->window_cap(),
                            l->batching() ? &bodies : nullptr);
  for (std::size_t i = 0; i < rows.size(); ++i)
    annotate(*l, rows[i], l->batching() ? bodies[i] : std::nullopt);
  l->refill(rows, static_cast<int>(rows.size()) < l->window_cap());
}

// The end of an attempt that produced no usable answer, as an AttemptEnd:
// a used attempt, then retry or dead.
void Broker::end_lost(JobId id, const InFlight& job, const std::string& why,
                      Outcome outcome, Millis now) {
  AttemptEnd end;
  end.id = id;
  end.attempt = job.attempt;
  end.outcome = outcome;
  end.error = why;
  end.run_at = now;
  int used = job.attempts_used + 1;
  const ApiConfig* api = config_.api(job.api);
  if (used >= job.max_attempts) {
    end.next = JobState::kDead;
    end.error = "attempts exhausted (" + std::to_string(used) + "): " + why;
  } else {
    end.next = JobState::kRetrying;
    end.run_at = now + backoff_.next(used, api ? api->backoff_base_ms : 500,
                                     api ? api->backoff_cap_ms : 60'000);
  }
  end.group_known = true;
  end.group = job.group;
  if (!store_->end_attempt(end, now)) return;
  if (end.next == JobState::kRetrying)
    release(job.api, ready_entry(id, job, end.run_at), now);
}

void Broker::fail_in_flight(JobId id, const std::string& why, Outcome outcome,
                            Millis now) {
  auto f = in_flight_.find(id);
  if (f == in_flight_.end()) return;
  if (f->second.batch != 0) {
    // One call: its members share its fate.
    fail_batch(f->second.batch, why, outcome, now);
    return;
  }
  InFlight job = std::move(f->second);
  in_flight_.erase(f);
  Lane* l = lane(job.api);
  if (l) {
    l->finished();
    l->quota().on_lost(job.mark, now);
  }
  end_lost(id, job, why, outcome, now);
}

void Broker::fail_batch(std::int64_t batch, const std::string& why,
                        Outcome outcome, Millis now) {
  auto bf = batches_.find(batch);
  if (bf == batches_.end()) return;
  BatchFlight b = std::move(bf->second);
  batches_.erase(bf);
  if (auto w = workers_.find(b.worker); w != workers_.end())
    w->second.batches.erase(batch);
  Lane* l = lane(b.api);
  if (l) {
    l->finished();
    l->quota().on_lost(b.mark, now);
  }
  for (JobId id : b.members) {
    auto f = in_flight_.find(id);
    if (f == in_flight_.end() || f->second.batch != batch) continue;
    InFlight job = std::move(f->second);
    in_flight_.erase(f);
    end_lost(id, job, why, outcome, now);
  }
}

void Broker::forget_worker(const std::string& rid, const std::string& why,
                           Millis now) {
  auto it = workers_.find(rid);
  if (it == workers_.end()) return;
  WorkerRec w = std::move(it->second);
  workers_.erase(it);
  int requeued = 0;
  for (auto& [job, attempt] : w.outstanding) {
    auto f = in_flight_.find(job);
    if (f != in_flight_.end() && f->second.attempt == attempt &&
        f->second.worker == rid) {
      fail_in_flight(job, "worker " + w.name + " lost: " + why, Outcome::kLost,
                     now);
      ++requeued;
    }
  }
  for (std::int64_t batch : w.batches) {
    auto bf = batches_.find(batch);
    if (bf == batches_.end() || bf->second.worker != rid) continue;
    requeued += static_cast<int>(bf->second.members.size());
    fail_batch(batch, "worker " + w.name + " lost: " + why, Outcome::kLost,
               now);
  }
  log::warn("worker_gone",
            {{"worker", w.name}, {"reason", why}, {"requeued", requeued}});
}

// ---------------------------------------------------------------- clients

void Broker::on_client_message(const std::string& rid,
                               std::vector<zmq::message_t>& frames,
                               Millis now) {
  ++client_requests_total_;
  // A SUBMIT's jobs are read from its text (common/submit_body.h); what
  // simdjson does not take is decoded as a document, as any other message.
  auto decoded = protocol::decode(frames, Command::kSubmit);
  std::optional<protocol::WireSubmit> submit;
  if (decoded.message && decoded.message->command == Command::kSubmit) {
    submit = protocol::parse_submit(decoded.raw_body, kMaxJobsPerSubmit);
    if (!submit) decoded = protocol::decode(frames);
  }
  if (decoded.error) {
    if (decoded.error->code == "foreign") {
      log::warn("foreign_message", {{"socket", "clients"}});
      return;
    }
    reply(clients_sock_, rid,
          protocol::make_error(decoded.error->code, decoded.error->message));
    return;
  }
  Message& m = *decoded.message;
  json req = submit               ? submit->req
             : m.body.is_object() ? m.body.value("req", json())
                                  : json();
  std::string code;
  json result;
  try {
    result = handle_client(m.command, m.body, submit ? &*submit : nullptr, now,
                           code);
  } catch (const json::exception& e) {
    code = "invalid";
    result = {{"message", std::string("bad request: ") + e.what()}};
  }
  if (!code.empty()) {
    auto err = protocol::make_error(
        code, result.value("message", std::string("error")), req);
    for (auto it = result.begin(); it != result.end(); ++it)
      if (it.key() != "message") err.body[it.key()] = it.value();
    reply(clients_sock_, rid, std::move(err));
    return;
  }
  result["req"] = req;
  result["ok"] = true;
  reply(clients_sock_, rid, Message{Command::kReply, std::move(result)});
}

namespace {
std::vector<JobId> id_list(const json& body, const char* key = "ids") {
  std::vector<JobId> ids;
  auto it = body.find(key);
  if (it == body.end() || !it->is_array())
    throw std::invalid_argument(std::string("'") + key +
                                "' must be an array of job ids");
  for (auto& v : *it) {
    if (!v.is_number_integer())
      throw std::invalid_argument("job ids must be integers");
    ids.push_back(v.get<JobId>());
  }
  // A request's cost is bounded: one client cannot hold the loop (and the
  // workers' heartbeats) with a query of a million ids.
  if (ids.size() > kMaxIdsPerRequest)
    throw std::invalid_argument(
        "at most " + std::to_string(kMaxIdsPerRequest) +
        " job ids in one request (got " + std::to_string(ids.size()) +
        "); send the rest in further requests");
  return ids;
}
}  // namespace

json Broker::handle_client(Command cmd, const json& body,
                           protocol::WireSubmit* read, Millis now,
                           std::string& code) {
  try {
    switch (cmd) {
      case Command::kSubmit: {
        if (read) return submit(*read, now, code);
        auto w = protocol::submit_from_document(body, kMaxJobsPerSubmit);
        return submit(w, now, code);
      }
      case Command::kStatus:
        return {{"jobs", store_->job_infos(id_list(body))}};
      case Command::kResult: {
        if (!body.contains("id") || !body["id"].is_number_integer())
          throw std::invalid_argument("'id' must be a job id");
        auto r = store_->job_result(body["id"].get<JobId>());
        if (!r) {
          code = "not_found";
          return {
              {"message", "no job " + std::to_string(body["id"].get<JobId>())}};
        }
        return *r;
      }
      case Command::kList: {
        ListFilter f;
        if (auto s = body.find("state"); s != body.end() && !s->is_null()) {
          if (!s->is_string() || !parse_job_state(s->get<std::string>()))
            throw std::invalid_argument(
                "unknown state; use queued, running, succeeded, "
                "retrying, waiting_quota, dead or canceled");
          f.state = s->get<std::string>();
        }
        if (auto a = body.find("api"); a != body.end() && a->is_string())
          f.api = a->get<std::string>();
        if (auto g = body.find("group"); g != body.end() && g->is_string())
          f.group = g->get<std::string>();
        if (auto a = body.find("after");
            a != body.end() && a->is_number_integer())
          f.after = a->get<JobId>();
        if (auto n = body.find("limit");
            n != body.end() && n->is_number_integer())
          f.limit = std::clamp(n->get<int>(), 1, 1000);
        return store_->list(f);
      }
      case Command::kCancel: {
        json canceled = json::array(), not_cancelable = json::array();
        for (JobId id : id_list(body)) {
          if (store_->cancel(id, now)) {
            canceled.push_back(id);
            if (auto st = in_flight_.find(id); st == in_flight_.end()) {
              for (auto& [name, l] : lanes_) l->remove(id);
            }
          } else {
            not_cancelable.push_back(id);
          }
        }
        return {{"canceled", canceled}, {"not_cancelable", not_cancelable}};
      }
      case Command::kStats:
        return stats(now);
      case Command::kProgress: {
        Progress p;
        if (body.contains("ids"))
          p = store_->progress_ids(id_list(body));
        else if (body.contains("group") && body["group"].is_string())
          p = store_->progress_group(body["group"].get<std::string>());
        else if (field(body, "all", false))
          p = store_->progress_all();
        else
          throw std::invalid_argument("give 'ids', 'group' or 'all'");
        return {{"total", p.total},
                {"succeeded", p.succeeded},
                {"dead", p.dead},
                {"canceled", p.canceled},
                {"pending", p.pending}};
      }
      case Command::kApis: {
        json apis = json::array();
        for (auto& [name, l] : lanes_) {
          json a = api_json(l->config());
          // The margin in force on each limit (learned ones included):
          // the configured one, or wider after refusals.
          json margins = json::array();
          for (const auto& u : l->limiter().usage(now))
            margins.push_back(
                {{"limit", u.spec.to_string()}, {"margin_ms", u.margin_ms}});
          a["effective_margins"] = std::move(margins);
          a["margin_scale"] = l->quota().margin_scale();
          apis.push_back(std::move(a));
        }
        return {{"apis", apis}};
      }
      case Command::kDeadList:
        return dead_list(body);
      case Command::kDeadReplay:
        return dead_replay(body, now, code);
      default:
        code = "malformed";
        return {{"message", std::string(protocol::to_string(cmd)) +
                                " is not a client command"}};
    }
  } catch (const std::invalid_argument& e) {
    code = "invalid";
    return {{"message", e.what()}};
  }
}

// ---------------------------------------------------------------- dead letters

namespace {

constexpr int kDeadListMax = 1000;
constexpr int kDeadReplayStep = 10'000;
constexpr std::size_t kReplayIdsInReply = 1000;

// The filters shared by DEAD_LIST and DEAD_REPLAY; `limit` defaults to
// `fallback` and is clamped to 1..`max`.
DeadFilter dead_filter(const json& body, int fallback, int max) {
  DeadFilter f;
  if (auto a = body.find("api"); a != body.end() && !a->is_null()) {
    if (!a->is_string()) throw std::invalid_argument("'api' must be a string");
    f.api = a->get<std::string>();
  }
  if (auto c = body.find("class"); c != body.end() && !c->is_null()) {
    auto parsed = c->is_string() ? parse_failure_class(c->get<std::string>())
                                 : std::nullopt;
    if (!parsed)
      throw std::invalid_argument(
          "unknown class; use rate_limited, transient or permanent");
    f.failure_class = parsed;
  }
  if (auto t = body.find("since"); t != body.end() && !t->is_null()) {
    if (!t->is_number_integer() || t->get<Millis>() < 0)
      throw std::invalid_argument(
          "'since' must be a time in milliseconds since the epoch");
    f.since = t->get<Millis>();
  }
  f.after = field(body, "after", JobId{0});
  f.limit = static_cast<int>(std::clamp<std::int64_t>(
      field(body, "limit", std::int64_t{fallback}), 1, max));
  return f;
}

bool has_dead_filter(const json& body) {
  for (const char* key : {"api", "class", "since", "after", "limit"})
    if (body.contains(key)) return true;
  return false;
}

}  // namespace

json Broker::api_json(const ApiConfig& a) {
  json limits = json::array();
  for (auto& s : a.limits) limits.push_back(s.to_string());
  json statuses = json::object();
  for (auto& [code, outcome] : a.statuses)
    statuses[std::to_string(code)] = to_string(outcome);
  json batch;
  if (a.batch) {
    const BatchConfig& b = *a.batch;
    batch = {{"method", b.method},
             {"path", b.path},
             {"max_items", b.max_items},
             {"max_wait_ms", b.max_wait_ms},
             {"max_bytes", b.max_bytes},
             {"cost", b.cost == BatchCost::kPerItem ? "per_item" : "request"},
             {"request_array", b.request_array},
             {"response_array", b.response_array}};
  }
  // Everything the lane runs by, as loaded (credentials never: the
  // broker does not keep header values).
  return {{"name", a.name},
          {"preset", a.preset.empty() ? json() : json(a.preset)},
          {"base_url", a.base_url},
          {"limits", limits},
          {"margin_ms", a.margin_ms ? json(*a.margin_ms) : json()},
          {"concurrency", a.concurrency},
          {"dialect", a.dialect},
          {"learn", a.learn},
          {"actual_cost", a.actual_cost.empty() ? json() : json(a.actual_cost)},
          {"statuses", statuses},
          {"max_attempts", a.max_attempts},
          {"timeout_ms", a.timeout_ms},
          {"backoff_base_ms", a.backoff_base_ms},
          {"backoff_cap_ms", a.backoff_cap_ms},
          {"quota_wait_ms", a.quota_wait_ms},
          {"max_pause_ms", a.max_pause_ms},
          {"circuit_failures", a.circuit_failures},
          {"circuit_cooldown_ms", a.circuit_cooldown_ms},
          {"batch", batch}};
}

json Broker::dead_list(const json& body) {
  const bool with_attempts = field(body, "attempts", false);
  if (body.contains("ids")) {
    if (has_dead_filter(body))
      throw std::invalid_argument("give either 'ids' or filters, not both");
    auto ids = id_list(body);
    if (ids.size() > static_cast<std::size_t>(kDeadListMax))
      throw std::invalid_argument("at most 1000 ids per DEAD_LIST");
    return store_->dead_jobs(ids, with_attempts);
  }
  return store_->dead_list(dead_filter(body, 100, kDeadListMax), with_attempts);
}

json Broker::dead_replay(const json& body, Millis now, std::string& code) {
  // A misspelt dry run must not turn into a real one.
  if (auto d = body.find("dry_run"); d != body.end() && !d->is_boolean())
    throw std::invalid_argument("'dry_run' must be true or false");
  const bool dry_run = field(body, "dry_run", false);
  const bool all = field(body, "all", false);
  const bool by_id = body.contains("ids");
  if (by_id == all)
    throw std::invalid_argument("give either 'ids' or \"all\": true");
  std::vector<DeadRef> candidates;
  json not_dead = json::array();
  json next = nullptr;
  if (by_id) {
    if (has_dead_filter(body))
      throw std::invalid_argument(
          "filters go with \"all\": true, not with 'ids'");
    auto ids = id_list(body);
    if (ids.empty()) throw std::invalid_argument("'ids' is empty");
    if (ids.size() > static_cast<std::size_t>(kDeadReplayStep)) {
      code = "too_large";
      return {{"message", "at most 10000 ids per DEAD_REPLAY; split them"}};
    }
    std::set<JobId> seen;
    for (JobId id : ids) {
      if (!seen.insert(id).second) continue;
      if (auto api = store_->dead_api(id))
        candidates.push_back({id, std::move(*api)});
      else
        not_dead.push_back(id);
    }
  } else {
    DeadFilter f = dead_filter(body, kDeadReplayStep, kDeadReplayStep);
    candidates = store_->dead_page(f);
    if (static_cast<int>(candidates.size()) == f.limit)
      next = candidates.back().id;
  }
  json ids = json::array();
  json unknown_api = json::array();
  std::int64_t matched = 0;
  for (const auto& c : candidates) {
    // A job whose API has no lane would sit in the queue forever.
    if (!lane(c.api)) {
      unknown_api.push_back(c.id);
      continue;
    }
    if (!dry_run) {
      auto e = store_->requeue_dead(c.id, now);
      if (!e) {
        not_dead.push_back(c.id);
        continue;
      }
      // The lane's window learns of it (or refills from the database); the
      // limiter paces its dispatch like any other ready job.
      release(c.api, *e, now);
    }
    ++matched;
    if (ids.size() < kReplayIdsInReply) ids.push_back(c.id);
  }
  if (!dry_run && matched > 0) log::info("dead_replayed", {{"jobs", matched}});
  json r = {{"moved", dry_run ? 0 : matched},
            {"ids", ids},
            {"ids_truncated", static_cast<std::int64_t>(ids.size()) < matched},
            {"not_dead", not_dead},
            {"unknown_api", unknown_api},
            {"next", next},
            {"dry_run", dry_run}};
  if (dry_run) r["would_move"] = matched;
  return r;
}

json Broker::submit(protocol::WireSubmit& body, Millis now, std::string& code) {
  if (!body.jobs_is_array || body.job_count == 0)
    throw std::invalid_argument("'jobs' must be a non-empty array");
  if (body.job_count > kMaxJobsPerSubmit) {
    code = "too_large";
    return {{"message", "at most " + std::to_string(kMaxJobsPerSubmit) +
                            " jobs per SUBMIT; split the submission"}};
  }
  std::string group = body.group.value_or("");
  if (group.size() > 200)
    throw std::invalid_argument("'group' is longer than 200 bytes");
  if (group.empty()) group = random_group();

  // Validate everything before writing anything: a SUBMIT is all or nothing.
  // The reader stopped at the first job parse_job_spec refused; the jobs
  // before it are checked against their lanes first, in order.
  std::vector<JobSpec>& specs = body.specs;
  for (std::size_t i = 0; i <= specs.size(); ++i) {
    auto fail = [&](const std::string& c, const std::string& msg) {
      code = c;
      return json{{"message", "job " + std::to_string(i) + ": " + msg},
                  {"index", i}};
    };
    if (i == specs.size()) {
      if (body.invalid) return fail("invalid", *body.invalid);
      break;
    }
    const JobSpec* spec = &specs[i];
    const ApiConfig* api = config_.api(spec->api);
    if (!api) return fail("unknown_api", "unknown api '" + spec->api + "'");
    for (auto& [name, value] : spec->headers) {
      for (auto& [cred, v] : api->headers)
        if (lower(cred) == lower(name))
          return fail("invalid", "header '" + name +
                                     "' is set by the worker's "
                                     "configuration of api '" +
                                     api->name + "' and cannot be overridden");
    }
    for (auto& limit : api->limits)
      if (!limit.counts_requests() && spec->cost > limit.amount)
        return fail("invalid", "cost " + std::to_string(spec->cost) +
                                   " can never fit the limit " +
                                   limit.to_string());
  }
  store_->savepoint();
  json ids = json::array();
  int duplicates = 0;
  std::vector<std::pair<const JobSpec*, ReadyEntry>> fresh;
  try {
    for (auto& spec : specs) {
      const ApiConfig* api = config_.api(spec.api);
      auto r = store_->insert_job(
          spec, group, spec.max_attempts.value_or(api->max_attempts),
          spec.timeout_ms.value_or(api->timeout_ms), now);
      ids.push_back(r.id);
      if (r.duplicate)
        ++duplicates;
      else
        fresh.emplace_back(&spec, r.entry);
    }
    store_->release();
  } catch (...) {
    store_->rollback_to_savepoint();
    throw;
  }
  for (auto& [spec, e] : fresh) release(spec->api, e, now, &spec->body);
  return {{"ids", ids}, {"group", group}, {"duplicates", duplicates}};
}

const std::map<std::string, std::map<std::string, std::int64_t>>&
Broker::stats_counts(Millis now) {
  if (!stats_counted_at_ ||
      now - *stats_counted_at_ >= 20 * stats_count_took_) {
    const Millis start = clock_.now_ms();
    stats_counts_ = store_->state_counts();
    stats_count_took_ = clock_.now_ms() - start;
    stats_counted_at_ = now;
  }
  return stats_counts_;
}

json Broker::stats(Millis now) {
  const auto& counts = stats_counts(now);
  json lanes = json::array();
  json totals = json::object();
  for (auto& [api, states] : counts)
    for (auto& [state, n] : states) totals[state] = totals.value(state, 0) + n;
  auto lane_json = [&](const std::string& api, Lane* l) {
    json states = json::object();
    if (auto it = counts.find(api); it != counts.end())
      for (auto& [s, n] : it->second) states[s] = n;
    json j = {{"api", api}, {"configured", l != nullptr}, {"states", states}};
    if (l) {
      json limits = json::array(), usage = json::array();
      for (auto& u : l->limiter().usage(now)) {
        if (u.learned.empty()) limits.push_back(u.spec.to_string());
        usage.push_back({{"limit", u.spec.to_string()},
                         {"used", u.used},
                         {"learned", !u.learned.empty()},
                         {"margin_ms", u.margin_ms}});
      }
      j["base_url"] = l->config().base_url;
      j["limits"] = limits;
      j["usage"] = usage;
      j["concurrency"] = l->config().concurrency;
      j["in_flight"] = l->in_flight();
      j["window"] = l->window_size();
      j["rate_per_s"] = l->rate_per_s(now);
      j["dispatched_total"] = l->dispatched_total();
      // Calls made, and how batching filled them (since the broker started).
      j["requests_total"] = l->requests_total();
      j["batches_total"] = l->batches_total();
      j["batch_items_total"] = l->batch_items_total();
      j["mean_batch_size"] =
          l->batches_total() > 0
              ? json(static_cast<double>(l->batch_items_total()) /
                     static_cast<double>(l->batches_total()))
              : json();
      j["items_per_request"] =
          l->requests_total() > 0
              ? json(static_cast<double>(l->dispatched_total()) /
                     static_cast<double>(l->requests_total()))
              : json();
      j["batching"] = l->batching();
      j["rate_limited_total"] = lane_counters_[api].rate_limited;
      json firing = json::array();
      for (const auto& a : alerts_.active(api))
        firing.push_back(
            {{"alert", a.alert},
             {"severity", a.severity},
             {"policy", a.policy.empty() ? json() : json(a.policy)},
             {"value", a.value},
             {"threshold", a.threshold},
             {"message", a.message},
             {"since_ms", a.since}});
      j["alerts"] = firing;
      json quota = l->quota().to_json(now);
      for (auto& [k, v] : quota.items()) j[k] = v;
      j["next_due_ms"] = l->next_due() ? json(*l->next_due()) : json();
    }
    return j;
  };
  for (auto& [name, l] : lanes_) lanes.push_back(lane_json(name, l.get()));
  for (auto& [api, states] : counts)
    if (!lane(api)) lanes.push_back(lane_json(api, nullptr));
  json workers = json::array();
  for (auto& [rid, w] : workers_) {
    workers.push_back(
        {{"id", w.name},
         {"apis", std::vector<std::string>(w.apis.begin(), w.apis.end())},
         {"capacity", w.capacity},
         {"outstanding", w.outstanding.size() + w.batches.size()},
         {"last_seen_ms_ago", now - w.last_seen}});
  }
  return {{"lanes", lanes},
          {"states", totals},
          {"workers", workers},
          {"broker",
           {{"uptime_s", (now - started_ms_) / 1000},
            {"in_flight", in_flight_.size()},
            {"results_total", results_total_},
            {"results_refused_total", results_refused_total_},
            {"client_requests_total", client_requests_total_}}}};
}

// ---------------------------------------------------------------- dispatch

void Broker::dispatch(Millis now) {
  for (Lane* l : lane_order_) {
    bool due = l->next_due() && *l->next_due() <= now;
    if (due) {
      l->mark_incomplete();
      l->set_next_due(store_->next_due(l->name(), now));
    }
    if (due || l->wants_refill()) refill(l, now);
  }
  if (workers_.empty() || lane_order_.empty()) return;
  const std::size_t n = lane_order_.size();
  bool progress = true;
  // One call per lane per pass: lanes share the workers fairly.
  while (progress) {
    progress = false;
    for (std::size_t i = 0; i < n; ++i) {
      Lane* l = lane_order_[(rr_ + i) % n];
      if (!l->has_ready() || !l->under_concurrency()) continue;
      const Lane::Selection sel = l->select(now);
      if (sel.empty()) continue;
      WorkerRec* best = nullptr;
      for (auto& [rid, w] : workers_)
        if (w.serves(l->name()) && w.free_credit() > 0 &&
            (!best || w.free_credit() > best->free_credit()))
          best = &w;
      if (!best) continue;
      Lane::Selection go = sel;
      Millis at = l->gate(go.units, now, go.requests);
      if (at == Limiter::kNever && go.members.size() > 1) {
        // A learned limit smaller than the batch: send its first member
        // alone (as a batch of one) rather than never.
        go.members.resize(1);
        go.units = go.members.front().cost;
        go.requests = 1;
        at = l->gate(go.units, now, go.requests);
      }
      if (at > now && at != Limiter::kNever) continue;
      l->take(go);
      progress = true;
      if (go.batch)
        dispatch_batch(*l, go, *best, at == Limiter::kNever, now);
      else
        dispatch_one(*l, go.members.front(), *best, at == Limiter::kNever, now);
      if (l->wants_refill()) refill(l, now);
    }
    ++rr_;
  }
  for (auto& [rid, w] : workers_) send_jobs(w);
}

bool Broker::end_unsendable(const ReadyEntry& e, const Claimed& c, bool never,
                            Millis now) {
  const bool quota_expired = c.quota_deadline && now >= *c.quota_deadline;
  if (!never && !quota_expired && e.batch_error.empty()) return false;
  AttemptEnd end;
  end.id = e.id;
  end.attempt = c.attempt;
  end.next = JobState::kDead;
  if (quota_expired) {
    end.outcome = Outcome::kRateLimited;
    end.uses_attempt = false;
    end.error =
        "quota wait deadline passed: the API's quota did not "
        "allow this job within quota_wait";
  } else if (!e.batch_error.empty()) {
    end.outcome = Outcome::kPermanent;
    end.error = e.batch_error;
  } else {
    end.outcome = Outcome::kPermanent;
    end.error =
        "cost " + std::to_string(e.cost) + " can never fit the lane's limits";
  }
  end.run_at = now;
  store_->end_attempt(end, now);
  return true;
}

void Broker::queue_job(WorkerRec& w, const std::string& entry) {
  // A JOBS message stays far below the peers' 64 MiB receive limit.
  if (!w.pending_jobs.empty() &&
      w.pending_jobs.size() + entry.size() > kMaxJobsMessageBytes)
    send_jobs(w);
  if (!w.pending_jobs.empty()) w.pending_jobs += ',';
  w.pending_jobs += entry;
}

void Broker::send_jobs(WorkerRec& w) {
  if (w.pending_jobs.empty()) return;
  Outgoing o{
      &workers_sock_, w.routing_id, Message{Command::kJobs, nullptr}, {}};
  o.text.reserve(w.pending_jobs.size() + 11);
  o.text += "{\"jobs\":[";
  o.text += w.pending_jobs;
  o.text += "]}";
  outbox_.push_back(std::move(o));
  w.pending_jobs.clear();
}

void Broker::note_start(Lane& l, std::int64_t units, std::int64_t requests,
                        std::int64_t items, bool batch, Millis now) {
  l.on_start(units, now, requests);
  dispatched_lanes_.insert(&l);
  dispatch_time_ = now;
  l.started();
  l.count_dispatch(now, items, batch);
}

Broker::InFlight Broker::in_flight_for(const Lane& l, const Claimed& c,
                                       const std::string& worker, Millis now) {
  InFlight f;
  f.api = l.name();
  f.attempt = c.attempt;
  f.attempts_used = c.attempts_used;
  f.max_attempts = c.max_attempts;
  f.cost = c.cost;
  f.lease_until = now + c.timeout_ms + config_.broker.lease_grace_ms;
  f.worker = worker;
  f.quota_deadline = c.quota_deadline;
  f.priority = c.priority;
  f.started = now;
  f.group = c.group;
  return f;
}

void Broker::dispatch_one(Lane& l, const ReadyEntry& e, WorkerRec& w,
                          bool never, Millis now) {
  auto claimed =
      store_->claim(e.id, l.name(), w.name, now, config_.broker.lease_grace_ms);
  if (!claimed) return;  // canceled or otherwise no longer ready
  if (end_unsendable(e, *claimed, never, now)) return;
  note_start(l, claimed->cost, 1, 1, false, now);
  if (auto* c = counters(l.name())) c->on_dispatch(e.run_at, now);
  dispatched_ids_.push_back(e.id);
  InFlight f = in_flight_for(l, *claimed, w.routing_id, now);
  f.mark = l.quota().mark();
  f.batch_key = e.batch_key;
  in_flight_[e.id] = std::move(f);
  w.outstanding[e.id] = claimed->attempt;
  queue_job(w, job_entry(e.id, l.name(), *claimed));
}

std::string Broker::job_entry(JobId id, const std::string& api,
                              const Claimed& c) {
  namespace jt = json_text;
  std::string out;
  out.reserve(128 + c.path.size() + c.headers_json.size() +
              (c.body ? c.body->size() : 0));
  out += "{\"id\":";
  jt::append_number(out, std::int64_t{id});
  out += ",\"attempt\":";
  jt::append_number(out, std::int64_t{c.attempt});
  out += ",\"api\":";
  jt::append_string(out, api);
  out += ",\"method\":";
  jt::append_string(out, c.method);
  out += ",\"path\":";
  jt::append_string(out, c.path);
  out += ",\"timeout_ms\":";
  jt::append_number(out, std::int64_t{c.timeout_ms});
  // The headers are stored as the JSON text of an object, written by this
  // broker at SUBMIT; checked (without building a document) before they
  // are spliced in, so a damaged row cannot make the whole message
  // unreadable.
  if (!c.headers_json.empty()) {
    if (json::accept(c.headers_json)) {
      out += ",\"headers\":";
      out += c.headers_json;
    } else {
      log::warn("bad_stored_headers", {{"job", id}});
    }
  }
  if (c.body) {
    out += ",\"body\":";
    jt::append_string(out, *c.body);
  }
  out += '}';
  return out;
}

void Broker::dispatch_batch(Lane& l, const Lane::Selection& sel, WorkerRec& w,
                            bool never, Millis now) {
  const BatchConfig& cfg = *l.config().batch;
  const std::int64_t batch =
      store_->insert_batch(l.name(), sel.key, w.name, now);
  std::vector<std::pair<ReadyEntry, Claimed>> members;
  for (const auto& e : sel.members) {
    auto claimed = store_->claim(e.id, l.name(), w.name, now,
                                 config_.broker.lease_grace_ms, batch);
    if (!claimed) continue;
    if (end_unsendable(e, *claimed, never && sel.members.size() == 1, now))
      continue;
    members.emplace_back(e, std::move(*claimed));
  }
  if (members.empty()) {
    store_->delete_batch(batch);
    return;
  }
  std::int64_t units = 0;
  Millis timeout = 0;
  for (auto& [e, c] : members) {
    units += c.cost;
    timeout = std::max(timeout, c.timeout_ms);
  }
  const auto items = static_cast<std::int64_t>(members.size());
  const std::int64_t requests = cfg.cost == BatchCost::kPerItem ? items : 1;
  store_->complete_batch(batch, items, requests, units);
  note_start(l, units, requests, items, true, now);
  if (auto* c = counters(l.name())) {
    c->on_batch(items);
    for (auto& [e, claimed] : members) c->on_dispatch(e.run_at, now);
  }
  BatchFlight b;
  b.api = l.name();
  b.worker = w.routing_id;
  b.mark = l.quota().mark();
  b.started = now;
  b.units = units;
  b.requests = requests;
  // The call carries only the headers every member has with the same value.
  std::optional<json> common;
  json out_members = json::array();
  for (auto& [e, c] : members) {
    InFlight f = in_flight_for(l, c, w.routing_id, now);
    f.mark = b.mark;
    f.batch = batch;
    f.batch_key = e.batch_key;
    in_flight_[e.id] = std::move(f);
    b.members.push_back(e.id);
    dispatched_ids_.push_back(e.id);
    json h = c.headers_json.empty()
                 ? json::object()
                 : json::parse(c.headers_json, nullptr, false);
    if (!h.is_object()) h = json::object();
    if (!common) {
      common = h;
    } else {
      for (auto it = common->begin(); it != common->end();) {
        auto m = h.find(it.key());
        if (m == h.end() || *m != *it)
          it = common->erase(it);
        else
          ++it;
      }
    }
    json m = {{"id", e.id}, {"attempt", c.attempt}};
    if (c.body) m["body"] = *c.body;
    out_members.push_back(std::move(m));
  }
  batches_[batch] = std::move(b);
  w.batches.insert(batch);
  json job = {{"batch", batch},
              {"api", l.name()},
              {"method", cfg.method},
              {"path", cfg.path},
              {"timeout_ms", timeout},
              {"spec", batch_spec_json(cfg)},
              {"members", std::move(out_members)}};
  if (common && !common->empty()) job["headers"] = std::move(*common);
  queue_job(w, job.dump(-1, ' ', false, json::error_handler_t::replace));
}

void Broker::timers(Millis now) {
  const Millis hb = config_.broker.heartbeat_ms;
  std::vector<std::string> expired;
  for (auto& [rid, w] : workers_) {
    if (now - w.last_seen > hb * config_.broker.liveness)
      expired.push_back(rid);
    else if (now - w.last_sent >= hb)
      outbox_.push_back(
          {&workers_sock_, rid, Message{Command::kHeartbeat, nullptr}, {}});
  }
  for (auto& rid : expired)
    forget_worker(
        rid, "no message for " + format_duration(hb * config_.broker.liveness),
        now);

  if (now >= next_lease_check_) {
    next_lease_check_ = now + 1000;
    std::vector<JobId> lapsed;
    for (auto& [id, f] : in_flight_)
      if (f.lease_until < now) lapsed.push_back(id);
    for (JobId id : lapsed) {
      // A batch's members lapse together: the first ends them all.
      auto it = in_flight_.find(id);
      if (it == in_flight_.end()) continue;
      auto& f = it->second;
      if (auto w = workers_.find(f.worker); w != workers_.end())
        w->second.outstanding.erase(id);
      fail_in_flight(
          id, "lease expired: no result within the job's timeout and grace",
          Outcome::kLost, now);
    }
  }
  // Lane state: learning ticks, and the persisted part when it changed
  // (at most once a second per lane, and always with the turn's commit).
  const bool save_due = now >= next_lane_save_;
  for (Lane* l : lane_order_) {
    QuotaState& q = l->quota();
    q.tick(now);
    l->sync_learned(now);
    if (save_due && q.take_dirty())
      store_->save_lane(l->name(), q.paused_until(now), q.pause_reason(),
                        q.persisted(now).dump(), now);
  }
  if (save_due) next_lane_save_ = now + 1000;
  if (now >= next_purge_) {
    // Attempts go with their jobs; keep them while a limiter may need them
    // to be rebuilt after a restart, whatever the retention says.
    Millis keep = config_.broker.retention_ms;
    for (Lane* l : lane_order_)
      keep = std::max(keep, l->limiter().longest_span() + kRestartSkewMs);
    auto purged = store_->purge_finished(now - keep, kPurgeStep);
    // Keep purging in small steps while there is a backlog, without stalling.
    next_purge_ = now + (purged == kPurgeStep ? 50 : 5000);
    if (purged) log::debug("purged", {{"jobs", purged}});
  }
}

// ---------------------------------------------------------------- metrics

metrics::LaneCounters* Broker::counters(const std::string& api) {
  if (!lane(api)) return nullptr;
  return &lane_counters_[api];
}

void Broker::observe(Millis now) {
  const bool publish = metrics_ && now >= next_metrics_;
  const bool check = now >= next_alert_check_;
  if (!publish && !check) return;
  if (publish) next_metrics_ = now + metrics::kPublishMs;
  if (now >= next_job_count_) {
    // Counting in memory where states change would need the old state of
    // every claim, cancel and purge; one grouped count is simpler and
    // exact. It scans the jobs table, so it is spaced to stay under ~1% of
    // the loop's time however large the table grows. Without metrics only
    // the dead letters' alert needs a count: the dead jobs' index has it.
    if (metrics_) {
      job_counts_ = store_->state_counts();
    } else {
      job_counts_.clear();
      for (const auto& [api, n] : store_->dead_counts())
        job_counts_[api]["dead"] = n;
    }
    const Millis took = clock_.now_ms() - now;
    next_job_count_ = now + std::max(kJobCountMs, 100 * took);
  }
  if (publish && now >= next_database_size_) {
    next_database_size_ = now + kDatabaseSizeMs;
    database_bytes_ = 0;
    for (const char* suffix : {"", "-wal"}) {
      std::error_code ec;
      auto n = std::filesystem::file_size(config_.broker.database + suffix, ec);
      if (!ec) database_bytes_ += static_cast<std::int64_t>(n);
    }
  }
  auto s = std::make_shared<metrics::Snapshot>();
  s->version = PACER_VERSION;
  s->published_ms = now;
  s->started_ms = started_ms_;
  s->workers_connected = static_cast<std::int64_t>(workers_.size());
  s->database_bytes = database_bytes_;
  for (auto& [name, l] : lanes_) {
    s->lanes.push_back(metrics::lane_snapshot(*l, lane_counters_[name], now));
    if (auto it = job_counts_.find(name); it != job_counts_.end())
      s->lanes.back().jobs = it->second;
  }
  for (auto& [api, states] : job_counts_) {
    if (lane(api)) continue;
    metrics::LaneSnapshot unknown;
    unknown.api = api;
    unknown.configured = false;
    unknown.jobs = states;
    s->lanes.push_back(std::move(unknown));
  }
  if (check) {
    next_alert_check_ = now + kAlertCheckMs;
    for (const auto& l : s->lanes)
      for (const auto& e : alerts_.evaluate(l, now)) notify(e);
  }
  if (!publish) return;
  s->alerts = alerts_.samples();
  if (webhook_) {
    const auto c = webhook_->counts();
    s->webhook = metrics::WebhookSample{c.delivered, c.failed, c.dropped};
  }
  metrics_->publish(std::move(s));
}

void Broker::notify(const alerts::Event& e) {
  json fields = e.to_json();
  fields.erase("source");
  if (e.firing)
    log::warn("alert", std::move(fields));
  else
    log::info("alert_cleared", std::move(fields));
  if (webhook_) webhook_->post(e.to_json());
}

void Broker::reply(zmq::socket_t& s, const std::string& rid, Message m) {
  std::string text;
  if (&s == &clients_sock_ && !m.body.is_null()) {
    // Held as text until the commit: a fraction of the document's memory,
    // and counted against the turn's budget.
    text = m.body.dump(-1, ' ', false, json::error_handler_t::replace);
    m.body = nullptr;
    client_reply_bytes_ += text.size();
  }
  outbox_.push_back({&s, rid, std::move(m), std::move(text)});
}

void Broker::flush() {
  Millis now = clock_.now_ms();
  std::vector<std::string> unreachable;
  for (auto& o : outbox_) {
    bool ok = o.text.empty()
                  ? protocol::send(*o.socket, o.message, &o.routing_id)
                  : protocol::send_text(*o.socket, o.message.command, o.text,
                                        &o.routing_id);
    if (o.socket == &workers_sock_) {
      auto it = workers_.find(o.routing_id);
      if (it == workers_.end()) continue;
      if (ok)
        it->second.last_sent = now;
      else
        unreachable.push_back(o.routing_id);
    }
  }
  outbox_.clear();
  client_reply_bytes_ = 0;
  if (!dispatched_lanes_.empty()) {
    Millis sent = clock_.now_ms();
    for (Lane* l : dispatched_lanes_)
      l->limiter().restamp(dispatch_time_, sent);
    dispatched_lanes_.clear();
    for (JobId id : dispatched_ids_)
      if (auto f = in_flight_.find(id); f != in_flight_.end())
        f->second.started = std::max(f->second.started, sent);
  }
  dispatched_ids_.clear();
  if (!unreachable.empty()) {
    // Requeue what was meant for them, in a transaction of its own.
    store_->begin();
    for (auto& rid : unreachable) forget_worker(rid, "unreachable", now);
    store_->commit();
  }
}

}  // namespace pacer
