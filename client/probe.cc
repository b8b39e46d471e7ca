#include "client/probe.h"

#include <curl/curl.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <sstream>

#include "client/format.h"
#include "client/table.h"
#include "common/job.h"
#include "common/units.h"

namespace pacer::client {
namespace {

constexpr std::size_t kMaxHeadFileBytes = 4 << 20;
constexpr std::size_t kMaxHeaderLines = 200;
constexpr std::size_t kMaxHeaderBytes = 64 << 10;

Millis wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string_view trim_line(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' ||
                        s.back() == '\r' || s.back() == '\n'))
    s.remove_suffix(1);
  return s;
}

std::string label(const LimitObservation& l) {
  return l.name.empty() ? l.source : l.source + "/" + l.name;
}

std::string number_text(double v) {
  char buf[64];
  if (v == std::floor(v) && std::fabs(v) < 1e15)
    std::snprintf(buf, sizeof buf, "%.0f", v);
  else
    std::snprintf(buf, sizeof buf, "%.2f", v);
  return buf;
}

std::string unit_text(QuotaUnit u) {
  std::string s(to_string(u));
  std::replace(s.begin(), s.end(), '_', ' ');
  return s;
}

std::string window_text(const LimitObservation& l) {
  return l.window_s ? format_duration(*l.window_s * 1000) : "-";
}

std::string reset_phrase(const LimitObservation& l) {
  if (!l.reset_in_ms) {
    if (l.window_s)
      return "no reset given; at most its " + window_text(l) + " window";
    return "no reset given";
  }
  std::string in = format_duration(*l.reset_in_ms);
  switch (l.reset_kind) {
    case ResetKind::kWindowEnd:
      return "the window ends in " + in;
    case ResetKind::kFullReplenish:
      return "full again in " + in;
    case ResetKind::kNextRequest:
      return "the next request is allowed in " + in;
    case ResetKind::kNextQuota:
      return "more quota in " + in;
    case ResetKind::kUnknown:
      break;
  }
  return "resets in " + in;
}

std::string meaning(const LimitObservation& l) {
  std::string unit = unit_text(l.unit);
  if (l.policy_only) {
    std::string s = label(l) + ": a policy of " +
                    (l.limit ? std::to_string(*l.limit) : "?") + " " + unit;
    if (l.window_s) s += " per " + window_text(l);
    return s + " (informative: no live counters)";
  }
  std::string of = l.limit ? " of " + std::to_string(*l.limit) : "";
  if (l.remaining && *l.remaining <= 0)
    return label(l) + ": exhausted (0" + of + " " + unit + " left); " +
           reset_phrase(l);
  std::string s = label(l) + ": ";
  if (l.remaining)
    s += number_text(*l.remaining) + of + " " + unit + " left";
  else if (l.limit)
    s += "limit " + std::to_string(*l.limit) + " " + unit +
         ", remaining unknown";
  else
    s += "no counters";
  if (l.reset_in_ms) s += "; " + reset_phrase(l);
  return s;
}

// One line on how pacer would pace this limit, or "" when it would not.
std::string pacing(const LimitObservation& l) {
  if (l.policy_only) return "";
  if (l.limit && l.window_s)
    return "would pace " + label(l) + " at " + std::to_string(*l.limit) + "/" +
           window_text(l);
  if (l.remaining && *l.remaining > 0 && l.reset_in_ms && *l.reset_in_ms > 0)
    return "would spread the " + number_text(*l.remaining) + " " +
           unit_text(l.unit) + " left of " + label(l) + " over the next " +
           format_duration(*l.reset_in_ms);
  if (l.limit)
    return label(l) + " gives no window: pacer would learn it from the " +
           "responses (or configure it)";
  return "";
}

// ---- one request with libcurl

struct Fetched {
  int status = 0;
  HeaderFields headers;
  std::string body;
  Millis received_ms = 0;
};

struct Sink {
  HeaderFields headers;
  std::size_t header_bytes = 0;
  bool last_kept = false;
  std::string body;

