// Config: the one TOML file that broker, workers and client read (each uses
// its part); see docs/configuration.md. Loading validates every key and
// reports errors as "FILE:LINE: KEY: problem". Values; thread-safe.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/batch.h"
#include "common/clock.h"
#include "common/job.h"
#include "common/limit_spec.h"
#include "common/result.h"

namespace pacer {

// Alert thresholds (docs/operations.md "Alerts"): [alerts] sets them for
// every API, [api.NAME.alerts] overrides them for one. A threshold of 0
// (or `false` in the file) turns its alert off.
struct AlertThresholds {
  // Share of a limit used within its window (pacer's own count, or the
  // server's remaining count when it sends one).
  double usage_warning = 0.8;
  double usage_critical = 0.9;
  // Limits with a shorter window are pacing, not quotas: not checked.
  Millis usage_min_window_ms = 60'000;
  // Answers classed rate limited (429s) within rate_limited_window.
  std::int64_t rate_limited = 10;
  Millis rate_limited_window_ms = 60'000;
  Millis paused_ms = 60'000;  // lane paused longer than this; -1: off
  bool circuit_open = true;
  // New dead letters within dead_window.
  std::int64_t dead_letters = 1;
  Millis dead_window_ms = 300'000;
  // Share of a unit limit (tokens, ...) still left in its window.
  double unit_budget = 0.05;
  // A firing alert clears once its condition has been false this long.
  Millis clear_after_ms = 30'000;
};

struct AlertsConfig {
  AlertThresholds defaults;  // [alerts]; each ApiConfig has its own copy
  std::string webhook;       // http(s) URL; empty: no webhook
  Millis webhook_timeout_ms = 5'000;
  int webhook_attempts = 5;
};

struct ApiConfig {
  std::string name;
  std::string preset;    // common/presets.h; empty: none
  std::string base_url;  // scheme://host[:port][/prefix], no trailing '/'
  std::vector<LimitSpec> limits;    // empty: no configured limit
  int concurrency = 0;              // max requests in flight, 0 = no cap
  std::optional<Millis> margin_ms;  // empty: derived from each window
  Millis timeout_ms = 30'000;       // per HTTP attempt
  int max_attempts = 5;
  Millis backoff_base_ms = 500;
  Millis backoff_cap_ms = 60'000;
  // Rate-limit header profile (common/ratelimit.h): "auto" detects the
  // dialect; a vendor name settles units that cannot be detected.
  std::string dialect = "auto";
  // Headers the worker adds to every call (credentials). Values may reference
  // environment variables as ${NAME}; they are expanded by the worker only.
  std::map<std::string, std::string> headers;
  // The quota feedback loop (DESIGN §5, §6).
  Millis quota_wait_ms = 24LL * 3'600'000;  // waiting_quota -> dead after
  // The longest wait one answer can impose (a pause, a counter's reset, a
  // learned limit's spacing); longer needs a second answer saying as much.
  Millis max_pause_ms = 3'600'000;
  int circuit_failures = 5;                 // 0: no circuit breaker
  Millis circuit_cooldown_ms = 30'000;
  bool learn = true;  // learn limits the configuration does not give
  // JSON pointer to the call's real cost in the response body (unit limits).
  std::string actual_cost;
  // Status -> outcome class, overriding the defaults (DESIGN §6).
  std::map<int, Outcome> statuses;
  // [api.NAME.batch]: jobs of this API with a batch_key go in batches.
  std::optional<BatchConfig> batch;
  // [alerts] with [api.NAME.alerts] on top.
  AlertThresholds alerts;
};

struct BrokerConfig {
  std::string database = "pacer.db";
  std::string worker_endpoint = "tcp://127.0.0.1:5555";
  std::string client_endpoint = "tcp://127.0.0.1:5556";
  Millis heartbeat_ms = 1000;
  int liveness = 3;
  std::string synchronous = "normal";  // "normal" or "full"
  Millis retention_ms = 7LL * 86'400'000;
  int window = 512;  // ready jobs per lane held in memory
  Millis lease_grace_ms = 30'000;
  // "host:port" of the Prometheus endpoint (broker/metrics.h); empty: off.
  std::string metrics_address;
  // Without [security], endpoints other than loopback are refused unless
  // this is set: anyone who reaches them could run the fleet.
  bool allow_insecure = false;
};

// [security]: CURVE keys (common/security.h). Paths are as written; a
// relative one is taken from the configuration file's folder.
struct SecurityConfig {
  bool enabled = false;            // the table is present
  std::string broker_secret_key;   // pacer-broker's own secret key file
  std::string broker_public_key;   // workers and clients pin the broker
  std::string secret_key;          // a worker's or client's own secret key
  std::string worker_keys;         // broker: folder of allowed worker keys
  std::string client_keys;         // broker: folder of allowed client keys
};

struct WorkerConfig {
  std::string broker;  // empty: broker.worker_endpoint
  int concurrency = 64;
  std::vector<std::string> apis;  // empty: every configured API
  std::int64_t max_body_bytes = 1 << 20;
  Millis connect_timeout_ms = 10'000;
};

struct ClientConfig {
  std::string broker;  // empty: broker.client_endpoint
  Millis timeout_ms = 10'000;
};

struct Config {
  std::string source = "<defaults>";
  BrokerConfig broker;
  WorkerConfig worker;
  ClientConfig client;
  SecurityConfig security;
  AlertsConfig alerts;
  std::map<std::string, ApiConfig> apis;

  const ApiConfig* api(const std::string& name) const {
    auto it = apis.find(name);
    return it == apis.end() ? nullptr : &it->second;
  }
  std::string worker_broker() const {
    return worker.broker.empty() ? broker.worker_endpoint : worker.broker;
  }
  std::string client_broker() const {
    return client.broker.empty() ? broker.client_endpoint : client.broker;
  }
};

Result<Config> load_config_file(const std::string& path);
Result<Config> parse_config(const std::string& text,
                            const std::string& source = "<string>");

// A TCP listening address: "127.0.0.1:9464", "localhost:9464" or
// "[::1]:9464" (host without the brackets). The port is 1 to 65535.
struct HostPort {
  std::string host;
  int port = 0;
};
Result<HostPort> parse_host_port(std::string_view text);

// Expands ${NAME} references from the environment. An unset variable is an
// error naming it (never an empty credential sent silently).
Result<std::string> expand_env(const std::string& value);

}  // namespace pacer
