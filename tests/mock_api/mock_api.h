// Owns the mock upstream's behaviour independent of any HTTP library: the
// runtime config, the rate limiter, the counters behind /stats and the reply
// for every endpoint. Thread-safe: all state sits behind one mutex, which is
// held only for the admission decision and bookkeeping, never while a reply
// is delayed or a large body is parsed or serialised.
#ifndef PACER_TESTS_MOCK_API_MOCK_API_H_
#define PACER_TESTS_MOCK_API_MOCK_API_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tests/mock_api/interval_max.h"
#include "tests/mock_api/limit_spec.h"
#include "tests/mock_api/rate_headers.h"
#include "tests/mock_api/rate_limiter.h"
#include "tests/mock_api/shared_load.h"

namespace pacer::mock {

// Insertion-ordered so replies list fields in a readable order and echoed
// objects keep the caller's key order.
using Json = nlohmann::ordered_json;

struct MockConfig {
  double latency_ms = 0.0;
  double error_rate = 0.0;
  uint64_t seed = 1;
  std::optional<LimitSpec> limit;  // nullopt = unlimited
  Algorithm algorithm = Algorithm::kFixed;
  // Where fixed windows begin, for both limits.
  WindowStart window_start = WindowStart::kAligned;
  // nginx limit_req's burst for the request limit; only with kLeaky (see
  // CheckLimiterConfig). nullopt = capacity N. The token limit keeps
  // capacity N either way.
  std::optional<int64_t> burst;
  // When set, every /v1/* request is answered with this status.
  std::optional<int> fail_status;
  // K > 0: batch items whose 1-based index is a multiple of K fail.
  int64_t batch_item_error_every = 0;
  bool batch_short = false;     // drop the last batch result
  bool batch_non_json = false;  // answer batches with a text/plain body
  // Which rate-limit headers replies carry.
  Dialect dialect = Dialect::kRetryAfter;
  // Status of a rate-limit rejection (429 or 503); nullopt = the dialect's
  // default (DefaultRejectStatus).
  std::optional<int> reject_status;
  // How whole-second resets and Retry-After are rounded.
  ResetRounding reset_rounding = ResetRounding::kUp;
  // The rate-limit headers describe the count when the reply is sent,
  // after the latency, not when the request was admitted or refused:
  // Flask-Limiter computes them after the view ran, so they include the
  // requests that arrived meanwhile and a window that ended meanwhile.
  bool headers_after_call = false;
  // A second limit, in tokens, enforced with the same algorithm; a request
  // costs its body's "tokens" field (default 1). nullopt = none.
  std::optional<LimitSpec> token_limit;
  // Rate of an invisible second client spending the same quota; nullopt =
  // none.
  std::optional<LimitSpec> shared_load;
};

int EffectiveRejectStatus(const MockConfig& config);

// Checks the settings that are only valid together: a burst needs the
// leaky algorithm, and a full bucket of B + 1 requests must drain within
// 366 days (the longest window), so every wait fits in int64 ns. Returns
// a one-line reason on failure.
std::optional<std::string> CheckLimiterConfig(const MockConfig& config);

// Parses a --shared-load / "shared_load" rate: a limit spec ("20/s",
// "300/min") no faster than SharedLoad::kMinIntervalNs apart. On failure
// returns nullopt and, if `error` is non-null, stores a one-line reason.
std::optional<LimitSpec> ParseSharedLoad(std::string_view text,
                                         std::string* error);

struct Reply {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
  // Configured latency to add before sending. Handed back rather than slept
  // here so the mutex is never held across it and tests need no sleeps.
  std::chrono::nanoseconds delay{0};
  // With MockConfig::headers_after_call: the rate-limit headers are to be
  // recomputed when the reply is sent (MockApi::RefreshHeaders).
  bool refresh_headers = false;
  bool refused = false;  // a rate-limit refusal
};

class MockApi {
 public:
  // Monotonic nanoseconds on an arbitrary scale.
  using Clock = std::function<int64_t()>;

  static int64_t SteadyNowNs();

  // Max-in-interval statistics need a window even when no limit is set.
  static constexpr int64_t kUnlimitedStatsWindowNs = 1'000'000'000;