  static std::size_t on_header(char* data, std::size_t size, std::size_t n,
                               void* p) {
    auto* s = static_cast<Sink*>(p);
    std::string_view line(data, size * n);
    if (line.starts_with("HTTP/")) {  // only the final response counts
      s->headers.clear();
      s->header_bytes = 0;
      s->last_kept = false;
      return size * n;
    }
    std::string_view text = trim_line(line);
    if (text.empty()) return size * n;
    if (line.front() == ' ' || line.front() == '\t') {  // folded
      if (s->last_kept && s->header_bytes + text.size() < kMaxHeaderBytes) {
        s->headers.back().second += " " + std::string(text);
        s->header_bytes += text.size() + 1;
      }
      return size * n;
    }
    s->last_kept = false;
    auto colon = text.find(':');
    if (colon == std::string_view::npos) return size * n;
    std::string_view name = trim_line(text.substr(0, colon));
    std::string_view value = trim_line(text.substr(colon + 1));
    if (s->headers.size() < kMaxHeaderLines &&
        s->header_bytes + name.size() + value.size() < kMaxHeaderBytes) {
      s->headers.emplace_back(std::string(name), std::string(value));
      s->header_bytes += name.size() + value.size();
      s->last_kept = true;
    }
    return size * n;
  }

  static std::size_t on_body(char* data, std::size_t size, std::size_t n,
                             void* p) {
    auto* s = static_cast<Sink*>(p);
    std::size_t room = kMaxObservedBodyBytes - s->body.size();
    s->body.append(data, std::min(room, size * n));
    return size * n;  // the rest is read and dropped
  }
};

struct EasyDeleter {
  void operator()(CURL* c) const { curl_easy_cleanup(c); }
};
struct ListDeleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};

Result<Fetched> fetch(const ProbeOptions& o) {
  std::unique_ptr<CURL, EasyDeleter> easy(curl_easy_init());
  if (!easy) return Error{"curl_easy_init failed"};
  CURL* c = easy.get();
  std::unique_ptr<curl_slist, ListDeleter> list;
  for (const auto& h : o.headers) {
    curl_slist* next = curl_slist_append(list.get(), h.c_str());
    if (!next) return Error{"out of memory"};
    list.release();
    list.reset(next);
  }
  Sink sink;
  char errbuf[CURL_ERROR_SIZE] = {};
  std::string method = o.method.empty() ? (o.data ? "POST" : "GET") : o.method;
  CURLcode rc = CURLE_OK;
  auto set = [&](CURLoption opt, auto value) {
    if (rc == CURLE_OK) rc = curl_easy_setopt(c, opt, value);
  };
  set(CURLOPT_URL, o.url.c_str());
  set(CURLOPT_PROTOCOLS_STR, "http,https");
  set(CURLOPT_NOSIGNAL, 1L);
  set(CURLOPT_FOLLOWLOCATION, 0L);
  set(CURLOPT_TIMEOUT_MS, static_cast<long>(o.timeout_ms));
  set(CURLOPT_USERAGENT, "pacer-probe");
  set(CURLOPT_ERRORBUFFER, errbuf);
  set(CURLOPT_HEADERFUNCTION, &Sink::on_header);
  set(CURLOPT_HEADERDATA, static_cast<void*>(&sink));
  set(CURLOPT_WRITEFUNCTION, &Sink::on_body);
  set(CURLOPT_WRITEDATA, static_cast<void*>(&sink));
  if (list) set(CURLOPT_HTTPHEADER, list.get());
  if (o.data) {
    set(CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(o.data->size()));
    set(CURLOPT_POSTFIELDS, o.data->c_str());
    if (method != "POST") set(CURLOPT_CUSTOMREQUEST, method.c_str());
  } else if (method == "HEAD") {
    set(CURLOPT_NOBODY, 1L);
  } else if (method != "GET") {
    set(CURLOPT_CUSTOMREQUEST, method.c_str());
  }
  if (rc != CURLE_OK) return Error{curl_easy_strerror(rc)};
  rc = curl_easy_perform(c);
  Fetched f;
  f.received_ms = wall_ms();
  if (rc != CURLE_OK)
    return Error{errbuf[0] != '\0' ? std::string(errbuf)
                                   : std::string(curl_easy_strerror(rc))};
  long status = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  if (status <= 0) return Error{"no HTTP response"};
  f.status = static_cast<int>(status);
  f.headers = std::move(sink.headers);
  f.body = std::move(sink.body);
  return f;
}

