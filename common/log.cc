#include "common/log.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <string>

namespace pacer::log {
namespace {
std::atomic<int> g_level{static_cast<int>(Level::kInfo)};
std::string g_component = "pacer";

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

std::string timestamp() {
  auto now = std::chrono::system_clock::now();
  auto t = std::chrono::system_clock::to_time_t(now);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                now.time_since_epoch())
                .count() %
            1000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
                tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                tm.tm_min, tm.tm_sec, static_cast<int>(ms));
  return buf;
}
}  // namespace

void set_level(Level level) { g_level = static_cast<int>(level); }

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
  nlohmann::json line = {{"ts", timestamp()},
                         {"level", name(level)},
                         {"component", g_component},
                         {"event", std::string(event)}};
  if (fields.is_object())
    for (auto it = fields.begin(); it != fields.end(); ++it)
      line[it.key()] = it.value();
  std::string s =
      line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  s += '\n';
  // One write() per line keeps lines whole when several threads log.
  [[maybe_unused]] auto n = ::write(2, s.data(), s.size());
}

}  // namespace pacer::log
