#include "tests/mock_api/mock_api.h"

#include <algorithm>
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
// Keeps token costs in the range limit specs allow.
constexpr double kMaxTokenCost = 1e12;
// The longest a full leaky bucket may take to drain: the longest window a
// limit spec allows.
constexpr int64_t kMaxDrainNs = int64_t{366} * 86'400 * 1'000'000'000;

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
  } else if (key == "window_start") {
    std::optional<WindowStart> window_start;
    if (value.is_string()) {
      window_start = ParseWindowStart(value.get<std::string>());
    }
    if (!window_start) {
      return "window_start must be \"aligned\" or \"first-request\"";
    }
    config.window_start = *window_start;
  } else if (key == "burst") {
    if (value.is_null()) {
      config.burst.reset();
    } else if (value.is_number_integer() && value.get<int64_t>() >= 0 &&
               value.get<int64_t>() <= kMaxBurst) {
      config.burst = value.get<int64_t>();
    } else {
      return "burst must be an integer from 0 to 1000000000000, or null";
    }
  } else if (key == "reset_rounding") {
    std::optional<ResetRounding> rounding;
    if (value.is_string()) {
      rounding = ParseResetRounding(value.get<std::string>());
    }
    if (!rounding) return "reset_rounding must be \"up\" or \"down\"";
    config.reset_rounding = *rounding;
  } else if (key == "headers_after_call") {
    if (!value.is_boolean()) return "headers_after_call must be true or false";
    config.headers_after_call = value.get<bool>();
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
  } else if (key == "dialect") {
    std::optional<Dialect> dialect;
    if (value.is_string()) dialect = ParseDialect(value.get<std::string>());
    if (!dialect) {
      return "dialect must be one of " + std::string(DialectNames());
    }
    config.dialect = *dialect;
  } else if (key == "reject_status") {
    if (value.is_null()) {
      config.reject_status.reset();
    } else if (value.is_number_integer() &&
               (value.get<int64_t>() == 429 || value.get<int64_t>() == 503)) {
      config.reject_status = value.get<int>();
    } else {
      return "reject_status must be 429, 503 or null";
    }
  } else if (key == "token_limit") {
    if (value.is_null()) {
      config.token_limit.reset();
    } else if (value.is_string()) {
      std::string error;
      std::optional<LimitSpec> spec =
          ParseLimitSpec(value.get<std::string>(), &error);
      if (!spec) return "token_limit: " + error;
      config.token_limit = std::move(spec);
    } else {
      return "token_limit must be a string like \"1000/min\" or null";
    }
  } else if (key == "shared_load") {
    if (value.is_null()) {
      config.shared_load.reset();
    } else if (value.is_string()) {
      std::string error;
      std::optional<LimitSpec> spec =
          ParseSharedLoad(value.get<std::string>(), &error);
      if (!spec) return "shared_load: " + error;
      config.shared_load = std::move(spec);
    } else {
      return "shared_load must be a string like \"20/s\" or null";
    }
  } else {
    return "unknown config key '" + key +
           "' (known: latency_ms, error_rate, limit, algorithm, window_start, "
           "burst, fail_status, batch_item_error_every, batch_short, "
           "batch_non_json, seed, dialect, reject_status, reset_rounding, "
           "headers_after_call, token_limit, shared_load)";
  }
  return std::nullopt;
}

}  // namespace

int EffectiveRejectStatus(const MockConfig& config) {
  return config.reject_status.value_or(DefaultRejectStatus(config.dialect));
}

std::optional<std::string> CheckLimiterConfig(const MockConfig& config) {
  if (!config.burst) return std::nullopt;
  if (config.algorithm != Algorithm::kLeaky) {
    return "burst needs the leaky algorithm, not " +
           std::string(AlgorithmName(config.algorithm));
  }
  if (!config.limit) return std::nullopt;
  // (B + 1) * W / N <= max, in 128 bits: B + 1 <= 1e12 + 1 and W, max
  // < 2^55, N <= 1e12.
  __extension__ typedef unsigned __int128 Wide;
  const Wide full = static_cast<Wide>(*config.burst + 1) *
                    static_cast<Wide>(config.limit->window_ns);
  if (full >
      static_cast<Wide>(kMaxDrainNs) * static_cast<Wide>(config.limit->limit)) {
    return "burst " + std::to_string(*config.burst) +
           " makes a bucket that would take more than 366 days to drain at " +
           config.limit->text;
  }
  return std::nullopt;
}

std::optional<LimitSpec> ParseSharedLoad(std::string_view text,
                                         std::string* error) {
  std::optional<LimitSpec> spec = ParseLimitSpec(text, error);
  if (!spec) return std::nullopt;
  // window / limit < min  <=>  window < min * limit, without rounding.
  if (spec->window_ns / SharedLoad::kMinIntervalNs < spec->limit) {
    if (error != nullptr) {
      *error = "shared load '" + spec->text +
               "' is faster than 100000 requests per second";
    }
    return std::nullopt;
  }
  return spec;
}

