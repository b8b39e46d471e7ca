#include "worker/request.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <tuple>

#include "common/json_limits.h"
#include "common/json_reader.h"
#include "common/json_text.h"
#include "common/ratelimit.h"
#include "common/redact.h"

namespace pacer::worker {
namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' ||
                        s.back() == '\r' || s.back() == '\n'))
    s.remove_suffix(1);
  return s;
}

using json_reader::DocumentValue;
using json_reader::ElementValue;

// An integer that fits std::int64_t (nlohmann's get<> would wrap values past
// INT64_MAX).
template <class V>
std::optional<std::int64_t> integer_field(const V& j, std::string_view key) {
  auto v = j.find(key);
  if (!v) return std::nullopt;
  return v->int64();
}
std::optional<std::int64_t> integer_field(const nlohmann::json& j,
                                          std::string_view key) {
  return integer_field(DocumentValue(j), key);
}

// The parts of a URL that confinement compares, with curl's handle.
struct ParsedUrl {
  UrlHandle handle;
  std::string scheme, host, port, path;
  bool has_userinfo = false;
};

std::optional<std::string> url_part(const CURLU* u, CURLUPart part,
                                    unsigned flags = 0) {
  char* p = nullptr;
  // curl_url_get takes a non-const handle but does not modify it.
  if (curl_url_get(const_cast<CURLU*>(u), part, &p, flags) != CURLUE_OK ||
      p == nullptr)
    return std::nullopt;
  std::string s(p);
  curl_free(p);
  return s;
}

Result<ParsedUrl> parse_url(const std::string& url) {
  ParsedUrl p;
  p.handle.reset(curl_url());
  if (!p.handle) return Error{"invalid URL: out of memory"};
  CURLU* u = p.handle.get();
  // Without CURLU_PATH_AS_IS curl removes dot segments.
  CURLUcode rc = curl_url_set(u, CURLUPART_URL, url.c_str(), 0);
  if (rc != CURLUE_OK)
    return Error{std::string("invalid URL: ") + curl_url_strerror(rc)};
  auto scheme = url_part(u, CURLUPART_SCHEME);
  auto host = url_part(u, CURLUPART_HOST);
  auto port = url_part(u, CURLUPART_PORT, CURLU_DEFAULT_PORT);
  auto path = url_part(u, CURLUPART_PATH);
  if (!scheme || !host || !port || !path)
    return Error{"invalid URL: missing scheme, host or port"};
  p.scheme = lower(*scheme);
  p.host = lower(*host);
  p.port = *port;
  p.path = *path;
  p.has_userinfo = url_part(u, CURLUPART_USER).has_value() ||
                   url_part(u, CURLUPART_PASSWORD).has_value();
  if (p.scheme != "http" && p.scheme != "https")
    return Error{"invalid URL: only http and https are allowed"};
  return p;
}

// %2e is an encoded '.', which servers decode before resolving dot segments;
// decode it (in the path only) so curl's normalization sees the segment.
std::string decode_dots(std::string_view path) {
  if (path.find('%') == std::string_view::npos) return std::string(path);
  std::string out;
  out.reserve(path.size());
  std::size_t end = path.find_first_of("?#");
  if (end == std::string_view::npos) end = path.size();
  for (std::size_t i = 0; i < path.size(); ++i) {
    if (i + 2 < end && path[i] == '%' && path[i + 1] == '2' &&
        (path[i + 2] == 'e' || path[i + 2] == 'E')) {
      out += '.';
      i += 2;
    } else {
      out += path[i];
    }
  }
  return out;
}

// After normalization no "." or ".." segment may remain behind separators
// some servers also split on: '\' and encoded '/' or '\'.
bool has_hidden_dot_segment(std::string_view path) {
  if (path.find('.') == std::string_view::npos) return false;
  std::string s = lower(path);
  for (std::string_view sep : {"%2f", "%5c", "\\"}) {
    for (std::size_t pos; (pos = s.find(sep)) != std::string::npos;)
      s.replace(pos, sep.size(), "/");
  }
  std::size_t start = 0;
  while (start <= s.size()) {
    std::size_t slash = s.find('/', start);
    if (slash == std::string::npos) slash = s.size();
    std::string_view seg(s.data() + start, slash - start);
    if (seg == "." || seg == "..") return true;
    start = slash + 1;
  }
  return false;
}