Result<std::string> read_head_file(const std::string& path, bool& cannot_open) {
  cannot_open = false;
  std::string text;
  auto read = [&](std::istream& in) {
    std::istreambuf_iterator<char> it(in), end;
    while (it != end && text.size() <= kMaxHeadFileBytes) text += *it++;
  };
  if (path == "-") {
    read(std::cin);
  } else {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      cannot_open = true;
      return Error{"cannot open " + path + ": " + std::strerror(errno)};
    }
    read(in);
  }
  if (text.size() > kMaxHeadFileBytes)
    return Error{(path == "-" ? std::string("<stdin>") : path) +
                 ": larger than 4 MiB; a response head is expected"};
  return text;
}

}  // namespace

std::string wait_text(Millis ms) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.1f s", static_cast<double>(ms) / 1000.0);
  std::string s = buf;
  if (ms >= 120'000) s += " (" + format_duration(ms) + ")";
  return s;
}

std::string describe_observation(const Observation& obs) {
  std::ostringstream out;
  out << "HTTP " << obs.http_status << ": " << to_string(obs.verdict);
  if (obs.blocking) out << " (the response is a rejection)";
  out << "\n";
  if (obs.retry_after_ms)
    out << "retry hint: " << wait_text(*obs.retry_after_ms) << " ("
        << obs.retry_after_source << ")\n";
  if (!obs.reason.empty()) out << "reason: " << obs.reason << "\n";
  if (!obs.scope.empty()) out << "scope: " << obs.scope << "\n";
  if (obs.server_should_retry)
    out << "server says retry: " << (*obs.server_should_retry ? "yes" : "no")
        << "\n";
  if (obs.server_skew_ms && *obs.server_skew_ms != 0)
    out << "server clock: " << wait_text(std::llabs(*obs.server_skew_ms))
        << (*obs.server_skew_ms > 0 ? " ahead of" : " behind")
        << " this machine (Date header)\n";

  if (!obs.limits.empty()) {
    Table t({"SOURCE/NAME", "UNIT", "LIMIT", "REMAINING", "WINDOW", "RESETS IN",
             "FLAGS"});
    t.align_right(2).align_right(3);
    for (const auto& l : obs.limits) {
      std::string flags;
      if (l.policy_only) flags = "policy only";
      for (const auto& f : l.flags) flags += (flags.empty() ? "" : ", ") + f;
      t.add_row({label(l), unit_text(l.unit),
                 l.limit ? std::to_string(*l.limit) : "-",
                 l.remaining ? number_text(*l.remaining) : "-", window_text(l),
                 l.reset_in_ms ? format_duration(*l.reset_in_ms) : "-",
                 flags.empty() ? "-" : flags});
    }
    out << "\n" << t.render();
    out << "\nWhat it means:\n";
    for (const auto& l : obs.limits) out << "  " << meaning(l) << "\n";
  }

  std::vector<std::string> actions;
  if (!obs.retryable) {
    actions.push_back(obs.verdict == Verdict::kQuotaExhausted
                          ? "would not retry: the quota is exhausted (a "
                            "billing or hard cap), so the job fails"
                          : "would not retry: the server says not to");
  } else if (obs.blocking) {
    if (obs.wait_ms) {
      bool from_hint =
          obs.retry_after_ms && *obs.retry_after_ms == *obs.wait_ms;
      std::string why =
          from_hint ? "as the server asks (" + obs.retry_after_source + ")"
                    : "until reset";
      std::string who;
      if (obs.scope == "global") who = " (every route of this credential)";
      if (obs.scope == "shared") who = " (this resource only)";
      actions.push_back("lane would pause " + wait_text(*obs.wait_ms) + " " +
                        why + who);
    } else {
      actions.push_back(
          "lane would back off (exponential, with jitter): the response "
          "gives no wait");
    }
  } else if (obs.wait_ms && *obs.wait_ms > 0) {
    actions.push_back("lane would pause " + wait_text(*obs.wait_ms) +
                      " until reset: a limit is exhausted");
  } else if (!obs.wait_ms) {
    actions.push_back(
        "a limit is exhausted with no reset or window: lane would send one "
        "request at a time until it knows more");
  }
  if (obs.verdict == Verdict::kError)
    actions.push_back("HTTP " + std::to_string(obs.http_status) +
                      " is not a rate-limit answer: the API's failure policy "
                      "decides");
  if (obs.retry_after_ms && !obs.blocking)
    actions.push_back(
        "the retry hint on a non-rejection is reported, not waited on");
  for (const auto& l : obs.limits)
    if (auto p = pacing(l); !p.empty()) actions.push_back(p);
  if (obs.limits.empty())
    actions.push_back(obs.retry_after_ms
                          ? "no limit counters, only a retry hint: configure "
                            "limits or let pacer learn them"
                          : "no rate-limit headers: configure limits or let "
                            "pacer learn them");
  out << "\nWhat pacer would do:\n";
  for (const auto& a : actions) out << "  " << a << "\n";

  if (!obs.warnings.empty()) {
    out << "\nWarnings:\n";
    for (const auto& w : obs.warnings) out << "  " << w << "\n";
  }
  if (!obs.flags.empty()) {
    out << "\nFlags:";
    for (const auto& f : obs.flags) out << " " << f;
    out << "\n";
  }
  return out.str();
}

