#include "worker/request.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>

#include "common/ratelimit.h"

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

std::optional<std::int64_t> integer_field(const nlohmann::json& j,
                                          const char* key) {
  auto it = j.find(key);
  if (it == j.end()) return std::nullopt;
  if (it->is_number_unsigned()) {  // get<int64_t> would wrap values past
                                   // INT64_MAX
    auto u = it->get<std::uint64_t>();
    if (u > static_cast<std::uint64_t>(INT64_MAX)) return std::nullopt;
    return static_cast<std::int64_t>(u);
  }
  if (!it->is_number_integer()) return std::nullopt;
  return it->get<std::int64_t>();
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

}  // namespace

Result<Job> parse_job(const nlohmann::json& j) {
  if (!j.is_object()) return Error{"a job must be a JSON object"};
  Job job;
  auto id = integer_field(j, "id");
  if (!id) return Error{"'id' must be an integer"};
  job.id = *id;
  auto attempt = integer_field(j, "attempt");
  if (!attempt) return Error{"'attempt' must be an integer"};
  job.attempt = *attempt;
  auto api = j.find("api");
  if (api == j.end() || !api->is_string() ||
      api->get_ref<const std::string&>().empty())
    return Error{"'api' must be a non-empty string"};
  job.api = api->get<std::string>();
  if (auto b = j.find("body"); b != j.end() && !b->is_null()) {
    if (!b->is_string()) return Error{"'body' must be a string"};
    job.body = b->get<std::string>();
  }
  if (auto m = j.find("method"); m != j.end()) {
    if (!m->is_string()) return Error{"'method' must be a string"};
    job.method = m->get<std::string>();
  } else {
    job.method = job.body ? "POST" : "GET";
  }
  if (!valid_method(job.method))
    return Error{"'method' is not a valid HTTP method"};
  if (auto p = j.find("path"); p != j.end()) {
    if (!p->is_string()) return Error{"'path' must be a string"};
    job.path = p->get<std::string>();
  } else {
    job.path = "/";
  }
  if (auto h = j.find("headers"); h != j.end() && !h->is_null()) {
    if (!h->is_object()) return Error{"'headers' must be an object of strings"};
    for (auto it = h->begin(); it != h->end(); ++it) {
      if (!it->is_string())
        return Error{"'headers." + it.key() + "' must be a string"};
      job.headers.emplace_back(it.key(), it->get<std::string>());
    }
  }
  if (auto t_it = j.find("timeout_ms"); t_it != j.end() && !t_it->is_null()) {
    auto t = integer_field(j, "timeout_ms");
    if (!t || *t <= 0) return Error{"'timeout_ms' must be a positive integer"};
    job.timeout_ms = *t;
  }
  return job;
}

std::optional<std::pair<JobId, std::int64_t>> job_ids(const nlohmann::json& j) {
  if (!j.is_object()) return std::nullopt;
  auto id = integer_field(j, "id");
  auto attempt = integer_field(j, "attempt");
  if (!id || !attempt) return std::nullopt;
  return std::make_pair(*id, *attempt);
}

nlohmann::json JobResult::to_json() const {
  nlohmann::json j = {{"id", id},
                      {"attempt", attempt},
                      {"outcome", std::string(to_string(outcome))},
                      {"status", status},
                      {"error", error},
                      {"headers", headers},
                      {"body", body},
                      {"body_truncated", body_truncated},
                      {"started_ms", started_ms},
                      {"duration_ms", duration_ms},
                      {"observation", observation}};
  if (actual_cost) j["actual_cost"] = *actual_cost;
  return j;
}

std::optional<double> read_actual_cost(std::string_view body,
                                       const std::string& pointer) {
  if (pointer.empty() || body.empty()) return std::nullopt;
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
  return ApiRoute{api.name,       std::move(*base), std::move(*credentials),
                  api.timeout_ms, api.dialect,      api.actual_cost};
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

std::vector<nlohmann::json> pack_results(std::vector<JobResult> results,
                                         std::size_t max_bytes) {
  std::vector<nlohmann::json> bodies;
  if (results.empty()) return bodies;
  // JSON escaping at most sextuples a byte (\u00XX), so a small enough raw
  // size needs no exact measure.
  std::size_t worst = 64;
  for (const auto& r : results) {
    worst += 6 * (r.body.size() + r.error.size()) + 512;
    for (const auto& [k, v] : r.headers) worst += 6 * (k.size() + v.size()) + 8;
    // Observation strings are printable ASCII: its dump is its wire size.
    if (!r.observation.is_null()) worst += r.observation.dump().size() + 16;
  }
  if (worst <= max_bytes) {
    nlohmann::json arr = nlohmann::json::array();
    for (auto& r : results) arr.push_back(r.to_json());
    bodies.push_back({{"results", std::move(arr)}});
    return bodies;
  }
  nlohmann::json arr = nlohmann::json::array();
  std::size_t bytes = 16;
  for (auto& r : results) {
    nlohmann::json j = r.to_json();
    std::size_t n =
        j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
            .size() +
        1;
    if (!arr.empty() && bytes + n > max_bytes) {
      bodies.push_back({{"results", std::move(arr)}});
      arr = nlohmann::json::array();
      bytes = 16;
    }
    arr.push_back(std::move(j));
    bytes += n;
  }
  if (!arr.empty()) bodies.push_back({{"results", std::move(arr)}});
  return bodies;
}

}  // namespace pacer::worker
