#include "common/job.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdint>

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

// The value of an integer that fits std::int64_t (nlohmann's get<> would
// wrap an unsigned 2^64-1 to -1, or narrow 2^32+1 to 1 for get<int>).
std::optional<std::int64_t> as_int64(const nlohmann::json& v) {
  if (v.is_number_unsigned()) {
    auto u = v.get<std::uint64_t>();
    if (u > static_cast<std::uint64_t>(INT64_MAX)) return std::nullopt;
    return static_cast<std::int64_t>(u);
  }
  if (v.is_number_integer()) return v.get<std::int64_t>();
  return std::nullopt;
}

Result<Millis> duration_field(const nlohmann::json& v, const char* name) {
  if (v.is_number_integer()) {
    auto ms = as_int64(v);
    if (ms && *ms < 0)
      return Error{std::string("'") + name + "' must not be negative"};
    if (!ms || *ms > kMaxDurationMs)
      return Error{std::string("'") + name + "' is too long"};
    return *ms;
  }
  if (v.is_string()) {
    auto d = parse_duration(v.get<std::string>());
    if (!d) return Error{std::string("'") + name + "': " + d.error()};
    return *d;
  }
  return Error{std::string("'") + name +
               "' must be a duration string like \"10s\" or milliseconds"};
}

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
  if (!j.is_object()) return Error{"a job must be a JSON object"};
  static const std::array<std::string_view, 13> kKnown = {
      "api",       "method",       "path",   "headers", "body",
      "body_text", "priority",     "delay",  "cost",    "key",
      "batch_key", "max_attempts", "timeout"};
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (std::find(kKnown.begin(), kKnown.end(), it.key()) == kKnown.end() &&
        it.key() != "id")  // `pacer run` lets lines carry their own id
      return Error{"unknown field '" + it.key() + "'"};
  }
  JobSpec s;
  auto api = j.find("api");
  if (api == j.end() || !api->is_string() || api->get<std::string>().empty())
    return Error{"'api' is required and must be a non-empty string"};
  s.api = api->get<std::string>();

  if (auto b = j.find("body"); b != j.end() && !b->is_null()) {
    s.body = b->dump();
  }
  if (auto b = j.find("body_text"); b != j.end()) {
    if (!b->is_string()) return Error{"'body_text' must be a string"};
    if (s.body) return Error{"give either 'body' or 'body_text', not both"};
    s.body = b->get<std::string>();
  }
  if (s.body && s.body->size() > kMaxJobBodyBytes)
    return Error{"the body is larger than 1 MiB"};

  if (auto m = j.find("method"); m != j.end()) {
    if (!m->is_string()) return Error{"'method' must be a string"};
    s.method = m->get<std::string>();
    for (char& c : s.method)
      c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    if (!is_http_token(s.method) || s.method.size() > 16)
      return Error{"invalid method '" + m->get<std::string>() + "'"};
  } else {
    s.method = s.body ? "POST" : "GET";
  }

  s.path = "/";
  if (auto p = j.find("path"); p != j.end()) {
    if (!p->is_string()) return Error{"'path' must be a string"};
    s.path = p->get<std::string>();
    if (s.path.empty() || s.path[0] != '/' || s.path.rfind("//", 0) == 0)
      return Error{
          "'path' must start with a single '/' (it is relative to the "
          "API's base URL)"};
    if (s.path.find_first_of(" \r\n\t") != std::string::npos ||
        s.path.find('\0') != std::string::npos || s.path.size() > 8192)
      return Error{"'path' contains whitespace or is too long"};
  }

  if (auto h = j.find("headers"); h != j.end() && !h->is_null()) {
    if (!h->is_object()) return Error{"'headers' must be an object of strings"};
    for (auto it = h->begin(); it != h->end(); ++it) {
      if (!is_http_token(it.key()))
        return Error{"invalid header name '" + it.key() + "'"};
      if (!it->is_string())
        return Error{"header '" + it.key() + "' must have a string value"};
      auto v = it->get<std::string>();
      if (v.find_first_of("\r\n") != std::string::npos ||
          v.find('\0') != std::string::npos)
        return Error{"header '" + it.key() + "' contains a line break"};
      if (v.size() > kMaxHeaderValueBytes)
        return Error{"header '" + it.key() + "' is longer than 8 KiB"};
      std::string lower = it.key();
      for (char& c : lower) c = static_cast<char>(std::tolower(c));
      if (lower == "host" || lower == "content-length" ||
          lower == "transfer-encoding" || lower == "connection")
        return Error{"header '" + it.key() + "' is managed by the worker"};
      s.headers[it.key()] = v;
    }
  }

  if (auto p = j.find("priority"); p != j.end()) {
    if (!p->is_number_integer()) return Error{"'priority' must be an integer"};
    auto v = as_int64(*p);
    if (!v || *v < -1'000'000 || *v > 1'000'000)
      return Error{"'priority' must be between -1000000 and 1000000"};
    s.priority = *v;
  }
  if (auto d = j.find("delay"); d != j.end()) {
    auto ms = duration_field(*d, "delay");
    if (!ms) return Error{ms.error()};
    s.delay_ms = *ms;
  }
  if (auto c = j.find("cost"); c != j.end()) {
    auto v = as_int64(*c);
    if (!v || *v < 1) return Error{"'cost' must be an integer of at least 1"};
    s.cost = *v;
  }
  if (auto k = j.find("key"); k != j.end()) {
    if (!k->is_string()) return Error{"'key' must be a string"};
    s.key = k->get<std::string>();
    if (s.key.size() > 512) return Error{"'key' is longer than 512 bytes"};
  }
  if (auto k = j.find("batch_key"); k != j.end()) {
    if (!k->is_string()) return Error{"'batch_key' must be a string"};
    s.batch_key = k->get<std::string>();
  }
  if (auto m = j.find("max_attempts"); m != j.end()) {
    auto v = as_int64(*m);
    if (!v || *v < 1 || *v > 1000)
      return Error{"'max_attempts' must be an integer from 1 to 1000"};
    s.max_attempts = static_cast<int>(*v);
  }
  if (auto t = j.find("timeout"); t != j.end()) {
    auto ms = duration_field(*t, "timeout");
    if (!ms) return Error{ms.error()};
    if (*ms <= 0) return Error{"'timeout' must be positive"};
    s.timeout_ms = *ms;
  }
  return s;
}

}  // namespace pacer
