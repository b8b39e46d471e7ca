// API presets (common/presets.h) through the config loader: a preset sets
// the dialect, base URL, cost pointer, statuses and retry defaults; keys
// written in the table override it; an unknown preset is refused with the
// line and key.
#include <doctest/doctest.h>

#include <string>

#include "common/config.h"
#include "common/presets.h"

using pacer::Outcome;
using pacer::parse_config;

namespace {

pacer::ApiConfig api(const std::string& table) {
  auto r = parse_config("[api.x]\n" + table, "pacer.toml");
  REQUIRE_MESSAGE(r.ok(), r.error());
  REQUIRE(r->apis.count("x"));
  return r->apis.at("x");
}

std::string error_of(const std::string& table) {
  auto r = parse_config("[api.x]\n" + table, "pacer.toml");
  REQUIRE_FALSE(r.ok());
  return r.error();
}

}  // namespace

TEST_CASE("openai: dialect, base URL, usage tokens as the cost, long calls") {
  auto a = api("preset = \"openai\"\n");
  CHECK(a.preset == "openai");
  CHECK(a.base_url == "https://api.openai.com");
  CHECK(a.dialect == "openai");
  CHECK(a.actual_cost == "/usage/total_tokens");
  CHECK(a.timeout_ms == 600'000);
  CHECK(a.max_attempts == 6);
  CHECK(a.backoff_base_ms == 1'000);
}

TEST_CASE("anthropic: its dialect, and 529 overloaded is retried") {
  auto a = api("preset = \"anthropic\"\n");
  CHECK(a.base_url == "https://api.anthropic.com");
  CHECK(a.dialect == "anthropic");
  CHECK(a.actual_cost.empty());
  REQUIRE(a.statuses.count(529));
  CHECK(a.statuses.at(529) == Outcome::kTransient);
}

TEST_CASE("github and ietf") {
  auto g = api("preset = \"github\"\n");
  CHECK(g.base_url == "https://api.github.com");
  CHECK(g.dialect == "github");
  auto i = api("preset = \"ietf\"\nbase_url = \"http://127.0.0.1:8080\"\n");
  CHECK(i.dialect == "ietf");
  CHECK(i.base_url == "http://127.0.0.1:8080");
  // ietf has no base URL of its own.
  CHECK(error_of("preset = \"ietf\"\n").find("api.x.base_url: is required") !=
        std::string::npos);
}

TEST_CASE("keys in the table override the preset's") {
  auto a =
      api("preset = \"openai\"\n"
          "base_url = \"http://127.0.0.1:9000/v1\"\n"
          "timeout = \"20s\"\n"
          "max_attempts = 2\n"
          "actual_cost = \"/usage/completion_tokens\"\n"
          "dialect = \"auto\"\n");
  CHECK(a.base_url == "http://127.0.0.1:9000/v1");
  CHECK(a.timeout_ms == 20'000);
  CHECK(a.max_attempts == 2);
  CHECK(a.actual_cost == "/usage/completion_tokens");
  CHECK(a.dialect == "auto");
  CHECK(a.backoff_base_ms == 1'000);  // not overridden: the preset's

  // statuses written in the table replace the preset's map.
  auto b = api("preset = \"anthropic\"\n[api.x.statuses]\npermanent = [529]\n");
  REQUIRE(b.statuses.count(529));
  CHECK(b.statuses.at(529) == Outcome::kPermanent);
}

TEST_CASE("an unknown or mistyped preset is refused with line and key") {
  auto e = error_of("preset = \"openia\"\n");
  CHECK(e.find("pacer.toml:2: api.x.preset: unknown preset 'openia'") !=
        std::string::npos);
  CHECK(e.find("openai, anthropic, github, ietf") != std::string::npos);
  CHECK(error_of("preset = 3\n").find("api.x.preset") != std::string::npos);
}

TEST_CASE("without a preset nothing changes") {
  auto a = api("base_url = \"http://127.0.0.1:8080\"\n");
  CHECK(a.preset.empty());
  CHECK(a.dialect == "auto");
  CHECK(a.timeout_ms == 30'000);
  CHECK(a.max_attempts == 5);
}
