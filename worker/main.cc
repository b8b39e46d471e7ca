// pacer-worker: reads the configuration and command line, expands the
// credentials of the APIs it serves, blocks SIGTERM/SIGINT into a signalfd
// and hands everything to the Worker loop. Exit codes: 0 clean shutdown,
// 1 runtime failure, 2 bad configuration or command line, 3 the broker
// speaks another protocol version.
#include <curl/curl.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <set>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/security.h"
#include "common/log.h"
#include "worker/worker.h"

namespace {

constexpr int kBadConfig = 2;
// A result with a capped body, escaped as JSON, must fit in one 64 MiB frame.
constexpr std::int64_t kMaxBodyCap = 8LL << 20;

int fail(const std::string& message) {
  std::cerr << "pacer-worker: " << message << std::endl;
  return kBadConfig;
}

std::string default_id() {
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) != 0)
    std::snprintf(host, sizeof host, "worker");
  return std::string(host) + ":" + std::to_string(getpid());
}

int run(int argc, char** argv) {
  CLI::App app{"pacer-worker: runs pacer jobs over HTTP for a pacer broker"};
  std::string config_path, broker, id, level = "info", format = "auto";
  std::vector<std::string> apis;
  int concurrency = 0;
  app.add_option("--config", config_path,
                 "Configuration file (default: $PACER_CONFIG, else "
                 "./pacer.toml if present)");
  app.add_option("--broker", broker,
                 "Broker worker endpoint, e.g. tcp://127.0.0.1:5555");
  app.add_option("--apis", apis,
                 "APIs to serve, comma-separated (default: all configured)")
      ->delimiter(',');
  app.add_option("--concurrency", concurrency, "Transfers at once (default 64)")
      ->check(CLI::Range(1, 10'000));
  app.add_option("--id", id, "Worker name (default: HOSTNAME:PID)");
  app.add_option("--log-level", level, "debug, info, warn or error")
      ->check(CLI::IsMember({"debug", "info", "warn", "error"}));
  app.add_option("--log-format", format,
                 "auto (text on a terminal, else JSON lines), json or text")
      ->check(CLI::IsMember({"auto", "json", "text"}));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    return fail(e.what());
  }

  pacer::log::set_component("worker");
  pacer::log::Level lvl;
  if (pacer::log::parse_level(level, lvl)) pacer::log::set_level(lvl);
  pacer::log::Format fmt;
  if (pacer::log::parse_format(format, fmt)) pacer::log::set_format(fmt);

  if (config_path.empty()) {
    if (const char* env = std::getenv("PACER_CONFIG"); env && *env) {
      config_path = env;
    } else if (std::error_code ec; std::filesystem::exists("pacer.toml", ec)) {
      config_path = "pacer.toml";
    }
  }
  pacer::Config config;
  if (!config_path.empty()) {
    auto loaded = pacer::load_config_file(config_path);
    if (!loaded) return fail(loaded.error());
    config = std::move(*loaded);
  }

  if (config.apis.empty())
    return fail(config.source + ": no APIs configured (add [api.NAME] tables)");
  const std::string apis_source =
      apis.empty() ? config.source + ": worker.apis" : "--apis";
  if (apis.empty()) apis = config.worker.apis;
  for (const auto& name : apis) {
    if (!config.api(name)) {
      std::string known;
      for (const auto& [n, a] : config.apis)
        known += (known.empty() ? "" : ", ") + n;
      return fail(apis_source + ": unknown API '" + name +
                  "' (configured: " + (known.empty() ? "none" : known) + ")");
    }
  }
  if (config.worker.max_body_bytes > kMaxBodyCap)
    return fail(config.source + ": worker.max_body_bytes: at most 8 MiB");

  pacer::worker::WorkerOptions options;
  options.broker = broker.empty() ? config.worker_broker() : broker;
  options.id = id.empty() ? default_id() : id;
  options.concurrency =
      concurrency > 0 ? concurrency : config.worker.concurrency;
  options.announced_apis = apis;
  options.max_body_bytes = config.worker.max_body_bytes;
  options.connect_timeout_ms = config.worker.connect_timeout_ms;
  std::set<std::string> served(apis.begin(), apis.end());
  for (const auto& [name, api] : config.apis) {
    options.configured_apis.insert(name);
    if (!served.empty() && !served.count(name)) continue;
    auto route = pacer::worker::make_route(api);
    if (!route) return fail(route.error());
    // Credentials never reach a log line, whatever a caller passes.
    for (const auto& [key, value] : route->credentials) {
      pacer::log::add_sensitive_key(key);
      pacer::log::add_secret(value);
    }
    options.routes[name] = std::move(*route);
  }
  auto curve = pacer::curve_client(config.security);
  if (!curve) return fail(curve.error());
  options.curve = *curve;
  if (!options.curve && !pacer::loopback_endpoint(options.broker))
    pacer::log::warn("insecure",
                     {{"broker", options.broker},
                      {"detail",
                       "no [security]: the broker is not authenticated and "
                       "job bodies and results travel in clear text"}});

  // Block the stop signals before any thread exists (ZeroMQ's, curl's
  // resolver) so they arrive only through the signalfd the loop polls.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  if (sigprocmask(SIG_BLOCK, &stop_signals, nullptr) != 0) {
    std::cerr << "pacer-worker: sigprocmask failed" << std::endl;
    return 1;
  }
  signal(SIGPIPE, SIG_IGN);
  int stop_fd = signalfd(-1, &stop_signals, SFD_NONBLOCK | SFD_CLOEXEC);
  if (stop_fd < 0) {
    std::cerr << "pacer-worker: signalfd failed" << std::endl;
    return 1;
  }
  options.stop_fd = stop_fd;

  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    std::cerr << "pacer-worker: curl_global_init failed" << std::endl;
    return 1;
  }
  int code = 1;
  {
    auto worker = pacer::worker::Worker::create(std::move(options));
    if (!worker) {
      code = fail(worker.error());
    } else {
      code = (*worker)->run();
    }
  }
  curl_global_cleanup();
  close(stop_fd);
  return code;
}

}  // namespace

int main(int argc, char** argv) { return run(argc, argv); }
