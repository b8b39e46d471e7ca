#include "common/ratelimit.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <limits>
#include <map>
#include <set>
#include <tuple>

#include "common/json_limits.h"

namespace pacer {
namespace {

__extension__ typedef __int128 Int128;

// Bounds on what one response can make the parser hold or report.
constexpr std::size_t kMaxHeaderLines = 512;
constexpr std::size_t kMaxLineBytes = 8 << 10;    // longer values ignored
constexpr std::size_t kMaxFieldBytes = 32 << 10;  // joined repeats of a name
constexpr std::size_t kMaxLimits = 64;
constexpr std::size_t kMaxWarnings = 32;
constexpr std::size_t kMaxTextBytes = 128;  // names, reasons
constexpr std::size_t kMaxPartitionKeyBytes = 256;
constexpr Millis kMaxSkewMs = 3'600'000;  // R2: a Date further off is ignored
constexpr std::int64_t kMaxWindowS = kMaxObservedWaitMs / 1000;
constexpr Millis kGithubSecondaryDefaultMs = 60'000;
constexpr Millis kSuspiciousDeltaMs = 86'400'000;
// Instants are only computed for years 1..9999; keeps arithmetic in range.
constexpr Millis kMaxInstantMs = 253'402'300'799'999;  // 9999-12-31
constexpr Millis kMinInstantMs = -62'135'596'800'000;  // 0001-01-01

constexpr std::int64_t kNsPerMs = 1'000'000;
constexpr std::int64_t kNsPerS = 1'000'000'000;

constexpr std::array<std::string_view, 15> kDialects = {
    "auto",   "generic",   "github",  "x",      "discord",
    "reddit", "gitlab",    "ietf",    "openai", "azure",
    "groq",   "anthropic", "shopify", "akamai", "prisjakt"};

enum class Dialect {
  kAuto,
  kGeneric,
  kGithub,
  kX,
  kDiscord,
  kReddit,
  kGitlab,
  kIetf,
  kOpenai,
  kAzure,
  kGroq,
  kAnthropic,
  kShopify,
  kAkamai,
  kPrisjakt,
};

// ---------------------------------------------------------------- text

char lower_char(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = lower_char(c);
  return out;
}

bool icontains(std::string_view hay, std::string_view needle) {
  if (needle.empty()) return true;
  if (hay.size() < needle.size()) return false;
  for (std::size_t i = 0; i + needle.size() <= hay.size(); ++i) {
    std::size_t k = 0;
    while (k < needle.size() && lower_char(hay[i + k]) == lower_char(needle[k]))
      ++k;
    if (k == needle.size()) return true;
  }
  return false;
}

bool is_ows(char c) { return c == ' ' || c == '\t'; }

std::string_view trim_ows(std::string_view s) {
  while (!s.empty() &&
         (is_ows(s.front()) || s.front() == '\r' || s.front() == '\n'))
    s.remove_prefix(1);
  while (!s.empty() &&
         (is_ows(s.back()) || s.back() == '\r' || s.back() == '\n'))
    s.remove_suffix(1);
  return s;
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_alpha(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

// Text taken from a response for the observation: printable ASCII only (the
// JSON must always serialize) and bounded.
std::string sanitize(std::string_view s, std::size_t max = kMaxTextBytes) {
  std::string out;
  out.reserve(std::min(s.size(), max));
  for (char c : s) {
    if (out.size() >= max) break;
    auto u = static_cast<unsigned char>(c);
    out += (u >= 0x20 && u < 0x7f) ? c : '?';
  }
  return out;
}

// The conventional spelling of a (lower-case) header name for warnings:
// "x-ratelimit-reset" -> "X-RateLimit-Reset", whatever the wire casing was.
std::string display_name(std::string_view lname) {
  std::string out;
  std::size_t start = 0;
  while (start <= lname.size()) {
    std::size_t dash = lname.find('-', start);
    if (dash == std::string_view::npos) dash = lname.size();
    std::string_view seg = lname.substr(start, dash - start);
    if (!out.empty() || start > 0) out += '-';
    if (seg == "ratelimit") {
      out += "RateLimit";
    } else if (!seg.empty()) {
      out += static_cast<char>(
          seg[0] >= 'a' && seg[0] <= 'z' ? seg[0] - 'a' + 'A' : seg[0]);
      out += seg.substr(1);
    }
    start = dash + 1;
  }
  return sanitize(out);
}

// Comma-separated members. `dates` keeps "Wed, 01 Jan 2025 ..." whole: a
// member that is only letters (a day name) is joined with the next one.
std::vector<std::string_view> split_members(std::string_view v,
                                            bool dates = false) {
  std::vector<std::string_view> raw;
  std::size_t start = 0;
  while (start <= v.size()) {
    std::size_t comma = v.find(',', start);
    if (comma == std::string_view::npos) comma = v.size();
    raw.push_back(v.substr(start, comma - start));
    start = comma + 1;
  }
  std::vector<std::string_view> out;
  for (std::size_t i = 0; i < raw.size(); ++i) {
    std::string_view m = trim_ows(raw[i]);
    bool day_name = dates && !m.empty() && i + 1 < raw.size() &&
                    std::all_of(m.begin(), m.end(), is_alpha);
    if (day_name) {
      // Both pieces point into `v`: take the span from this to the next.
      const char* begin = raw[i].data();
      const char* end = raw[i + 1].data() + raw[i + 1].size();
      out.push_back(trim_ows(
          std::string_view(begin, static_cast<std::size_t>(end - begin))));
      ++i;
    } else {
      out.push_back(m);
    }
  }
  return out;
}

// ---------------------------------------------------------------- numbers

// A decimal number kept exactly enough to convert to milliseconds with a
// ceiling: whole part (at most 18 digits) and the first 9 fraction digits.
struct Decimal {
  bool negative = false;
  std::uint64_t whole = 0;
  std::uint64_t frac = 0;  // the first `frac_digits` fraction digits
  int frac_digits = 0;
  bool frac_rest = false;  // non-zero digits beyond the ninth
  bool has_point = false;

  bool has_fraction() const { return frac != 0 || frac_rest; }
  double to_double() const {
    double v = static_cast<double>(whole) +
               static_cast<double>(frac) / std::pow(10.0, frac_digits);
    return negative ? -v : v;
  }
  bool is_zero() const { return whole == 0 && !has_fraction(); }
};

// The resolution of a number of seconds as written: 1000 ms for a whole
// number, finer with each fraction digit, never below 1 ms.
Millis seconds_precision_ms(const Decimal& d) {
  if (!d.has_point) return 1000;
  Millis p = 1000;
  for (int i = 0; i < d.frac_digits && p > 1; ++i) p /= 10;
  return std::max<Millis>(p, 1);
}


std::uint64_t pow10(int n) {
  std::uint64_t p = 1;
  while (n-- > 0) p *= 10;
  return p;
}

// Strict: "-"? DIGITS ("." DIGITS)?. No exponent, no '+', no spaces inside.
std::optional<Decimal> parse_decimal(std::string_view s) {
  s = trim_ows(s);
  Decimal d;
  std::size_t i = 0;
  if (i < s.size() && s[i] == '-') {
    d.negative = true;
    ++i;
  }
  std::size_t digits = 0;
  bool significant = false;
  int sig_digits = 0;
  for (; i < s.size() && is_digit(s[i]); ++i, ++digits) {
    if (s[i] != '0') significant = true;
    if (!significant) continue;
    if (++sig_digits > 18) return std::nullopt;
    d.whole = d.whole * 10 + static_cast<std::uint64_t>(s[i] - '0');
  }
  if (digits == 0) return std::nullopt;
  if (i < s.size() && s[i] == '.') {
    d.has_point = true;
    ++i;
    std::size_t fdigits = 0;
    for (; i < s.size() && is_digit(s[i]); ++i, ++fdigits) {
      if (d.frac_digits < 9) {
        d.frac = d.frac * 10 + static_cast<std::uint64_t>(s[i] - '0');
        ++d.frac_digits;
      } else if (s[i] != '0') {
        d.frac_rest = true;
      }
    }
    if (fdigits == 0) return std::nullopt;
  }
  if (i != s.size()) return std::nullopt;
  if (d.is_zero()) d.negative = false;
  return d;
}

// ceil(d * ns_per_unit) in nanoseconds, as Int128; d must be non-negative.
Int128 to_ns(const Decimal& d, std::int64_t ns_per_unit) {
  Int128 ns = static_cast<Int128>(d.whole) * ns_per_unit;
  if (d.has_fraction()) {
    Int128 scale = static_cast<Int128>(pow10(d.frac_digits));
    Int128 part = static_cast<Int128>(d.frac) * ns_per_unit;
    Int128 q = part / scale;
    if (part % scale != 0 || d.frac_rest) ++q;
    ns += q;
  }
  return ns;
}

// ceil of a non-negative nanosecond count in milliseconds; nullopt when it
// does not fit in int64.
std::optional<Millis> ns_to_ms(Int128 ns) {
  Int128 ms = (ns + kNsPerMs - 1) / kNsPerMs;
  if (ms > static_cast<Int128>(std::numeric_limits<std::int64_t>::max()))
    return std::nullopt;
  return static_cast<Millis>(ms);
}

// d units of `ns_per_unit` in milliseconds, rounded up; nullopt on overflow.
std::optional<Millis> to_ms(const Decimal& d, std::int64_t ns_per_unit) {
  if (d.negative) return std::nullopt;
  return ns_to_ms(to_ns(d, ns_per_unit));
}

// The shortest decimal text of a double, read back exactly ("64.57" stays
// 64.57, not 64.5700000001).
std::optional<Decimal> decimal_from_double(double v) {
  if (!std::isfinite(v)) return std::nullopt;
  char buf[400];
  auto r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::fixed);
  if (r.ec != std::errc()) return std::nullopt;
  return parse_decimal(
      std::string_view(buf, static_cast<std::size_t>(r.ptr - buf)));
}

// Go / protobuf-style durations: "6m0s", "1h2m3.5s", "20ms", "7.66s", "34s".
// Returns the value in ns; nullopt when it does not parse.
std::optional<Int128> parse_go_duration_ns(std::string_view s) {
  s = trim_ows(s);
  if (s.empty()) return std::nullopt;
  if (s == "0") return Int128{0};
  Int128 total = 0;
  std::size_t i = 0;
  while (i < s.size()) {
    std::size_t start = i;
    while (i < s.size() && (is_digit(s[i]) || s[i] == '.')) ++i;
    std::string_view num = s.substr(start, i - start);
    if (num.empty()) return std::nullopt;
    std::string padded(num);
    if (padded.front() == '.') padded.insert(padded.begin(), '0');
    if (padded.back() == '.') padded.pop_back();
    auto d = parse_decimal(padded);
    if (!d) return std::nullopt;
    std::int64_t unit = 0;
    auto rest = s.substr(i);
    if (rest.starts_with("ns")) {
      unit = 1, i += 2;
    } else if (rest.starts_with("us")) {
      unit = 1000, i += 2;
    } else if (rest.starts_with("\xC2\xB5s") || rest.starts_with("\xCE\xBCs")) {
      unit = 1000, i += 3;  // micro sign or Greek mu, then 's'
    } else if (rest.starts_with("ms")) {
      unit = kNsPerMs, i += 2;
    } else if (rest.starts_with("s")) {
      unit = kNsPerS, i += 1;
    } else if (rest.starts_with("m")) {
      unit = 60 * kNsPerS, i += 1;
    } else if (rest.starts_with("h")) {
      unit = 3600 * kNsPerS, i += 1;
    } else {
      return std::nullopt;
    }
    total += to_ns(*d, unit);
    if (total > static_cast<Int128>(kMaxObservedWaitMs) * kNsPerMs * 1000)
      return total;  // far beyond the cap; the caller reports it
  }
  return total;
}

// Saturating a - b for instants.
Millis sat_sub(Millis a, Millis b) {
  Millis r = 0;
  if (__builtin_sub_overflow(a, b, &r))
    return b < 0 ? std::numeric_limits<Millis>::max()
                 : std::numeric_limits<Millis>::min();
  return r;
}

// ---------------------------------------------------------------- dates

std::int64_t days_from_civil(std::int64_t y, int m, int d) {
  y -= m <= 2 ? 1 : 0;
  const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  const std::int64_t yoe = y - era * 400;
  const std::int64_t mp = (m + 9) % 12;
  const std::int64_t doy = (153 * mp + 2) / 5 + d - 1;
  const std::int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

int year_of(Millis ms) {
  std::int64_t days = ms / 86'400'000;
  if (ms < 0 && ms % 86'400'000 != 0) --days;
  days += 719468;
  const std::int64_t era = (days >= 0 ? days : days - 146096) / 146097;
  const std::int64_t doe = days - era * 146097;
  const std::int64_t yoe =
      (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  std::int64_t y = yoe + era * 400;
  const std::int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const std::int64_t mp = (5 * doy + 2) / 153;
  const std::int64_t m = mp < 10 ? mp + 3 : mp - 9;
  return static_cast<int>(m <= 2 ? y + 1 : y);
}

bool leap(std::int64_t y) {
  return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

int days_in_month(std::int64_t y, int m) {
  static constexpr int kDays[] = {31, 28, 31, 30, 31, 30,
                                  31, 31, 30, 31, 30, 31};
  return m == 2 && leap(y) ? 29 : kDays[m - 1];
}

// Reads exactly `n` digits.
bool digits(std::string_view s, std::size_t& i, int n, int& out) {
  out = 0;
  for (int k = 0; k < n; ++k, ++i) {
    if (i >= s.size() || !is_digit(s[i])) return false;
    out = out * 10 + (s[i] - '0');
  }
  return true;
}

bool lit(std::string_view s, std::size_t& i, std::string_view text) {
  if (s.substr(i, text.size()) != text) return false;
  i += text.size();
  return true;
}

int month_index(std::string_view m) {
  static constexpr std::array<std::string_view, 12> kMonths = {
      "Jan", "Feb", "Mar", "Apr", "May", "Jun",
      "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  for (std::size_t k = 0; k < kMonths.size(); ++k)
    if (kMonths[k] == m) return static_cast<int>(k) + 1;
  return 0;
}

bool short_day(std::string_view d) {
  static constexpr std::array<std::string_view, 7> kDays = {
      "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
  return std::find(kDays.begin(), kDays.end(), d) != kDays.end();
}

bool long_day(std::string_view d) {
  static constexpr std::array<std::string_view, 7> kDays = {
      "Monday", "Tuesday",  "Wednesday", "Thursday",
      "Friday", "Saturday", "Sunday"};
  return std::find(kDays.begin(), kDays.end(), d) != kDays.end();
}

std::optional<Millis> civil_ms(std::int64_t y, int mo, int d, int h, int mi,
                               int s) {
  if (y < 1 || y > 9999 || mo < 1 || mo > 12 || d < 1 ||
      d > days_in_month(y, mo) || h > 23 || mi > 59 || s > 60)
    return std::nullopt;
  if (s == 60) s = 59;  // a leap second: the instant just before is fine
  return (days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s) * 1000;
}

bool time_of_day(std::string_view s, std::size_t& i, int& h, int& mi,
                 int& sec) {
  return digits(s, i, 2, h) && lit(s, i, ":") && digits(s, i, 2, mi) &&
         lit(s, i, ":") && digits(s, i, 2, sec);
}

// The three HTTP-date forms of RFC 9110 §5.6.7, strictly (case-sensitive,
// GMT only). `now_ms` places RFC 850's two-digit years.
std::optional<Millis> parse_http_date(std::string_view s, Millis now_ms) {
  s = trim_ows(s);
  std::size_t comma = s.find(',');
  int d = 0, y4 = 0, h = 0, mi = 0, sec = 0;
  if (comma == 3 && short_day(s.substr(0, 3))) {
    // IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
    std::size_t i = 4;
    if (!lit(s, i, " ") || !digits(s, i, 2, d) || !lit(s, i, " "))
      return std::nullopt;
    int mo = month_index(s.substr(i, 3));
    i += 3;
    if (!mo || !lit(s, i, " ") || !digits(s, i, 4, y4) || !lit(s, i, " ") ||
        !time_of_day(s, i, h, mi, sec) || !lit(s, i, " GMT") || i != s.size())
      return std::nullopt;
    return civil_ms(y4, mo, d, h, mi, sec);
  }
  if (comma != std::string_view::npos && long_day(s.substr(0, comma))) {
    // RFC 850: Sunday, 06-Nov-94 08:49:37 GMT
    std::size_t i = comma + 1;
    int y2 = 0;
    if (!lit(s, i, " ") || !digits(s, i, 2, d) || !lit(s, i, "-"))
      return std::nullopt;
    int mo = month_index(s.substr(i, 3));
    i += 3;
    if (!mo || !lit(s, i, "-") || !digits(s, i, 2, y2) || !lit(s, i, " ") ||
        !time_of_day(s, i, h, mi, sec) || !lit(s, i, " GMT") || i != s.size())
      return std::nullopt;
    // More than 50 years ahead means the latest past year with those digits.
    int now_year = year_of(std::clamp(now_ms, Millis{0}, kMaxInstantMs));
    int year = now_year / 100 * 100 + y2;
    if (year > now_year + 50) year -= 100;
    return civil_ms(year, mo, d, h, mi, sec);
  }
  if (comma == std::string_view::npos && s.size() == 24 &&
      short_day(s.substr(0, 3))) {
    // asctime: Sun Nov  6 08:49:37 1994
    std::size_t i = 3;
    if (!lit(s, i, " ")) return std::nullopt;
    int mo = month_index(s.substr(i, 3));
    i += 3;
    if (!mo || !lit(s, i, " ")) return std::nullopt;
    if (s[i] == ' ') {
      ++i;
      if (!digits(s, i, 1, d)) return std::nullopt;
    } else if (!digits(s, i, 2, d)) {
      return std::nullopt;
    }
    if (!lit(s, i, " ") || !time_of_day(s, i, h, mi, sec) || !lit(s, i, " ") ||
        !digits(s, i, 4, y4) || i != s.size())
      return std::nullopt;
    return civil_ms(y4, mo, d, h, mi, sec);
  }
  return std::nullopt;
}

// RFC 3339: 2025-01-01T00:00:06.500Z, 2025-01-01T01:00:07+01:00. Fractions
// of a millisecond round up.
std::optional<Millis> parse_rfc3339(std::string_view s) {
  s = trim_ows(s);
  std::size_t i = 0;
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, sec = 0;
  if (!digits(s, i, 4, y) || !lit(s, i, "-") || !digits(s, i, 2, mo) ||
      !lit(s, i, "-") || !digits(s, i, 2, d))
    return std::nullopt;
  if (i >= s.size() || (s[i] != 'T' && s[i] != 't' && s[i] != ' '))
    return std::nullopt;
  ++i;
  if (!time_of_day(s, i, h, mi, sec)) return std::nullopt;
  Millis frac_ms = 0;
  if (i < s.size() && s[i] == '.') {
    ++i;
    std::int64_t num = 0;
    int n = 0;
    bool rest = false;
    std::size_t start = i;
    for (; i < s.size() && is_digit(s[i]); ++i) {
      if (n < 3) {
        num = num * 10 + (s[i] - '0');
        ++n;
      } else if (s[i] != '0') {
        rest = true;
      }
    }
    if (i == start) return std::nullopt;
    while (n < 3) num *= 10, ++n;
    frac_ms = num + (rest ? 1 : 0);
  }
  if (i >= s.size()) return std::nullopt;
  Millis offset_ms = 0;
  if (s[i] == 'Z' || s[i] == 'z') {
    ++i;
  } else if (s[i] == '+' || s[i] == '-') {
    int sign = s[i] == '-' ? -1 : 1;
    ++i;
    int oh = 0, om = 0;
    if (!digits(s, i, 2, oh) || !lit(s, i, ":") || !digits(s, i, 2, om) ||
        oh > 23 || om > 59)
      return std::nullopt;
    offset_ms = sign * (oh * 3600 + om * 60) * 1000LL;
  } else {
    return std::nullopt;
  }
  if (i != s.size()) return std::nullopt;
  auto base = civil_ms(y, mo, d, h, mi, sec);
  if (!base) return std::nullopt;
  return *base + frac_ms - offset_ms;
}

// ---------------------------------------------------------------- SF

// Structured Field values (RFC 8941 / RFC 9651), as much as the RateLimit
// fields need: Lists and Dictionaries of Items with parameters; Inner Lists
// are parsed (so a valid field is not refused) and then ignored.
struct SfBare {
  enum class Type {
    kInteger,
    kDecimal,
    kString,
    kToken,
    kBytes,
    kBoolean,
    kDate,
    kInnerList
  };
  Type type = Type::kBoolean;
  Decimal number;    // kInteger, kDecimal, kDate
  std::string text;  // kString, kToken, kBytes (decoded)
  std::string raw;   // kBytes: the base64 text as sent
  bool boolean = true;
};

struct SfParam {
  std::string key;
  SfBare value;
};

struct SfItem {
  SfBare bare;
  std::vector<SfParam> params;

  const SfBare* param(std::string_view key) const {
    for (const auto& p : params)
      if (p.key == key) return &p.value;
    return nullptr;
  }
};

int base64_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

class SfParser {
 public:
  explicit SfParser(std::string_view s) : s_(trim_sp(s)) {}

  bool list(std::vector<SfItem>& out) {
    while (i_ < s_.size()) {
      SfItem item;
      if (!member(item)) return false;
      out.push_back(std::move(item));
      skip_ows();
      if (i_ == s_.size()) return true;
      if (s_[i_] != ',') return false;
      ++i_;
      skip_ows();
      if (i_ == s_.size()) return false;  // a trailing comma
    }
    return true;
  }

  bool dictionary(std::vector<std::pair<std::string, SfItem>>& out) {
    while (i_ < s_.size()) {
      std::string k;
      if (!key(k)) return false;
      SfItem item;
      if (i_ < s_.size() && s_[i_] == '=') {
        ++i_;
        if (!member(item)) return false;
      } else {
        item.bare.type = SfBare::Type::kBoolean;
        if (!params(item.params)) return false;
      }
      auto it = std::find_if(out.begin(), out.end(),
                             [&](const auto& e) { return e.first == k; });
      if (it != out.end())
        it->second = std::move(item);
      else
        out.emplace_back(std::move(k), std::move(item));
      skip_ows();
      if (i_ == s_.size()) return true;
      if (s_[i_] != ',') return false;
      ++i_;
      skip_ows();
      if (i_ == s_.size()) return false;
    }
    return true;
  }

 private:
  static std::string_view trim_sp(std::string_view s) {
    while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
    while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
    return s;
  }
  void skip_ows() {
    while (i_ < s_.size() && is_ows(s_[i_])) ++i_;
  }
  void skip_sp() {
    while (i_ < s_.size() && s_[i_] == ' ') ++i_;
  }

  bool member(SfItem& item) {
    if (i_ < s_.size() && s_[i_] == '(') return inner_list(item);
    return bare(item.bare) && params(item.params);
  }

  bool inner_list(SfItem& item) {
    ++i_;  // '('
    item.bare.type = SfBare::Type::kInnerList;
    while (i_ < s_.size()) {
      skip_sp();
      if (i_ < s_.size() && s_[i_] == ')') {
        ++i_;
        return params(item.params);
      }
      SfItem inner;
      if (!bare(inner.bare) || !params(inner.params)) return false;
      if (i_ >= s_.size() || (s_[i_] != ' ' && s_[i_] != ')')) return false;
    }
    return false;
  }

  bool params(std::vector<SfParam>& out) {
    while (i_ < s_.size() && s_[i_] == ';') {
      ++i_;
      skip_sp();
      std::string k;
      if (!key(k)) return false;
      SfBare value;
      value.type = SfBare::Type::kBoolean;
      if (i_ < s_.size() && s_[i_] == '=') {
        ++i_;
        if (!bare(value)) return false;
      }
      auto it = std::find_if(out.begin(), out.end(),
                             [&](const SfParam& p) { return p.key == k; });
      if (it != out.end())
        it->value = std::move(value);  // the last one wins
      else
        out.push_back({std::move(k), std::move(value)});
    }
    return true;
  }

  bool key(std::string& out) {
    if (i_ >= s_.size()) return false;
    char c = s_[i_];
    if (!((c >= 'a' && c <= 'z') || c == '*')) return false;
    std::size_t start = i_;
    while (i_ < s_.size()) {
      c = s_[i_];
      if ((c >= 'a' && c <= 'z') || is_digit(c) || c == '_' || c == '-' ||
          c == '.' || c == '*')
        ++i_;
      else
        break;
    }
    out.assign(s_.substr(start, i_ - start));
    return true;
  }

  bool bare(SfBare& out) {
    if (i_ >= s_.size()) return false;
    char c = s_[i_];
    if (c == '-' || is_digit(c)) return number(out);
    if (c == '"') return string(out);
    if (c == ':') return bytes(out);
    if (c == '?') {
      if (i_ + 1 >= s_.size() || (s_[i_ + 1] != '0' && s_[i_ + 1] != '1'))
        return false;
      out.type = SfBare::Type::kBoolean;
      out.boolean = s_[i_ + 1] == '1';
      i_ += 2;
      return true;
    }
    if (c == '@') {
      ++i_;
      if (!number(out) || out.type != SfBare::Type::kInteger) return false;
      out.type = SfBare::Type::kDate;
      return true;
    }
    if (is_alpha(c) || c == '*') return token(out);
    return false;
  }

  bool number(SfBare& out) {
    std::size_t start = i_;
    if (s_[i_] == '-') ++i_;
    if (i_ >= s_.size() || !is_digit(s_[i_])) return false;
    std::size_t int_digits = 0, frac_digits = 0;
    bool point = false;
    while (i_ < s_.size()) {
      char c = s_[i_];
      if (is_digit(c)) {
        (point ? frac_digits : int_digits)++;
        ++i_;
      } else if (c == '.' && !point) {
        if (int_digits > 12) return false;
        point = true;
        ++i_;
      } else {
        break;
      }
      if (!point && int_digits > 15) return false;
    }
    if (point && (frac_digits == 0 || frac_digits > 3)) return false;
    auto d = parse_decimal(s_.substr(start, i_ - start));
    if (!d) return false;
    out.type = point ? SfBare::Type::kDecimal : SfBare::Type::kInteger;
    out.number = *d;
    return true;
  }

  bool string(SfBare& out) {
    ++i_;  // '"'
    out.type = SfBare::Type::kString;
    while (i_ < s_.size()) {
      char c = s_[i_++];
      if (c == '\\') {
        if (i_ >= s_.size() || (s_[i_] != '"' && s_[i_] != '\\')) return false;
        out.text += s_[i_++];
      } else if (c == '"') {
        return true;
      } else if (static_cast<unsigned char>(c) < 0x20 ||
                 static_cast<unsigned char>(c) > 0x7e) {
        return false;
      } else {
        out.text += c;
      }
    }
    return false;
  }

  bool token(SfBare& out) {
    out.type = SfBare::Type::kToken;
    std::size_t start = i_;
    static constexpr std::string_view kExtra = "!#$%&'*+-.^_`|~:/";
    while (i_ < s_.size() && (is_alpha(s_[i_]) || is_digit(s_[i_]) ||
                              kExtra.find(s_[i_]) != std::string_view::npos))
      ++i_;
    out.text.assign(s_.substr(start, i_ - start));
    return true;
  }

  bool bytes(SfBare& out) {
    ++i_;  // ':'
    out.type = SfBare::Type::kBytes;
    std::size_t end = s_.find(':', i_);
    if (end == std::string_view::npos) return false;
    std::string_view b64 = s_.substr(i_, end - i_);
    i_ = end + 1;
    out.raw.assign(b64);
    std::uint32_t acc = 0;
    int bits = 0;
    bool padding = false;
    for (char c : b64) {
      if (c == '=') {
        padding = true;
        continue;
      }
      int v = base64_value(c);
      if (v < 0 || padding) return false;
      acc = (acc << 6) | static_cast<std::uint32_t>(v);
      bits += 6;
      if (bits >= 8) {
        bits -= 8;
        out.text += static_cast<char>((acc >> bits) & 0xff);
      }
    }
    return true;
  }

  std::string_view s_;
  std::size_t i_ = 0;
};

// A non-negative SF Integer, or a non-negative Decimal (accepted leniently;
// `decimal` tells). Anything else is nullopt.
std::optional<Decimal> sf_non_negative(const SfBare& b, bool& decimal) {
  decimal = false;
  if (b.type == SfBare::Type::kInteger && !b.number.negative) return b.number;
  if (b.type == SfBare::Type::kDecimal && !b.number.negative) {
    decimal = true;
    return b.number;
  }
  return std::nullopt;
}

// ---------------------------------------------------------------- fields

// All lines of one header name: joined with ", " in order (R3).
struct Field {
  std::string_view name;  // the lower-case name (the map's key)
  std::vector<std::string> lines;
  std::string joined;
  std::size_t first = 0;  // position of its first line in the response

  // The conventional spelling, for warnings.
  std::string display() const { return display_name(name); }
};

// Whether any dialect reads a header of this (lower-case) name; the others
// are skipped without being stored.
bool relevant(std::string_view n) {
  return n.find("ratelimit") != std::string_view::npos ||
         n.find("rate-limit") != std::string_view::npos ||
         n.starts_with("retry-after") || n == "x-ms-retry-after-ms" ||
         n == "date" || n == "x-should-retry" || n.starts_with("stripe-") ||
         n == "x-amzn-errortype" || n == "x-shopify-shop-api-call-limit" ||
         n.starts_with("anthropic-") || n.starts_with("x-user-limit-") ||
         n.starts_with("x-app-limit-");
}

enum class ResetUnit { kHeuristic, kEpochS, kDeltaS, kDeltaMs, kGoDuration };

// The live counters of one dialect family.
struct Counters {
  const Field* limit = nullptr;
  const Field* remaining = nullptr;
  const Field* reset = nullptr;
  const Field* used = nullptr;

  bool any() const { return limit || remaining || reset || used; }
  std::size_t order() const {
    std::size_t o = std::numeric_limits<std::size_t>::max();
    for (const Field* f : {limit, remaining, reset, used})
      if (f) o = std::min(o, f->first);
    return o;
  }
};

// How a family's values are read.
struct Style {
  std::string source;
  std::string name;
  QuotaUnit unit = QuotaUnit::kRequests;
  LimitScope scope = LimitScope::kDefault;
  ResetUnit reset_unit = ResetUnit::kHeuristic;
  ResetKind reset_kind = ResetKind::kUnknown;
  std::optional<std::int64_t> window_s;
};

// An informative quota policy: G1 list members, G2/G3 Integer policies.
struct QuotaPolicy {
  std::int64_t quota = 0;
  std::optional<std::int64_t> window_s;
  bool used = false;
};

// A G4 named policy.
struct NamedPolicy {
  std::string name;
  bool token = false;
  bool salvaged = false;
  std::optional<std::int64_t> quota;
  std::optional<std::int64_t> window_s;
  QuotaUnit unit = QuotaUnit::kRequests;
  std::optional<std::string> partition_key;
  std::vector<std::string> aliases;  // salvaged: every quoted name
  bool used = false;
};

struct Entry {
  std::size_t order = 0;  // first header position of its family
  std::size_t seq = 0;    // creation order within the response
  LimitObservation limit;
  bool sentinel = false;  // R7: limit -1, dropped with a warning
  bool invalid = false;   // dropped; the warning was given already
};

struct RetryHint {
  std::optional<Millis> ms;
  Millis precision = 1;  // see Observation::retry_after_precision_ms
};

bool kong_window(std::string_view suffix, std::int64_t& window_s) {
  // Calendar units are taken at their longest: a wait bound errs long.
  static constexpr std::pair<std::string_view, std::int64_t> kWindows[] = {
      {"second", 1},  {"minute", 60},        {"hour", 3600},
      {"day", 86400}, {"month", 31 * 86400}, {"year", 366 * 86400}};
  for (const auto& [name, w] : kWindows) {
    if (suffix == name) {
      window_s = w;
      return true;
    }
  }
  return false;
}

QuotaUnit unit_for_name(std::string_view name) {
  std::string n = lower(name);
  bool tokens = n.find("token") != std::string::npos;
  if (tokens && n.find("input") != std::string::npos)
    return QuotaUnit::kInputTokens;
  if (tokens && n.find("output") != std::string::npos)
    return QuotaUnit::kOutputTokens;
  if (tokens) return QuotaUnit::kTokens;
  if (n.starts_with("request")) return QuotaUnit::kRequests;
  return QuotaUnit::kUnknown;
}

bool token_unit(QuotaUnit u) {
  return u == QuotaUnit::kTokens || u == QuotaUnit::kInputTokens ||
         u == QuotaUnit::kOutputTokens;
}

void add_flag(std::vector<std::string>& flags, std::string_view flag) {
  if (std::find(flags.begin(), flags.end(), flag) == flags.end())
    flags.emplace_back(flag);
}

const nlohmann::json* member(const nlohmann::json& j, const char* key) {
  if (!j.is_object()) return nullptr;
  auto it = j.find(key);
  return it == j.end() ? nullptr : &*it;
}

std::optional<std::string> string_member(const nlohmann::json& j,
                                         const char* key) {
  const auto* m = member(j, key);
  if (!m || !m->is_string()) return std::nullopt;
  return m->get<std::string>();
}

std::optional<double> number_member(const nlohmann::json& j, const char* key) {
  const auto* m = member(j, key);
  if (!m || !m->is_number()) return std::nullopt;
  double v = m->get<double>();
  if (!std::isfinite(v)) return std::nullopt;
  return v;
}

// AWS error codes: "ThrottlingException:http://internal...", or
// "com.amazon.coral.service#ThrottlingException".
std::string aws_code(std::string_view raw) {
  raw = trim_ows(raw);
  if (auto colon = raw.find(':'); colon != std::string_view::npos)
    raw = raw.substr(0, colon);
  if (auto hash = raw.rfind('#'); hash != std::string_view::npos)
    raw = raw.substr(hash + 1);
  return sanitize(trim_ows(raw));
}

bool aws_throttling_code(std::string_view code) {
  static constexpr std::array<std::string_view, 14> kCodes = {
      "Throttling",
      "ThrottlingException",
      "ThrottledException",
      "RequestThrottledException",
      "TooManyRequestsException",
      "ProvisionedThroughputExceededException",
      "TransactionInProgressException",
      "RequestLimitExceeded",
      "BandwidthLimitExceeded",
      "LimitExceededException",
      "RequestThrottled",
      "SlowDown",
      "PriorRequestNotComplete",
      "EC2ThrottledException"};
  return std::find(kCodes.begin(), kCodes.end(), code) != kCodes.end();
}

Dialect dialect_of(std::string_view name, bool& known) {
  known = true;
  for (std::size_t i = 0; i < kDialects.size(); ++i)
    if (kDialects[i] == name) return static_cast<Dialect>(i);
  known = false;
  return Dialect::kAuto;
}

// ---------------------------------------------------------------- observer

class Observer {
 public:
  Observer(int status,
           std::span<const std::pair<std::string, std::string>> headers,
           std::string_view body, Millis received, std::string_view dialect)
      : status_(status),
        body_(body.substr(0, std::min(body.size(), kMaxObservedBodyBytes))),
        received_(received) {
    obs_.http_status = status;
    obs_.received_unix_ms = received;
    bool known = false;
    dialect_ = dialect_of(dialect, known);
    if (!known) warn("unknown_dialect:" + sanitize(dialect));
    collect(headers);
  }

  Observation run() {
    server_date();
    analyze_body();
    ietf_structured();
    ietf_separate();
    x_ratelimit();
    x_rate_limit();
    anthropic();
    shopify_rest();
    shopify_graphql();
    finish_limits();
    retry_headers();
    server_advice();
    verdict();
    fallback_retry();
    wait();
    return std::move(obs_);
  }

 private:
  // ---- plumbing

  void warn(std::string w) {
    if (obs_.warnings.size() >= kMaxWarnings) return;
    if (std::find(obs_.warnings.begin(), obs_.warnings.end(), w) ==
        obs_.warnings.end())
      obs_.warnings.push_back(std::move(w));
  }

  void collect(std::span<const std::pair<std::string, std::string>> headers) {
    std::size_t index = 0;
    for (const auto& [name, value] : headers) {
      if (index >= kMaxHeaderLines) {
        warn("too_many_header_lines");
        break;
      }
      std::size_t at = index++;
      std::string_view n = trim_ows(name);
      if (n.empty() || n.size() > 256) continue;
      std::string lname = lower(n);
      if (!relevant(lname)) continue;
      std::string_view v = trim_ows(value);
      if (v.size() > kMaxLineBytes) {
        warn("oversized:" + display_name(lname));
        continue;
      }
      auto [it, fresh] = fields_.try_emplace(std::move(lname));
      Field& f = it->second;
      if (fresh) {
        f.name = it->first;
        f.first = at;
      }
      if (f.joined.size() + v.size() + 2 > kMaxFieldBytes) {
        warn("oversized:" + f.display());
        continue;
      }
      if (!f.lines.empty()) f.joined += ", ";
      f.joined += v;
      f.lines.emplace_back(v);
    }
    // A name whose only lines were dropped is not present.
    for (auto it = fields_.begin(); it != fields_.end();)
      it = it->second.lines.empty() ? fields_.erase(it) : std::next(it);
  }

  const Field* field(std::string_view lname) const {
    auto it = fields_.find(lname);
    return it == fields_.end() ? nullptr : &it->second;
  }

  Entry& add_entry(std::size_t order) {
    entries_.push_back(Entry{order, seq_++, {}, false, false});
    return entries_.back();
  }

  // ---- time (R1, R2)

  void server_date() {
    const Field* f = field("date");
    if (!f) return;
    auto d = parse_http_date(f->lines.front(), received_);
    if (!d) {
      warn("unparseable:Date");
      return;
    }
    Millis skew = sat_sub(*d, received_);
    if (skew > kMaxSkewMs || skew < -kMaxSkewMs) {
      warn("date_skew_ignored");
      return;
    }
    obs_.server_skew_ms = skew;
    date_ms_ = *d;
  }

  // An absolute instant as a wait: measured against the server's Date when
  // usable, else the local receive time; the past clamps to 0.
  Millis from_instant(Millis instant, std::vector<std::string>& flags) const {
    Millis base = date_base() ? *date_ms_ : received_;
    Millis d = sat_sub(instant, base);
    if (d < 0) {
      add_flag(flags, "past_clamped");
      return 0;
    }
    return d;
  }

  std::optional<Millis> capped(std::optional<Millis> ms, const Field& f) {
    if (ms && *ms > kMaxObservedWaitMs) {
      warn("beyond_cap:" + f.display());
      return std::nullopt;
    }
    return ms;
  }

  // R9: one reset value in ms from now, or nullopt (with a warning).
  // `precision`: how far the true reset may be from the value (see
  // LimitObservation::reset_precision_ms).
  std::optional<Millis> reset_value(std::string_view v, ResetUnit unit,
                                    const Field& f,
                                    std::vector<std::string>& flags,
                                    Millis& precision) {
    v = trim_ows(v);
    std::optional<Millis> ms;
    if (auto d = parse_decimal(v)) {
      if (d->negative) {
        warn("malformed:" + f.display());
        return std::nullopt;
      }
      auto instant = [&](std::optional<Millis> at) -> std::optional<Millis> {
        if (!at) return std::nullopt;
        return from_instant(*at, flags);
      };
      const Millis in_seconds = seconds_precision_ms(*d);
      switch (unit) {
        case ResetUnit::kEpochS:
          ms = instant(to_ms(*d, kNsPerS));
          precision = instant_precision(in_seconds);
          break;
        case ResetUnit::kDeltaS:
          ms = to_ms(*d, kNsPerS);
          precision = in_seconds;
          break;
        case ResetUnit::kDeltaMs:
          ms = to_ms(*d, kNsPerMs);
          precision = 1;
          break;
        case ResetUnit::kGoDuration:
          add_flag(flags, "bare_number");  // Azure: plain seconds
          ms = to_ms(*d, kNsPerS);
          precision = in_seconds;
          break;
        case ResetUnit::kHeuristic:
          if (d->whole >= 100'000'000'000) {
            add_flag(flags, "epoch_ms_heuristic");
            ms = instant(to_ms(*d, kNsPerMs));
            precision = instant_precision(1);
          } else if (d->whole >= 1'000'000'000) {
            add_flag(flags, "epoch_heuristic");
            ms = instant(to_ms(*d, kNsPerS));
            precision = instant_precision(in_seconds);
          } else {
            ms = to_ms(*d, kNsPerS);
            precision = in_seconds;
            if (ms && *ms > kSuspiciousDeltaMs)
              add_flag(flags, "suspicious_reset");
          }
          break;
      }
      if (!ms) {
        warn("malformed:" + f.display());
        return std::nullopt;
      }
    } else if (unit == ResetUnit::kGoDuration) {
      auto ns = parse_go_duration_ns(v);
      if (ns) ms = ns_to_ms(*ns);
      if (!ms) {
        warn("unparseable:" + f.display());
        return std::nullopt;
      }
      precision = 1;
    } else {
      auto at = parse_http_date(v, received_);
      bool whole = at.has_value();
      if (!at) {
        at = parse_rfc3339(v);
        whole = v.find('.') == std::string_view::npos;
      }
      if (!at) {
        warn("unparseable:" + f.display());
        return std::nullopt;
      }
      ms = from_instant(*at, flags);
      precision = instant_precision(whole ? 1000 : 1);
    }
    return capped(ms, f);
  }

  // A Date header is the base for instants when it shows a skew it can
  // measure: it has whole seconds and was written before the response
  // travelled, so within two seconds of the local clock it says no more
  // than the local clock does, and would add a second of doubt to every
  // instant measured against it.
  bool date_base() const {
    return date_ms_ && (*date_ms_ - received_ >= 2000 ||
                        received_ - *date_ms_ >= 2000);
  }

  // The precision of an instant with resolution `own` once measured
  // against the base from_instant uses: a Date header has whole seconds.
  Millis instant_precision(Millis own) const {
    return date_base() ? own + 1000 : own;
  }

  // ---- lenient counters (X-RateLimit-*, RateLimit-Limit/Remaining/Reset)

  struct NumberMember {
    Decimal value;
    std::optional<std::int64_t> window_s;
  };

  // The numeric members of a list field ("10, 10;w=1, 50;w=60"); `bad`
  // counts the others.
  std::vector<NumberMember> numbers(const Field& f, int& bad) {
    std::vector<NumberMember> out;
    bad = 0;
    for (std::string_view m : split_members(f.joined)) {
      std::size_t semi = m.find(';');
      auto d = parse_decimal(m.substr(0, semi));
      if (!d) {
        ++bad;
        continue;
      }
      NumberMember nm{*d, std::nullopt};
      while (semi != std::string_view::npos) {
        std::size_t next = m.find(';', semi + 1);
        std::string_view param = m.substr(
            semi + 1,
            (next == std::string_view::npos ? m.size() : next) - semi - 1);
        std::size_t eq = param.find('=');
        if (eq != std::string_view::npos &&
            trim_ows(param.substr(0, eq)) == "w") {
          auto w = parse_decimal(param.substr(eq + 1));
          if (w && !w->negative && !w->has_fraction() && w->whole > 0 &&
              w->whole <= static_cast<std::uint64_t>(kMaxWindowS))
            nm.window_s = static_cast<std::int64_t>(w->whole);
        }
        semi = next;
      }
      out.push_back(nm);
    }
    return out;
  }

  // Builds the entry of one family (R7 numbers, R8 lists, R9 resets). Later
  // `*-Limit` members that carry a window are appended to `policies`.
  Entry& counters(const Counters& c, const Style& st,
                  std::vector<QuotaPolicy>* policies = nullptr) {
    Entry& e = add_entry(c.order());
    LimitObservation& l = e.limit;
    l.source = st.source;
    l.name = st.name;
    l.unit = st.unit;
    l.scope = st.scope;
    l.reset_kind = st.reset_kind;
    l.window_s = st.window_s;
    int bad = 0;
    if (c.limit) {
      auto ms = numbers(*c.limit, bad);
      if (ms.empty()) {
        warn("malformed:" + c.limit->display());
      } else {
        const Decimal& v = ms.front().value;
        if (v.negative) {
          if (v.whole == 1 && !v.has_fraction())
            e.sentinel = true;  // Azure's "unknown"
          else
            warn("malformed:" + c.limit->display());
        } else {
          l.limit = static_cast<std::int64_t>(v.whole);
          if (ms.front().window_s) l.window_s = ms.front().window_s;
        }
        for (std::size_t k = 1; policies && k < ms.size(); ++k)
          if (ms[k].window_s && !ms[k].value.negative)
            policies->push_back({static_cast<std::int64_t>(ms[k].value.whole),
                                 ms[k].window_s, false});
      }
    }
    if (c.remaining) {
      auto ms = numbers(*c.remaining, bad);
      if (ms.empty()) {
        warn("malformed:" + c.remaining->display());
      } else {
        double lowest = ms.front().value.to_double();
        for (const auto& m : ms) lowest = std::min(lowest, m.value.to_double());
        l.remaining = lowest;
        if (ms.size() > 1) add_flag(l.flags, "multi_value_min");
      }
    }
    if (c.used) {
      auto ms = numbers(*c.used, bad);
      if (ms.empty() || ms.front().value.negative) {
        warn("malformed:" + c.used->display());
      } else {
        const Decimal& v = ms.front().value;
        l.used =
            static_cast<std::int64_t>(v.whole) + (v.has_fraction() ? 1 : 0);
      }
    }
    if (c.reset) reset_into(l, *c.reset, st.reset_unit);
    return e;
  }

  // R8: the latest of the members of a reset field.
  void reset_into(LimitObservation& l, const Field& f, ResetUnit unit) {
    std::optional<Millis> latest;
    Millis latest_precision = 0;
    for (std::string_view m : split_members(f.joined, true)) {
      Millis precision = 1;
      auto v = reset_value(m, unit, f, l.flags, precision);
      if (v && (!latest || *v > *latest)) {
        latest = v;
        latest_precision = precision;
      }
    }
    l.reset_in_ms = latest;
    if (latest) l.reset_precision_ms = latest_precision;
  }

  // Joins policies to the live entry (the policy whose quota equals its
  // limit gives the window) and adds the rest as policy_only entries.
  // `live` points into entries_: it is used before any entry is added.
  void join_policies(Entry* live, std::vector<QuotaPolicy>& policies,
                     const Style& st, std::size_t order) {
    if (live && live->limit.limit) {
      for (auto& p : policies) {
        if (!p.used && p.quota == *live->limit.limit) {
          if (!live->limit.window_s) live->limit.window_s = p.window_s;
          p.used = true;
          break;
        }
      }
    }
    std::set<std::pair<std::int64_t, std::int64_t>> seen;
    for (auto& p : policies) {
      if (p.used) continue;
      p.used = true;
      if (!seen.insert({p.quota, p.window_s.value_or(-1)}).second) continue;
      Entry& e = add_entry(order);
      e.limit.source = st.source;
      e.limit.name = st.name;
      e.limit.unit = st.unit;
      e.limit.reset_kind = st.reset_kind;
      e.limit.limit = p.quota;
      e.limit.window_s = p.window_s;
      e.limit.policy_only = true;
    }
  }

  // ---- IETF RateLimit / RateLimit-Policy (G2 policies, G3, G4)

  void ietf_structured() {
    const Field* rl = field("ratelimit");
    const Field* pol = field("ratelimit-policy");
    if (!rl && !pol) return;
    std::size_t order =
        std::min(rl ? rl->first : SIZE_MAX, pol ? pol->first : SIZE_MAX);
    std::vector<NamedPolicy> named;
    if (pol) policies(*pol, named);

    bool g3 = false;
    if (rl) {
      std::vector<std::pair<std::string, SfItem>> dict;
      std::vector<SfItem> list;
      if (SfParser(rl->joined).dictionary(dict) && !dict.empty() &&
          std::all_of(dict.begin(), dict.end(), [](const auto& e) {
            return e.first == "limit" || e.first == "remaining" ||
                   e.first == "reset";
          })) {
        g3 = true;
        g3_entry(dict, order);
      } else if (SfParser(rl->joined).list(list)) {
        for (const auto& item : list) g4_entry(item, named, order);
      } else {
        warn("sf_parse_error:RateLimit");
      }
    }
    for (auto& p : named) {
      if (p.used) continue;
      Entry& e = add_entry(order);
      LimitObservation& l = e.limit;
      l.source = "ietf-08";
      l.name = p.name;
      l.unit = p.unit;
      l.reset_kind = ResetKind::kWindowEnd;
      l.limit = p.quota;
      l.window_s = p.window_s;
      l.partition_key = p.partition_key;
      l.policy_only = true;
      if (p.token) add_flag(l.flags, "token_identifier");
      if (p.salvaged) add_flag(l.flags, "policy_salvaged");
    }
    if (g3) {
      Style st{"ietf-07",
               "",
               QuotaUnit::kRequests,
               LimitScope::kDefault,
               ResetUnit::kDeltaS,
               ResetKind::kWindowEnd,
               std::nullopt};
      Entry* live =
          entries_[g3_index_].invalid ? nullptr : &entries_[g3_index_];
      join_policies(live, quota_policies_, st, order);
    }
    quota_policy_order_ = order;
  }

  // RateLimit-Policy: Integer items (G2/G3) go to quota_policies_, named
  // items (G4) to `named`. An invalid field is salvaged leniently.
  void policies(const Field& f, std::vector<NamedPolicy>& named) {
    std::vector<SfItem> items;
    if (!SfParser(f.joined).list(items)) {
      warn("sf_parse_error:RateLimit-Policy");
      salvage_policies(f, named);
      return;
    }
    for (const auto& item : items) {
      const auto& b = item.bare;
      if (b.type == SfBare::Type::kInteger) {
        const SfBare* w = item.param("w");
        bool dec = false;
        auto wv = w ? sf_non_negative(*w, dec) : std::nullopt;
        if (b.number.negative) {
          warn("invalid_item:RateLimit-Policy");
          continue;
        }
        if (!wv || dec || wv->is_zero() ||
            wv->whole > static_cast<std::uint64_t>(kMaxWindowS)) {
          warn("invalid_param:RateLimit-Policy:w");
          continue;
        }
        quota_policies_.push_back({static_cast<std::int64_t>(b.number.whole),
                                   static_cast<std::int64_t>(wv->whole),
                                   false});
      } else if (b.type == SfBare::Type::kString ||
                 b.type == SfBare::Type::kToken) {
        NamedPolicy p;
        p.name = sanitize(b.text);
        p.token = b.type == SfBare::Type::kToken;
        bool dec = false;
        const SfBare* q = item.param("q");
        auto qv = q ? sf_non_negative(*q, dec) : std::nullopt;
        if (!qv || dec) {
          warn("invalid_param:RateLimit-Policy:q");
          continue;
        }
        p.quota = static_cast<std::int64_t>(qv->whole);
        if (const SfBare* w = item.param("w")) {
          auto wv = sf_non_negative(*w, dec);
          if (!wv || dec || wv->is_zero() ||
              wv->whole > static_cast<std::uint64_t>(kMaxWindowS)) {
            warn("invalid_param:RateLimit-Policy:w");
            continue;
          }
          p.window_s = static_cast<std::int64_t>(wv->whole);
        }
        if (const SfBare* qu = item.param("qu")) {
          if (qu->type != SfBare::Type::kString &&
              qu->type != SfBare::Type::kToken) {
            warn("invalid_param:RateLimit-Policy:qu");
            continue;
          }
          p.unit = quota_unit(qu->text);
        }
        if (const SfBare* pk = item.param("pk")) {
          if (pk->type != SfBare::Type::kBytes) {
            warn("invalid_param:RateLimit-Policy:pk");
            continue;
          }
          p.partition_key = partition_key(*pk);
        }
        named.push_back(std::move(p));
      } else {
        warn("invalid_item:RateLimit-Policy");
      }
    }
  }

  static QuotaUnit quota_unit(std::string_view qu) {
    if (qu == "requests") return QuotaUnit::kRequests;
    if (qu == "content-bytes" || qu == "bytes") return QuotaUnit::kContentBytes;
    if (qu == "concurrent-requests") return QuotaUnit::kConcurrentRequests;
    return QuotaUnit::kUnknown;
  }

  static std::string partition_key(const SfBare& pk) {
    bool printable = std::all_of(pk.text.begin(), pk.text.end(), [](char c) {
      auto u = static_cast<unsigned char>(c);
      return u >= 0x20 && u < 0x7f;
    });
    if (printable && pk.text.size() <= kMaxPartitionKeyBytes) return pk.text;
    // Binary keys keep their base64 form: still a stable identity.
    return ":" + sanitize(pk.raw, kMaxPartitionKeyBytes) + ":";
  }

  // Hugging Face style "fixed window";"api";q=500;w=300: every quoted name
  // of a member names the policy; q= and w= are read where they parse.
  void salvage_policies(const Field& f, std::vector<NamedPolicy>& named) {
    for (std::string_view m : split_members(f.joined)) {
      std::vector<std::string> names;
      NamedPolicy p;
      p.salvaged = true;
      std::size_t start = 0;
      while (start <= m.size()) {
        std::size_t semi = m.find(';', start);
        if (semi == std::string_view::npos) semi = m.size();
        std::string_view part = trim_ows(m.substr(start, semi - start));
        start = semi + 1;
        if (part.size() >= 2 && part.front() == '"' && part.back() == '"') {
          names.push_back(sanitize(part.substr(1, part.size() - 2)));
          continue;
        }
        std::size_t eq = part.find('=');
        if (eq == std::string_view::npos) continue;
        std::string_view k = trim_ows(part.substr(0, eq));
        auto v = parse_decimal(part.substr(eq + 1));
        if (!v || v->negative || v->has_fraction()) continue;
        if (k == "q") p.quota = static_cast<std::int64_t>(v->whole);
        if (k == "w" && v->whole > 0 &&
            v->whole <= static_cast<std::uint64_t>(kMaxWindowS))
          p.window_s = static_cast<std::int64_t>(v->whole);
      }
      if (names.empty() || !p.quota) continue;
      // Any of the names may be the one RateLimit items use; the last one
      // names the policy when none does.
      p.name = names.back();
      p.aliases = std::move(names);
      named.push_back(std::move(p));
    }
  }

  // A G3 Dictionary: limit=, remaining=, reset= (delta seconds).
  void g3_entry(const std::vector<std::pair<std::string, SfItem>>& dict,
                std::size_t order) {
    Entry& e = add_entry(order);
    LimitObservation& l = e.limit;
    l.source = "ietf-07";
    l.reset_kind = ResetKind::kWindowEnd;
    for (const auto& [key, item] : dict) {
      bool dec = false;
      auto v = sf_non_negative(item.bare, dec);
      if (!v) {
        warn("invalid_param:RateLimit:" + key);
        e.invalid = true;  // the whole item goes
        continue;
      }
      if (dec) add_flag(l.flags, "nonconforming_decimal");
      if (key == "limit") l.limit = static_cast<std::int64_t>(v->whole);
      if (key == "remaining") l.remaining = v->to_double();
      if (key == "reset") {
        auto ms = to_ms(*v, kNsPerS);
        if (ms && *ms > kMaxObservedWaitMs) {
          warn("beyond_cap:RateLimit");
          ms.reset();
        }
        l.reset_in_ms = ms;
        if (ms) l.reset_precision_ms = seconds_precision_ms(*v);
      }
    }
    g3_index_ = entries_.size() - 1;
  }

  // A G4 List item: "name";r=50;t=30;pk=:...:
  void g4_entry(const SfItem& item, std::vector<NamedPolicy>& named,
                std::size_t order) {
    const auto& b = item.bare;
    if (b.type != SfBare::Type::kString && b.type != SfBare::Type::kToken) {
      warn("invalid_item:RateLimit");
      return;
    }
    LimitObservation l;
    l.source = "ietf-08";
    l.name = sanitize(b.text);
    l.reset_kind = ResetKind::kWindowEnd;
    if (b.type == SfBare::Type::kToken) add_flag(l.flags, "token_identifier");
    bool dec = false;
    if (const SfBare* r = item.param("r")) {
      auto v = sf_non_negative(*r, dec);
      if (!v) {
        warn("invalid_param:RateLimit:r");
        return;
      }
      if (dec) add_flag(l.flags, "nonconforming_decimal");
      l.remaining = v->to_double();
    }
    if (const SfBare* t = item.param("t")) {
      auto v = sf_non_negative(*t, dec);
      if (!v) {
        warn("invalid_param:RateLimit:t");
        return;
      }
      if (dec) add_flag(l.flags, "nonconforming_decimal");
      auto ms = to_ms(*v, kNsPerS);
      if (ms && *ms > kMaxObservedWaitMs) {
        warn("beyond_cap:RateLimit");
        ms.reset();
      }
      l.reset_in_ms = ms;
      if (ms) l.reset_precision_ms = seconds_precision_ms(*v);
    }
    if (const SfBare* pk = item.param("pk")) {
      if (pk->type != SfBare::Type::kBytes) {
        warn("invalid_param:RateLimit:pk");
        return;
      }
      l.partition_key = partition_key(*pk);
    }
    // Join the policy of the same name (salvaged ones by any of theirs).
    NamedPolicy* match = nullptr;
    for (auto& p : named) {
      if (p.name == l.name || std::find(p.aliases.begin(), p.aliases.end(),
                                        l.name) != p.aliases.end()) {
        match = &p;
        break;
      }
    }
    if (match) {
      l.limit = match->quota;
      l.window_s = match->window_s;
      l.unit = match->unit;
      if (!l.partition_key) l.partition_key = match->partition_key;
      if (match->token) add_flag(l.flags, "token_identifier");
      if (match->salvaged) add_flag(l.flags, "policy_salvaged");
      match->used = true;
    }
    Entry& e = add_entry(order);
    e.limit = std::move(l);
  }

  // ---- RateLimit-Limit / -Remaining / -Reset (G1/G2, GitLab, Kong)

  void ietf_separate() {
    Counters c{field("ratelimit-limit"), field("ratelimit-remaining"),
               field("ratelimit-reset"), nullptr};
    const Field* observed = field("ratelimit-observed");
    const Field* name = field("ratelimit-name");
    const Field* reset_time = field("ratelimit-resettime");
    bool gitlab =
        dialect_ == Dialect::kGitlab ||
        (dialect_ == Dialect::kAuto && (observed || name || reset_time));
    if (gitlab) {
      c.used = observed;
      if (!c.any() && !reset_time) return;
      Style st{"gitlab",
               name ? sanitize(name->lines.front()) : "",
               QuotaUnit::kRequests,
               LimitScope::kDefault,
               ResetUnit::kEpochS,
               ResetKind::kWindowEnd,
               std::nullopt};
      Counters order_c = c;
      if (!order_c.any()) order_c.reset = reset_time;
      Entry& e = counters(c, st);
      e.order = order_c.order();
      if (!e.limit.reset_in_ms && reset_time)
        reset_into(e.limit, *reset_time, ResetUnit::kEpochS);
      join_policies(&entries_.back(), quota_policies_, st, quota_policy_order_);
      return;
    }
    Style st{"ietf-sep",
             "",
             QuotaUnit::kRequests,
             LimitScope::kDefault,
             ResetUnit::kHeuristic,
             ResetKind::kWindowEnd,
             std::nullopt};
    // The IETF meaning (delta seconds) when the response speaks IETF;
    // otherwise the names may be anybody's and R9 decides.
    if (dialect_ == Dialect::kIetf ||
        (dialect_ == Dialect::kAuto &&
         (field("ratelimit-policy") || field("ratelimit"))))
      st.reset_unit = ResetUnit::kDeltaS;
    if (!c.any()) {
      join_policies(nullptr, quota_policies_, st, quota_policy_order_);
      return;
    }
    std::vector<QuotaPolicy> list_policies;
    counters(c, st, &list_policies);
    std::size_t live = entries_.size() - 1;
    std::vector<QuotaPolicy> all = list_policies;
    all.insert(all.end(), quota_policies_.begin(), quota_policies_.end());
    quota_policies_.clear();
    join_policies(&entries_[live], all, st, entries_[live].order);
  }

  // ---- X-RateLimit-* (GitHub, Discord, Reddit, Akamai, Kong, OpenAI...)

  void x_ratelimit() {
    Counters base;
    const Field* reset_after = nullptr;
    const Field* bucket = nullptr;
    const Field* resource = nullptr;
    const Field* next = nullptr;
    std::map<std::string, Counters> kong, vendor;
    for (const auto& [lname, f] : fields_) {
      std::string_view n = lname;
      if (!n.starts_with("x-ratelimit-")) continue;
      std::string_view rest = n.substr(12);
      if (rest == "limit") {
        base.limit = &f;
      } else if (rest == "remaining") {
        base.remaining = &f;
      } else if (rest == "reset") {
        base.reset = &f;
      } else if (rest == "used") {
        base.used = &f;
      } else if (rest == "reset-after") {
        reset_after = &f;
      } else if (rest == "bucket") {
        bucket = &f;
      } else if (rest == "resource") {
        resource = &f;
      } else if (rest == "next") {
        next = &f;
      } else {
        for (std::string_view kind : {"limit", "remaining", "reset", "used"}) {
          if (rest.size() <= kind.size() + 1 || !rest.starts_with(kind) ||
              rest[kind.size()] != '-')
            continue;
          std::string suffix(rest.substr(kind.size() + 1));
          std::int64_t w = 0;
          Counters& c = kong_window(suffix, w) ? kong[suffix] : vendor[suffix];
          if (kind == "limit") c.limit = &f;
          if (kind == "remaining") c.remaining = &f;
          if (kind == "reset") c.reset = &f;
          if (kind == "used") c.used = &f;
          break;
        }
      }
    }

    enum class Sub { kGeneric, kGithub, kDiscord, kReddit, kAkamai, kPrisjakt };
    Sub sub = Sub::kGeneric;
    switch (dialect_) {
      case Dialect::kGithub:
        sub = Sub::kGithub;
        break;
      case Dialect::kDiscord:
        sub = Sub::kDiscord;
        break;
      case Dialect::kReddit:
        sub = Sub::kReddit;
        break;
      case Dialect::kAkamai:
        sub = Sub::kAkamai;
        break;
      case Dialect::kPrisjakt:
        sub = Sub::kPrisjakt;
        break;
      case Dialect::kAuto:
        if (resource)
          sub = Sub::kGithub;
        else if (reset_after || bucket)
          sub = Sub::kDiscord;
        else if (next)
          sub = Sub::kAkamai;
        else if (base.used && !base.limit && base.remaining)
          sub = Sub::kReddit;
        break;
      default:
        break;
    }
    if (sub == Sub::kGithub) github_ = true;

    Style st{"x-ratelimit",         "",
             QuotaUnit::kRequests,  LimitScope::kDefault,
             ResetUnit::kHeuristic, ResetKind::kUnknown,
             std::nullopt};
    Counters c = base;
    switch (sub) {
      case Sub::kGithub:
        st.source = "github";
        if (resource) st.name = sanitize(resource->lines.front());
        st.reset_unit = ResetUnit::kEpochS;
        st.reset_kind = ResetKind::kWindowEnd;
        break;
      case Sub::kDiscord:
        st.source = "discord";
        if (bucket) st.name = sanitize(bucket->lines.front());
        st.reset_kind = ResetKind::kWindowEnd;
        st.reset_unit = ResetUnit::kEpochS;
        if (reset_after) {
          c.reset = reset_after;
          st.reset_unit = ResetUnit::kDeltaS;
        }
        break;
      case Sub::kReddit:
        st.source = "reddit";
        st.reset_unit = ResetUnit::kDeltaS;
        st.reset_kind = ResetKind::kWindowEnd;
        st.window_s = 600;
        break;
      case Sub::kAkamai:
        st.source = "akamai";
        st.reset_kind = ResetKind::kNextRequest;
        if (next) c.reset = next;
        break;
      case Sub::kPrisjakt:
        st.source = "prisjakt";
        st.reset_unit = ResetUnit::kDeltaMs;
        break;
      case Sub::kGeneric:
        break;
    }
    if (c.any()) {
      std::vector<QuotaPolicy> list_policies;
      counters(c, st, &list_policies);
      std::size_t live = entries_.size() - 1;
      LimitObservation& l = entries_[live].limit;
      if (sub == Sub::kReddit && !l.limit && l.used && l.remaining &&
          *l.remaining >= 0) {
        double sum = static_cast<double>(*l.used) + *l.remaining;
        if (sum < 9e15) {
          l.limit = std::llround(sum);
          add_flag(l.flags, "limit_inferred");
        }
      }
      join_policies(&entries_[live], list_policies, st, entries_[live].order);
    }

    for (auto& [suffix, kc] : kong) {
      Style ks = st;
      ks.source = "x-ratelimit";
      ks.name = sanitize(suffix);
      std::int64_t w = 0;
      kong_window(suffix, w);
      ks.window_s = w;
      ks.reset_unit = ResetUnit::kHeuristic;
      ks.reset_kind = ResetKind::kWindowEnd;
      counters(kc, ks);
    }
    for (auto& [suffix, vc] : vendor) {
      Style vs{"openai",
               sanitize(suffix),
               unit_for_name(suffix),
               LimitScope::kDefault,
               ResetUnit::kGoDuration,
               ResetKind::kFullReplenish,
               std::nullopt};
      if (dialect_ == Dialect::kAzure) vs.source = "azure";
      if (dialect_ == Dialect::kGroq) {
        vs.source = "groq";
        if (vs.unit == QuotaUnit::kRequests) vs.window_s = 86400;
        if (token_unit(vs.unit)) vs.window_s = 60;
      }
      counters(vc, vs);
    }
  }

  // ---- X-Rate-Limit-* (X/Twitter, Prisjakt) and X's 24-hour families

  void x_rate_limit() {
    Counters endpoint{field("x-rate-limit-limit"),
                      field("x-rate-limit-remaining"),
                      field("x-rate-limit-reset"), nullptr};
    Counters user{field("x-user-limit-24hour-limit"),
                  field("x-user-limit-24hour-remaining"),
                  field("x-user-limit-24hour-reset"), nullptr};
    Counters app{field("x-app-limit-24hour-limit"),
                 field("x-app-limit-24hour-remaining"),
                 field("x-app-limit-24hour-reset"), nullptr};
    if (endpoint.any()) {
      Style st{"x",
               "",
               QuotaUnit::kRequests,
               LimitScope::kDefault,
               ResetUnit::kEpochS,
               ResetKind::kWindowEnd,
               std::nullopt};
      if (dialect_ == Dialect::kPrisjakt) {
        st.source = "prisjakt";
        st.reset_unit = ResetUnit::kDeltaMs;
        st.reset_kind = ResetKind::kUnknown;
      } else if (dialect_ == Dialect::kGeneric) {
        st.source = "x-ratelimit";
        st.reset_unit = ResetUnit::kHeuristic;
        st.reset_kind = ResetKind::kUnknown;
      } else if (user.any() || app.any()) {
        st.name = "endpoint";  // told apart from the 24-hour families
      }
      counters(endpoint, st);
    }
    for (auto [c, name, scope] :
         {std::tuple{user, "user-24h", LimitScope::kUser},
          std::tuple{app, "app-24h", LimitScope::kDefault}}) {
      if (!c.any()) continue;
      counters(c, Style{"x", name, QuotaUnit::kRequests, scope,
                        ResetUnit::kEpochS, ResetKind::kWindowEnd, 86400});
    }
  }

  // ---- Anthropic: anthropic-ratelimit-<family>-{limit,remaining,reset}

  void anthropic() {
    std::map<std::string, Counters> families;
    for (const auto& [lname, f] : fields_) {
      std::string_view n = lname;
      std::string prefix;
      if (n.starts_with("anthropic-ratelimit-")) {
        n.remove_prefix(20);
      } else if (n.starts_with("anthropic-priority-")) {
        n.remove_prefix(19);
        prefix = "priority-";
      } else {
        continue;
      }
      std::size_t dash = n.rfind('-');
      if (dash == std::string_view::npos || dash == 0) continue;
      std::string_view kind = n.substr(dash + 1);
      std::string family = prefix + std::string(n.substr(0, dash));
      if (kind == "limit")
        families[family].limit = &f;
      else if (kind == "remaining")
        families[family].remaining = &f;
      else if (kind == "reset")
        families[family].reset = &f;
    }
    for (auto& [family, c] : families) {
      Style st{"anthropic",
               sanitize(family),
               unit_for_name(family),
               LimitScope::kDefault,
               ResetUnit::kEpochS,  // RFC 3339 is recognized by its shape
               ResetKind::kFullReplenish,
               std::nullopt};
      Entry& e = counters(c, st);
      if (token_unit(e.limit.unit) && e.limit.remaining)
        add_flag(e.limit.flags, "rounded_1000");
    }
  }

  // ---- Shopify

  void shopify_rest() {
    const Field* f = field("x-shopify-shop-api-call-limit");
    if (!f) return;
    std::string_view m = split_members(f->joined).front();
    std::size_t slash = m.find('/');
    auto used = parse_decimal(m.substr(0, slash));
    auto size = slash == std::string_view::npos
                    ? std::nullopt
                    : parse_decimal(m.substr(slash + 1));
    if (!used || !size || used->negative || size->negative ||
        used->has_fraction() || size->has_fraction()) {
      warn("malformed:" + f->display());
      return;
    }
    Entry& e = add_entry(f->first);
    LimitObservation& l = e.limit;
    l.source = "shopify-rest";
    l.limit = static_cast<std::int64_t>(size->whole);
    l.used = static_cast<std::int64_t>(used->whole);
    l.remaining = std::max(
        0.0, static_cast<double>(*l.limit) - static_cast<double>(*l.used));
  }

  void shopify_graphql() {
    if (!cost_) return;
    Entry& e = add_entry(SIZE_MAX);  // the body comes after every header
    LimitObservation& l = e.limit;
    l.source = "shopify-graphql";
    l.unit = QuotaUnit::kPoints;
    l.reset_kind = ResetKind::kFullReplenish;
    if (cost_->maximum >= 0 && cost_->maximum < 9e15)
      l.limit = std::llround(cost_->maximum);
    if (cost_->available) l.remaining = *cost_->available;
    if (cost_->rate > 0) l.refill_per_s = cost_->rate;
    if (l.limit && l.remaining && l.refill_per_s) {
      double missing = static_cast<double>(*l.limit) - *l.remaining;
      l.reset_in_ms = seconds_ms(std::max(0.0, missing) / *l.refill_per_s);
      if (l.reset_in_ms) l.reset_precision_ms = 1;
    }
  }

  // Seconds (a double from a body) in ms, rounded up; nullopt beyond the cap.
  std::optional<Millis> seconds_ms(double seconds) {
    if (!std::isfinite(seconds) || seconds < 0) return std::nullopt;
    if (seconds * 1000 > static_cast<double>(kMaxObservedWaitMs)) {
      warn("beyond_cap:body");
      return std::nullopt;
    }
    auto d = decimal_from_double(seconds);
    if (!d) return std::nullopt;
    return to_ms(*d, kNsPerS);
  }

  // ---- R7 and ordering

  void finish_limits() {
    std::stable_sort(
        entries_.begin(), entries_.end(), [](const Entry& a, const Entry& b) {
          return a.order != b.order ? a.order < b.order : a.seq < b.seq;
        });
    for (auto& e : entries_) {
      LimitObservation& l = e.limit;
      if (e.invalid) continue;
      if (e.sentinel) {
        warn("sentinel:" + (l.name.empty() ? l.source : l.name));
        continue;
      }
      if (l.remaining && *l.remaining < 0) {
        l.remaining = 0.0;
        add_flag(l.flags, "clamped");
      }
      if (l.remaining && l.limit &&
          *l.remaining > static_cast<double>(*l.limit)) {
        l.remaining = static_cast<double>(*l.limit);
        add_flag(l.flags, "remaining_gt_limit");
      }
      if (obs_.limits.size() >= kMaxLimits) {
        warn("too_many_limits");
        break;
      }
      obs_.limits.push_back(std::move(l));
    }
  }

  // ---- R4/R5: header retry hints

  RetryHint retry_ms_header(const Field* f) {
    RetryHint h;
    if (!f) return h;
    bool bad = false, conflict = false;
    for (std::string_view m : split_members(f->joined)) {
      auto d = parse_decimal(m);
      std::optional<Millis> v;
      if (d && !d->negative) v = to_ms(*d, kNsPerMs);
      if (!v) {
        bad = true;
        continue;
      }
      if (*v > kMaxObservedWaitMs) {
        warn("beyond_cap:" + f->display());
        continue;
      }
      if (h.ms && *h.ms != *v) conflict = true;
      h.ms = std::max(h.ms.value_or(0), *v);
    }
    if (bad) warn("retry_after_malformed");
    if (conflict) warn("retry_after_conflict");
    return h;
  }

  RetryHint retry_after_header(const Field* f) {
    RetryHint h;
    if (!f) return h;
    bool bad = false, conflict = false, decimal = false;
    std::vector<std::string> flags;
    for (std::string_view m : split_members(f->joined, true)) {
      std::optional<Millis> v;
      Millis precision = 1000;
      if (auto d = parse_decimal(m)) {
        if (!d->negative) v = to_ms(*d, kNsPerS);
        if (v && d->has_point) decimal = true;
        precision = seconds_precision_ms(*d);
      } else if (auto at = parse_http_date(m, received_)) {
        v = from_instant(*at, flags);
        precision = instant_precision(1000);
      }
      if (!v) {
        bad = true;
        continue;
      }
      if (*v > kMaxObservedWaitMs) {
        warn("beyond_cap:Retry-After");
        continue;
      }
      if (h.ms && *h.ms != *v) conflict = true;
      if (!h.ms || *v > *h.ms) h.precision = precision;
      h.ms = std::max(h.ms.value_or(0), *v);
    }
    if (bad) warn("retry_after_malformed");
    if (conflict) warn("retry_after_conflict");
    if (h.ms) {
      if (decimal) add_flag(obs_.flags, "nonstandard_decimal");
      for (const auto& fl : flags) add_flag(obs_.flags, fl);
    }
    return h;
  }

  void retry_headers() {
    const Field* ra = field("retry-after");
    retry_after_header_present_ = ra != nullptr;
    struct Source {
      const char* name;
      bool ms;
    };
    for (auto [name, ms] :
         {Source{"retry-after-ms", true}, Source{"x-ms-retry-after-ms", true},
          Source{"retry-after", false}}) {
      const Field* f = field(name);
      if (!f) continue;
      RetryHint h = ms ? retry_ms_header(f) : retry_after_header(f);
      if (h.ms) {
        obs_.retry_after_ms = h.ms;
        obs_.retry_after_precision_ms = h.precision;
        obs_.retry_after_source = name;
        return;
      }
    }
  }

  // ---- server advice, scope, reason

  void server_advice() {
    for (const char* name : {"x-should-retry", "stripe-should-retry"}) {
      const Field* f = field(name);
      if (!f) continue;
      std::string v = lower(trim_ows(f->lines.front()));
      if (v == "true") {
        obs_.server_should_retry = true;
      } else if (v == "false") {
        obs_.server_should_retry = false;
      } else {
        warn("malformed:" + f->display());
        continue;
      }
      break;
    }
    if (const Field* f = field("x-ratelimit-scope")) {
      std::string v = lower(trim_ows(f->lines.front()));
      if (v == "user" || v == "global" || v == "shared")
        obs_.scope = v;
      else
        warn("malformed:" + f->display());
    }
    if (const Field* f = field("x-ratelimit-global")) {
      if (lower(trim_ows(f->lines.front())) == "true" && obs_.scope.empty())
        obs_.scope = "global";
    }
    if (obs_.scope.empty() && discord_global_) obs_.scope = "global";
  }

  void reason() {
    std::string why = obs_.scope;
    if (why.empty()) {
      if (const Field* f = field("stripe-rate-limited-reason"))
        why = sanitize(f->lines.front());
    }
    if (why.empty() && (aws_throttle_ || aws_quota_)) why = aws_code_;
    if (why.empty()) why = google_reason_;
    if (why.empty() && github_secondary_text_ && github_)
      why = "secondary_rate_limit";
    if (why.empty()) why = problem_type_;
    obs_.reason = why;
  }

  // ---- R6

  void verdict() {
    const int s = status_;
    bool evidence_403 = obs_.retry_after_ms.has_value() || rate_limit_text_;
    for (const auto& l : obs_.limits)
      if (l.remaining && *l.remaining <= 0) evidence_403 = true;
    Verdict v;
    if (s == 429) {
      v = (insufficient_quota_ || aws_quota_) ? Verdict::kQuotaExhausted
                                              : Verdict::kThrottled;
    } else if (s == 403) {
      v = evidence_403 ? Verdict::kThrottled : Verdict::kError;
    } else if (s == 400 && aws_quota_) {
      v = Verdict::kQuotaExhausted;
    } else if ((s == 400 || s == 503) && aws_throttle_) {
      v = Verdict::kThrottled;
    } else if (s == 503) {
      v = Verdict::kUnavailable;
    } else if (s == 529) {
      v = Verdict::kOverloaded;
    } else if (s >= 200 && s < 300 && shopify_throttled_) {
      v = Verdict::kThrottled;
    } else if (s >= 200 && s < 400) {
      v = Verdict::kOk;
    } else {
      v = Verdict::kError;
    }
    obs_.verdict = v;
    obs_.blocking = v != Verdict::kOk && v != Verdict::kError;
    obs_.retryable = v != Verdict::kQuotaExhausted;
    // Server retry advice governs a failed response (x-should-retry,
    // Stripe-Should-Retry).
    if (obs_.server_should_retry && v != Verdict::kOk)
      obs_.retryable = *obs_.server_should_retry;
    reason();
  }

  // ---- R4 steps 4-6: body hints, derived, vendor default

  void fallback_retry() {
    if (obs_.retry_after_ms) return;
    if (body_retry_ms_) {
      obs_.retry_after_ms = body_retry_ms_;
      obs_.retry_after_source = body_retry_source_;
      return;
    }
    if (discord_retry_ms_ && !retry_after_header_present_) {
      obs_.retry_after_ms = discord_retry_ms_;
      obs_.retry_after_source = "body:retry_after";
      return;
    }
    if (shopify_throttled_ && cost_ && cost_->requested && cost_->available &&
        cost_->rate > 0) {
      double need = std::max(0.0, *cost_->requested - *cost_->available);
      if (auto ms = seconds_ms(need / cost_->rate)) {
        obs_.retry_after_ms = ms;
        obs_.retry_after_source = "derived:cost";
        return;
      }
    }
    if (github_ && obs_.blocking && obs_.retryable) {
      bool exhausted = std::any_of(
          obs_.limits.begin(), obs_.limits.end(),
          [](const auto& l) { return l.remaining && *l.remaining <= 0; });
      if (!exhausted) {
        obs_.retry_after_ms = kGithubSecondaryDefaultMs;
        obs_.retry_after_source = "vendor_default:github";
        add_flag(obs_.flags, "inferred");
        if (obs_.reason.empty()) obs_.reason = "secondary_rate_limit";
      }
    }
  }

  // ---- R11

  void wait() {
    if (!obs_.retryable) {
      obs_.wait_ms.reset();
      return;
    }
    std::optional<Millis> latest;
    bool unresolved = false;
    for (auto& l : obs_.limits) {
      if (l.policy_only || !l.remaining || *l.remaining > 0) continue;
      std::optional<Millis> v = l.reset_in_ms;
      if (!v && l.window_s) {
        v = *l.window_s * 1000;
        add_flag(l.flags, "window_bound");
      }
      if (!v) {
        unresolved = true;
        continue;
      }
      latest = std::max(latest.value_or(0), *v);
    }
    if (obs_.blocking) {
      if (obs_.retry_after_ms)
        latest = std::max(latest.value_or(0), *obs_.retry_after_ms);
      obs_.wait_ms = latest;
    } else if (unresolved) {
      obs_.wait_ms.reset();
    } else {
      obs_.wait_ms = latest.value_or(0);
    }
  }

  // ---- body

  struct Cost {
    double maximum = -1;
    std::optional<double> available;
    double rate = 0;
    std::optional<double> requested;
  };

  void analyze_body() {
    if (const Field* f = field("x-amzn-errortype"))
      note_aws_code(f->lines.front());
    std::string_view b = body_;
    if (b.empty()) return;
    const bool failure = status_ < 200 || status_ >= 400;
    const bool shopify = b.find("throttleStatus") != std::string_view::npos ||
                         b.find("THROTTLED") != std::string_view::npos;
    if (!failure && !shopify) return;
    if (failure) {
      rate_limit_text_ = icontains(b, "rate limit") ||
                         icontains(b, "rate-limit") ||
                         icontains(b, "ratelimit");
      github_secondary_text_ = icontains(b, "secondary rate limit");
      if (auto open = b.find("<Code>"); open != std::string_view::npos) {
        auto close = b.find("</Code>", open);
        if (close != std::string_view::npos && close - open < 256)
          note_aws_code(b.substr(open + 6, close - open - 6));
      }
    }
    std::string_view t = trim_ows(b);
    if (t.empty() || (t.front() != '{' && t.front() != '[')) return;
    if (json_depth(t) > kMaxJsonDepth) {
      warn("body_too_deep");
      return;
    }
    nlohmann::json j = nlohmann::json::parse(t, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return;
    if (failure) failure_json(j);
    shopify_json(j);
  }

  void note_aws_code(std::string_view raw) {
    std::string code = aws_code(raw);
    if (code.empty() || !aws_code_.empty()) return;
    if (aws_throttling_code(code)) {
      aws_code_ = code;
      aws_throttle_ = true;
    } else if (code == "ServiceQuotaExceededException") {
      aws_code_ = code;
      aws_quota_ = true;
    }
  }

  void failure_json(const nlohmann::json& j) {
    if (const auto* err = member(j, "error"); err && err->is_object()) {
      if (string_member(*err, "type") == "insufficient_quota" ||
          string_member(*err, "code") == "insufficient_quota")
        insufficient_quota_ = true;
      if (const auto* details = member(*err, "details");
          details && details->is_array())
        google_details(*details);
      if (const auto* errors = member(*err, "errors");
          errors && errors->is_array() && google_reason_.empty()) {
        for (const auto& e : *errors) {
          if (auto r = string_member(e, "reason")) {
            google_reason_ = sanitize(*r);
            break;
          }
        }
      }
    }
    // Discord: {"message", "retry_after": seconds, "global": bool}
    if (auto ra = number_member(j, "retry_after"); ra && *ra >= 0)
      discord_retry_ms_ = seconds_ms(*ra);
    if (const auto* g = member(j, "global");
        g && g->is_boolean() && g->get<bool>())
      discord_global_ = true;
    // AWS JSON protocols.
    if (auto type = string_member(j, "__type")) note_aws_code(*type);
    if (auto code = string_member(j, "code")) note_aws_code(*code);
    // IETF problem types (-09+).
    if (auto type = string_member(j, "type")) {
      for (std::string_view p : {"quota-exceeded", "temporary-reduced-capacity",
                                 "abnormal-usage-detected"}) {
        std::string suffix = "#" + std::string(p);
        if (type->size() >= suffix.size() && type->ends_with(suffix))
          problem_type_ = std::string(p);
      }
    }
  }

  void google_details(const nlohmann::json& details) {
    std::string quota_id, info_reason;
    for (const auto& d : details) {
      auto type = string_member(d, "@type");
      if (!type) continue;
      if (type->ends_with("google.rpc.RetryInfo")) {
        const auto* delay = member(d, "retryDelay");
        std::optional<Millis> ms;
        if (delay && delay->is_string()) {
          std::string text = delay->get<std::string>();
          if (!text.empty() && text.back() == 's') {
            text.pop_back();
            if (auto dec = parse_decimal(text); dec && !dec->negative)
              ms = to_ms(*dec, kNsPerS);
          }
        } else if (delay && delay->is_object()) {
          auto secs = number_member(*delay, "seconds").value_or(0);
          auto nanos = number_member(*delay, "nanos").value_or(0);
          ms = seconds_ms(secs + nanos / 1e9);
        }
        if (ms && *ms <= kMaxObservedWaitMs) {
          body_retry_ms_ = ms;
          body_retry_source_ = "body:RetryInfo";
        } else {
          warn("malformed:body:RetryInfo");
        }
      } else if (type->ends_with("google.rpc.QuotaFailure")) {
        const auto* v = member(d, "violations");
        if (v && v->is_array() && !v->empty() && quota_id.empty()) {
          if (auto id = string_member((*v)[0], "quotaId"))
            quota_id = sanitize(*id);
          else if (auto metric = string_member((*v)[0], "quotaMetric"))
            quota_id = sanitize(*metric);
        }
      } else if (type->ends_with("google.rpc.ErrorInfo")) {
        if (auto r = string_member(d, "reason")) info_reason = sanitize(*r);
      }
    }
    google_reason_ = !quota_id.empty() ? quota_id : info_reason;
  }

  void shopify_json(const nlohmann::json& j) {
    if (const auto* errors = member(j, "errors");
        errors && errors->is_array()) {
      for (const auto& e : *errors) {
        const auto* ext = member(e, "extensions");
        if (ext && string_member(*ext, "code") == "THROTTLED")
          shopify_throttled_ = true;
      }
    }
    const auto* ext = member(j, "extensions");
    const auto* cost = ext ? member(*ext, "cost") : nullptr;
    const auto* ts = cost ? member(*cost, "throttleStatus") : nullptr;
    if (!ts || !ts->is_object()) return;
    Cost c;
    auto maximum = number_member(*ts, "maximumAvailable");
    auto available = number_member(*ts, "currentlyAvailable");
    auto rate = number_member(*ts, "restoreRate");
    if (!maximum || *maximum < 0) return;
    c.maximum = *maximum;
    if (available) c.available = *available;
    if (rate && *rate > 0) c.rate = *rate;
    if (auto req = number_member(*cost, "requestedQueryCost"); req && *req >= 0)
      c.requested = *req;
    cost_ = c;
  }

  // ---- state

  int status_;
  std::string_view body_;
  Millis received_;
  Dialect dialect_ = Dialect::kAuto;
  std::map<std::string, Field, std::less<>> fields_;
  Observation obs_;
  std::optional<Millis> date_ms_;
  std::vector<Entry> entries_;
  std::size_t seq_ = 0;
  std::vector<QuotaPolicy> quota_policies_;  // G2/G3 Integer policies
  std::size_t quota_policy_order_ = SIZE_MAX;
  std::size_t g3_index_ = 0;  // the G3 entry, when there is one
  bool github_ = false;
  bool retry_after_header_present_ = false;
  // Facts from the body.
  bool rate_limit_text_ = false;
  bool github_secondary_text_ = false;
  bool insufficient_quota_ = false;
  std::string aws_code_;
  bool aws_throttle_ = false;
  bool aws_quota_ = false;
  bool shopify_throttled_ = false;
  std::optional<Cost> cost_;
  std::string google_reason_;
  std::optional<Millis> body_retry_ms_;
  std::string body_retry_source_;
  std::optional<Millis> discord_retry_ms_;
  bool discord_global_ = false;
  std::string problem_type_;
};

}  // namespace

std::string_view to_string(Verdict v) {
  switch (v) {
    case Verdict::kOk:
      return "ok";
    case Verdict::kThrottled:
      return "throttled";
    case Verdict::kUnavailable:
      return "unavailable";
    case Verdict::kOverloaded:
      return "overloaded";
    case Verdict::kQuotaExhausted:
      return "quota_exhausted";
    case Verdict::kError:
      return "error";
  }
  return "error";
}

std::string_view to_string(QuotaUnit u) {
  switch (u) {
    case QuotaUnit::kRequests:
      return "requests";
    case QuotaUnit::kTokens:
      return "tokens";
    case QuotaUnit::kInputTokens:
      return "input_tokens";
    case QuotaUnit::kOutputTokens:
      return "output_tokens";
    case QuotaUnit::kPoints:
      return "points";
    case QuotaUnit::kContentBytes:
      return "content_bytes";
    case QuotaUnit::kConcurrentRequests:
      return "concurrent_requests";
    case QuotaUnit::kUnknown:
      return "unknown";
  }
  return "unknown";
}

std::string_view to_string(LimitScope s) {
  switch (s) {
    case LimitScope::kDefault:
      return "default";
    case LimitScope::kUser:
      return "user";
    case LimitScope::kGlobal:
      return "global";
    case LimitScope::kSharedResource:
      return "shared_resource";
    case LimitScope::kSecondary:
      return "secondary";
  }
  return "default";
}

std::string_view to_string(ResetKind k) {
  switch (k) {
    case ResetKind::kWindowEnd:
      return "window_end";
    case ResetKind::kNextQuota:
      return "next_quota";
    case ResetKind::kFullReplenish:
      return "full_replenish";
    case ResetKind::kNextRequest:
      return "next_request";
    case ResetKind::kUnknown:
      return "unknown";
  }
  return "unknown";
}

std::span<const std::string_view> known_dialects() { return kDialects; }

bool is_known_dialect(std::string_view name) {
  return std::find(kDialects.begin(), kDialects.end(), name) != kDialects.end();
}

std::string known_dialects_text() {
  std::string out;
  for (auto d : kDialects) {
    if (!out.empty()) out += ", ";
    out += d;
  }
  return out;
}

Observation observe_response(
    int status, std::span<const std::pair<std::string, std::string>> headers,
    std::string_view body, Millis received_unix_ms, std::string_view dialect) {
  try {
    return Observer(status, headers, body, received_unix_ms, dialect).run();
  } catch (...) {
    // Only allocation failure can get here; report an unknown state.
    Observation obs;
    obs.http_status = status;
    obs.received_unix_ms = received_unix_ms;
    obs.verdict =
        status >= 200 && status < 400 ? Verdict::kOk : Verdict::kError;
    obs.warnings.emplace_back("internal_error");
    return obs;
  }
}

Observation observe_response(const ResponseHead& head, Millis received_unix_ms,
                             std::string_view dialect) {
  return observe_response(head.status, head.headers, head.body,
                          received_unix_ms, dialect);
}

namespace {

// "HTTP/1.1 429 Too Many Requests", "HTTP/2 200": the status, or 0.
int status_line(std::string_view line) {
  if (!line.starts_with("HTTP/")) return 0;
  std::size_t sp = line.find(' ');
  if (sp == std::string_view::npos || sp == 5) return 0;
  for (std::size_t k = 5; k < sp; ++k)
    if (!is_digit(line[k]) && line[k] != '.') return 0;
  std::string_view rest = line.substr(sp + 1);
  if (rest.size() < 3 || !is_digit(rest[0]) || !is_digit(rest[1]) ||
      !is_digit(rest[2]) || (rest.size() > 3 && rest[3] != ' '))
    return 0;
  int code = (rest[0] - '0') * 100 + (rest[1] - '0') * 10 + (rest[2] - '0');
  return code >= 100 ? code : 0;
}

bool header_name_char(char c) {
  return is_alpha(c) || is_digit(c) ||
         std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

}  // namespace

Result<ResponseHead> parse_response_head(std::string_view raw) {
  std::size_t pos = 0;
  std::size_t line_no = 0;
  // Reads the next line without its terminator; false at the end.
  auto next_line = [&](std::string_view& line) {
    if (pos >= raw.size()) return false;
    std::size_t nl = raw.find('\n', pos);
    std::size_t end = nl == std::string_view::npos ? raw.size() : nl;
    line = raw.substr(pos, end - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    pos = nl == std::string_view::npos ? raw.size() : nl + 1;
    ++line_no;
    return true;
  };
  std::string_view line;
  // Blank lines before the status line are tolerated.
  do {
    if (!next_line(line)) return Error{"empty response head"};
  } while (trim_ows(line).empty());
  while (true) {
    ResponseHead head;
    head.status = status_line(line);
    if (head.status == 0)
      return Error{"line " + std::to_string(line_no) +
                   ": expected a status line like 'HTTP/1.1 429 Too Many "
                   "Requests', got '" +
                   sanitize(line, 80) + "'"};
    bool blank = false;
    while (next_line(line)) {
      if (line.empty()) {
        blank = true;
        break;
      }
      if (line.front() == ' ' || line.front() == '\t') {
        if (head.headers.empty())
          return Error{"line " + std::to_string(line_no) +
                       ": a continuation line before any header"};
        std::string_view more = trim_ows(line);
        if (!more.empty()) {
          auto& value = head.headers.back().second;
          if (!value.empty()) value += ' ';
          value += more;
        }
        continue;
      }
      std::size_t colon = line.find(':');
      std::string_view name =
          colon == std::string_view::npos ? line : line.substr(0, colon);
      if (colon == std::string_view::npos || name.empty() ||
          !std::all_of(name.begin(), name.end(), header_name_char))
        return Error{"line " + std::to_string(line_no) +
                     ": expected 'Name: value', got '" + sanitize(line, 80) +
                     "'"};
      head.headers.emplace_back(std::string(name),
                                std::string(trim_ows(line.substr(colon + 1))));
    }
    if (blank) {
      // Another status line after the blank one: an interim response, a
      // proxy's CONNECT reply or a redirect in `curl -i` output.
      std::size_t save_pos = pos, save_no = line_no;
      std::string_view next;
      if (next_line(next) && status_line(next) != 0) {
        line = next;
        continue;
      }
      pos = save_pos;
      line_no = save_no;
      head.body = std::string(raw.substr(pos));
    }
    return head;
  }
}

namespace {

nlohmann::json number_json(double v) {
  if (std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 9e15)
    return static_cast<std::int64_t>(v);
  return v;
}

template <typename T>
nlohmann::json optional_json(const std::optional<T>& v) {
  if (!v) return nullptr;
  if constexpr (std::is_same_v<T, double>)
    return number_json(*v);
  else
    return *v;
}

nlohmann::json text_or_null(const std::string& s) {
  if (s.empty()) return nullptr;
  return s;
}

}  // namespace

nlohmann::json to_json(const LimitObservation& l) {
  // Assigned member by member: an initializer list deep-copies every value.
  nlohmann::json j = nlohmann::json::object();
  j["source"] = l.source;
  j["name"] = text_or_null(l.name);
  j["unit"] = to_string(l.unit);
  j["scope"] = to_string(l.scope);
  j["limit"] = optional_json(l.limit);
  j["remaining"] = optional_json(l.remaining);
  j["used"] = optional_json(l.used);
  j["reset_in_ms"] = optional_json(l.reset_in_ms);
  j["reset_precision_ms"] = optional_json(l.reset_precision_ms);
  j["window_s"] = optional_json(l.window_s);
  j["refill_per_s"] = optional_json(l.refill_per_s);
  j["partition_key"] = optional_json(l.partition_key);
  j["reset_kind"] = to_string(l.reset_kind);
  j["policy_only"] = l.policy_only;
  j["flags"] = l.flags;
  return j;
}

nlohmann::json to_json(const Observation& o) {
  nlohmann::json j = nlohmann::json::object();
  j["http_status"] = o.http_status;
  j["received_unix_ms"] = o.received_unix_ms;
  j["server_skew_ms"] = optional_json(o.server_skew_ms);
  j["verdict"] = to_string(o.verdict);
  j["retryable"] = o.retryable;
  j["blocking"] = o.blocking;
  j["retry_after_ms"] = optional_json(o.retry_after_ms);
  j["retry_after_precision_ms"] = optional_json(o.retry_after_precision_ms);
  j["retry_after_source"] = text_or_null(o.retry_after_source);
  j["server_should_retry"] = optional_json(o.server_should_retry);
  j["reason"] = text_or_null(o.reason);
  j["scope"] = text_or_null(o.scope);
  j["wait_ms"] = optional_json(o.wait_ms);
  nlohmann::json& limits = j["limits"] = nlohmann::json::array();
  for (const auto& l : o.limits) limits.push_back(to_json(l));
  j["warnings"] = o.warnings;
  j["flags"] = o.flags;
  return j;
}

bool worth_reporting(const Observation& o) {
  return !o.limits.empty() || o.verdict != Verdict::kOk ||
         o.retry_after_ms.has_value() || !o.warnings.empty();
}

}  // namespace pacer