// A body: absent or null is none, else it must be a string.
template <class V>
Result<std::optional<std::string>> optional_body(const V& j,
                                                 const std::string& name) {
  auto b = j.find("body");
  if (!b || b->is_null()) return std::optional<std::string>();
  if (!b->is_string()) return Error{"'" + name + "' must be a string"};
  return std::optional<std::string>(b->string());
}

// The fields of the HTTP call a Job and a batch job share: api, method
// (default `default_method`), path, headers and timeout_ms.
template <class V>
Result<Ok> parse_call(const V& j, const char* default_method, Job& job) {
  auto api = j.find("api");
  if (!api || !api->is_string() || api->string().empty())
    return Error{"'api' must be a non-empty string"};
  job.api = api->string();
  if (auto m = j.find("method")) {
    if (!m->is_string()) return Error{"'method' must be a string"};
    job.method = m->string();
  } else {
    job.method = default_method;
  }
  if (!valid_method(job.method))
    return Error{"'method' is not a valid HTTP method"};
  if (auto p = j.find("path")) {
    if (!p->is_string()) return Error{"'path' must be a string"};
    job.path = p->string();
  } else {
    job.path = "/";
  }
  if (auto h = j.find("headers"); h && !h->is_null()) {
    if (!h->is_object()) return Error{"'headers' must be an object of strings"};
    for (const auto& [name, value] : h->members()) {
      if (!value.is_string())
        return Error{"'headers." + std::string(name) + "' must be a string"};
      job.headers.emplace_back(std::string(name), value.string());
    }
  }
  if (auto t = j.find("timeout_ms"); t && !t->is_null()) {
    auto ms = t->int64();
    if (!ms || *ms <= 0)
      return Error{"'timeout_ms' must be a positive integer"};
    job.timeout_ms = *ms;
  }
  return Ok{};
}

template <class V>
Result<Job> read_job(const V& j) {
  if (!j.is_object()) return Error{"a job must be a JSON object"};
  Job job;
  auto id = integer_field(j, "id");
  if (!id) return Error{"'id' must be an integer"};
  job.id = *id;
  auto attempt = integer_field(j, "attempt");
  if (!attempt) return Error{"'attempt' must be an integer"};
  job.attempt = *attempt;
  auto body = optional_body(j, "body");
  if (!body) return Error{body.error()};
  job.body = std::move(*body);
  auto call = parse_call(j, job.body ? "POST" : "GET", job);
  if (!call) return Error{call.error()};
  return job;
}

template <class V>
std::optional<std::pair<JobId, std::int64_t>> read_job_ids(const V& j) {
  if (!j.is_object()) return std::nullopt;
  auto id = integer_field(j, "id");
  auto attempt = integer_field(j, "attempt");
  if (!id || !attempt) return std::nullopt;
  return std::make_pair(*id, *attempt);
}

// A batch's members: 1..max_items objects with integer id and attempt.
Result<Ok> parse_members(const nlohmann::json& j, BatchJob& out) {
  auto members = j.find("members");
  const auto max = static_cast<std::size_t>(out.batch.spec.max_items);
  if (members == j.end() || !members->is_array() || members->empty() ||
      members->size() > max)
    return Error{"'members' must be an array of 1.." + std::to_string(max) +
                 " members (spec.max_items)"};
  for (std::size_t i = 0; i < members->size(); ++i) {
    const auto& m = (*members)[i];
    const std::string name = "members[" + std::to_string(i) + "]";
    if (!m.is_object()) return Error{"'" + name + "' must be an object"};
    auto id = integer_field(m, "id");
    if (!id) return Error{"'" + name + ".id' must be an integer"};
    auto attempt = integer_field(m, "attempt");
    if (!attempt) return Error{"'" + name + ".attempt' must be an integer"};
    auto body = optional_body(DocumentValue(m), name + ".body");
    if (!body) return Error{body.error()};
    out.batch.members.push_back({*id, *attempt});
    out.bodies.push_back(std::move(*body));
  }
  return Ok{};
}

}  // namespace

Result<Job> parse_job(const nlohmann::json& j) {
  return read_job(DocumentValue(j));
}
Result<Job> parse_job_element(const json_reader::ElementValue& j) {
  return read_job(j);
}

bool is_batch_job(const nlohmann::json& j) {
  if (!j.is_object()) return false;
  auto it = j.find("batch");
  return it != j.end() && !it->is_null();
}

