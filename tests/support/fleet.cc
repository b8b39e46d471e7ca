#include "tests/support/fleet.h"

#include <random>

namespace pacer::testing {

using json = nlohmann::json;

std::optional<json> broker_request(const std::string& endpoint,
                                   protocol::Command command, json body,
                                   std::chrono::milliseconds timeout,
                                   const CurveClient* curve) {
  static std::mt19937_64 rng{std::random_device{}()};
  zmq::context_t ctx;
  zmq::socket_t s(ctx, zmq::socket_type::dealer);
  s.set(zmq::sockopt::linger, 0);
  if (curve) apply_curve_client(s, *curve);
  s.connect(endpoint);
  std::string req = std::to_string(rng());
  body["req"] = req;
  if (!protocol::send(s, protocol::Message{command, body}, nullptr, false))
    return std::nullopt;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return std::nullopt;
    zmq::pollitem_t item{s.handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, left);
    auto frames = protocol::recv_frames(s, false, nullptr);
    if (!frames) continue;
    auto d = protocol::decode(*frames);
    if (!d.message)
      return json{{"ok", false},
                  {"code", d.error->code},
                  {"message", d.error->message}};
    if (d.message->body.value("req", std::string()) != req) continue;
    json reply = d.message->body;
    if (d.message->command == protocol::Command::kError) reply["ok"] = false;
    return reply;
  }
}

Fleet::Fleet(FleetOptions options) : options_(std::move(options)) {
  mock_ = std::make_unique<MockApi>(dir_, options_.mock_args);
  config_path_ = dir_.file("pacer.toml");
  std::string extra = options_.extra_toml;
  for (auto at = extra.find("{mock}"); at != std::string::npos;
       at = extra.find("{mock}"))
    extra.replace(at, 6, mock_->base_url());
  dir_.write("pacer.toml",
             "[broker]\n"
             "database = \"" +
                 db_path() +
                 "\"\n"
                 "worker_endpoint = \"ipc://" +
                 dir_.file("workers.sock") +
                 "\"\n"
                 "client_endpoint = \"" +
                 client_endpoint() + "\"\n" + options_.broker_toml +
                 "\n[api.echo]\n"
                 "base_url = \"" +
                 mock_->base_url() + "\"\n" + options_.api_toml + "\n" + extra);
}

Fleet::~Fleet() {
  // Workers first, so they do not spin reconnecting to a stopped broker.
  for (auto& [i, w] : workers_) w->stop(5s);
  if (broker_) broker_->stop(10s);
}

void Fleet::start_broker() {
  broker_ = std::make_unique<Process>(
      std::vector<std::string>{binary("pacer-broker"), "--config",
                               config_path_},
      dir_.path(), "broker-" + std::to_string(broker_starts_++));
  bool up = wait_until(
      [&] {
        return request(protocol::Command::kApis, json::object(), 500ms)
            .has_value();
      },
      30s);
  if (!up) throw std::runtime_error("broker did not start: " + broker_->err());
}

void Fleet::start_worker(int index, std::vector<std::string> extra_args) {
  std::vector<std::string> argv = {binary("pacer-worker"),
                                   "--config",
                                   config_path_,
                                   "--id",
                                   "worker-" + std::to_string(index),
                                   "--concurrency",
                                   std::to_string(options_.worker_concurrency)};
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  static int starts = 0;
  workers_[index] = std::make_unique<Process>(
      argv, dir_.path(),
      "worker-" + std::to_string(index) + "-" + std::to_string(starts++));
}

bool Fleet::wait_workers(std::size_t n, std::chrono::milliseconds timeout) {
  return wait_until(
      [&] {
        auto s = request(protocol::Command::kStats, json::object(), 1s);
        return s && s->value("ok", false) && (*s)["workers"].size() == n;
      },
      timeout, 20ms);
}

std::vector<std::int64_t> Fleet::submit_echo(int n, const std::string& prefix,
                                             const json& extra) {
  std::vector<std::int64_t> ids;
  for (int start = 0; start < n; start += 5000) {
    json jobs = json::array();
    for (int i = start; i < std::min(n, start + 5000); ++i) {
      json j = {{"api", "echo"},
                {"method", "POST"},
                {"path", "/v1/echo"},
                {"body", {{"n", i}}},
                {"key", prefix + ":" + std::to_string(i)}};
      if (extra.is_object()) j.update(extra);
      jobs.push_back(j);
    }
    auto r = request(protocol::Command::kSubmit, {{"jobs", jobs}}, 30s);
    if (!r || !r->value("ok", false))
      throw std::runtime_error("submit failed: " +
                               (r ? r->dump() : std::string("no reply")));
    for (auto& id : (*r)["ids"]) ids.push_back(id.get<std::int64_t>());
  }
  return ids;
}

json Fleet::progress(const std::vector<std::int64_t>& ids) {
  auto r = request(protocol::Command::kProgress, {{"ids", ids}}, 10s);
  return r ? *r : json();
}

bool Fleet::wait_done(const std::vector<std::int64_t>& ids,
                      std::chrono::milliseconds timeout) {
  return wait_until(
      [&] {
        auto p = progress(ids);
        return p.is_object() && p.value("ok", false) &&
               p.value("pending", -1) == 0;
      },
      timeout, 100ms);
}

CommandResult Fleet::cli(std::vector<std::string> args,
                         std::chrono::milliseconds timeout) {
  std::vector<std::string> argv = {binary("pacer"), "--config", config_path_};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_command(argv, timeout);
}

}  // namespace pacer::testing
