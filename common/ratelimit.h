// Rate-limit observation: turns one HTTP response (status, every header line
// in order with repeats, body) into the normalized observation of the
// rate-limit reference (its §10.1 model and rules R1-R12): a verdict, the
// server's retry hint, the limits it reported and the derived wait. Every
// dialect of the reference is understood (Retry-After and its ms siblings,
// the IETF RateLimit drafts, X-RateLimit-* with vendor profiles, LLM vendors,
// Shopify, Google, AWS, Stripe); a dialect profile settles ambiguous units.
//
// The parser is a pure function over values: thread-safe, no I/O, and it
// never throws. Hostile input yields warnings, not crashes: every wait, retry
// hint, reset and window it reports lies in [0, kMaxObservedWaitMs].
#pragma once

#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/clock.h"
#include "common/result.h"

namespace pacer {

// The longest wait, retry hint, reset or window taken from a response: 400
// days, room for a yearly quota reset plus margin. A value beyond it is
// dropped (null) with a warning "beyond_cap:<Header>" rather than clamped:
// clamping a hostile value would still stall a lane for 400 days.
inline constexpr Millis kMaxObservedWaitMs = 400LL * 86'400'000;

// Only this much of a body is inspected (error JSON, XML codes).
inline constexpr std::size_t kMaxObservedBodyBytes = 64 << 10;

enum class Verdict : std::uint8_t {
  kOk,
  kThrottled,
  kUnavailable,
  kOverloaded,
  kQuotaExhausted,
  kError,
};

enum class QuotaUnit : std::uint8_t {
  kRequests,
  kTokens,
  kInputTokens,
  kOutputTokens,
  kPoints,
  kContentBytes,
  kConcurrentRequests,
  kUnknown,
};

enum class LimitScope : std::uint8_t {
  kDefault,
  kUser,
  kGlobal,
  kSharedResource,
  kSecondary,
};

enum class ResetKind : std::uint8_t {
  kWindowEnd,      // end of a fixed window (GitHub, X, IETF)
  kNextQuota,      // some more quota becomes available
  kFullReplenish,  // the bucket is full again (OpenAI, Anthropic)
  kNextRequest,    // the next single request is allowed (Akamai)
  kUnknown,
};

// The JSON spellings: "throttled", "input_tokens", "shared_resource", ...
std::string_view to_string(Verdict v);
std::string_view to_string(QuotaUnit u);
std::string_view to_string(LimitScope s);
std::string_view to_string(ResetKind k);

// One limit (policy, bucket, counter family) reported by the response.
struct LimitObservation {
  std::string source;  // "ietf-sep", "ietf-07", "ietf-08", "github", "x", ...
  std::string name;    // policy / bucket / resource; "" when unnamed
  QuotaUnit unit = QuotaUnit::kRequests;
  LimitScope scope = LimitScope::kDefault;
  std::optional<std::int64_t> limit;
  std::optional<double> remaining;  // Reddit floats, Shopify points
  std::optional<std::int64_t> used;
  std::optional<Millis> reset_in_ms;  // from received_unix_ms, skew-corrected
  // How far the true reset may lie from reset_in_ms, either way: 1000 for a
  // value in whole seconds (servers round up or truncate), 2000 for an
  // instant in whole seconds measured against a Date header (also whole
  // seconds), 1 for milliseconds. Null when there is no reset.
  std::optional<Millis> reset_precision_ms;
  std::optional<std::int64_t> window_s;
  std::optional<double> refill_per_s;
  std::optional<std::string> partition_key;  // decoded IETF pk
  ResetKind reset_kind = ResetKind::kUnknown;
  bool policy_only = false;  // an informative policy without live counters
  std::vector<std::string> flags;
};

// The normalized snapshot of one response.
struct Observation {
  int http_status = 0;
  Millis received_unix_ms = 0;
  std::optional<Millis> server_skew_ms;  // Date - received, when plausible
  Verdict verdict = Verdict::kOk;
  bool retryable = true;
  bool blocking = false;  // the response itself was a rejection
  std::optional<Millis> retry_after_ms;
  // As LimitObservation::reset_precision_ms, for retry_after_ms: 1000 for
  // Retry-After in whole seconds.
  std::optional<Millis> retry_after_precision_ms;
  std::string retry_after_source;  // "retry-after", "body:RetryInfo", ...
  std::optional<bool> server_should_retry;
  std::string reason;  // "secondary_rate_limit", "ThrottlingException", ...
  // Discord's X-RateLimit-Scope as sent ("global", "shared", "user"): whom a
  // blocking wait applies to. "" when the response does not say.
  std::string scope;
  std::vector<LimitObservation> limits;
  // The earliest time the next request on this key may go, from
  // received_unix_ms; nullopt = unknown (back off with jitter).
  std::optional<Millis> wait_ms;
  std::vector<std::string> warnings;
  std::vector<std::string> flags;
};

// Header name/value pairs in the order received; names may repeat.
using HeaderFields = std::vector<std::pair<std::string, std::string>>;

// The dialect profiles (§11 of the reference): "auto" (detect, the default),
// "generic" (no vendor detection: the R9 heuristic), and the vendor names.
std::span<const std::string_view> known_dialects();
bool is_known_dialect(std::string_view name);
// "auto, generic, github, ..." for messages.
std::string known_dialects_text();

// Parses one response. An unknown dialect is treated as "auto" with a
// warning "unknown_dialect". Only the first kMaxObservedBodyBytes of `body`
// are read.
Observation observe_response(
    int status, std::span<const std::pair<std::string, std::string>> headers,
    std::string_view body, Millis received_unix_ms,
    std::string_view dialect = "auto");

// A raw response head: status line, header lines and what follows the blank
// line.
struct ResponseHead {
  int status = 0;
  HeaderFields headers;
  std::string body;
};

Observation observe_response(const ResponseHead& head, Millis received_unix_ms,
                             std::string_view dialect = "auto");

// Reads "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 5\r\n\r\nbody" (lines
// end in \r\n or \n; the blank line and body are optional). Folded lines are
// joined to the previous header. When what follows the blank line is itself
// a status line (curl -i output with 100 Continue, a proxy CONNECT or
// redirects), the last response is the one returned. Errors name the line.
Result<ResponseHead> parse_response_head(std::string_view raw);

// The observation as JSON, with the field names of the reference and its
// test vectors; absent optionals are null.
nlohmann::json to_json(const Observation& obs);
nlohmann::json to_json(const LimitObservation& limit);

// True when the broker has something to learn: limits, a verdict other than
// ok, a retry hint or warnings.
bool worth_reporting(const Observation& obs);

}  // namespace pacer
