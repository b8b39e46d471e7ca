// common/json_text.h: JSON text written directly (a worker's RESULTS) reads
// back as the values written, matches nlohmann::json's own text for valid
// UTF-8, and stays parseable whatever bytes a response body holds.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "common/json_text.h"

using nlohmann::json;
namespace jt = pacer::json_text;

namespace {

std::string written(std::string_view s) {
  std::string out;
  jt::append_string(out, s);
  return out;
}

std::string nlohmann_text(const std::string& s) {
  return json(s).dump(-1, ' ', false, json::error_handler_t::replace);
}

// Whether `s` is valid UTF-8, by nlohmann's strict dump.
bool valid_utf8(const std::string& s) {
  try {
    (void)json(s).dump();
    return true;
  } catch (const json::type_error&) {
    return false;
  }
}

}  // namespace

TEST_CASE("strings: escapes and valid UTF-8 as nlohmann::json writes them") {
  const std::vector<std::string> cases = {
      "",
      "plain ascii",
      "quote \" and backslash \\ and slash /",
      std::string("nul \0 inside", 12),
      "\b\f\n\r\t\x01\x1f\x7f",
      "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80",  // é € 😀
      "\xEF\xBF\xBD",                               // U+FFFD itself
      "\xF4\x8F\xBF\xBF",                           // U+10FFFF
  };
  for (const auto& s : cases) {
    CAPTURE(s);
    REQUIRE(valid_utf8(s));
    CHECK(written(s) == nlohmann_text(s));
    CHECK(json::parse(written(s)).get<std::string>() == s);
  }
}

TEST_CASE("strings: bytes that are not UTF-8 become U+FFFD, one per byte") {
  const std::string r = "\xEF\xBF\xBD";
  struct Case {
    std::string in, out;
  };
  const std::vector<Case> cases = {
      {"\x80", r},  // lone continuation byte
      {"a\xFF"
       "b",
       "a" + r + "b"},                      // never valid
      {"\xC0\xAF", r + r},                  // overlong '/'
      {"\xE0\x80\xAF", r + r + r},          // overlong, three bytes
      {"\xED\xA0\x80", r + r + r},          // a UTF-16 surrogate
      {"\xF4\x90\x80\x80", r + r + r + r},  // above U+10FFFF
      {"end \xE2\x82", "end " + r + r},     // cut short at the end
      {"\xC3"
       "\"",
       r + "\""},  // cut short by a quote
  };
  for (const auto& c : cases) {
    CAPTURE(c.in);
    const std::string text = written(c.in);
    CHECK(json::parse(text).get<std::string>() == c.out);
  }
}

TEST_CASE("strings: random bytes always give text that parses") {
  std::mt19937 rng(20261128);
  std::uniform_int_distribution<int> len(0, 40);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_int_distribution<int> ascii(0x20, 0x7e);
  for (int round = 0; round < 20000; ++round) {
    std::string s;
    const int n = len(rng);
    for (int i = 0; i < n; ++i)
      s += static_cast<char>(round % 3 == 0 ? ascii(rng) : byte(rng));
    CAPTURE(s);
    const std::string text = written(s);
    json back = json::parse(text, nullptr, /*allow_exceptions=*/false);
    REQUIRE_FALSE(back.is_discarded());
    REQUIRE(back.is_string());
    if (valid_utf8(s)) {
      CHECK(back.get<std::string>() == s);
      CHECK(text == nlohmann_text(s));
    } else {
      CHECK(back.get<std::string>() != s);
      CHECK(valid_utf8(back.get<std::string>()));
    }
  }
}

TEST_CASE("numbers read back as the values written") {
  for (double v : {0.0, 1.0, -2.5, 0.1, 123456.789, 1e300, -4.9e-324,
                   std::numeric_limits<double>::max()}) {
    CAPTURE(v);
    std::string out;
    jt::append_number(out, v);
    json back = json::parse(out);
    CHECK(back.is_number_float());
    CHECK(back.get<double>() == v);
  }
  for (double v : {std::nan(""), std::numeric_limits<double>::infinity(),
                   -std::numeric_limits<double>::infinity()}) {
    std::string out;
    jt::append_number(out, v);
    CHECK(out == "null");
  }
  for (std::int64_t v : {std::int64_t{0}, std::int64_t{-7},
                         std::numeric_limits<std::int64_t>::max(),
                         std::numeric_limits<std::int64_t>::min()}) {
    std::string out;
    jt::append_number(out, v);
    CHECK(json::parse(out).get<std::int64_t>() == v);
  }
  std::string key;
  jt::append_key(key, "a\"b");
  CHECK(key == R"("a\"b":)");
}