  // `clock` orders and meters requests. `wall_clock` is read once, here:
  // the absolute times some dialects send are that reading plus the
  // `clock` time elapsed since, so they move in step with the metering.
  explicit MockApi(MockConfig config, Clock clock = &MockApi::SteadyNowNs,
                   Clock wall_clock = &MockApi::SystemNowNs);

  MockApi(const MockApi&) = delete;
  MockApi& operator=(const MockApi&) = delete;

  // Wall-clock Unix time in ns.
  static int64_t SystemNowNs();

  Reply Echo(std::string_view body);       // POST /v1/echo
  Reply Batch(std::string_view body);      // POST /v1/batch
  Reply Stats();                           // GET /stats
  Reply Reset();                           // POST /admin/reset
  Reply Configure(std::string_view body);  // POST /admin/config
  Reply Config();                          // GET /admin/config
  // Any unrouted method/path; counted in /stats when under /v1/.
  Reply NotFound(std::string_view method, std::string_view path);

  Json StatsJson();
  Json ConfigJson();

  // Called when `reply` is sent, after its delay: with
  // MockConfig::headers_after_call, replaces its rate-limit headers with
  // those of the count now (a refusal's Retry-After: the wait from now).
  void RefreshHeaders(Reply& reply);

 private:
  // Outcome of the locked admission step for a /v1/* request.
  struct Gate {
    std::optional<Reply> refusal;  // set unless the request was accepted
    int64_t sequence = 0;          // accepted-request number, 1-based
    MockConfig config;             // snapshot for building the reply
    std::chrono::nanoseconds delay{0};
    Headers headers;  // rate-limit headers for the reply
  };

  // A request's cost against the token limit, read from its body before
  // admission; `error` is set when the "tokens" field is unusable.
  struct TokenCost {
    int64_t tokens = 1;
    std::optional<std::string> error;
  };
  static TokenCost ReadTokenCost(const Json& body);

  // `bad_request` is the reason a body was unusable; such requests never
  // reach the limiter. `batch_items` < 0 marks a non-batch request.
  Gate Admit(const std::optional<std::string>& bad_request, int64_t batch_items,
             const TokenCost& cost);
  // Replays the shared-load requests due up to `now_ns`.
  void ReplaySharedLoadLocked(int64_t now_ns);
  Headers HeadersLocked(int64_t now_ns,
                        std::optional<int64_t> retry_after_ns) const;
  // Records an acceptance at `now_ns`, just charged to the limiter, in a
  // fixed-window tracker: in the window the limiter charged it to when a
  // fixed limit is enforced, else in the aligned statistics window.
  void RecordFixedLocked(FixedWindowMaxTracker& tracker, int64_t now_ns);
  void RebuildLimiterLocked(int64_t now_ns);
  void ResetCountersLocked(int64_t now_ns);
  int64_t StatsWindowNsLocked() const;
  Json StatsJsonLocked(int64_t now_ns) const;
  Json ConfigJsonLocked() const;
  std::chrono::nanoseconds LatencyLocked() const;

  const Clock clock_;
  const int64_t start_ns_;
  const int64_t start_unix_ns_;

  std::mutex mu_;
  MockConfig config_;
  RateLimiter limiter_;
  RateLimiter token_limiter_;
  std::optional<SharedLoad> shared_load_;
  std::mt19937_64 rng_;
  // Real clients' acceptances.
  IntervalMaxTracker any_interval_;
  FixedWindowMaxTracker fixed_windows_;
  // Real clients' and the shared load's acceptances together.
  IntervalMaxTracker total_any_interval_;
  FixedWindowMaxTracker total_fixed_windows_;
  // Real clients' requests the limiter decided on, admitted or not.
  IntervalMaxTracker attempted_any_interval_;

  int64_t accepted_ = 0;
  int64_t rejected_ = 0;
  int64_t errors_ = 0;
  int64_t requests_ = 0;
  int64_t batch_requests_ = 0;
  int64_t batch_items_ = 0;
  int64_t shared_accepted_ = 0;
  int64_t shared_rejected_ = 0;
  std::optional<int64_t> first_accept_ns_;
  std::optional<int64_t> last_accept_ns_;
  std::map<int, int64_t> status_counts_;
};

// Serialises without throwing on invalid UTF-8 (echoed non-JSON bodies can
// contain anything); offending bytes become U+FFFD.
std::string DumpJson(const Json& value);

}  // namespace pacer::mock

#endif  // PACER_TESTS_MOCK_API_MOCK_API_H_
