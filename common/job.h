// The job model shared by every process: job states and outcome classes (with
// the fixed string forms used on the wire and in the database), and JobSpec,
// what a user submits, with its validation. Values; thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "common/clock.h"
#include "common/result.h"

namespace pacer {

using JobId = std::int64_t;

// Mirrored by the CHECK constraint on jobs.state in schema/001_init.sql.
enum class JobState : std::uint8_t {
  kQueued = 0,
  kRunning = 1,
  kSucceeded = 2,
  kRetrying = 3,
  kWaitingQuota = 4,
  kDead = 5,
  kCanceled = 6,
};

std::string_view to_string(JobState s);
std::optional<JobState> parse_job_state(std::string_view s);
inline bool is_final(JobState s) {
  return s == JobState::kSucceeded || s == JobState::kDead ||
         s == JobState::kCanceled;
}

// How one attempt ended (DESIGN §6). kLost: the worker vanished mid-attempt.
enum class Outcome : std::uint8_t {
  kSuccess = 0,
  kRateLimited = 1,
  kTransient = 2,
  kPermanent = 3,
  kLost = 4,
  kCanceled = 5,
};

std::string_view to_string(Outcome o);
std::optional<Outcome> parse_outcome(std::string_view s);

inline constexpr Outcome kAllOutcomes[] = {
    Outcome::kSuccess,   Outcome::kRateLimited, Outcome::kTransient,
    Outcome::kPermanent, Outcome::kLost,        Outcome::kCanceled};

// The class of the failure that killed a dead job, derived from its last
// outcome (the dead-letter listing and replay filter on it; the table is in
// schema/wire_protocol.md). Every Outcome maps to exactly one class.
enum class FailureClass : std::uint8_t {
  kRateLimited = 0,  // a quota wait passed its deadline
  kTransient = 1,    // attempts exhausted on retryable failures
  kPermanent = 2,    // a failure retrying cannot fix
};

FailureClass failure_class(Outcome o);
std::string_view to_string(FailureClass c);
std::optional<FailureClass> parse_failure_class(std::string_view s);

// An HTTP token (RFC 9110 §5.6.2): a method or a header field name.
bool is_http_token(std::string_view s);

// Default classification of an HTTP status (0 = no response).
Outcome classify_status(int status);

inline constexpr std::size_t kMaxJobBodyBytes = 1 << 20;
inline constexpr std::size_t kMaxHeaderValueBytes = 8 << 10;
inline constexpr std::size_t kMaxJobsPerSubmit = 10'000;
// A job's cost, in its lane's units (tokens, say): a billion is far above
// any real call, and keeps every sum of costs a limiter or a lane makes
// exact and far from overflow.
inline constexpr std::int64_t kMaxJobCost = 1'000'000'000;

// What a user submits (one JSONL line of `pacer submit --file`).
struct JobSpec {
  std::string api;
  std::string method;  // upper case
  std::string path;    // starts with '/'
  std::map<std::string, std::string> headers;
  std::optional<std::string> body;  // serialized request body
  std::int64_t priority = 0;
  Millis delay_ms = 0;
  std::int64_t cost = 1;
  std::string key;        // idempotency key, may be empty
  std::string batch_key;  // may be empty
  std::optional<int> max_attempts;
  std::optional<Millis> timeout_ms;

  nlohmann::json to_json() const;
};

// Validates and normalizes one job object. Errors name the field.
Result<JobSpec> parse_job_spec(const nlohmann::json& j);

}  // namespace pacer
