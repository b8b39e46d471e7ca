// Owns the rate-limit header dialects the mock upstream can speak: which
// fields each one sends, in which syntax, and the date and duration
// formats they need. Pure functions on values; safe from any thread.
#ifndef PACER_TESTS_MOCK_API_RATE_HEADERS_H_
#define PACER_TESTS_MOCK_API_RATE_HEADERS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tests/mock_api/rate_limiter.h"

namespace pacer::mock {

using Headers = std::vector<std::pair<std::string, std::string>>;

enum class Dialect {
  kRetryAfter,      // only Retry-After (delay-seconds) on rejections
  kIetf6,           // RateLimit-Limit/-Remaining/-Reset + RateLimit-Policy
  kIetf7,           // RateLimit dictionary + RateLimit-Policy
  kIetf8,           // named policies: RateLimit-Policy + RateLimit lists
  kXRateLimit,      // X-RateLimit-Limit/-Remaining/-Reset (epoch seconds)
  kGitHub,          // x-ratelimit-limit/remaining/used/reset/resource
  kOpenAi,          // x-ratelimit-*-requests / -tokens, Go durations
  kAnthropic,       // anthropic-ratelimit-*, RFC 3339 instants
  kRetryAfterDate,  // Retry-After as an HTTP-date, plus Date
  kNone,            // nothing at all, rejections are 503 (nginx limit_req)
};

std::string_view DialectName(Dialect dialect);
// Accepts the CLI spellings: retry-after, ietf-6, ietf-7, ietf-8,
// x-ratelimit, github, openai, anthropic, retry-after-date, none.
std::optional<Dialect> ParseDialect(std::string_view name);
// Comma-separated list of every spelling, for error messages.
std::string_view DialectNames();
// Status of a rate-limit rejection unless configured: 503 for kNone (what
// nginx sends), 429 otherwise.
int DefaultRejectStatus(Dialect dialect);

// How resets and Retry-After are rounded where the syntax has only whole
// seconds (epoch seconds, delay-seconds, HTTP-dates). Fields with
// milliseconds (Go durations, RFC 3339) are always rounded up.
enum class ResetRounding {
  // Up, so a client that waits the stated time finds the quota back
  // (express-rate-limit's Math.ceil); Retry-After is at least 1.
  kUp,
  // Truncated, as Flask-Limiter's int() does: the stated time can be up
  // to a second early, and Retry-After can be 0.
  kDown,
};

std::string_view ResetRoundingName(ResetRounding rounding);
// Accepts the CLI spellings: up, down.
std::optional<ResetRounding> ParseResetRounding(std::string_view name);

// Everything a dialect may report about one response.
struct HeaderInput {
  // Unix time, in ns, at which the request was decided.
  int64_t unix_now_ns = 0;
  // State right after the decision; nullopt when that limit is not set.
  std::optional<Quota> requests;
  std::optional<Quota> tokens;
  // Set on a rate-limit rejection: how long until the request would fit.
  std::optional<int64_t> retry_after_ns;
  // How the whole-second fields derived from those are rounded.
  ResetRounding reset_rounding = ResetRounding::kUp;
};

// The header fields `dialect` sends with a reply, in a stable order.
Headers RateLimitHeaders(Dialect dialect, const HeaderInput& input);

// Formats used by the dialects, exposed for tests.

// Go's time.Duration.String() of the delay rounded up to whole
// milliseconds: "0s", "250ms", "1s", "1.5s", "6m0s", "1h2m3.5s".
std::string GoDuration(int64_t ns);
// "2025-01-01T00:00:01Z"; rounded up to whole milliseconds, with a
// ".mmm" fraction only when the instant is not a whole second.
std::string Rfc3339Utc(int64_t unix_ns);
// IMF-fixdate (RFC 9110 §5.6.7) of a whole Unix second:
// "Wed, 01 Jan 2025 00:00:00 GMT".
std::string ImfFixdate(int64_t unix_s);

}  // namespace pacer::mock

#endif  // PACER_TESTS_MOCK_API_RATE_HEADERS_H_
