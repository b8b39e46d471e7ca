// LimitSpec: one quota, "at most `amount` units started in any interval of
// length `window_ms`", parsed from the configuration's limit strings:
//   "50/s", "600/min", "10000/day", "1/50ms", "90000 tokens/min",
//   "20 requests/2s".
// A limit whose unit is "requests" is charged 1 per HTTP call; any other unit
// (tokens, credits, ...) is charged the job's cost. Values; thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/clock.h"
#include "common/result.h"

namespace pacer {

struct LimitSpec {
  std::int64_t amount = 0;
  Millis window_ms = 0;
  std::string unit = "requests";

  bool counts_requests() const { return unit == "requests"; }
  // The canonical text form, e.g. "50/1s" or "90000 tokens/1m0s".
  std::string to_string() const;
  friend bool operator==(const LimitSpec&, const LimitSpec&) = default;
};

Result<LimitSpec> parse_limit(std::string_view text);

}  // namespace pacer