std::string DumpJson(const Json& value) {
  return value.dump(-1, ' ', false, Json::error_handler_t::replace);
}

int64_t MockApi::SteadyNowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

int64_t MockApi::SystemNowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

MockApi::MockApi(MockConfig config, Clock clock, Clock wall_clock)
    : clock_(std::move(clock)),
      start_ns_(clock_()),
      start_unix_ns_(wall_clock()),
      config_(std::move(config)),
      limiter_(config_.algorithm, config_.limit, start_ns_),
      token_limiter_(config_.algorithm, config_.token_limit, start_ns_),
      rng_(config_.seed),
      any_interval_(kUnlimitedStatsWindowNs),
      fixed_windows_(start_ns_, kUnlimitedStatsWindowNs),
      total_any_interval_(kUnlimitedStatsWindowNs),
      total_fixed_windows_(start_ns_, kUnlimitedStatsWindowNs),
      attempted_any_interval_(kUnlimitedStatsWindowNs) {
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
  // The shared load restarts with them, its first request due right away.
  limiter_ = RateLimiter(
      config_.algorithm, config_.limit, now_ns,
      {.window_start = config_.window_start, .burst = config_.burst});
  // A burst is in requests: the token limit keeps capacity N.
  token_limiter_ = RateLimiter(
      config_.algorithm, config_.token_limit, now_ns,
      {.window_start = config_.window_start, .burst = std::nullopt});
  shared_load_.reset();
  if (config_.shared_load) shared_load_.emplace(*config_.shared_load, now_ns);
  any_interval_.Reset(StatsWindowNsLocked());
  fixed_windows_.Reset(now_ns, StatsWindowNsLocked());
  total_any_interval_.Reset(StatsWindowNsLocked());
  total_fixed_windows_.Reset(now_ns, StatsWindowNsLocked());
  attempted_any_interval_.Reset(StatsWindowNsLocked());
}

void MockApi::RecordFixedLocked(FixedWindowMaxTracker& tracker,
                                int64_t now_ns) {
  if (config_.limit && config_.algorithm == Algorithm::kFixed) {
    tracker.RecordInWindow(limiter_.window_start_ns());
  } else {
    tracker.Record(now_ns);
  }
}

void MockApi::ReplaySharedLoadLocked(int64_t now_ns) {
  if (!shared_load_) return;
  // Each request is decided at its own due time, so the limiter and the
  // trackers see the same ordered history as if it had arrived then.
  while (shared_load_->next_due_ns() <= now_ns) {
    const int64_t t = shared_load_->next_due_ns();
    shared_load_->Pop();
    limiter_.Advance(t);
    token_limiter_.Advance(t);
    if (!limiter_.Check(1).admitted || !token_limiter_.Check(1).admitted) {
      ++shared_rejected_;
      continue;
    }
    limiter_.Consume(1);
    token_limiter_.Consume(1);
    ++shared_accepted_;
    total_any_interval_.Record(t);
    RecordFixedLocked(total_fixed_windows_, t);
  }
}

Headers MockApi::HeadersLocked(int64_t now_ns,
                               std::optional<int64_t> retry_after_ns) const {
  HeaderInput input;
  input.unix_now_ns = start_unix_ns_ + (now_ns - start_ns_);
  input.requests = limiter_.quota();
  input.tokens = token_limiter_.quota();
  input.retry_after_ns = retry_after_ns;
  input.reset_rounding = config_.reset_rounding;
  return RateLimitHeaders(config_.dialect, input);
}

MockApi::TokenCost MockApi::ReadTokenCost(const Json& body) {
  TokenCost cost;
  if (!body.is_object()) return cost;
  const auto it = body.find("tokens");
  if (it == body.end()) return cost;
  const double tokens = it->is_number() ? it->get<double>() : -1.0;
  if (!(tokens >= 0.0 && tokens <= kMaxTokenCost)) {
    cost.error = "\"tokens\" must be a number between 0 and 1e12";
    return cost;
  }
  cost.tokens = static_cast<int64_t>(std::ceil(tokens));
  return cost;
}

void MockApi::ResetCountersLocked(int64_t now_ns) {
  accepted_ = 0;
  rejected_ = 0;
  errors_ = 0;
  requests_ = 0;
  batch_requests_ = 0;
  batch_items_ = 0;
  shared_accepted_ = 0;
  shared_rejected_ = 0;
  first_accept_ns_.reset();
  last_accept_ns_.reset();
  status_counts_.clear();
  // Reseeding makes a run after /admin/reset reproduce the same error
  // pattern as a run against a fresh server.
  rng_.seed(config_.seed);
  RebuildLimiterLocked(now_ns);
}

