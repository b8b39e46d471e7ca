// `pacer probe`: what one response says about rate limits, read from a saved
// response head (--headers FILE) or from one real request to a URL (libcurl),
// parsed by common/ratelimit.h. describe_observation() is the text for a
// person; probe() does the I/O. Not thread-safe (one command's state).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "client/commands.h"
#include "common/clock.h"
#include "common/ratelimit.h"

namespace pacer::client {

struct ProbeOptions {
  // From a file: a raw response head ("-" reads standard input).
  std::string headers_file;
  std::optional<int> status;     // overrides the status line's
  std::optional<Millis> now_ms;  // received_unix_ms; default: now
  // From a request.
  std::string url;
  std::string method;                // default GET, POST with data
  std::vector<std::string> headers;  // "Name: value"
  std::optional<std::string> data;
  Millis timeout_ms = 10'000;
  // Both.
  std::string dialect = "auto";
};

// Runs the probe: --headers mode prints the observation as JSON; URL mode
// prints describe_observation() (the observation with --json). Exit codes:
// 0 printed, 1 the file or the request failed, 2 usage.
int probe(Session& s, const ProbeOptions& o);

// The observation for a person: the status and verdict, the limits found
// (source/name, unit, limit, remaining, window, resets in), what they mean
// and what pacer would do about them.
std::string describe_observation(const Observation& obs);

// "12.0 s", or "300.0 s (5m0s)" for longer waits.
std::string wait_text(Millis ms);

}  // namespace pacer::client
