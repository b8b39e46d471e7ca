// Replacing secrets in text: the log's scrubbing (common/log.h) and the
// worker's results (worker/request.h, Redactor) share it.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace pacer {

inline constexpr std::string_view kRedactedMark = "[redacted]";

// Replaces every occurrence of each of `secrets` (longest first, so a
// secret that contains another is replaced whole) in `text` with
// kRedactedMark. Returns whether anything was replaced.
bool replace_secrets(std::string& text, const std::vector<std::string>& secrets);

}  // namespace pacer
