#include "common/redact.h"
#include "common/log.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <mutex>
#include <set>
#include <string>
#include <vector>

namespace pacer::log {
namespace {
std::atomic<int> g_level{static_cast<int>(Level::kInfo)};
std::atomic<int> g_format{static_cast<int>(Format::kAuto)};
std::string g_component = "pacer";

constexpr std::string_view kRedacted = kRedactedMark;

// Registered at start-up, read on every line.
std::mutex g_redact_mu;
std::set<std::string> g_sensitive_keys = {
    "authorization", "proxy-authorization",
    "cookie",        "set-cookie",
    "x-api-key",     "api-key",
    "api_key",       "apikey",
    "x-auth-token",  "token",
    "access_token",  "refresh_token",
    "secret",        "client_secret",
    "password"};
std::vector<std::string> g_secrets;

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

void scrub_string(std::string& s) { replace_secrets(s, g_secrets); }

// Caller holds g_redact_mu.
void scrub(nlohmann::json& j) {
  if (j.is_object()) {
    for (auto it = j.begin(); it != j.end(); ++it) {
      if (g_sensitive_keys.count(lower(it.key())))
        it.value() = kRedacted;
      else
        scrub(it.value());
    }
  } else if (j.is_array()) {
    for (auto& e : j) scrub(e);
  } else if (j.is_string()) {
    scrub_string(j.get_ref<std::string&>());
  }
}

bool stderr_is_terminal() {
  static const bool tty = ::isatty(2) == 1;
  return tty;
}

const char* name(Level l) {
  switch (l) {
    case Level::kDebug:
      return "debug";
    case Level::kInfo:
      return "info";
    case Level::kWarn:
      return "warn";
    case Level::kError:
      return "error";
  }
  return "info";
}

}  // namespace

std::string utc_timestamp(std::int64_t ms_since_epoch) {
  const std::time_t t = static_cast<std::time_t>(ms_since_epoch / 1000);
  const int ms = static_cast<int>(ms_since_epoch % 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
                tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                tm.tm_min, tm.tm_sec, ms);
  return buf;
}

void set_level(Level level) { g_level = static_cast<int>(level); }

void set_format(Format format) { g_format = static_cast<int>(format); }

bool parse_format(std::string_view text, Format& out) {
  if (text == "auto")
    out = Format::kAuto;
  else if (text == "json")
    out = Format::kJson;
  else if (text == "text")
    out = Format::kText;
  else
    return false;
  return true;
}

void add_sensitive_key(std::string_view name) {
  std::lock_guard lock(g_redact_mu);
  g_sensitive_keys.insert(lower(name));
}

void add_secret(std::string_view value) {
  if (value.size() < 4) return;
  std::lock_guard lock(g_redact_mu);
  if (std::find(g_secrets.begin(), g_secrets.end(), value) == g_secrets.end())
    g_secrets.emplace_back(value);
  // Longest first, so a secret that contains another is masked whole.
  std::sort(g_secrets.begin(), g_secrets.end(),
            [](const std::string& a, const std::string& b) {
              return a.size() > b.size();
            });
}

std::string render(Format format, Level level, std::string_view event,
                   const nlohmann::json& fields, std::string_view ts) {
  nlohmann::json f = fields.is_object() ? fields : nlohmann::json::object();
  std::string ev(event);
  {
    std::lock_guard lock(g_redact_mu);
    scrub(f);
    scrub_string(ev);
  }
  const auto dump = [](const nlohmann::json& j) {
    return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  };
  if (format == Format::kText) {
    std::string s(ts);
    std::string lv = name(level);
    for (char& c : lv)
      c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    lv.resize(5, ' ');
    s += " " + lv + " " + g_component + " " + ev;
    for (auto it = f.begin(); it != f.end(); ++it) {
      s += " " + it.key() + "=";
      // Strings bare unless they hold spaces or quotes; the rest as JSON.
      if (it->is_string()) {
        const auto& v = it->get_ref<const std::string&>();
        s += v.empty() || v.find_first_of(" \"=\n") != std::string::npos
                 ? dump(*it)
                 : v;
      } else {
        s += dump(*it);
      }
    }
    return s;
  }
  nlohmann::json line = {{"ts", std::string(ts)},
                         {"level", name(level)},
                         {"component", g_component},
                         {"event", ev}};
  for (auto it = f.begin(); it != f.end(); ++it) line[it.key()] = it.value();
  return dump(line);
}

bool parse_level(std::string_view text, Level& out) {
  if (text == "debug")
    out = Level::kDebug;
  else if (text == "info")
    out = Level::kInfo;
  else if (text == "warn" || text == "warning")
    out = Level::kWarn;
  else if (text == "error")
    out = Level::kError;
  else
    return false;
  return true;
}

void set_component(std::string_view component) { g_component = component; }

bool enabled(Level level) { return static_cast<int>(level) >= g_level.load(); }

void write(Level level, std::string_view event, nlohmann::json fields) {
  if (!enabled(level)) return;
  Format format = static_cast<Format>(g_format.load());
  if (format == Format::kAuto)
    format = stderr_is_terminal() ? Format::kText : Format::kJson;
  std::string s = render(
      format, level, event, fields,
      utc_timestamp(std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::system_clock::now().time_since_epoch())
                        .count()));
  s += '\n';
  // One write() per line keeps lines whole when several threads log.
  [[maybe_unused]] auto n = ::write(2, s.data(), s.size());
}

}  // namespace pacer::log