std::optional<std::int64_t> batch_id(const nlohmann::json& j) {
  if (!j.is_object()) return std::nullopt;
  auto id = integer_field(j, "batch");
  if (!id || *id <= 0) return std::nullopt;
  return id;
}

Result<BatchJob> parse_batch_job(const nlohmann::json& j) {
  if (!j.is_object()) return Error{"a batch job must be a JSON object"};
  BatchJob job;
  auto id = batch_id(j);
  if (!id) return Error{"'batch' must be a positive integer"};
  job.batch.id = *id;
  auto call = parse_call(DocumentValue(j), "POST", job.call);
  if (!call) return Error{call.error()};
  auto spec = j.find("spec");
  if (spec == j.end()) return Error{"'spec' is required"};
  auto config = batch_spec_from_json(*spec);
  if (!config) return Error{config.error()};
  job.batch.spec = std::move(*config);
  auto members = parse_members(j, job);
  if (!members) return Error{members.error()};
  return job;
}

std::optional<std::pair<JobId, std::int64_t>> job_ids(const nlohmann::json& j) {
  return read_job_ids(DocumentValue(j));
}
std::optional<std::pair<JobId, std::int64_t>> job_ids_element(
    const json_reader::ElementValue& j) {
  return read_job_ids(j);
}

void JobResult::write_json(std::string& out) const {
  namespace jt = json_text;
  out += "{\"outcome\":";
  jt::append_string(out, to_string(outcome));
  out += ",\"status\":";
  jt::append_number(out, std::int64_t{status});
  out += ",\"error\":";
  jt::append_string(out, error);
  out += ",\"headers\":{";
  bool first = true;
  for (const auto& [k, v] : headers) {
    if (!std::exchange(first, false)) out += ',';
    jt::append_key(out, k);
    jt::append_string(out, v);
  }
  out += "},\"started_ms\":";
  jt::append_number(out, std::int64_t{started_ms});
  out += ",\"duration_ms\":";
  jt::append_number(out, duration_ms);
  out += ",\"observation\":";
  out += observation.dump(-1, ' ', false,
                          nlohmann::json::error_handler_t::replace);
  if (batch) {
    out += ",\"batch\":";
    jt::append_number(out, *batch);
  } else {
    out += ",\"id\":";
    jt::append_number(out, std::int64_t{id});
    out += ",\"attempt\":";
    jt::append_number(out, attempt);
  }
  if (members) {
    // The members' shares replace the call's body.
    out += ",\"members\":[";
    first = true;
    for (const auto& m : *members) {
      if (!std::exchange(first, false)) out += ',';
      out += "{\"id\":";
      jt::append_number(out, std::int64_t{m.member.id});
      out += ",\"attempt\":";
      jt::append_number(out, std::int64_t{m.member.attempt});
      out += m.item.ok ? ",\"ok\":true" : ",\"ok\":false";
      out += ",\"body\":";
      jt::append_string(out, m.item.body);
      out += m.body_truncated ? ",\"body_truncated\":true"
                              : ",\"body_truncated\":false";
      if (!m.item.ok) {
        out += ",\"error\":";
        jt::append_string(out, m.item.error);
      }
      if (m.item.status) {
        out += ",\"status\":";
        jt::append_number(out, std::int64_t{*m.item.status});
      }
      out += '}';
    }
    out += ']';
  } else {
    if (split_error) {
      out += ",\"split_error\":";
      jt::append_string(out, *split_error);
    }
    out += ",\"body\":";
    jt::append_string(out, body);
    out += body_truncated ? ",\"body_truncated\":true"
                          : ",\"body_truncated\":false";
  }
  if (actual_cost) {
    out += ",\"actual_cost\":";
    jt::append_number(out, *actual_cost);
  }
  out += '}';
}

nlohmann::json JobResult::to_json() const {
  std::string text;
  write_json(text);
  return nlohmann::json::parse(text);
}

std::optional<double> read_actual_cost(std::string_view body,
                                       const std::string& pointer) {
  if (pointer.empty() || body.empty()) return std::nullopt;
  if (json_depth(body) > kMaxJsonDepth) return std::nullopt;
  auto j = nlohmann::json::parse(body, nullptr, false);
  if (j.is_discarded()) return std::nullopt;
  try {
    const auto& v = j.at(nlohmann::json::json_pointer(pointer));
    if (!v.is_number()) return std::nullopt;
    double d = v.get<double>();
    if (!std::isfinite(d) || d < 0) return std::nullopt;
    return d;
  } catch (const nlohmann::json::exception&) {
    return std::nullopt;
  }
}

