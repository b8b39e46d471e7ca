#include "tests/mock_api/limit_spec.h"

#include <array>
#include <cctype>
#include <cmath>
#include <stdexcept>
#include <utility>

namespace pacer::mock {
namespace {

constexpr int64_t kNsPerMs = 1'000'000;
constexpr int64_t kNsPerSecond = 1'000 * kNsPerMs;
// Bounds keep every derived quantity (N * W in the limiters) comfortably
// inside 128-bit arithmetic and reject obvious typos like "50/s0000000".
constexpr int64_t kMaxLimit = 1'000'000'000'000;
constexpr int64_t kMaxWindowNs = 366 * 86'400 * kNsPerSecond;
constexpr char kExpected[] =
    "expected N/W such as 50/s, 600/min, 10/100ms, 5/2s";

struct Unit {
  std::string_view name;
  int64_t ns;
};

constexpr std::array<Unit, 17> kUnits = {{
    {"ms", kNsPerMs},
    {"s", kNsPerSecond},
    {"sec", kNsPerSecond},
    {"secs", kNsPerSecond},
    {"second", kNsPerSecond},
    {"seconds", kNsPerSecond},
    {"m", 60 * kNsPerSecond},
    {"min", 60 * kNsPerSecond},
    {"mins", 60 * kNsPerSecond},
    {"minute", 60 * kNsPerSecond},
    {"minutes", 60 * kNsPerSecond},
    {"h", 3'600 * kNsPerSecond},
    {"hour", 3'600 * kNsPerSecond},
    {"hours", 3'600 * kNsPerSecond},
    {"d", 86'400 * kNsPerSecond},
    {"day", 86'400 * kNsPerSecond},
    {"days", 86'400 * kNsPerSecond},
}};

std::string_view Trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) {
    s.remove_prefix(1);
  }
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) {
    s.remove_suffix(1);
  }
  return s;
}

std::optional<int64_t> UnitNs(std::string_view unit) {
  for (const Unit& u : kUnits) {
    if (u.name == unit) return u.ns;
  }
  return std::nullopt;
}

std::optional<LimitSpec> Fail(std::string* error, std::string message) {
  if (error != nullptr) *error = std::move(message);
  return std::nullopt;
}

}  // namespace

std::optional<LimitSpec> ParseLimitSpec(std::string_view text,
                                        std::string* error) {
  const std::string_view trimmed = Trim(text);
  // Built by appending: GCC 12 at -O3 emits a false -Wrestrict for
  // `"'" + std::string(...)`.
  std::string prefix = "invalid limit '";
  prefix.append(trimmed);
  prefix.append("': ");

  const size_t slash = trimmed.find('/');
  if (slash == std::string_view::npos ||
      trimmed.find('/', slash + 1) != std::string_view::npos) {
    return Fail(error, prefix + kExpected);
  }

  const std::string_view count_text = Trim(trimmed.substr(0, slash));
  if (count_text.empty()) {
    return Fail(error, prefix + "missing request count N; " + kExpected);
  }
  int64_t limit = 0;
  for (char c : count_text) {
    if (!std::isdigit(static_cast<unsigned char>(c))) {
      return Fail(error, prefix + "request count N must be a positive integer");
    }
    limit = limit * 10 + (c - '0');
    if (limit > kMaxLimit) {
      return Fail(error, prefix + "request count N is too large");
    }
  }
  if (limit < 1) {
    return Fail(error, prefix + "request count N must be at least 1");
  }

  std::string_view window_text = Trim(trimmed.substr(slash + 1));
  size_t number_end = 0;
  bool seen_dot = false;
  bool seen_digit = false;
  while (number_end < window_text.size()) {
    const char c = window_text[number_end];
    if (std::isdigit(static_cast<unsigned char>(c))) {
      seen_digit = true;
    } else if (c == '.' && !seen_dot) {
      seen_dot = true;
    } else {
      break;
    }
    ++number_end;
  }
  if (number_end > 0 && !seen_digit) {
    return Fail(error, prefix + "malformed window length");
  }
  long double multiplier = 1.0L;
  if (number_end > 0) {
    try {
      multiplier = std::stold(std::string(window_text.substr(0, number_end)));
    } catch (const std::out_of_range&) {
      return Fail(error, prefix + "window length out of range");
    }
  }
  std::string unit(Trim(window_text.substr(number_end)));
  for (char& c : unit) {
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  if (unit.empty()) {
    return Fail(error, prefix +
                           "missing window unit (ms, s, sec, second, m, min, "
                           "minute, h, hour, d, day)");
  }
  const std::optional<int64_t> unit_ns = UnitNs(unit);
  if (!unit_ns) {
    return Fail(error, prefix + "unknown window unit '" + unit +
                           "' (expected ms, s, sec, second, m, min, minute, h, "
                           "hour, d, day)");
  }

  const long double window = multiplier * static_cast<long double>(*unit_ns);
  if (!(window >= 1.0L)) {
    return Fail(error, prefix + "window must be at least 1 ns");
  }
  if (window > static_cast<long double>(kMaxWindowNs)) {
    return Fail(error, prefix + "window longer than a year");
  }

  LimitSpec spec;
  spec.limit = limit;
  spec.window_ns = static_cast<int64_t>(std::llround(window));
  spec.text = std::string(trimmed);
  return spec;
}

}  // namespace pacer::mock