MockApi::Gate MockApi::Admit(const std::optional<std::string>& bad_request,
                             int64_t batch_items, const TokenCost& cost) {
  Gate gate;
  std::lock_guard<std::mutex> lock(mu_);
  // Read under the lock so arrivals are totally ordered: the limiter and
  // the interval trackers depend on non-decreasing times, and /stats must
  // describe exactly the sequence of decisions that was made.
  const int64_t now = clock_();
  // The other client's requests due by now came first.
  ReplaySharedLoadLocked(now);
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
  if (config_.token_limit && cost.error) {
    refuse(ErrorReply(400, "bad_request", *cost.error));
    return gate;
  }

  // Held against both limits and charged to both or neither.
  const int64_t tokens = config_.token_limit ? cost.tokens : 0;
  limiter_.Advance(now);
  token_limiter_.Advance(now);
  // Every request the limiter decides on is an attempt, admitted or not.
  attempted_any_interval_.Record(now);
  const Admission by_requests = limiter_.Check(1);
  const Admission by_tokens = token_limiter_.Check(tokens);
  if (!by_requests.admitted || !by_tokens.admitted) {
    ++rejected_;
    const int status = EffectiveRejectStatus(config_);
    Json body = Json::object();
    Reply reply;
    if (by_tokens.exceeds_limit) {
      // No wait would help, so no Retry-After either.
      body["error"] = "request_too_large";
      body["message"] = "request costs " + std::to_string(tokens) +
                        " tokens, more than the token limit of " +
                        std::to_string(config_.token_limit->limit);
      reply = JsonReply(status, body);
      reply.headers = HeadersLocked(now, std::nullopt);
    } else {
      // Each limiter only gets laxer with time, so the request fits once
      // the later of the two waits has passed.
      int64_t retry_after_ns = 0;
      if (!by_requests.admitted) retry_after_ns = by_requests.retry_after_ns;
      if (!by_tokens.admitted) {
        retry_after_ns = std::max(retry_after_ns, by_tokens.retry_after_ns);
      }
      body["error"] = "rate_limited";
      if (config_.dialect != Dialect::kNone) {
        body["retry_after_ms"] = RetryAfterMillis(retry_after_ns);
      }
      reply = JsonReply(status, body);
      reply.headers = HeadersLocked(now, retry_after_ns);
      reply.refused = true;
      reply.refresh_headers = config_.headers_after_call;
    }
    refuse(std::move(reply));
    return gate;
  }
  limiter_.Consume(1);
  token_limiter_.Consume(tokens);
  gate.headers = HeadersLocked(now, std::nullopt);

  // The roll comes after admission, so an injected 500 still uses up limit
  // capacity, as a real upstream's failed request would.
  if (config_.error_rate > 0.0) {
    const double roll = static_cast<double>(rng_() >> 11) * 0x1.0p-53;
    if (roll < config_.error_rate) {
      ++errors_;
      Json body = Json::object();
      body["error"] = "injected";
      Reply reply = JsonReply(500, body);
      reply.headers = std::move(gate.headers);
      refuse(std::move(reply));
      return gate;
    }
  }

  ++accepted_;
  ++status_counts_[200];
  if (!first_accept_ns_) first_accept_ns_ = now;
  last_accept_ns_ = now;
  any_interval_.Record(now);
  RecordFixedLocked(fixed_windows_, now);
  total_any_interval_.Record(now);
  RecordFixedLocked(total_fixed_windows_, now);
  if (batch_items >= 0) {
    ++batch_requests_;
    batch_items_ += batch_items;
  }
  gate.sequence = accepted_;
  gate.config = config_;
  return gate;
}

Reply MockApi::Echo(std::string_view body) {
  // Parsed before taking the lock: the token cost is needed to admit.
  Json echo = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  const TokenCost cost = ReadTokenCost(echo);
  Gate gate = Admit(std::nullopt, -1, cost);
  if (gate.refusal) return std::move(*gate.refusal);

  if (echo.is_discarded()) echo = std::string(body);
  Json out = Json::object();
  out["echo"] = std::move(echo);
  out["n"] = gate.sequence;
  if (gate.config.token_limit) {
    out["usage"] = Json::object({{"total_tokens", cost.tokens}});
  }
  Reply reply = JsonReply(200, out);
  reply.delay = gate.delay;
  reply.headers = std::move(gate.headers);
  reply.refresh_headers = gate.config.headers_after_call;
  return reply;
}