JobResult refusal(JobId id, std::int64_t attempt, Outcome outcome,
                  std::string error, Millis now_ms) {
  JobResult r;
  r.id = id;
  r.attempt = attempt;
  r.outcome = outcome;
  r.error = std::move(error);
  r.started_ms = now_ms;
  return r;
}

std::optional<JobResult> addressee(const nlohmann::json& j) {
  JobResult r;
  if (is_batch_job(j)) {
    auto id = batch_id(j);
    if (!id) return std::nullopt;
    r.batch = *id;
  } else {
    auto ids = job_ids(j);
    if (!ids) return std::nullopt;
    std::tie(r.id, r.attempt) = *ids;
  }
  return r;
}

JobResult result_for(const HttpRequest& request, Millis started_ms) {
  JobResult r;
  r.id = request.id;
  r.attempt = request.attempt;
  if (request.batch) r.batch = request.batch->id;
  r.session = request.session;
  r.started_ms = started_ms;
  return r;
}

JobResult refusal(const HttpRequest& request, Outcome outcome,
                  std::string error, Millis now_ms) {
  JobResult r = result_for(request, now_ms);
  r.outcome = outcome;
  r.error = std::move(error);
  return r;
}

Result<HeaderList> expand_credentials(const ApiConfig& api) {
  HeaderList out;
  for (const auto& [key, value] : api.headers) {
    std::string where = "api." + api.name + ".headers." + key + ": ";
    if (!is_http_token(key)) return Error{where + "not a valid header name"};
    auto expanded = expand_env(value);
    if (!expanded) return Error{where + expanded.error()};
    if (expanded->find_first_of(std::string_view("\r\n\0", 3)) !=
        std::string::npos)
      return Error{where + "the value contains a line break or NUL"};
    out.emplace_back(key, std::move(*expanded));
  }
  return out;
}

Result<BaseUrl> parse_base_url(std::string_view url) {
  auto p = parse_url(std::string(url));
  if (!p) return Error{p.error()};
  BaseUrl b;
  b.url = std::string(url);
  b.scheme = std::move(p->scheme);
  b.host = std::move(p->host);
  b.port = std::move(p->port);
  b.prefix = std::move(p->path);
  while (!b.prefix.empty() && b.prefix.back() == '/') b.prefix.pop_back();
  b.has_userinfo = p->has_userinfo;
  std::string host =
      b.host.find(':') != std::string::npos ? "[" + b.host + "]" : b.host;
  b.origin = b.scheme + "://" + host + ":" + b.port;
  return b;
}

Result<ApiRoute> make_route(const ApiConfig& api) {
  auto credentials = expand_credentials(api);
  if (!credentials) return Error{credentials.error()};
  auto base = parse_base_url(api.base_url);
  if (!base) return Error{"api." + api.name + ".base_url: " + base.error()};
  ApiRoute route;
  route.name = api.name;
  route.base = std::move(*base);
  route.credentials = std::move(*credentials);
  route.timeout_ms = api.timeout_ms;
  route.dialect = api.dialect;
  route.actual_cost = api.actual_cost;
  for (const auto& [name, value] : route.credentials) {
    std::string lower = name;
    for (char& c : lower)
      c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    bool secret = false;
    for (const char* word : {"auth", "key", "token", "secret", "cookie",
                             "password", "signature", "credential"})
      if (lower.find(word) != std::string::npos) secret = true;
    for (const auto& [raw_name, raw] : api.headers)
      if (raw_name == name && raw.find("${") != std::string::npos)
        secret = true;
    if (secret) route.secrets.push_back(value);
  }
  return route;
}

std::string url_text(const CURLU* url) {
  return url_part(url, CURLUPART_URL).value_or("");
}

Result<UrlHandle> confine(const BaseUrl& base, std::string_view path) {
  if (path.empty() || path.front() != '/')
    return Error{std::string(kEscapeError)};
  auto target = parse_url(base.url + decode_dots(path));
  if (!target) return Error{target.error()};
  const std::string& p = target->path;
  const std::string& prefix = base.prefix;
  bool under = prefix.empty() || p == prefix ||
               (p.size() > prefix.size() && p.starts_with(prefix) &&
                p[prefix.size()] == '/');
  if (target->scheme != base.scheme || target->host != base.host ||
      target->port != base.port || target->has_userinfo != base.has_userinfo ||
      !under || has_hidden_dot_segment(p))
    return Error{std::string(kEscapeError)};
  return std::move(target->handle);
}

