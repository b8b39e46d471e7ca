// Writing JSON text directly, for the messages sent per job (a worker's
// RESULTS): building a document only to serialize it and free it again cost
// a worker about a tenth of its time. For valid UTF-8 the strings are
// byte for byte what nlohmann::json's dump writes; numbers may be spelled
// differently but read back as the same values.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace pacer::json_text {

// Appends `s` as a quoted JSON string: '"', '\\' and control characters
// escaped, bytes that are not valid UTF-8 replaced by U+FFFD (one per byte
// that does not start a valid sequence), so the text always parses.
void append_string(std::string& out, std::string_view s);

// Appends the shortest text that reads back as `v`; null when `v` is not
// finite (JSON has no NaN or infinity).
void append_number(std::string& out, double v);
void append_number(std::string& out, std::int64_t v);

// Appends `"key":`.
inline void append_key(std::string& out, std::string_view key) {
  append_string(out, key);
  out += ':';
}

}  // namespace pacer::json_text
