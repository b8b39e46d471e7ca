// Structured logging: one JSON object per line on stderr
// ({"ts","level","component","event", ...fields}). Thread-safe (one write per
// line). Callers never log credentials; the worker passes only redacted data.
#pragma once

#include <nlohmann/json.hpp>
#include <string_view>

namespace pacer::log {

enum class Level { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

void set_level(Level level);
bool parse_level(std::string_view text, Level& out);
void set_component(std::string_view component);
bool enabled(Level level);

void write(Level level, std::string_view event, nlohmann::json fields = {});

inline void debug(std::string_view e, nlohmann::json f = {}) {
  if (enabled(Level::kDebug)) write(Level::kDebug, e, std::move(f));
}
inline void info(std::string_view e, nlohmann::json f = {}) {
  write(Level::kInfo, e, std::move(f));
}
inline void warn(std::string_view e, nlohmann::json f = {}) {
  write(Level::kWarn, e, std::move(f));
}
inline void error(std::string_view e, nlohmann::json f = {}) {
  write(Level::kError, e, std::move(f));
}

}  // namespace pacer::log
