#include "common/presets.h"

#include "common/config.h"

namespace pacer {

namespace {

// What each vendor documents (rate-limit reference, shared/reference):
// - OpenAI: x-ratelimit-{limit,remaining,reset}-{requests,tokens}; 429 for
//   rate limits and for insufficient_quota (the header parser tells them
//   apart: quota_exhausted is not retried); usage.total_tokens is the cost
//   of a call in tokens. Completions can take minutes.
// - Anthropic: anthropic-ratelimit-* with RFC 3339 resets and retry-after;
//   529 means overloaded (retried with backoff, it is not a quota answer).
//   Input and output tokens are limited separately, so no single pointer
//   states a call's cost.
// - GitHub: x-ratelimit-* with epoch resets; a 403 or 429 with those headers
//   at 0 is a rate limit (the header parser proves it); secondary limits
//   send retry-after.
// - IETF: the RateLimit / RateLimit-Policy fields of the HTTP API working
//   group's draft (any of its versions) and retry-after.
std::vector<Preset> make_presets() {
  std::vector<Preset> v;
  Preset openai;
  openai.name = "openai";
  openai.summary =
      "OpenAI API: x-ratelimit-* headers, cost from usage.total_tokens";
  openai.base_url = "https://api.openai.com";
  openai.dialect = "openai";
  openai.actual_cost = "/usage/total_tokens";
  openai.timeout_ms = 600'000;
  openai.max_attempts = 6;
  openai.backoff_base_ms = 1'000;
  openai.backoff_cap_ms = 60'000;
  v.push_back(openai);

  Preset anthropic;
  anthropic.name = "anthropic";
  anthropic.summary =
      "Anthropic API: anthropic-ratelimit-* headers, 529 overloaded retried";
  anthropic.base_url = "https://api.anthropic.com";
  anthropic.dialect = "anthropic";
  anthropic.statuses = {{529, Outcome::kTransient}};
  anthropic.timeout_ms = 600'000;
  anthropic.max_attempts = 6;
  anthropic.backoff_base_ms = 1'000;
  anthropic.backoff_cap_ms = 60'000;
  v.push_back(anthropic);

  Preset github;
  github.name = "github";
  github.summary = "GitHub REST API: x-ratelimit-* headers, 403/429 limits";
  github.base_url = "https://api.github.com";
  github.dialect = "github";
  github.timeout_ms = 30'000;
  github.max_attempts = 5;
  github.backoff_base_ms = 1'000;
  github.backoff_cap_ms = 120'000;
  v.push_back(github);

  Preset ietf;
  ietf.name = "ietf";
  ietf.summary =
      "any API sending the IETF RateLimit fields (base_url required)";
  ietf.dialect = "ietf";
  v.push_back(ietf);
  return v;
}

}  // namespace

const std::vector<Preset>& presets() {
  static const std::vector<Preset> all = make_presets();
  return all;
}

const Preset* find_preset(std::string_view name) {
  for (const auto& p : presets())
    if (p.name == name) return &p;
  return nullptr;
}

std::string preset_names_text() {
  std::string out;
  for (const auto& p : presets()) {
    if (!out.empty()) out += ", ";
    out += p.name;
  }
  return out;
}

void apply_preset(const Preset& preset, ApiConfig& api) {
  api.base_url = std::string(preset.base_url);
  api.dialect = std::string(preset.dialect);
  api.actual_cost = std::string(preset.actual_cost);
  api.statuses = preset.statuses;
  api.timeout_ms = preset.timeout_ms;
  api.max_attempts = preset.max_attempts;
  api.backoff_base_ms = preset.backoff_base_ms;
  api.backoff_cap_ms = preset.backoff_cap_ms;
}

}  // namespace pacer
