// Small helpers that turn broker replies (JSON whose shape may grow or lack
// fields) into text for tables and messages. Nothing here throws on an
// unexpected shape: a missing or null field prints as "-". Pure functions;
// thread-safe.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "common/clock.h"

namespace pacer::client {

// A JSON value as a table cell: strings as they are, numbers and booleans as
// written, arrays of scalars joined by ", ", null or missing as "-".
std::string to_text(const nlohmann::json& value);

// obj[key] as a cell ("-" when obj is not an object or lacks the key).
std::string field(const nlohmann::json& obj, const char* key);

// obj[key] when it is an integer.
std::optional<std::int64_t> int_field(const nlohmann::json& obj,
                                      const char* key);

// obj[key] as milliseconds since the epoch, shown in local time
// ("2025-11-27 23:41:02"); "-" when missing.
std::string time_field(const nlohmann::json& obj, const char* key);
std::string format_local_time(Millis epoch_ms);

// Indented JSON for --json output; invalid UTF-8 is replaced, never thrown.
std::string pretty(const nlohmann::json& value);

// A reply body without the protocol's envelope fields ("req", "ok").
nlohmann::json without_envelope(nlohmann::json reply);

// "1 job", "3 jobs".
std::string plural(std::int64_t n, const std::string& noun);

// `text` cut to at most `width` code points (UTF-8), ending in "..." when it
// was cut; line breaks become spaces. For long messages in table cells.
std::string shorten(const std::string& text, std::size_t width);

}  // namespace pacer::client