Result<std::string> confine_url(std::string_view base_url,
                                std::string_view path) {
  auto base = parse_base_url(base_url);
  if (!base) return Error{"invalid base URL: " + base.error()};
  auto url = confine(*base, path);
  if (!url) return Error{url.error()};
  return url_text(url->get());
}

Result<std::vector<std::string>> request_header_lines(
    const HeaderList& job_headers, const HeaderList& credentials,
    bool has_body) {
  static constexpr std::array<std::string_view, 6> kFraming = {
      "host",       "content-length", "transfer-encoding",
      "connection", "upgrade",        "expect"};
  auto line = [](const std::string& name, const std::string& value) {
    // "Name;" is curl's way to send a header with an empty value.
    return value.empty() ? name + ";" : name + ": " + value;
  };
  std::vector<std::string> lines;
  bool content_type = false;
  for (const auto& [name, value] : job_headers) {
    if (!is_http_token(name))
      return Error{"invalid header name '" + name + "'"};
    if (value.find_first_of(std::string_view("\r\n\0", 3)) != std::string::npos)
      return Error{"header '" + name + "' contains a line break or NUL"};
    if (value.size() > kMaxHeaderValueBytes)
      return Error{"header '" + name + "' is longer than 8 KiB"};
    std::string lname = lower(name);
    if (std::find(kFraming.begin(), kFraming.end(), lname) != kFraming.end())
      continue;
    bool credential =
        std::any_of(credentials.begin(), credentials.end(),
                    [&](const auto& c) { return iequals(c.first, name); });
    if (credential) continue;
    if (lname == "content-type") content_type = true;
    lines.push_back(line(name, value));
  }
  for (const auto& [name, value] : credentials) {
    if (iequals(name, "content-type")) content_type = true;
    lines.push_back(line(name, value));
  }
  if (has_body && !content_type)
    lines.emplace_back("Content-Type: application/json");
  // No "Expect: 100-continue" round trip for large bodies.
  lines.emplace_back("Expect:");
  return lines;
}

bool valid_method(std::string_view method) {
  return method.size() <= 32 && is_http_token(method);
}

bool keep_response_header(std::string_view n) {
  return n == "retry-after" || n == "retry-after-ms" ||
         n == "x-ms-retry-after-ms" || n == "content-type" || n == "date" ||
         n.find("ratelimit") != std::string_view::npos ||
         n.find("rate-limit") != std::string_view::npos;
}

void ResponseHeaders::on_line(std::string_view line) {
  if (line.starts_with("HTTP/")) {  // a new response: only the final one counts
    headers_.clear();
    last_kept_.clear();
    bytes_ = 0;
    all_.clear();
    last_in_all_ = false;
    all_bytes_ = 0;
    return;
  }
  if (!line.empty() && (line.front() == ' ' || line.front() == '\t')) {
    auto more = trim(line);  // an obsolete folded continuation line
    if (last_in_all_ && !more.empty() &&
        all_bytes_ + more.size() + 1 <= kMaxAllBytes) {
      all_.back().second += " " + std::string(more);
      all_bytes_ += more.size() + 1;
    }
    if (!last_kept_.empty() && !more.empty() &&
        bytes_ + more.size() + 1 <= kMaxBytes) {
      headers_[last_kept_] += " " + std::string(more);
      bytes_ += more.size() + 1;
    }
    return;
  }
  last_kept_.clear();
  last_in_all_ = false;
  auto colon = line.find(':');
  if (colon == std::string_view::npos || colon == 0) return;
  std::string name = lower(trim(line.substr(0, colon)));
  auto value = trim(line.substr(colon + 1));
  if (all_.size() < kMaxAllLines &&
      all_bytes_ + name.size() + value.size() + 2 <= kMaxAllBytes) {
    all_.emplace_back(name, value);
    all_bytes_ += name.size() + value.size() + 2;
    last_in_all_ = true;
  }
  if (!keep_response_header(name)) return;
  std::size_t cost = name.size() + value.size() + 2;
  if (bytes_ + cost > kMaxBytes) return;
  bytes_ += cost;
  auto [it, fresh] = headers_.try_emplace(name, value);
  if (!fresh) {
    it->second += ", ";
    it->second += value;
  }
  last_kept_ = name;
}

