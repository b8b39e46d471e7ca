#include "tests/mock_api/mock_api.h"

#include <cmath>
#include <string>
#include <utility>

namespace pacer::mock {
namespace {

constexpr int64_t kNsPerMs = 1'000'000;
// Far beyond any test's patience, but keeps the ns conversion in range.
constexpr double kMaxLatencyMs = 3'600'000.0;
constexpr int kMinFailStatus = 200;
constexpr int kMaxFailStatus = 599;

Reply JsonReply(int status, const Json& body) {
  Reply reply;
  reply.status = status;
  reply.body = DumpJson(body);
  return reply;
}

Reply ErrorReply(int status, std::string_view error, std::string_view message) {
  Json body = Json::object();
  body["error"] = std::string(error);
  body["message"] = std::string(message);
  return JsonReply(status, body);
}

// Whole milliseconds stay integers so consumers need not compare floats;
// sub-millisecond windows (e.g. "10/0.5ms") still report exactly.
Json WindowMsJson(int64_t ns) {
  if (ns % kNsPerMs == 0) return ns / kNsPerMs;
  return static_cast<double>(ns) / kNsPerMs;
}

double NsToMs(int64_t ns) { return static_cast<double>(ns) / kNsPerMs; }

Json OptionalMs(const std::optional<int64_t>& ns, int64_t start_ns) {
  if (!ns) return nullptr;
  return NsToMs(*ns - start_ns);
}

// Validates one /admin/config key into `config`; returns the reason on
// failure. Callers apply to a copy so a bad key leaves nothing half-set.
std::optional<std::string> ApplyConfigKey(const std::string& key,
                                          const Json& value,
                                          MockConfig& config) {
  if (key == "latency_ms") {
    if (!value.is_number()) return "latency_ms must be a number";
    const double ms = value.get<double>();
    if (!std::isfinite(ms) || ms < 0 || ms > kMaxLatencyMs) {
      return "latency_ms must be between 0 and 3600000";
    }
    config.latency_ms = ms;
  } else if (key == "error_rate") {
    if (!value.is_number()) return "error_rate must be a number";
    const double rate = value.get<double>();
    if (!(rate >= 0.0 && rate <= 1.0)) {
      return "error_rate must be between 0 and 1";
    }
    config.error_rate = rate;
  } else if (key == "limit") {
    if (value.is_null()) {
      config.limit.reset();
    } else if (value.is_string()) {
      std::string error;
      std::optional<LimitSpec> spec =
          ParseLimitSpec(value.get<std::string>(), &error);
      if (!spec) return error;
      config.limit = std::move(spec);
    } else {
      return "limit must be a string like \"50/s\" or null";
    }
  } else if (key == "algorithm") {
    std::optional<Algorithm> algorithm;
    if (value.is_string()) {
      algorithm = ParseAlgorithm(value.get<std::string>());
    }
    if (!algorithm) {
      return "algorithm must be one of fixed, sliding, token-bucket, leaky";
    }
    config.algorithm = *algorithm;
  } else if (key == "fail_status") {
    if (value.is_null()) {
      config.fail_status.reset();
    } else if (value.is_number_integer() &&
               value.get<int64_t>() >= kMinFailStatus &&
               value.get<int64_t>() <= kMaxFailStatus) {
      config.fail_status = value.get<int>();
    } else {
      return "fail_status must be an integer HTTP status 200..599 or null";
    }
  } else if (key == "batch_item_error_every") {
    if (!value.is_number_integer() || value.get<int64_t>() < 0) {
      return "batch_item_error_every must be a non-negative integer";
    }
    config.batch_item_error_every = value.get<int64_t>();
  } else if (key == "batch_short") {
    if (!value.is_boolean()) return "batch_short must be a boolean";
    config.batch_short = value.get<bool>();
  } else if (key == "batch_non_json") {
    if (!value.is_boolean()) return "batch_non_json must be a boolean";
    config.batch_non_json = value.get<bool>();
  } else if (key == "seed") {
    if (!value.is_number_unsigned()) {
      return "seed must be a non-negative integer";
    }
    config.seed = value.get<uint64_t>();
  } else {
    return "unknown config key '" + key +
           "' (known: latency_ms, error_rate, limit, algorithm, fail_status, "
           "batch_item_error_every, batch_short, batch_non_json, seed)";
  }
  return std::nullopt;
}

}  // namespace

std::string DumpJson(const Json& value) {
  return value.dump(-1, ' ', false, Json::error_handler_t::replace);
}

int64_t MockApi::SteadyNowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

MockApi::MockApi(MockConfig config, Clock clock)
    : clock_(std::move(clock)),
      start_ns_(clock_()),
      config_(std::move(config)),
      limiter_(config_.algorithm, config_.limit, start_ns_),
      rng_(config_.seed),
      any_interval_(kUnlimitedStatsWindowNs),
      fixed_windows_(start_ns_, kUnlimitedStatsWindowNs) {
  RebuildLimiterLocked(start_ns_);
}

int64_t MockApi::StatsWindowNsLocked() const {
  return config_.limit ? config_.limit->window_ns : kUnlimitedStatsWindowNs;
}

std::chrono::nanoseconds MockApi::LatencyLocked() const {
  return std::chrono::nanoseconds(
      std::llround(config_.latency_ms * static_cast<double>(kNsPerMs)));
}

void MockApi::RebuildLimiterLocked(int64_t now_ns) {
  // The busiest-window maxima are only meaningful relative to the window
  // being enforced, so they restart together with the limiter.
  limiter_ = RateLimiter(config_.algorithm, config_.limit, now_ns);
  any_interval_.Reset(StatsWindowNsLocked());
  fixed_windows_.Reset(now_ns, StatsWindowNsLocked());
}

void MockApi::ResetCountersLocked(int64_t now_ns) {
  accepted_ = 0;
  rejected_ = 0;
  errors_ = 0;
  requests_ = 0;
  batch_requests_ = 0;
  batch_items_ = 0;
  first_accept_ns_.reset();
  last_accept_ns_.reset();
  status_counts_.clear();
  // Reseeding makes a run after /admin/reset reproduce the same error
  // pattern as a run against a fresh server.
  rng_.seed(config_.seed);
  RebuildLimiterLocked(now_ns);
}

MockApi::Gate MockApi::Admit(const std::optional<std::string>& bad_request,
                             int64_t batch_items) {
  Gate gate;
  std::lock_guard<std::mutex> lock(mu_);
  // Read under the lock so arrivals are totally ordered: the limiter and
  // the interval trackers depend on non-decreasing times, and /stats must
  // describe exactly the sequence of decisions that was made.
  const int64_t now = clock_();
  ++requests_;
  gate.delay = LatencyLocked();

  auto refuse = [&](Reply reply) {
    reply.delay = gate.delay;
    ++status_counts_[reply.status];
    gate.refusal = std::move(reply);
  };

  if (config_.fail_status) {
    Json body = Json::object();
    body["error"] = "forced_failure";
    body["status"] = *config_.fail_status;
    refuse(JsonReply(*config_.fail_status, body));
    return gate;
  }
  if (bad_request) {
    refuse(ErrorReply(400, "bad_request", *bad_request));
    return gate;
  }

  const Admission admission = limiter_.TryAdmit(now);
  if (!admission.admitted) {
    ++rejected_;
    Json body = Json::object();
    body["error"] = "rate_limited";
    body["retry_after_ms"] = RetryAfterMillis(admission.retry_after_ns);
    Reply reply = JsonReply(429, body);
    reply.headers.emplace_back(
        "Retry-After",
        std::to_string(RetryAfterSeconds(admission.retry_after_ns)));
    refuse(std::move(reply));
    return gate;
  }

  // The roll comes after admission, so an injected 500 still uses up limit
  // capacity, as a real upstream's failed request would.
  if (config_.error_rate > 0.0) {
    const double roll = static_cast<double>(rng_() >> 11) * 0x1.0p-53;
    if (roll < config_.error_rate) {
      ++errors_;
      Json body = Json::object();
      body["error"] = "injected";
      refuse(JsonReply(500, body));
      return gate;
    }
  }

  ++accepted_;
  ++status_counts_[200];
  if (!first_accept_ns_) first_accept_ns_ = now;
  last_accept_ns_ = now;
  any_interval_.Record(now);
  fixed_windows_.Record(now);
  if (batch_items >= 0) {
    ++batch_requests_;
    batch_items_ += batch_items;
  }
  gate.sequence = accepted_;
  gate.config = config_;
  return gate;
}

Reply MockApi::Echo(std::string_view body) {
  Gate gate = Admit(std::nullopt, -1);
  if (gate.refusal) return std::move(*gate.refusal);

  Json echo = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (echo.is_discarded()) echo = std::string(body);
  Json out = Json::object();
  out["echo"] = std::move(echo);
  out["n"] = gate.sequence;
  Reply reply = JsonReply(200, out);
  reply.delay = gate.delay;
  return reply;
}

Reply MockApi::Batch(std::string_view body) {
  // Parsed before taking the lock; a malformed body is refused without
  // touching the limiter, since a real API validates before metering.
  Json parsed = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  std::optional<std::string> bad_request;
  if (parsed.is_discarded()) {
    bad_request = "body is not valid JSON";
  } else if (!parsed.is_object() || !parsed.contains("inputs") ||
             !parsed["inputs"].is_array()) {
    bad_request = "body must be a JSON object with an \"inputs\" array";
  }
  const int64_t items =
      bad_request ? 0 : static_cast<int64_t>(parsed["inputs"].size());

  Gate gate = Admit(bad_request, items);
  if (gate.refusal) return std::move(*gate.refusal);

  if (gate.config.batch_non_json) {
    Reply reply;
    reply.content_type = "text/plain";
    reply.body = "upstream hiccup: this body is deliberately not JSON\n";
    reply.delay = gate.delay;
    return reply;
  }

  Json& inputs = parsed["inputs"];
  Json results = Json::array();
  const int64_t every = gate.config.batch_item_error_every;
  for (int64_t i = 0; i < items; ++i) {
    Json item = Json::object();
    if (every > 0 && (i + 1) % every == 0) {
      Json error = Json::object();
      error["code"] = "item_failed";
      error["message"] = "injected failure for item " + std::to_string(i);
      item["error"] = std::move(error);
    } else {
      item["echo"] = std::move(inputs[static_cast<size_t>(i)]);
    }
    item["i"] = i;
    results.push_back(std::move(item));
  }
  if (gate.config.batch_short && !results.empty()) {
    results.erase(results.size() - 1);
  }
  Json out = Json::object();
  out["results"] = std::move(results);
  Reply reply = JsonReply(200, out);
  reply.delay = gate.delay;
  return reply;
}

Reply MockApi::NotFound(std::string_view method, std::string_view path) {
  if (path.starts_with("/v1/")) {
    std::lock_guard<std::mutex> lock(mu_);
    ++requests_;
    ++status_counts_[404];
  }
  Json body = Json::object();
  body["error"] = "not_found";
  body["method"] = std::string(method);
  body["path"] = std::string(path);
  return JsonReply(404, body);
}

Json MockApi::StatsJsonLocked(int64_t now_ns) const {
  Json stats = Json::object();
  stats["accepted"] = accepted_;
  stats["rejected"] = rejected_;
  stats["errors"] = errors_;
  stats["requests"] = requests_;
  stats["batch_requests"] = batch_requests_;
  stats["batch_items"] = batch_items_;
  stats["limit"] = config_.limit ? Json(config_.limit->limit) : Json(nullptr);
  stats["window_ms"] = WindowMsJson(StatsWindowNsLocked());
  stats["algorithm"] = std::string(AlgorithmName(config_.algorithm));
  stats["max_in_window"] = config_.algorithm == Algorithm::kFixed
                               ? fixed_windows_.max()
                               : any_interval_.max();
  stats["max_in_any_interval"] = any_interval_.max();
  stats["first_accept_ms"] = OptionalMs(first_accept_ns_, start_ns_);
  stats["last_accept_ms"] = OptionalMs(last_accept_ns_, start_ns_);
  stats["uptime_ms"] = NsToMs(now_ns - start_ns_);
  Json counts = Json::object();
  for (const auto& [status, count] : status_counts_) {
    counts[std::to_string(status)] = count;
  }
  stats["status_counts"] = std::move(counts);
  return stats;
}

Json MockApi::ConfigJsonLocked() const {
  Json config = Json::object();
  config["latency_ms"] = config_.latency_ms;
  config["error_rate"] = config_.error_rate;
  config["seed"] = config_.seed;
  config["limit"] = config_.limit ? Json(config_.limit->text) : Json(nullptr);
  config["window_ms"] =
      config_.limit ? WindowMsJson(config_.limit->window_ns) : Json(nullptr);
  config["algorithm"] = std::string(AlgorithmName(config_.algorithm));
  config["fail_status"] =
      config_.fail_status ? Json(*config_.fail_status) : Json(nullptr);
  config["batch_item_error_every"] = config_.batch_item_error_every;
  config["batch_short"] = config_.batch_short;
  config["batch_non_json"] = config_.batch_non_json;
  return config;
}

Json MockApi::StatsJson() {
  std::lock_guard<std::mutex> lock(mu_);
  return StatsJsonLocked(clock_());
}

Json MockApi::ConfigJson() {
  std::lock_guard<std::mutex> lock(mu_);
  return ConfigJsonLocked();
}

Reply MockApi::Stats() { return JsonReply(200, StatsJson()); }

Reply MockApi::Config() { return JsonReply(200, ConfigJson()); }

Reply MockApi::Reset() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    ResetCountersLocked(clock_());
  }
  Json body = Json::object();
  body["ok"] = true;
  return JsonReply(200, body);
}

Reply MockApi::Configure(std::string_view body) {
  const Json patch = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (patch.is_discarded() || !patch.is_object()) {
    return ErrorReply(400, "bad_config", "body must be a JSON object");
  }
  std::lock_guard<std::mutex> lock(mu_);
  MockConfig next = config_;
  for (const auto& [key, value] : patch.items()) {
    if (std::optional<std::string> error = ApplyConfigKey(key, value, next)) {
      return ErrorReply(400, "bad_config", *error);
    }
  }
  config_ = std::move(next);
  if (patch.contains("seed")) rng_.seed(config_.seed);
  // Any mention of limit/algorithm restarts metering, even if unchanged, so
  // a test can rely on a clean limiter right after configuring it.
  if (patch.contains("limit") || patch.contains("algorithm")) {
    RebuildLimiterLocked(clock_());
  }
  return JsonReply(200, ConfigJsonLocked());
}

}  // namespace pacer::mock
