#include "tests/mock_api/rate_headers.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>

namespace pacer::mock {
namespace {

constexpr int64_t kNsPerMs = 1'000'000;
constexpr int64_t kNsPerSecond = 1'000 * kNsPerMs;
constexpr int64_t kSecondsPerDay = 86'400;
// The policy name the IETF -08 dialect reports its one limit under.
constexpr char kPolicyName[] = "\"default\"";
// The bucket GitHub names in x-ratelimit-resource for most of its API.
constexpr char kGitHubResource[] = "core";

struct DialectEntry {
  Dialect dialect;
  std::string_view name;
};

constexpr std::array<DialectEntry, 10> kDialects = {{
    {Dialect::kRetryAfter, "retry-after"},
    {Dialect::kIetf6, "ietf-6"},
    {Dialect::kIetf7, "ietf-7"},
    {Dialect::kIetf8, "ietf-8"},
    {Dialect::kXRateLimit, "x-ratelimit"},
    {Dialect::kGitHub, "github"},
    {Dialect::kOpenAi, "openai"},
    {Dialect::kAnthropic, "anthropic"},
    {Dialect::kRetryAfterDate, "retry-after-date"},
    {Dialect::kNone, "none"},
}};

int64_t FloorDiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

int64_t CeilDiv(int64_t a, int64_t b) { return -FloorDiv(-a, b); }

// Whole seconds in `ns`, rounded as configured.
int64_t WholeSeconds(int64_t ns, ResetRounding rounding) {
  return rounding == ResetRounding::kUp ? CeilDiv(ns, kNsPerSecond)
                                        : FloorDiv(ns, kNsPerSecond);
}

// Delay-seconds as the IETF drafts define them (never negative).
int64_t DeltaSeconds(int64_t ns, ResetRounding rounding) {
  return WholeSeconds(std::max<int64_t>(0, ns), rounding);
}

// Windows in IETF policies are whole seconds, always rounded up; a
// sub-second window is reported as 1 s, which the syntax cannot do better
// than.
int64_t WindowSeconds(int64_t window_ns) {
  return std::max<int64_t>(1, DeltaSeconds(window_ns, ResetRounding::kUp));
}

// The whole Unix second of the instant `delay_ns` after `unix_ns`: the
// first at or after it when rounding up, the one holding it when rounding
// down.
int64_t EpochSecondsAfter(int64_t unix_ns, int64_t delay_ns,
                          ResetRounding rounding) {
  return WholeSeconds(unix_ns + std::max<int64_t>(0, delay_ns), rounding);
}

struct Civil {
  int year;
  unsigned month;
  unsigned day;
  unsigned weekday;  // 0 = Sunday
  int64_t second_of_day;
};

Civil ToCivil(int64_t unix_s) {
  using std::chrono::days;
  using std::chrono::sys_days;
  const int64_t day_number = FloorDiv(unix_s, kSecondsPerDay);
  const sys_days date{days{day_number}};
  const std::chrono::year_month_day ymd{date};
  return {.year = static_cast<int>(ymd.year()),
          .month = static_cast<unsigned>(ymd.month()),
          .day = static_cast<unsigned>(ymd.day()),
          .weekday = std::chrono::weekday{date}.c_encoding(),
          .second_of_day = unix_s - day_number * kSecondsPerDay};
}

void Add(Headers& headers, std::string name, std::string value) {
  headers.emplace_back(std::move(name), std::move(value));
}

void Add(Headers& headers, std::string name, int64_t value) {
  headers.emplace_back(std::move(name), std::to_string(value));
}

// As a real server's: the whole second the reply was made in, truncated
// whatever the reset rounding.
void AddDate(Headers& headers, const HeaderInput& input) {
  Add(headers, "Date", ImfFixdate(FloorDiv(input.unix_now_ns, kNsPerSecond)));
}

// Retry-After as delay-seconds: at least 1 when rounding up, see
// RetryAfterSeconds; possibly 0 when rounding down.
void AddRetryAfterSeconds(Headers& headers, const HeaderInput& input,
                          const char* name = "Retry-After") {
  if (!input.retry_after_ns) return;
  Add(headers, name,
      input.reset_rounding == ResetRounding::kUp
          ? RetryAfterSeconds(*input.retry_after_ns)
          : DeltaSeconds(*input.retry_after_ns, ResetRounding::kDown));
}

// OpenAI: x-ratelimit-limit-<unit>, -remaining-<unit>, -reset-<unit>.
void AddOpenAiFamily(Headers& headers, const std::optional<Quota>& quota,
                     const std::string& unit) {
  if (!quota) return;
  Add(headers, "x-ratelimit-limit-" + unit, quota->limit);
  Add(headers, "x-ratelimit-remaining-" + unit, quota->remaining);
  Add(headers, "x-ratelimit-reset-" + unit, GoDuration(quota->reset_ns));
}

// Anthropic: anthropic-ratelimit-<unit>-limit, -remaining, -reset.
void AddAnthropicFamily(Headers& headers, const HeaderInput& input,
                        const std::optional<Quota>& quota,
                        const std::string& unit) {
  if (!quota) return;
  const std::string prefix = "anthropic-ratelimit-" + unit + "-";
  Add(headers, prefix + "limit", quota->limit);
  Add(headers, prefix + "remaining", quota->remaining);
  Add(headers, prefix + "reset",
      Rfc3339Utc(input.unix_now_ns + std::max<int64_t>(0, quota->reset_ns)));
}

}  // namespace

std::string_view DialectName(Dialect dialect) {
  for (const DialectEntry& entry : kDialects) {
    if (entry.dialect == dialect) return entry.name;
  }
  return "retry-after";
}

std::optional<Dialect> ParseDialect(std::string_view name) {
  for (const DialectEntry& entry : kDialects) {
    if (entry.name == name) return entry.dialect;
  }
  return std::nullopt;
}

std::string_view DialectNames() {
  return "retry-after, ietf-6, ietf-7, ietf-8, x-ratelimit, github, openai, "
         "anthropic, retry-after-date, none";
}

int DefaultRejectStatus(Dialect dialect) {
  return dialect == Dialect::kNone ? 503 : 429;
}

std::string_view ResetRoundingName(ResetRounding rounding) {
  return rounding == ResetRounding::kDown ? "down" : "up";
}

std::optional<ResetRounding> ParseResetRounding(std::string_view name) {
  if (name == "up") return ResetRounding::kUp;
  if (name == "down") return ResetRounding::kDown;
  return std::nullopt;
}

std::string GoDuration(int64_t ns) {
  const int64_t ms = CeilDiv(std::max<int64_t>(0, ns), kNsPerMs);
  if (ms == 0) return "0s";
  if (ms < 1'000) return std::to_string(ms) + "ms";
  const int64_t hours = ms / 3'600'000;
  const int64_t minutes = ms / 60'000 % 60;
  const int64_t seconds = ms / 1'000 % 60;
  std::string fraction = std::to_string(1'000 + ms % 1'000).substr(1);
  while (!fraction.empty() && fraction.back() == '0') fraction.pop_back();
  std::string out;
  if (hours > 0) out += std::to_string(hours) + "h";
  if (hours > 0 || minutes > 0) out += std::to_string(minutes) + "m";
  out += std::to_string(seconds);
  if (!fraction.empty()) out += "." + fraction;
  out += "s";
  return out;
}

std::string Rfc3339Utc(int64_t unix_ns) {
  const int64_t ms = CeilDiv(unix_ns, kNsPerMs);
  const int64_t unix_s = FloorDiv(ms, 1'000);
  const int64_t millis = ms - unix_s * 1'000;
  const Civil civil = ToCivil(unix_s);
  char buffer[40];
  const int64_t sod = civil.second_of_day;
  std::snprintf(buffer, sizeof buffer, "%04d-%02u-%02uT%02d:%02d:%02d",
                civil.year, civil.month, civil.day,
                static_cast<int>(sod / 3'600), static_cast<int>(sod / 60 % 60),
                static_cast<int>(sod % 60));
  std::string out = buffer;
  if (millis != 0) {
    std::snprintf(buffer, sizeof buffer, ".%03d", static_cast<int>(millis));
    out += buffer;
  }
  return out + "Z";
}

std::string ImfFixdate(int64_t unix_s) {
  static constexpr std::array<const char*, 7> kWeekdays = {
      "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static constexpr std::array<const char*, 12> kMonths = {
      "Jan", "Feb", "Mar", "Apr", "May", "Jun",
      "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  const Civil civil = ToCivil(unix_s);
  const int64_t sod = civil.second_of_day;
  char buffer[40];
  std::snprintf(buffer, sizeof buffer, "%s, %02u %s %04d %02d:%02d:%02d GMT",
                kWeekdays[civil.weekday], civil.day, kMonths[civil.month - 1],
                civil.year, static_cast<int>(sod / 3'600),
                static_cast<int>(sod / 60 % 60), static_cast<int>(sod % 60));
  return buffer;
}

Headers RateLimitHeaders(Dialect dialect, const HeaderInput& input) {
  Headers headers;
  const std::optional<Quota>& requests = input.requests;
  const ResetRounding rounding = input.reset_rounding;
  switch (dialect) {
    case Dialect::kRetryAfter:
      AddRetryAfterSeconds(headers, input);
      break;
    case Dialect::kIetf6:
      if (requests) {
        Add(headers, "RateLimit-Policy",
            std::to_string(requests->limit) +
                ";w=" + std::to_string(WindowSeconds(requests->window_ns)));
        Add(headers, "RateLimit-Limit", requests->limit);
        Add(headers, "RateLimit-Remaining", requests->remaining);
        Add(headers, "RateLimit-Reset",
            DeltaSeconds(requests->reset_ns, rounding));
      }
      AddRetryAfterSeconds(headers, input);
      break;
    case Dialect::kIetf7:
      if (requests) {
        Add(headers, "RateLimit-Policy",
            std::to_string(requests->limit) +
                ";w=" + std::to_string(WindowSeconds(requests->window_ns)));
        Add(headers, "RateLimit",
            "limit=" + std::to_string(requests->limit) + ", remaining=" +
                std::to_string(requests->remaining) + ", reset=" +
                std::to_string(DeltaSeconds(requests->reset_ns, rounding)));
      }
      AddRetryAfterSeconds(headers, input);
      break;
    case Dialect::kIetf8:
      if (requests) {
        Add(headers, "RateLimit-Policy",
            std::string(kPolicyName) + ";q=" + std::to_string(requests->limit) +
                ";w=" + std::to_string(WindowSeconds(requests->window_ns)));
        Add(headers, "RateLimit",
            std::string(kPolicyName) +
                ";r=" + std::to_string(requests->remaining) + ";t=" +
                std::to_string(DeltaSeconds(requests->reset_ns, rounding)));
      }
      AddRetryAfterSeconds(headers, input);
      break;
    case Dialect::kXRateLimit:
      AddDate(headers, input);
      if (requests) {
        Add(headers, "X-RateLimit-Limit", requests->limit);
        Add(headers, "X-RateLimit-Remaining", requests->remaining);
        Add(headers, "X-RateLimit-Reset",
            EpochSecondsAfter(input.unix_now_ns, requests->reset_ns, rounding));
      }
      AddRetryAfterSeconds(headers, input);
      break;
    case Dialect::kGitHub:
      // GitHub's primary limit sends no retry-after: clients wait for
      // x-ratelimit-reset once x-ratelimit-remaining is 0.
      AddDate(headers, input);
      if (requests) {
        Add(headers, "x-ratelimit-limit", requests->limit);
        Add(headers, "x-ratelimit-remaining", requests->remaining);
        Add(headers, "x-ratelimit-used", requests->limit - requests->remaining);
        Add(headers, "x-ratelimit-reset",
            EpochSecondsAfter(input.unix_now_ns, requests->reset_ns, rounding));
        Add(headers, "x-ratelimit-resource", kGitHubResource);
      }
      break;
    case Dialect::kOpenAi:
      // OpenAI documents no retry-after on 429; the resets carry the wait.
      AddOpenAiFamily(headers, requests, "requests");
      AddOpenAiFamily(headers, input.tokens, "tokens");
      break;
    case Dialect::kAnthropic:
      AddDate(headers, input);
      AddAnthropicFamily(headers, input, requests, "requests");
      AddAnthropicFamily(headers, input, input.tokens, "tokens");
      AddRetryAfterSeconds(headers, input, "retry-after");
      break;
    case Dialect::kRetryAfterDate:
      AddDate(headers, input);
      if (input.retry_after_ns) {
        Add(headers, "Retry-After",
            ImfFixdate(EpochSecondsAfter(input.unix_now_ns,
                                         *input.retry_after_ns, rounding)));
      }
      break;
    case Dialect::kNone:
      break;
  }
  return headers;
}

}  // namespace pacer::mock
