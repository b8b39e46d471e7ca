// API presets: built-in profiles that set, for a well-known API, the header
// dialect, which statuses mean what, where the response states the real
// cost, and retry defaults, so a lane can be declared as
//   [api.llm]
//   preset = "openai"
//   headers = { Authorization = "Bearer ${OPENAI_API_KEY}" }
// A preset only supplies defaults: every key written in the [api.NAME] table
// overrides the preset's value. See docs/configuration.md, "Presets".
// Values; thread-safe.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/job.h"

namespace pacer {

struct ApiConfig;

struct Preset {
  std::string_view name;
  std::string_view summary;   // one line, for `pacer apis` and the docs
  std::string_view base_url;  // "" = none: the table must give one
  std::string_view dialect;
  std::string_view actual_cost;  // JSON pointer; "" = none
  std::map<int, Outcome> statuses;
  Millis timeout_ms = 30'000;
  int max_attempts = 5;
  Millis backoff_base_ms = 500;
  Millis backoff_cap_ms = 60'000;
};

// The preset called `name`, or null.
const Preset* find_preset(std::string_view name);
// Every preset, in the order they are documented.
const std::vector<Preset>& presets();
// "openai, anthropic, github, ietf"
std::string preset_names_text();
// Sets the preset's values in `api` (before the table's own keys are read,
// which then override them).
void apply_preset(const Preset& preset, ApiConfig& api);

}  // namespace pacer
