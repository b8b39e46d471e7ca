#include "common/limit_spec.h"

#include <cctype>
#include <string>

#include "common/units.h"

namespace pacer {

std::string LimitSpec::to_string() const {
  std::string s = std::to_string(amount);
  if (!counts_requests()) s += " " + unit;
  // format_duration rounds long spans ("1m30s" drops milliseconds); the
  // canonical form must parse back to the same window.
  std::string window = format_duration(window_ms);
  auto back = parse_duration(window);
  if (!back || *back != window_ms) window = std::to_string(window_ms) + "ms";
  s += "/" + window;
  if (burst) s += " burst " + std::to_string(*burst);
  return s;
}

Result<LimitSpec> parse_limit(std::string_view text) {
  const std::string original(text);
  auto fail = [&](const std::string& why) -> Result<LimitSpec> {
    return Error{"invalid limit '" + original + "': " + why +
                 " (expected e.g. \"50/s\", \"600/min\", \"1/50ms\", "
                 "\"90000 tokens/min\", \"20/s burst 10\")"};
  };
  auto slash = text.find('/');
  if (slash == std::string_view::npos) return fail("no '/'");
  std::string_view left = text.substr(0, slash);
  std::string_view right = text.substr(slash + 1);

  LimitSpec spec;
  std::size_t i = 0;
  while (i < left.size() && std::isspace(static_cast<unsigned char>(left[i])))
    ++i;
  std::size_t start = i;
  while (i < left.size() && std::isdigit(static_cast<unsigned char>(left[i])))
    ++i;
  if (i == start) return fail("the amount must be a positive integer");
  if (i - start > 15) return fail("the amount is too large");
  spec.amount = std::stoll(std::string(left.substr(start, i - start)));
  if (spec.amount <= 0) return fail("the amount must be at least 1");
  std::string unit;
  for (; i < left.size(); ++i) {
    char c = left[i];
    if (std::isspace(static_cast<unsigned char>(c))) continue;
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-')
      return fail("bad character in the unit");
    unit += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  if (unit.empty() || unit == "request" || unit == "req" || unit == "reqs" ||
      unit == "requests" || unit == "calls" || unit == "call")
    unit = "requests";
  spec.unit = unit;

  // An optional " burst N" after the window makes it a leaky bucket.
  std::string window(right);
  if (auto b = window.find("burst"); b != std::string::npos) {
    std::string_view rest = std::string_view(window).substr(b + 5);
    std::size_t j = 0;
    while (j < rest.size() && std::isspace(static_cast<unsigned char>(rest[j])))
      ++j;
    std::size_t digits = j;
    while (j < rest.size() && std::isdigit(static_cast<unsigned char>(rest[j])))
      ++j;
    if (j == digits) return fail("burst needs a whole number, e.g. \"burst 10\"");
    if (j - digits > 15) return fail("the burst is too large");
    std::size_t end = j;
    while (end < rest.size() &&
           std::isspace(static_cast<unsigned char>(rest[end])))
      ++end;
    if (end != rest.size()) return fail("unexpected text after the burst");
    spec.burst = std::stoll(std::string(rest.substr(digits, j - digits)));
    if (b == 0 || !std::isspace(static_cast<unsigned char>(window[b - 1])))
      return fail("write the burst after the window, e.g. \"20/s burst 10\"");
    window.erase(b);
  }
  std::size_t k = 0;
  while (k < window.size() &&
         std::isspace(static_cast<unsigned char>(window[k])))
    ++k;
  // "/s" and "/min" mean one of that unit.
  if (k < window.size() && std::isalpha(static_cast<unsigned char>(window[k])))
    window.insert(k, "1");
  auto ms = parse_duration(window);
  if (!ms) return fail(ms.error());
  if (*ms <= 0) return fail("the window must be longer than 0");
  spec.window_ms = *ms;
  return spec;
}

}  // namespace pacer
