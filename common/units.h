// Parsing of the human-written quantities in configuration files and job
// specs: durations ("250ms", "2s", "5min", "1.5h", "7d") and byte sizes
// ("64KiB", "1MB"). Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/clock.h"
#include "common/result.h"

namespace pacer {

// The longest duration accepted anywhere (about 95 years): keeps `now + d`
// far from overflow.
inline constexpr Millis kMaxDurationMs = 3'000'000'000'000;

// `s` without leading and trailing whitespace.
std::string_view trim(std::string_view s);

// A duration in milliseconds. A bare number is rejected (the unit is the
// whole point); callers that accept plain milliseconds check for a number
// first.
Result<Millis> parse_duration(std::string_view text);

// A byte count: a bare integer, or a number with B, KB, KiB, MB, MiB, GB, GiB.
Result<std::int64_t> parse_size(std::string_view text);

// "1500ms", "2s", "1m30s" style rendering for messages.
std::string format_duration(Millis ms);

}  // namespace pacer
