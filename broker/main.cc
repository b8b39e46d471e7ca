// pacer-broker: persists jobs in SQLite and dispatches them to workers at the
// rate each API's limits allow. See docs/operations.md.
#include <malloc.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <optional>

#include "broker/broker.h"
#include "broker/sqlite.h"
#include "common/config.h"
#include "common/log.h"
#include "common/units.h"

namespace {
pacer::Broker* g_broker = nullptr;
void on_signal(int) {
  if (g_broker) g_broker->stop();
}
void on_hangup(int) {
  if (g_broker) g_broker->reload_keys();
}
}  // namespace

int main(int argc, char** argv) {
  // Small UPDATE ... RETURNING claims run several times slower when glibc
  // keeps trimming the heap; a higher trim threshold avoids it.
  mallopt(M_TRIM_THRESHOLD, 64 << 20);

  CLI::App app{"pacer-broker: durable, rate-limit-aware job broker"};
  std::string config_path, db, worker_ep, client_ep, level = "info", retention,
                                                     format = "auto";
  std::optional<std::string> metrics_address;
  app.add_option("-c,--config", config_path, "configuration file (TOML)");
  app.add_option("--db", db,
                 "SQLite database file (overrides broker.database)");
  app.add_option("--worker-endpoint", worker_ep, "ZeroMQ endpoint for workers");
  app.add_option("--client-endpoint", client_ep, "ZeroMQ endpoint for clients");
  app.add_option("--retention", retention,
                 "keep finished jobs this long (e.g. 7d)");
  app.add_option("--metrics-address", metrics_address,
                 "HOST:PORT to serve Prometheus metrics on, \"\" for none "
                 "(overrides broker.metrics_address)");
  app.add_option("--log-level", level, "debug, info, warn or error");
  app.add_option("--log-format", format,
                 "auto (text on a terminal, else JSON lines), json or text");
  CLI11_PARSE(app, argc, argv);

  pacer::log::set_component("broker");
  pacer::log::Level lvl;
  if (!pacer::log::parse_level(level, lvl)) {
    std::cerr
        << "pacer-broker: --log-level must be debug, info, warn or error\n";
    return 2;
  }
  pacer::log::set_level(lvl);
  pacer::log::Format fmt;
  if (!pacer::log::parse_format(format, fmt)) {
    std::cerr << "pacer-broker: --log-format must be auto, json or text\n";
    return 2;
  }
  pacer::log::set_format(fmt);

  if (config_path.empty()) {
    if (const char* env = std::getenv("PACER_CONFIG"))
      config_path = env;
    else if (std::filesystem::exists("pacer.toml"))
      config_path = "pacer.toml";
  }
  pacer::Config config;
  if (!config_path.empty()) {
    auto loaded = pacer::load_config_file(config_path);
    if (!loaded) {
      std::cerr << "pacer-broker: " << loaded.error() << "\n";
      return 2;
    }
    config = std::move(*loaded);
  }
  // The broker never uses [api.NAME.headers], but a value written literally
  // in the file is a credential all the same: keep it out of every log line.
  for (const auto& [name, api] : config.apis)
    for (const auto& [key, value] : api.headers) {
      pacer::log::add_sensitive_key(key);
      if (value.find("${") == std::string::npos) pacer::log::add_secret(value);
    }
  if (!db.empty()) config.broker.database = db;
  if (!worker_ep.empty()) config.broker.worker_endpoint = worker_ep;
  if (!client_ep.empty()) config.broker.client_endpoint = client_ep;
  if (metrics_address) {
    if (!metrics_address->empty()) {
      if (auto hp = pacer::parse_host_port(*metrics_address); !hp) {
        std::cerr << "pacer-broker: --metrics-address: " << hp.error() << "\n";
        return 2;
      }
    }
    config.broker.metrics_address = *metrics_address;
  }
  if (!retention.empty()) {
    auto r = pacer::parse_duration(retention);
    if (!r) {
      std::cerr << "pacer-broker: --retention: " << r.error() << "\n";
      return 2;
    }
    config.broker.retention_ms = *r;
  }
  if (config.apis.empty())
    pacer::log::warn("no_apis", {{"hint",
                                  "the configuration declares no [api.NAME]; "
                                  "every SUBMIT will be refused"}});

  if (auto ok = pacer::Broker::check_security(config); !ok) {
    std::cerr << "pacer-broker: " << ok.error() << "\n";
    return 2;
  }
  pacer::SystemClock clock;
  const std::string database = config.broker.database;
  try {
    pacer::Broker broker(std::move(config), clock);
    g_broker = &broker;
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
    struct sigaction hup {};
    hup.sa_handler = on_hangup;
    sigemptyset(&hup.sa_mask);
    sigaction(SIGHUP, &hup, nullptr);
    std::signal(SIGPIPE, SIG_IGN);
    int rc = broker.run();
    g_broker = nullptr;
    return rc;
  } catch (const pacer::sqlite::StoreError& e) {
    // Crash-only: nothing of the failed turn was acknowledged, and a restart
    // rebuilds everything from the database (docs/operations.md).
    pacer::log::error("fatal", {{"error", e.what()}, {"database", database}});
    std::cerr << "pacer-broker: database " << database << ": " << e.what()
              << "\n";
    return 1;
  } catch (const std::exception& e) {
    pacer::log::error("fatal", {{"error", e.what()}});
    std::cerr << "pacer-broker: " << e.what() << "\n";
    return 1;
  }
}
