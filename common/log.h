// Structured logging: one JSON object per line on stderr
// ({"ts","level","component","event", ...fields}), or, on a terminal, the same
// as one human-readable line ("TS LEVEL component event key=value ...").
// Thread-safe (one write per line).
//
// Redaction is the last line of defence: callers never log credentials, and
// every line is still scrubbed before it is written. A field whose name is a
// credential's (authorization, cookie, x-api-key, token, ... and every name
// registered with add_sensitive_key, such as the headers of [api.NAME.headers])
// has its value replaced by "[redacted]", at any depth; any string containing
// a registered secret (the expanded credential values) has it replaced too.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace pacer::log {

enum class Level { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };
// kAuto: text when stderr is a terminal, JSON lines otherwise.
enum class Format { kAuto = 0, kJson = 1, kText = 2 };

void set_level(Level level);
bool parse_level(std::string_view text, Level& out);
void set_format(Format format);
bool parse_format(std::string_view text, Format& out);
void set_component(std::string_view component);
bool enabled(Level level);

// Redaction (see above). Secrets shorter than 4 bytes are ignored (they
// would mask ordinary text and protect nothing).
void add_sensitive_key(std::string_view name);
void add_secret(std::string_view value);
// The line as it would be written, for tests: redacted, in `format`
// (kAuto counts as kJson), without the newline.
std::string render(Format format, Level level, std::string_view event,
                   const nlohmann::json& fields, std::string_view ts);

// "2026-11-28T09:56:50.123Z": the time format of every line (and of every
// time pacer sends elsewhere).
std::string utc_timestamp(std::int64_t ms_since_epoch);

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
