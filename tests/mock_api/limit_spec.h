// Owns the "N/W" rate-limit notation used by --limit and /admin/config
// (e.g. "50/s", "600/min", "10/100ms", "5/2s"). Pure functions on values;
// safe to call from any thread.
#ifndef PACER_TESTS_MOCK_API_LIMIT_SPEC_H_
#define PACER_TESTS_MOCK_API_LIMIT_SPEC_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace pacer::mock {

// At most `limit` requests per `window_ns`.
struct LimitSpec {
  int64_t limit = 0;
  int64_t window_ns = 0;
  // The spelling the user gave (trimmed), so config replies echo what the
  // caller wrote instead of a lossy re-rendering like "0.1s" -> "100ms".
  std::string text;
};

// Parses "N/W" where N is a positive integer and W is an optional positive
// decimal number followed by a unit: ms, s, sec, second, m, min, minute, h,
// hour, d, day (word units also accept a trailing "s"). On failure returns
// nullopt and, if `error` is non-null, stores a one-line reason.
std::optional<LimitSpec> ParseLimitSpec(std::string_view text,
                                        std::string* error);

}  // namespace pacer::mock

#endif  // PACER_TESTS_MOCK_API_LIMIT_SPEC_H_