int probe(Session& s, const ProbeOptions& o) {
  if (!is_known_dialect(o.dialect))
    return s.fail(kExitError, "--dialect: unknown dialect '" + o.dialect +
                                  "' (known: " + known_dialects_text() + ")");
  const bool from_file = !o.headers_file.empty();
  if (from_file && !o.url.empty())
    return s.fail(kExitError, "probe takes a URL or --headers FILE, not both");
  if (!from_file && o.url.empty())
    return s.fail(kExitError,
                  "probe needs a URL to request, or --headers FILE with a "
                  "saved response head (see pacer probe --help)");

  if (from_file) {
    if (!o.method.empty() || !o.headers.empty() || o.data)
      return s.fail(kExitError,
                    "-X, -H and --data are for probing a URL, not --headers");
    bool cannot_open = false;
    auto text = read_head_file(o.headers_file, cannot_open);
    if (!text) return s.fail(cannot_open ? kExitError : kExitNo, text.error());
    std::string name = o.headers_file == "-" ? "<stdin>" : o.headers_file;
    auto head = parse_response_head(*text);
    // A file of header lines only is fine when --status gives the status.
    if (!head && o.status &&
        head.error().starts_with("line 1: expected a status"))
      head = parse_response_head("HTTP/1.1 " + std::to_string(*o.status) +
                                 "\n" + *text);
    if (!head) return s.fail(kExitNo, name + ": " + head.error());
    if (o.status) head->status = *o.status;
    Observation obs =
        observe_response(*head, o.now_ms.value_or(wall_ms()), o.dialect);
    s.io().out << pretty(to_json(obs)) << "\n";
    return kExitOk;
  }

  if (o.status || o.now_ms)
    return s.fail(kExitError,
                  "--status and --now-ms are for --headers, not for a URL");
  if (!o.method.empty() && (o.method.size() > 32 || !is_http_token(o.method)))
    return s.fail(kExitError, "-X: '" + o.method + "' is not an HTTP method");
  for (const auto& h : o.headers) {
    auto colon = h.find(':');
    if (colon == std::string::npos || !is_http_token(h.substr(0, colon)) ||
        h.find_first_of(std::string_view("\r\n\0", 3)) != std::string::npos)
      return s.fail(kExitError,
                    "-H: '" + h + "' is not a header (expected 'Name: value')");
  }
  if (o.url.find("://") == std::string::npos)
    return s.fail(kExitError, "'" + o.url +
                                  "' is not a URL (expected http://... or "
                                  "https://...)");
  auto fetched = fetch(o);
  if (!fetched) return s.fail(kExitNo, o.url + ": " + fetched.error());
  Observation obs =
      observe_response(fetched->status, fetched->headers, fetched->body,
                       fetched->received_ms, o.dialect);
  if (s.json())
    s.io().out << pretty(to_json(obs)) << "\n";
  else
    s.io().out << describe_observation(obs);
  return kExitOk;
}

}  // namespace pacer::client
