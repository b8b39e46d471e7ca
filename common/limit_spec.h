// LimitSpec: one quota, parsed from the configuration's limit strings.
//   "50/s", "600/min", "10000/day", "1/50ms", "90000 tokens/min",
//   "20 requests/2s": a window, "at most `amount` units started in any
//   interval of length `window_ms`".
//   "20/s burst 10", "20/s burst 0": a leaky bucket (nginx's limit_req, a
//   GCRA), "`amount` per `window_ms` on average, and at most `burst` units
//   ahead of that pace": burst + 1 at once after a quiet spell, then one
//   every window/amount. Burst 0 spaces starts evenly.
// A limit whose unit is "requests" is charged 1 per HTTP call; any other unit
// (tokens, credits, ...) is charged the job's cost. Values; thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/clock.h"
#include "common/result.h"

namespace pacer {

struct LimitSpec {
  std::int64_t amount = 0;
  Millis window_ms = 0;
  std::string unit = "requests";
  // Set for a leaky bucket: the units it admits ahead of its pace.
  std::optional<std::int64_t> burst = std::nullopt;

  bool counts_requests() const { return unit == "requests"; }
  bool leaky() const { return burst.has_value(); }
  // The canonical text form, e.g. "50/1s", "90000 tokens/1m0s" or
  // "20/1s burst 10".
  std::string to_string() const;
  friend bool operator==(const LimitSpec&, const LimitSpec&) = default;
};

Result<LimitSpec> parse_limit(std::string_view text);

}  // namespace pacer
