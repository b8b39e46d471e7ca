#include "common/units.h"

#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <string>

namespace pacer {
namespace {

// Splits "1.5 min" into 1.5 and "min". Returns false when no number leads.
bool split_number(std::string_view s, double& number, std::string& unit) {
  s = trim(s);
  std::size_t i = 0;
  while (i < s.size() &&
         (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.'))
    ++i;
  if (i == 0) return false;
  std::string num(s.substr(0, i));
  char* end = nullptr;
  number = std::strtod(num.c_str(), &end);
  if (end != num.c_str() + num.size() || !std::isfinite(number)) return false;
  unit = std::string(trim(s.substr(i)));
  for (char& c : unit) c = static_cast<char>(std::tolower(c));
  return true;
}

Result<double> unit_ms(const std::string& u) {
  if (u == "ms" || u == "msec" || u == "millisecond" || u == "milliseconds")
    return 1.0;
  if (u == "s" || u == "sec" || u == "secs" || u == "second" || u == "seconds")
    return 1000.0;
  if (u == "m" || u == "min" || u == "mins" || u == "minute" || u == "minutes")
    return 60'000.0;
  if (u == "h" || u == "hr" || u == "hour" || u == "hours") return 3'600'000.0;
  if (u == "d" || u == "day" || u == "days") return 86'400'000.0;
  return Error{"unknown time unit '" + u + "' (use ms, s, min, h or d)"};
}

}  // namespace

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front())))
    s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back())))
    s.remove_suffix(1);
  return s;
}

Result<Millis> parse_duration(std::string_view text) {
  double total = 0;
  std::string_view rest = trim(text);
  if (rest.empty()) return Error{"empty duration"};
  // Accept compound forms such as "1m30s" by consuming number+unit pairs.
  while (!rest.empty()) {
    std::size_t i = 0;
    while (
        i < rest.size() &&
        (std::isdigit(static_cast<unsigned char>(rest[i])) || rest[i] == '.'))
      ++i;
    std::size_t j = i;
    while (j < rest.size() && std::isspace(static_cast<unsigned char>(rest[j])))
      ++j;
    std::size_t k = j;
    while (k < rest.size() && std::isalpha(static_cast<unsigned char>(rest[k])))
      ++k;
    if (i == 0 || k == j)
      return Error{"invalid duration '" + std::string(text) +
                   "' (expected e.g. 250ms, 2s, 5min, 1h)"};
    double number;
    std::string unit;
    if (!split_number(rest.substr(0, k), number, unit))
      return Error{"invalid duration '" + std::string(text) + "'"};
    auto factor = unit_ms(unit);
    if (!factor)
      return Error{factor.error() + " in '" + std::string(text) + "'"};
    total += number * *factor;
    rest = trim(rest.substr(k));
  }
  if (total > static_cast<double>(kMaxDurationMs))
    return Error{"duration '" + std::string(text) + "' is too long"};
  return static_cast<Millis>(std::llround(total));
}

Result<std::int64_t> parse_size(std::string_view text) {
  double number;
  std::string unit;
  if (!split_number(text, number, unit))
    return Error{"invalid size '" + std::string(text) +
                 "' (expected e.g. 64KiB)"};
  double factor = 0;
  if (unit.empty() || unit == "b")
    factor = 1;
  else if (unit == "kb")
    factor = 1e3;
  else if (unit == "kib" || unit == "k")
    factor = 1024;
  else if (unit == "mb")
    factor = 1e6;
  else if (unit == "mib" || unit == "m")
    factor = 1024.0 * 1024;
  else if (unit == "gb")
    factor = 1e9;
  else if (unit == "gib" || unit == "g")
    factor = 1024.0 * 1024 * 1024;
  else
    return Error{"unknown size unit '" + unit + "' in '" + std::string(text) +
                 "'"};
  double v = number * factor;
  if (v > 1e15) return Error{"size '" + std::string(text) + "' is too large"};
  return static_cast<std::int64_t>(std::llround(v));
}

std::string format_duration(Millis ms) {
  if (ms < 0) return "-" + format_duration(-ms);
  if (ms < 1000) return std::to_string(ms) + "ms";
  if (ms < 60'000) {
    // Exact, so a limit's window renders as what it is ("2s", "1.05s"), and
    // 59999 does not round up to "60.0s".
    std::string s = std::to_string(ms / 1000);
    if (Millis frac = ms % 1000) {
      char buf[8];
      std::snprintf(buf, sizeof buf, ".%03d", static_cast<int>(frac));
      s += buf;
      while (s.back() == '0') s.pop_back();
    }
    return s + "s";
  }
  Millis s = ms / 1000;
  if (s < 3600)
    return std::to_string(s / 60) + "m" + std::to_string(s % 60) + "s";
  return std::to_string(s / 3600) + "h" + std::to_string((s % 3600) / 60) + "m";
}

}  // namespace pacer