void MockApi::RefreshHeaders(Reply& reply) {
  if (!reply.refresh_headers) return;
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t now = clock_();
  ReplaySharedLoadLocked(now);
  limiter_.Advance(now);
  token_limiter_.Advance(now);
  std::optional<int64_t> retry_after_ns;
  if (reply.refused) {
    // The wait from now; none once the quota is back.
    const Admission a = limiter_.Check(1);
    if (!a.admitted) retry_after_ns = a.retry_after_ns;
  }
  Headers fresh = HeadersLocked(now, retry_after_ns);
  // Replace the rate-limit headers the dialect sent at admission; keep any
  // other header of the reply.
  Headers kept;
  for (auto& h : reply.headers) {
    const bool rate = std::any_of(fresh.begin(), fresh.end(), [&](const auto& f) {
      return f.first == h.first;
    }) || h.first == "Retry-After";
    if (!rate) kept.push_back(std::move(h));
  }
  for (auto& f : fresh) kept.push_back(std::move(f));
  reply.headers = std::move(kept);
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

  const TokenCost cost = bad_request ? TokenCost{} : ReadTokenCost(parsed);

  Gate gate = Admit(bad_request, items, cost);
  if (gate.refusal) return std::move(*gate.refusal);

  if (gate.config.batch_non_json) {
    Reply reply;
    reply.content_type = "text/plain";
    reply.body = "upstream hiccup: this body is deliberately not JSON\n";
    reply.delay = gate.delay;
    reply.headers = std::move(gate.headers);
    reply.refresh_headers = gate.config.headers_after_call;
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
  if (gate.config.token_limit) {
    out["usage"] = Json::object({{"total_tokens", cost.tokens}});
  }
  Reply reply = JsonReply(200, out);
  reply.delay = gate.delay;
  reply.headers = std::move(gate.headers);
  reply.refresh_headers = gate.config.headers_after_call;
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
  stats["shared_accepted"] = shared_accepted_;
  stats["shared_rejected"] = shared_rejected_;
  stats["limit"] = config_.limit ? Json(config_.limit->limit) : Json(nullptr);
  stats["window_ms"] = WindowMsJson(StatsWindowNsLocked());
  stats["algorithm"] = std::string(AlgorithmName(config_.algorithm));
  stats["max_in_window"] = config_.algorithm == Algorithm::kFixed
                               ? fixed_windows_.max()
                               : any_interval_.max();
  stats["max_in_any_interval"] = any_interval_.max();
  stats["max_total_in_window"] = config_.algorithm == Algorithm::kFixed
                                     ? total_fixed_windows_.max()
                                     : total_any_interval_.max();
  stats["max_attempted_in_any_interval"] =
      config_.limit ? Json(attempted_any_interval_.max()) : Json(nullptr);
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
  config["window_start"] = std::string(WindowStartName(config_.window_start));
  config["burst"] = config_.burst ? Json(*config_.burst) : Json(nullptr);
  config["fail_status"] =
      config_.fail_status ? Json(*config_.fail_status) : Json(nullptr);
  config["batch_item_error_every"] = config_.batch_item_error_every;
  config["batch_short"] = config_.batch_short;
  config["batch_non_json"] = config_.batch_non_json;
  config["dialect"] = std::string(DialectName(config_.dialect));
  config["reject_status"] = EffectiveRejectStatus(config_);
  config["reset_rounding"] =
      std::string(ResetRoundingName(config_.reset_rounding));
  config["headers_after_call"] = config_.headers_after_call;
  config["token_limit"] =
      config_.token_limit ? Json(config_.token_limit->text) : Json(nullptr);
  config["shared_load"] =
      config_.shared_load ? Json(config_.shared_load->text) : Json(nullptr);
  return config;
}

Json MockApi::StatsJson() {
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t now = clock_();
  ReplaySharedLoadLocked(now);
  return StatsJsonLocked(now);
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
  const int64_t now = clock_();
  // What the shared load did before this change happened under the old
  // settings.
  ReplaySharedLoadLocked(now);
  MockConfig next = config_;
  for (const auto& [key, value] : patch.items()) {
    if (std::optional<std::string> error = ApplyConfigKey(key, value, next)) {
      return ErrorReply(400, "bad_config", *error);
    }
  }
  if (std::optional<std::string> error = CheckLimiterConfig(next)) {
    return ErrorReply(400, "bad_config", *error);
  }
  config_ = std::move(next);
  if (patch.contains("seed")) rng_.seed(config_.seed);
  // Any mention of a limit, the algorithm, its tuning or the shared load
  // restarts metering (and the shared load's schedule), even if unchanged,
  // so a test can rely on a clean limiter right after configuring it.
  if (patch.contains("limit") || patch.contains("algorithm") ||
      patch.contains("window_start") || patch.contains("burst") ||
      patch.contains("token_limit") || patch.contains("shared_load")) {
    RebuildLimiterLocked(now);
  }
  return JsonReply(200, ConfigJsonLocked());
}

}  // namespace pacer::mock
