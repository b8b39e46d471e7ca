// parse_job_spec's one implementation, over a reader of JSON values, so a
// job is validated alike whether it arrives as a nlohmann::json document (the
// command line, tests) or as simdjson elements (the broker's SUBMIT bodies,
// common/submit_body.h). Internal to common/.
//
// V is one of the readers of common/json_reader.h.
#pragma once

#include <algorithm>
#include <array>
#include <cctype>
#include <string>
#include <string_view>

#include "common/job.h"
#include "common/units.h"

namespace pacer::job_spec_reader {

template <class V>
Result<Millis> duration_field(const V& v, const char* name) {
  if (v.is_integer()) {
    auto ms = v.int64();
    if (ms && *ms < 0)
      return Error{std::string("'") + name + "' must not be negative"};
    if (!ms || *ms > kMaxDurationMs)
      return Error{std::string("'") + name + "' is too long"};
    return *ms;
  }
  if (v.is_string()) {
    auto d = parse_duration(v.string());
    if (!d) return Error{std::string("'") + name + "': " + d.error()};
    return *d;
  }
  return Error{std::string("'") + name +
               "' must be a duration string like \"10s\" or milliseconds"};
}

template <class V>
Result<JobSpec> read(const V& j) {
  if (!j.is_object()) return Error{"a job must be a JSON object"};
  static constexpr std::array<std::string_view, 13> kKnown = {
      "api",       "method",       "path",   "headers", "body",
      "body_text", "priority",     "delay",  "cost",    "key",
      "batch_key", "max_attempts", "timeout"};
  for (const auto& [key, value] : j.members()) {
    if (std::find(kKnown.begin(), kKnown.end(), key) == kKnown.end() &&
        key != "id")  // `pacer run` lets lines carry their own id
      return Error{"unknown field '" + std::string(key) + "'"};
  }
  JobSpec s;
  auto api = j.find("api");
  if (!api || !api->is_string() || api->string().empty())
    return Error{"'api' is required and must be a non-empty string"};
  s.api = api->string();

  if (auto b = j.find("body"); b && !b->is_null()) s.body = b->dump();
  if (auto b = j.find("body_text")) {
    if (!b->is_string()) return Error{"'body_text' must be a string"};
    if (s.body) return Error{"give either 'body' or 'body_text', not both"};
    s.body = b->string();
  }
  if (s.body && s.body->size() > kMaxJobBodyBytes)
    return Error{"the body is larger than 1 MiB"};

  if (auto m = j.find("method")) {
    if (!m->is_string()) return Error{"'method' must be a string"};
    s.method = m->string();
    for (char& c : s.method)
      c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    if (!is_http_token(s.method) || s.method.size() > 16)
      return Error{"invalid method '" + m->string() + "'"};
  } else {
    s.method = s.body ? "POST" : "GET";
  }

  s.path = "/";
  if (auto p = j.find("path")) {
    if (!p->is_string()) return Error{"'path' must be a string"};
    s.path = p->string();
    if (s.path.empty() || s.path[0] != '/' || s.path.rfind("//", 0) == 0)
      return Error{
          "'path' must start with a single '/' (it is relative to the "
          "API's base URL)"};
    if (s.path.find_first_of(" \r\n\t") != std::string::npos ||
        s.path.find('\0') != std::string::npos || s.path.size() > 8192)
      return Error{"'path' contains whitespace or is too long"};
  }

  if (auto h = j.find("headers"); h && !h->is_null()) {
    if (!h->is_object()) return Error{"'headers' must be an object of strings"};
    for (const auto& [name_view, value] : h->members()) {
      const std::string name(name_view);
      if (!is_http_token(name))
        return Error{"invalid header name '" + name + "'"};
      if (!value.is_string())
        return Error{"header '" + name + "' must have a string value"};
      auto v = value.string();
      if (v.find_first_of("\r\n") != std::string::npos ||
          v.find('\0') != std::string::npos)
        return Error{"header '" + name + "' contains a line break"};
      if (v.size() > kMaxHeaderValueBytes)
        return Error{"header '" + name + "' is longer than 8 KiB"};
      std::string lower = name;
      for (char& c : lower) c = static_cast<char>(std::tolower(c));
      if (lower == "host" || lower == "content-length" ||
          lower == "transfer-encoding" || lower == "connection")
        return Error{"header '" + name + "' is managed by the worker"};
      s.headers[name] = std::move(v);
    }
  }

  if (auto p = j.find("priority")) {
    if (!p->is_integer()) return Error{"'priority' must be an integer"};
    auto v = p->int64();
    if (!v || *v < -1'000'000 || *v > 1'000'000)
      return Error{"'priority' must be between -1000000 and 1000000"};
    s.priority = *v;
  }
  if (auto d = j.find("delay")) {
    auto ms = duration_field(*d, "delay");
    if (!ms) return Error{ms.error()};
    s.delay_ms = *ms;
  }
  if (auto c = j.find("cost")) {
    auto v = c->int64();
    if (!v || *v < 1) return Error{"'cost' must be an integer of at least 1"};
    if (*v > kMaxJobCost) return Error{"'cost' is more than 1000000000"};
    s.cost = *v;
  }
  if (auto k = j.find("key")) {
    if (!k->is_string()) return Error{"'key' must be a string"};
    s.key = k->string();
    if (s.key.size() > 512) return Error{"'key' is longer than 512 bytes"};
  }
  if (auto k = j.find("batch_key")) {
    if (!k->is_string()) return Error{"'batch_key' must be a string"};
    s.batch_key = k->string();
  }
  if (auto m = j.find("max_attempts")) {
    auto v = m->int64();
    if (!v || *v < 1 || *v > 1000)
      return Error{"'max_attempts' must be an integer from 1 to 1000"};
    s.max_attempts = static_cast<int>(*v);
  }
  if (auto t = j.find("timeout")) {
    auto ms = duration_field(*t, "timeout");
    if (!ms) return Error{ms.error()};
    if (*ms <= 0) return Error{"'timeout' must be positive"};
    s.timeout_ms = *ms;
  }
  return s;
}

}  // namespace pacer::job_spec_reader
