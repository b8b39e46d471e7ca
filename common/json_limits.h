// Limits on JSON read from peers and servers. nlohmann::json parses, copies
// and destroys documents recursively: a message of ~200 KB nested 100,000
// levels deep overflows the stack of whatever process reads it. Every text
// from outside the process is measured first and refused past the limit,
// before any parser sees it (simdjson's own refusal of deep text would
// otherwise fall back to a document parse).
#pragma once

#include <string_view>

namespace pacer {

// Deeper than any message or response pacer reads needs (they nest 4-6).
inline constexpr int kMaxJsonDepth = 64;

// Nesting depth of a JSON text, counted without parsing (strings skipped).
int json_depth(std::string_view text);

}  // namespace pacer
