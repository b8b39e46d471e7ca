#include "common/job.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdint>

#include "common/job_spec_reader.h"
#include "common/json_reader.h"
#include "common/units.h"

namespace pacer {
namespace {

constexpr std::array<std::string_view, 7> kStateNames = {
    "queued",        "running", "succeeded", "retrying",
    "waiting_quota", "dead",    "canceled"};
constexpr std::array<std::string_view, 6> kOutcomeNames = {
    "success", "rate_limited", "transient", "permanent", "lost", "canceled"};
constexpr std::array<std::string_view, 3> kFailureClassNames = {
    "rate_limited", "transient", "permanent"};

}  // namespace

bool is_http_token(std::string_view s) {
  if (s.empty()) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) ||
           std::string_view("!#$%&'*+-.^_`|~").find(c) !=
               std::string_view::npos;
  });
}

std::string_view to_string(JobState s) {
  return kStateNames[static_cast<std::size_t>(s)];
}

std::optional<JobState> parse_job_state(std::string_view s) {
  for (std::size_t i = 0; i < kStateNames.size(); ++i)
    if (kStateNames[i] == s) return static_cast<JobState>(i);
  return std::nullopt;
}

std::string_view to_string(Outcome o) {
  return kOutcomeNames[static_cast<std::size_t>(o)];
}

std::optional<Outcome> parse_outcome(std::string_view s) {
  for (std::size_t i = 0; i < kOutcomeNames.size(); ++i)
    if (kOutcomeNames[i] == s) return static_cast<Outcome>(i);
  return std::nullopt;
}

FailureClass failure_class(Outcome o) {
  switch (o) {
    case Outcome::kRateLimited:
      return FailureClass::kRateLimited;
    case Outcome::kTransient:
    case Outcome::kLost:
      return FailureClass::kTransient;
    case Outcome::kPermanent:
    // Neither ends a dead job; should one, retrying is no remedy.
    case Outcome::kSuccess:
    case Outcome::kCanceled:
      return FailureClass::kPermanent;
  }
  return FailureClass::kPermanent;
}

std::string_view to_string(FailureClass c) {
  return kFailureClassNames[static_cast<std::size_t>(c)];
}

std::optional<FailureClass> parse_failure_class(std::string_view s) {
  for (std::size_t i = 0; i < kFailureClassNames.size(); ++i)
    if (kFailureClassNames[i] == s) return static_cast<FailureClass>(i);
  return std::nullopt;
}

Outcome classify_status(int status) {
  if (status >= 200 && status < 300) return Outcome::kSuccess;
  if (status == 429) return Outcome::kRateLimited;
  if (status == 0 || status >= 500 || status == 408) return Outcome::kTransient;
  return Outcome::kPermanent;
}

nlohmann::json JobSpec::to_json() const {
  nlohmann::json j = {{"api", api}, {"method", method}, {"path", path}};
  if (!headers.empty()) j["headers"] = headers;
  if (body) j["body_text"] = *body;
  if (priority) j["priority"] = priority;
  if (delay_ms) j["delay"] = delay_ms;
  if (cost != 1) j["cost"] = cost;
  if (!key.empty()) j["key"] = key;
  if (!batch_key.empty()) j["batch_key"] = batch_key;
  if (max_attempts) j["max_attempts"] = *max_attempts;
  if (timeout_ms) j["timeout"] = *timeout_ms;
  return j;
}

Result<JobSpec> parse_job_spec(const nlohmann::json& j) {
  return job_spec_reader::read(json_reader::DocumentValue(j));
}

}  // namespace pacer