nlohmann::json observe(int status, const HeaderList& headers,
                       std::string_view body, Millis received_unix_ms,
                       std::string_view dialect) {
  body = body.substr(0, std::min(body.size(), kMaxObservedBodyBytes));
  Observation obs =
      observe_response(status, headers, body, received_unix_ms, dialect);
  if (!worth_reporting(obs)) return nullptr;
  return pacer::to_json(obs);
}

std::string describe_failure(const TransferFailure& f) {
  std::string where = f.origin.empty() ? "" : " (" + f.origin + ")";
  switch (f.code) {
    case CURLE_OPERATION_TIMEDOUT:
      if (f.connected)
        return "timeout after " + std::to_string(f.timeout_ms) + " ms";
      return "connect timeout after " +
             std::to_string(std::min(f.timeout_ms, f.connect_timeout_ms)) +
             " ms" + where;
    case CURLE_COULDNT_CONNECT:
      if (f.os_errno == ECONNREFUSED) return "connection refused" + where;
      if (f.os_errno != 0)
        return "cannot connect" + where + ": " + std::strerror(f.os_errno);
      break;
    case CURLE_COULDNT_RESOLVE_HOST:
      return "cannot resolve host" + where;
    default:
      break;
  }
  std::string text = curl_easy_strerror(f.code);
  if (!f.detail.empty() && f.detail != text)
    text += ": " + std::string(trim(f.detail));
  return text + where;
}

Result<HttpRequest> prepare_request(const Job& job, const ApiRoute& route) {
  if (!valid_method(job.method)) return Error{"invalid HTTP method"};
  auto url = confine(route.base, job.path);
  if (!url) return Error{url.error()};
  auto lines = request_header_lines(job.headers, route.credentials,
                                    job.body.has_value());
  if (!lines) return Error{lines.error()};
  HttpRequest r;
  r.id = job.id;
  r.attempt = job.attempt;
  r.url = std::move(*url);
  r.origin = route.base.origin;
  r.https = route.base.scheme == "https";
  r.method = job.method;
  r.header_lines = std::move(*lines);
  r.body = job.body;
  r.timeout_ms = job.timeout_ms.value_or(route.timeout_ms);
  r.dialect = route.dialect;
  r.actual_cost = route.actual_cost;
  return r;
}

Result<HttpRequest> prepare_batch_request(BatchJob job, const ApiRoute& route) {
  auto body = build_batch_body(job.batch.spec, job.bodies);
  if (!body) return Error{"batch body: " + body.error()};
  job.call.body = std::move(*body);
  auto request = prepare_request(job.call, route);
  if (request) request->batch = std::move(job.batch);
  return request;
}

namespace {

// An upper bound of the bytes `s`, valid UTF-8, takes as a JSON string.
std::size_t wire_bytes(std::string_view s) {
  std::size_t n = 2;
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    n += c == '"' || c == '\\' ? 2 : c < 0x20 ? 6 : 1;
  }
  return n;
}

// Cuts `text` to at most `cap` bytes on a UTF-8 character boundary, so a cut
// item stays valid text on the wire. Whether it cut.
bool cut_utf8(std::string& text, std::size_t cap) {
  if (text.size() <= cap) return false;
  std::size_t n = cap;
  while (n > 0 && (static_cast<unsigned char>(text[n]) & 0xC0) == 0x80) --n;
  text.resize(n);
  return true;
}

// The members' shares of a split response, bodies capped at `cap`; an error
// when together they would not fit in a RESULTS message.
Result<std::vector<MemberResult>> member_results(
    const BatchCall& call, std::vector<BatchItemResult> items,
    std::size_t cap) {
  std::vector<MemberResult> out;
  out.reserve(items.size());
  std::size_t wire = 0;
  for (std::size_t i = 0; i < items.size(); ++i) {
    MemberResult m{call.members[i], std::move(items[i])};
    m.body_truncated = cut_utf8(m.item.body, cap);
    wire += wire_bytes(m.item.body) + wire_bytes(m.item.error) + 128;
    out.push_back(std::move(m));
  }
  if (wire > kMaxBatchMembersWireBytes)
    return Error{"the members' results would take " + std::to_string(wire) +
                 " bytes in RESULTS, over " +
                 std::to_string(kMaxBatchMembersWireBytes)};
  return out;
}

