// Log lines: JSON and text renderings of the same event, and redaction of
// credentials by field name (built-in and registered) and by value (the
// registered secrets), at any depth and inside longer strings.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "common/log.h"

using nlohmann::json;
using pacer::log::Format;
using pacer::log::Level;
using pacer::log::render;

namespace {
constexpr const char* kTs = "2026-11-28T08:00:00.000Z";
}

TEST_CASE("a JSON line holds ts, level, component, event and the fields") {
  pacer::log::set_component("broker");
  auto line = json::parse(render(Format::kJson, Level::kInfo, "lane_paused",
                                 {{"api", "echo"}, {"for_ms", 2000}}, kTs));
  CHECK(line["ts"] == kTs);
  CHECK(line["level"] == "info");
  CHECK(line["component"] == "broker");
  CHECK(line["event"] == "lane_paused");
  CHECK(line["api"] == "echo");
  CHECK(line["for_ms"] == 2000);
}

TEST_CASE("a text line reads left to right, quoting only what needs it") {
  pacer::log::set_component("worker");
  CHECK(render(Format::kText, Level::kWarn, "worker_gone",
               {{"reason", "no message for 3s"},
                {"requeued", 4},
                {"worker", "w-1"},
                {"empty", ""}},
               kTs) ==
        "2026-11-28T08:00:00.000Z WARN  worker worker_gone empty=\"\" "
        "reason=\"no message for 3s\" requeued=4 worker=w-1");
  CHECK(render(Format::kText, Level::kError, "x", {}, kTs) ==
        "2026-11-28T08:00:00.000Z ERROR worker x");
}

TEST_CASE("credential fields are redacted by name, at any depth") {
  auto line = json::parse(render(
      Format::kJson, Level::kInfo, "e",
      {{"Authorization", "Bearer abc"},
       {"request", {{"headers", {{"X-Api-Key", "k-123"}, {"Accept", "*/*"}}}}},
       {"list", json::array({{{"cookie", "s=1"}}})}},
      kTs));
  CHECK(line["Authorization"] == "[redacted]");
  CHECK(line["request"]["headers"]["X-Api-Key"] == "[redacted]");
  CHECK(line["request"]["headers"]["Accept"] == "*/*");
  CHECK(line["list"][0]["cookie"] == "[redacted]");

  // A header configured in [api.NAME.headers] is registered as sensitive.
  pacer::log::add_sensitive_key("X-Vendor-Session");
  auto again = json::parse(render(Format::kJson, Level::kInfo, "e",
                                  {{"x-vendor-session", "abcd"}}, kTs));
  CHECK(again["x-vendor-session"] == "[redacted]");
}

TEST_CASE("a registered secret is masked wherever it appears") {
  pacer::log::add_secret("sk-live-0123456789");
  pacer::log::add_secret("abc");  // too short to register: plain text stays
  const std::string text = render(
      Format::kText, Level::kError, "call_failed",
      {{"error", "401 for key sk-live-0123456789 at https://abc.example"},
       {"nested", {{"why", "sk-live-0123456789sk-live-0123456789"}}}},
      kTs);
  CHECK(text.find("sk-live") == std::string::npos);
  CHECK(text.find("401 for key [redacted] at https://abc.example") !=
        std::string::npos);
  CHECK(text.find("[redacted][redacted]") != std::string::npos);
  // In the event name too, and in JSON.
  auto line = json::parse(
      render(Format::kJson, Level::kInfo, "sk-live-0123456789", {}, kTs));
  CHECK(line["event"] == "[redacted]");
}

TEST_CASE("formats and levels parse from their flag values") {
  Format f = Format::kJson;
  CHECK(pacer::log::parse_format("text", f));
  CHECK(f == Format::kText);
  CHECK(pacer::log::parse_format("auto", f));
  CHECK(f == Format::kAuto);
  CHECK_FALSE(pacer::log::parse_format("yaml", f));
  Level l = Level::kInfo;
  CHECK(pacer::log::parse_level("warning", l));
  CHECK(l == Level::kWarn);
}