// The members' shares of a 2xx batch response, or why it does not split.
Result<std::vector<MemberResult>> split_members(const JobResult& r,
                                                const BatchCall& call,
                                                std::size_t max_body_bytes) {
  if (r.body_truncated)
    return Error{"expected a response of at most " +
                 std::to_string(kMaxBatchResponseBytes) +
                 " bytes to split; got more"};
  const std::size_t n = call.members.size();
  auto items = split_batch_response(call.spec, n, r.status, r.body);
  if (!items) return Error{items.error()};
  const std::size_t cap = std::min(
      max_body_bytes, kMaxBatchResponseBytes / std::max<std::size_t>(n, 1));
  return member_results(call, std::move(*items), cap);
}

}  // namespace

void settle_batch(JobResult& r, const BatchCall& call,
                  std::size_t max_body_bytes) {
  r.batch = call.id;
  if (r.status >= 200 && r.status <= 299) {
    auto members = split_members(r, call, max_body_bytes);
    if (members) {
      r.members = std::move(*members);
      r.body.clear();  // every byte of it is in the members' shares
      r.body_truncated = false;
      return;
    }
    r.split_error = members.error();
  }
  // Read past max_body_bytes only to be split.
  if (r.body.size() > max_body_bytes) {
    r.body.resize(max_body_bytes);
    r.body_truncated = true;
  }
}

std::vector<std::string> pack_results(const std::vector<JobResult>& results,
                                      std::size_t max_bytes) {
  std::vector<std::string> bodies;
  static constexpr std::string_view kOpen = "{\"results\":[";
  static constexpr std::string_view kClose = "]}";
  std::string body(kOpen);
  auto has_entries = [&] { return body.size() > kOpen.size(); };
  auto close = [&] {
    body += kClose;
    bodies.push_back(std::move(body));
    body.assign(kOpen);
  };
  std::string one;
  for (const auto& r : results) {
    one.clear();
    r.write_json(one);
    // A single result over the limit still goes, in a body of its own.
    if (has_entries() &&
        body.size() + 1 + one.size() + kClose.size() > max_bytes)
      close();
    if (has_entries()) body += ',';
    body += one;
  }
  if (has_entries()) close();
  return bodies;
}

}  // namespace pacer::worker

namespace pacer::worker {

Redactor::Redactor(const std::map<std::string, ApiRoute>& routes) {
  auto add = [&](std::string_view v) {
    if (v.size() >= kMinSecretBytes) secrets_.emplace_back(v);
  };
  for (const auto& [name, route] : routes)
    for (const auto& value : route.secrets) {
      add(value);
      const auto space = value.find_last_of(" \t");
      if (space != std::string::npos) add(std::string_view(value).substr(space + 1));
    }
  // Longest first: a token inside a longer value goes after it.
  std::sort(secrets_.begin(), secrets_.end(),
            [](const auto& a, const auto& b) { return a.size() > b.size(); });
  secrets_.erase(std::unique(secrets_.begin(), secrets_.end()),
                 secrets_.end());
}

bool Redactor::scrub(std::string& text) const {
  return replace_secrets(text, secrets_);
}

bool Redactor::scrub_cut(std::string& text) const {
  bool any = scrub(text);
  // A body cut at the cap may end in the first bytes of a secret.
  for (const auto& secret : secrets_)
    for (std::size_t k = std::min(secret.size() - 1, text.size());
         k >= kMinCutBytes; --k)
      if (text.compare(text.size() - k, k, secret, 0, k) == 0) {
        text.replace(text.size() - k, k, kMark);
        return true;
      }
  return any;
}

bool Redactor::scrub(JobResult& r) const {
  if (secrets_.empty()) return false;
  bool any = r.body_truncated ? scrub_cut(r.body) : scrub(r.body);
  any |= scrub(r.error);
  for (auto& [name, value] : r.headers) any |= scrub(value);
  if (r.split_error) any |= scrub(*r.split_error);
  if (r.members)
    for (auto& m : *r.members) {
      any |= m.body_truncated ? scrub_cut(m.item.body) : scrub(m.item.body);
      any |= scrub(m.item.error);
    }
  return any;
}

}  // namespace pacer::worker
