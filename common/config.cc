#include "common/config.h"

#include <toml++/toml.h>

#include <cctype>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "common/presets.h"
#include "common/ratelimit.h"
#include "common/units.h"

namespace pacer {
namespace {

class Reader {
 public:
  explicit Reader(std::string source) : source_(std::move(source)) {}

  Error error(const toml::node* node, const std::string& key,
              const std::string& what) const {
    std::string where = source_;
    if (node && node->source().begin.line > 0)
      where += ":" + std::to_string(node->source().begin.line);
    return Error{where + ": " + key + ": " + what};
  }

  // Refuses keys the table does not know, so a typo is an error not a default.
  std::optional<Error> check_keys(const toml::table& t,
                                  const std::string& prefix,
                                  const std::set<std::string>& known) const {
    for (auto&& [k, v] : t) {
      if (!known.count(std::string(k.str())))
        return error(&v, prefix + std::string(k.str()), "unknown key");
    }
    return std::nullopt;
  }

  std::optional<Error> string(const toml::table& t, const std::string& prefix,
                              const char* key, std::string& out) const {
    if (auto* n = t.get(key)) {
      auto v = n->value<std::string>();
      if (!v) return error(n, prefix + key, "must be a string");
      out = *v;
    }
    return std::nullopt;
  }

  std::optional<Error> integer(const toml::table& t, const std::string& prefix,
                               const char* key, std::int64_t lo,
                               std::int64_t hi, auto& out) const {
    if (auto* n = t.get(key)) {
      auto v = n->value<std::int64_t>();
      if (!v || !n->is_integer())
        return error(n, prefix + key, "must be an integer");
      if (*v < lo || *v > hi)
        return error(n, prefix + key,
                     "must be between " + std::to_string(lo) + " and " +
                         std::to_string(hi));
      out = static_cast<std::remove_reference_t<decltype(out)>>(*v);
    }
    return std::nullopt;
  }

  std::optional<Error> duration(const toml::table& t, const std::string& prefix,
                                const char* key, Millis& out) const {
    if (auto* n = t.get(key)) {
      auto s = n->value<std::string>();
      if (!s || !n->is_string())
        return error(n, prefix + key, "must be a duration string like \"2s\"");
      auto d = parse_duration(*s);
      if (!d) return error(n, prefix + key, d.error());
      out = *d;
    }
    return std::nullopt;
  }

  std::optional<Error> size(const toml::table& t, const std::string& prefix,
                            const char* key, std::int64_t& out) const {
    if (auto* n = t.get(key)) {
      if (n->is_integer()) {
        out = *n->value<std::int64_t>();
      } else if (auto s = n->value<std::string>(); s && n->is_string()) {
        auto v = parse_size(*s);
        if (!v) return error(n, prefix + key, v.error());
        out = *v;
      } else {
        return error(n, prefix + key, "must be a size like \"1MiB\" or bytes");
      }
      if (out <= 0) return error(n, prefix + key, "must be positive");
    }
    return std::nullopt;
  }

  std::optional<Error> string_list(const toml::table& t,
                                   const std::string& prefix, const char* key,
                                   std::vector<std::string>& out) const {
    if (auto* n = t.get(key)) {
      auto* arr = n->as_array();
      if (!arr) return error(n, prefix + key, "must be an array of strings");
      out.clear();
      for (auto&& e : *arr) {
        auto v = e.value<std::string>();
        if (!v || !e.is_string())
          return error(&e, prefix + key, "must be an array of strings");
        out.push_back(*v);
      }
    }
    return std::nullopt;
  }

 private:
  std::string source_;
};

bool valid_base_url(const std::string& url) {
  auto scheme_end = url.find("://");
  if (scheme_end == std::string::npos) return false;
  auto scheme = url.substr(0, scheme_end);
  if (scheme != "http" && scheme != "https") return false;
  auto host = url.substr(scheme_end + 3);
  if (host.empty() || host[0] == '/' ||
      host.find_first_of(" \t\r\n?#@") != std::string::npos)
    return false;
  return true;
}

// A TOML value as JSON (the batch template); dates and times have no JSON form.
std::optional<std::string> toml_to_json(const toml::node& n,
                                        nlohmann::ordered_json& out) {
  if (auto* t = n.as_table()) {
    out = nlohmann::ordered_json::object();
    for (auto&& [k, v] : *t)
      if (auto e = toml_to_json(v, out[std::string(k.str())])) return e;
  } else if (auto* a = n.as_array()) {
    out = nlohmann::ordered_json::array();
    for (auto&& v : *a)
      if (auto e = toml_to_json(v, out.emplace_back())) return e;
  } else if (auto s = n.value_exact<std::string>()) {
    out = *s;
  } else if (auto i = n.value_exact<std::int64_t>()) {
    out = *i;
  } else if (auto d = n.value_exact<double>()) {
    out = *d;
  } else if (auto b = n.value_exact<bool>()) {
    out = *b;
  } else {
    return "dates and times have no JSON form; use a string";
  }
  return std::nullopt;
}

// [api.NAME.batch] (`key` is "api.NAME.batch").
std::optional<Error> read_batch(const Reader& r, const toml::node& node,
                                const std::string& key,
                                std::optional<BatchConfig>& out) {
  auto* t = node.as_table();
  if (!t) return r.error(&node, key, "must be a table");
  const std::string p = key + ".";
  if (auto e =
          r.check_keys(*t, p,
                       {"method", "path", "max_items", "max_wait", "max_bytes",
                        "request_array", "member_pointer", "template",
                        "response_array", "item_error", "item_status", "cost"}))
    return *e;
  for (const char* required :
       {"path", "max_items", "request_array", "response_array"})
    if (!t->get(required)) return r.error(&node, p + required, "is required");
  BatchConfig b;
  if (auto e = r.string(*t, p, "method", b.method)) return *e;
  bool token = !b.method.empty();
  for (char ch : b.method)
    if (!std::isupper(static_cast<unsigned char>(ch))) token = false;
  if (!token)
    return r.error(t->get("method"), p + "method",
                   "must be an upper-case HTTP method like \"POST\"");
  if (auto e = r.string(*t, p, "path", b.path)) return *e;
  if (b.path.empty() || b.path[0] != '/' || b.path.starts_with("//") ||
      b.path.find_first_of(" \t\r\n#") != std::string::npos)
    return r.error(t->get("path"), p + "path",
                   "must start with one '/' and have no spaces or '#'");
  if (auto e = r.integer(*t, p, "max_items", 1, kMaxBatchItems, b.max_items))
    return *e;
  if (auto e = r.duration(*t, p, "max_wait", b.max_wait_ms)) return *e;
  if (auto e = r.size(*t, p, "max_bytes", b.max_bytes)) return *e;
  // Pointers: request_array and response_array may be "" (the whole body);
  // member_pointer "" is the whole member body; item_* "" is not allowed.
  struct PointerKey {
    const char* name;
    std::string* out;
    bool may_be_empty;
  };
  for (auto [name, field, may_be_empty] :
       {PointerKey{"request_array", &b.request_array, true},
        PointerKey{"response_array", &b.response_array, true},
        PointerKey{"member_pointer", &b.member_pointer, true},
        PointerKey{"item_error", &b.item_error, false},
        PointerKey{"item_status", &b.item_status, false}}) {
    if (auto e = r.string(*t, p, name, *field)) return *e;
    if (!t->get(name)) continue;
    if ((field->empty() && !may_be_empty) || !is_json_pointer(*field))
      return r.error(
          t->get(name), p + name,
          "must be a JSON pointer like \"/results\" (got '" + *field + "')");
  }
  if (auto* n = t->get("template")) {
    if (auto s = n->value_exact<std::string>()) {
      try {
        b.body_template = nlohmann::ordered_json::parse(*s);
      } catch (const nlohmann::json::exception& ex) {
        std::string what = ex.what();  // "[json.exception...] parse error..."
        if (auto at = what.find("] "); at != std::string::npos)
          what = what.substr(at + 2);
        return r.error(n, p + "template", "is not valid JSON: " + what);
      }
    } else if (n->is_table()) {
      if (auto e = toml_to_json(*n, b.body_template))
        return r.error(n, p + "template", *e);
    } else {
      return r.error(n, p + "template",
                     "must be a table or a string of JSON object text");
    }
    if (!b.body_template.is_object())
      return r.error(n, p + "template", "must be a JSON object");
  }
  if (auto e = check_batch_template(b.body_template, b.request_array))
    return r.error(
        t->get("template") ? t->get("template") : t->get("request_array"),
        t->get("template") ? p + "template" : p + "request_array", *e);
  if (batch_envelope_bytes(b) >= static_cast<std::size_t>(b.max_bytes))
    return r.error(t->get("max_bytes"), p + "max_bytes",
                   "leaves no room for members after the template");
  std::string cost = "request";
  if (auto e = r.string(*t, p, "cost", cost)) return *e;
  if (cost == "request")
    b.cost = BatchCost::kRequest;
  else if (cost == "per_item")
    b.cost = BatchCost::kPerItem;
  else
    return r.error(t->get("cost"), p + "cost",
                   "must be \"request\" or \"per_item\"");
  out = std::move(b);
  return std::nullopt;
}

// The keys of an alerts table that set thresholds (both [alerts] and
// [api.NAME.alerts]).
const std::set<std::string> kAlertThresholdKeys = {
    "usage_warning",       "usage_critical", "usage_min_window", "rate_limited",
    "rate_limited_window", "paused_for",     "circuit_open",     "dead_letters",
    "dead_window",         "unit_budget",    "clear_after"};

// Reads the thresholds a table sets over `out` (what it leaves out keeps its
// value). `false` turns an alert off.
std::optional<Error> read_alert_thresholds(const Reader& r,
                                           const toml::table& t,
                                           const std::string& p,
                                           AlertThresholds& out) {
  auto off = [&](const char* key) {
    const toml::node* n = t.get(key);
    return n && n->is_boolean() && !*n->value<bool>();
  };
  // A share: 0.8 or "80%", from 0 to 1.
  auto share = [&](const char* key, double& v) -> std::optional<Error> {
    const toml::node* n = t.get(key);
    if (!n) return std::nullopt;
    if (off(key)) {
      v = 0;
      return std::nullopt;
    }
    std::optional<double> got;
    if (n->is_floating_point() || n->is_integer()) {
      got = *n->value<double>();
    } else if (auto s = n->value<std::string>(); s && n->is_string()) {
      std::string text = *s;
      if (!text.empty() && text.back() == '%') {
        text.pop_back();
        char* end = nullptr;
        const double pct = std::strtod(text.c_str(), &end);
        if (!text.empty() && end && *end == '\0') got = pct / 100.0;
      }
    }
    if (!got || !(*got >= 0.0 && *got <= 1.0))
      return r.error(n, p + key,
                     "must be a share from 0 to 1 like 0.8 or \"80%\" (or "
                     "false)");
    v = *got;
    return std::nullopt;
  };
  auto count = [&](const char* key, std::int64_t& v) -> std::optional<Error> {
    if (off(key)) {
      v = 0;
      return std::nullopt;
    }
    return r.integer(t, p, key, 0, 1'000'000'000, v);
  };
  auto window = [&](const char* key, Millis& v) -> std::optional<Error> {
    if (auto e = r.duration(t, p, key, v)) return e;
    if (t.get(key) && v <= 0)
      return r.error(t.get(key), p + key, "must be longer than 0s");
    return std::nullopt;
  };
  if (auto e = share("usage_warning", out.usage_warning)) return e;
  if (auto e = share("usage_critical", out.usage_critical)) return e;
  if (auto e = r.duration(t, p, "usage_min_window", out.usage_min_window_ms))
    return e;
  if (auto e = count("rate_limited", out.rate_limited)) return e;
  if (auto e = window("rate_limited_window", out.rate_limited_window_ms))
    return e;
  if (off("paused_for")) {
    out.paused_ms = -1;
  } else if (auto e = r.duration(t, p, "paused_for", out.paused_ms)) {
    return e;
  }
  if (auto* n = t.get("circuit_open")) {
    if (!n->is_boolean())
      return r.error(n, p + "circuit_open", "must be true or false");
    out.circuit_open = *n->value<bool>();
  }
  if (auto e = count("dead_letters", out.dead_letters)) return e;
  if (auto e = window("dead_window", out.dead_window_ms)) return e;
  if (auto e = share("unit_budget", out.unit_budget)) return e;
  if (auto e = r.duration(t, p, "clear_after", out.clear_after_ms)) return e;
  if (out.usage_warning > 0 && out.usage_critical > 0 &&
      out.usage_warning > out.usage_critical)
    return r.error(t.get("usage_warning") ? t.get("usage_warning")
                                          : t.get("usage_critical"),
                   p + "usage_warning", "must not be above usage_critical");
  return std::nullopt;
}

Result<Config> parse_table(const toml::table& root, const std::string& source) {
  Reader r(source);
  Config c;
  c.source = source;
  if (auto e = r.check_keys(root, "",
                            {"broker", "worker", "client", "api", "alerts",
                             "security"}))
    return *e;

  // Before the APIs: each takes [alerts] as the base of its own thresholds.
  if (auto* n = root.get("alerts")) {
    auto* t = n->as_table();
    if (!t) return r.error(n, "alerts", "must be a table");
    const std::string p = "alerts.";
    std::set<std::string> known = kAlertThresholdKeys;
    known.insert({"webhook", "webhook_timeout", "webhook_attempts"});
    if (auto e = r.check_keys(*t, p, known)) return *e;
    auto& al = c.alerts;
    if (auto e = read_alert_thresholds(r, *t, p, al.defaults)) return *e;
    if (auto e = r.string(*t, p, "webhook", al.webhook)) return *e;
    if (!al.webhook.empty() && !valid_base_url(al.webhook))
      return r.error(t->get("webhook"), p + "webhook",
                     "must be an http:// or https:// URL with a host");
    if (auto e = r.duration(*t, p, "webhook_timeout", al.webhook_timeout_ms))
      return *e;
    if (al.webhook_timeout_ms < 100 || al.webhook_timeout_ms > 300'000)
      return r.error(t->get("webhook_timeout"), p + "webhook_timeout",
                     "must be between 100ms and 5m");
    if (auto e =
            r.integer(*t, p, "webhook_attempts", 1, 100, al.webhook_attempts))
      return *e;
  }

  if (auto* n = root.get("broker")) {
    auto* t = n->as_table();
    if (!t) return r.error(n, "broker", "must be a table");
    const std::string p = "broker.";
    if (auto e =
            r.check_keys(*t, p,
                         {"database", "worker_endpoint", "client_endpoint",
                          "heartbeat", "liveness", "synchronous", "retention",
                          "window", "lease_grace", "metrics_address",
                          "allow_insecure"}))
      return *e;
    auto& b = c.broker;
    if (auto e = r.string(*t, p, "database", b.database)) return *e;
    if (auto e = r.string(*t, p, "worker_endpoint", b.worker_endpoint))
      return *e;
    if (auto e = r.string(*t, p, "client_endpoint", b.client_endpoint))
      return *e;
    if (auto e = r.duration(*t, p, "heartbeat", b.heartbeat_ms)) return *e;
    if (auto e = r.integer(*t, p, "liveness", 2, 100, b.liveness)) return *e;
    if (auto e = r.string(*t, p, "synchronous", b.synchronous)) return *e;
    if (b.synchronous != "normal" && b.synchronous != "full")
      return r.error(t->get("synchronous"), p + "synchronous",
                     "must be \"normal\" or \"full\"");
    if (auto e = r.duration(*t, p, "retention", b.retention_ms)) return *e;
    if (auto e = r.integer(*t, p, "window", 16, 100'000, b.window)) return *e;
    if (auto e = r.duration(*t, p, "lease_grace", b.lease_grace_ms)) return *e;
    if (b.heartbeat_ms < 50 || b.heartbeat_ms > 60'000)
      return r.error(t->get("heartbeat"), p + "heartbeat",
                     "must be between 50ms and 60s");
    if (auto e = r.string(*t, p, "metrics_address", b.metrics_address))
      return *e;
    if (auto* n = t->get("allow_insecure")) {
      auto v = n->value<bool>();
      if (!v || !n->is_boolean())
        return r.error(n, p + "allow_insecure", "must be true or false");
      b.allow_insecure = *v;
    }
    if (!b.metrics_address.empty()) {
      if (auto hp = parse_host_port(b.metrics_address); !hp)
        return r.error(t->get("metrics_address"), p + "metrics_address",
                       hp.error());
    }
  }

  if (auto* n = root.get("security")) {
    auto* t = n->as_table();
    if (!t) return r.error(n, "security", "must be a table");
    const std::string p = "security.";
    if (auto e = r.check_keys(*t, p,
                              {"broker_secret_key", "broker_public_key",
                               "secret_key", "worker_keys", "client_keys"}))
      return *e;
    auto& s = c.security;
    s.enabled = true;
    for (auto [key, out] :
         {std::pair{"broker_secret_key", &s.broker_secret_key},
          std::pair{"broker_public_key", &s.broker_public_key},
          std::pair{"secret_key", &s.secret_key},
          std::pair{"worker_keys", &s.worker_keys},
          std::pair{"client_keys", &s.client_keys}}) {
      if (auto e = r.string(*t, p, key, *out)) return *e;
      if (t->get(key) && out->empty())
        return r.error(t->get(key), p + key, "must not be empty");
    }
  }

  if (auto* n = root.get("worker")) {
    auto* t = n->as_table();
    if (!t) return r.error(n, "worker", "must be a table");
    const std::string p = "worker.";
    if (auto e = r.check_keys(*t, p,
                              {"broker", "concurrency", "apis",
                               "max_body_bytes", "connect_timeout"}))
      return *e;
    auto& w = c.worker;
    if (auto e = r.string(*t, p, "broker", w.broker)) return *e;
    if (auto e = r.integer(*t, p, "concurrency", 1, 10'000, w.concurrency))
      return *e;
    if (auto e = r.string_list(*t, p, "apis", w.apis)) return *e;
    if (auto e = r.size(*t, p, "max_body_bytes", w.max_body_bytes)) return *e;
    if (auto e = r.duration(*t, p, "connect_timeout", w.connect_timeout_ms))
      return *e;
  }

  if (auto* n = root.get("client")) {
    auto* t = n->as_table();
    if (!t) return r.error(n, "client", "must be a table");
    const std::string p = "client.";
    if (auto e = r.check_keys(*t, p, {"broker", "timeout"})) return *e;
    if (auto e = r.string(*t, p, "broker", c.client.broker)) return *e;
    if (auto e = r.duration(*t, p, "timeout", c.client.timeout_ms)) return *e;
  }

  if (auto* n = root.get("api")) {
    auto* apis = n->as_table();
    if (!apis) return r.error(n, "api", "must be a table of [api.NAME] tables");
    for (auto&& [name_key, node] : *apis) {
      std::string name(name_key.str());
      const std::string p = "api." + name + ".";
      auto* t = node.as_table();
      if (!t) return r.error(&node, "api." + name, "must be a table");
      for (char ch : name)
        if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '_' &&
            ch != '-')
          return r.error(&node, "api." + name,
                         "API names may use letters, digits, '_' and '-'");
      if (auto e = r.check_keys(
              *t, p,
              {"base_url", "limits", "concurrency", "margin", "timeout",
               "max_attempts", "backoff_base", "backoff_cap", "headers",
               "quota_wait", "max_pause", "circuit_failures", "circuit_cooldown", "learn",
               "actual_cost", "statuses", "dialect", "batch", "preset",
               "alerts"}))
        return *e;
      ApiConfig a;
      a.name = name;
      a.alerts = c.alerts.defaults;
      if (auto* an = t->get("alerts")) {
        auto* at = an->as_table();
        if (!at) return r.error(an, p + "alerts", "must be a table");
        if (auto e = r.check_keys(*at, p + "alerts.", kAlertThresholdKeys))
          return *e;
        if (auto e = read_alert_thresholds(r, *at, p + "alerts.", a.alerts))
          return *e;
      }
      // A preset first: it supplies defaults the table's keys override.
      if (auto e = r.string(*t, p, "preset", a.preset)) return *e;
      if (!a.preset.empty()) {
        const Preset* preset = find_preset(a.preset);
        if (!preset)
          return r.error(t->get("preset"), p + "preset",
                         "unknown preset '" + a.preset +
                             "' (known: " + preset_names_text() + ")");
        apply_preset(*preset, a);
      }
      if (!t->get("base_url") && a.base_url.empty())
        return r.error(&node, p + "base_url", "is required");
      if (auto e = r.string(*t, p, "base_url", a.base_url)) return *e;
      while (!a.base_url.empty() && a.base_url.back() == '/')
        a.base_url.pop_back();
      if (!valid_base_url(a.base_url))
        return r.error(t->get("base_url"), p + "base_url",
                       "must be an http:// or https:// URL with a host");
      if (auto* ln = t->get("limits")) {
        std::vector<std::string> texts;
        if (ln->is_string()) {
          texts.push_back(*ln->value<std::string>());
        } else if (auto e = r.string_list(*t, p, "limits", texts)) {
          return *e;
        }
        for (auto& text : texts) {
          auto spec = parse_limit(text);
          if (!spec) return r.error(ln, p + "limits", spec.error());
          a.limits.push_back(*spec);
        }
      }
      if (auto e = r.integer(*t, p, "concurrency", 0, 100'000, a.concurrency))
        return *e;
      if (t->get("margin")) {
        Millis m = 0;
        if (auto e = r.duration(*t, p, "margin", m)) return *e;
        a.margin_ms = m;
      }
      if (auto e = r.duration(*t, p, "timeout", a.timeout_ms)) return *e;
      if (a.timeout_ms <= 0)
        return r.error(t->get("timeout"), p + "timeout", "must be positive");
      if (auto e = r.integer(*t, p, "max_attempts", 1, 1000, a.max_attempts))
        return *e;
      if (auto e = r.duration(*t, p, "backoff_base", a.backoff_base_ms))
        return *e;
      if (auto e = r.duration(*t, p, "backoff_cap", a.backoff_cap_ms))
        return *e;
      if (auto e = r.duration(*t, p, "quota_wait", a.quota_wait_ms)) return *e;
      if (auto e = r.duration(*t, p, "max_pause", a.max_pause_ms)) return *e;
      if (auto e = r.integer(*t, p, "circuit_failures", 0, 1'000'000,
                             a.circuit_failures))
        return *e;
      if (auto e = r.duration(*t, p, "circuit_cooldown", a.circuit_cooldown_ms))
        return *e;
      if (auto* n = t->get("learn")) {
        auto v = n->value<bool>();
        if (!v || !n->is_boolean())
          return r.error(n, p + "learn", "must be true or false");
        a.learn = *v;
      }
      if (auto e = r.string(*t, p, "actual_cost", a.actual_cost)) return *e;
      if (!a.actual_cost.empty()) {
        try {
          nlohmann::json::json_pointer check(a.actual_cost);
        } catch (const nlohmann::json::exception&) {
          return r.error(t->get("actual_cost"), p + "actual_cost",
                         "must be a JSON pointer like \"/usage/total_tokens\"");
        }
      }
      if (auto* sn = t->get("statuses")) {
        a.statuses.clear();  // the table's statuses replace a preset's
        auto* st = sn->as_table();
        if (!st)
          return r.error(sn, p + "statuses",
                         "must be a table: rate_limited, transient, permanent "
                         "= [status, ...]");
        for (auto&& [ck, cv] : *st) {
          std::string cls(ck.str());
          const std::string key = p + "statuses." + cls;
          Outcome o;
          if (cls == "rate_limited")
            o = Outcome::kRateLimited;
          else if (cls == "transient")
            o = Outcome::kTransient;
          else if (cls == "permanent")
            o = Outcome::kPermanent;
          else
            return r.error(&cv, key,
                           "unknown class (use rate_limited, transient or "
                           "permanent)");
          auto* arr = cv.as_array();
          if (!arr)
            return r.error(&cv, key, "must be an array of HTTP statuses");
          for (auto&& e : *arr) {
            auto v = e.value<std::int64_t>();
            if (!v || !e.is_integer() || *v < 100 || *v > 599)
              return r.error(&e, key, "statuses are integers from 100 to 599");
            if (a.statuses.count(static_cast<int>(*v)))
              return r.error(&e, key,
                             "status " + std::to_string(*v) +
                                 " is given more than one class");
            a.statuses[static_cast<int>(*v)] = o;
          }
        }
      }
      if (auto e = r.string(*t, p, "dialect", a.dialect)) return *e;
      if (!is_known_dialect(a.dialect))
        return r.error(t->get("dialect"), p + "dialect",
                       "unknown dialect '" + a.dialect +
                           "' (known: " + known_dialects_text() + ")");
      if (auto* hn = t->get("headers")) {
        auto* ht = hn->as_table();
        if (!ht)
          return r.error(hn, p + "headers", "must be a table of strings");
        for (auto&& [hk, hv] : *ht) {
          auto v = hv.value<std::string>();
          if (!v || !hv.is_string())
            return r.error(&hv, p + "headers." + std::string(hk.str()),
                           "must be a string");
          a.headers[std::string(hk.str())] = *v;
        }
      }
      if (auto* bn = t->get("batch")) {
        if (auto e = read_batch(r, *bn, p + "batch", a.batch)) return *e;
      }
      c.apis[name] = std::move(a);
    }
  }
  return c;
}

}  // namespace

Result<Config> parse_config(const std::string& text,
                            const std::string& source) {
  try {
    toml::table root = toml::parse(text, source);
    return parse_table(root, source);
  } catch (const toml::parse_error& e) {
    return Error{source + ":" + std::to_string(e.source().begin.line) + ": " +
                 std::string(e.description())};
  }
}

Result<Config> load_config_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Error{path + ": cannot open the configuration file"};
  std::stringstream ss;
  ss << in.rdbuf();
  auto c = parse_config(ss.str(), path);
  if (!c) return c;
  // Key paths are the file's: relative ones from its folder.
  const auto folder = std::filesystem::path(path).parent_path();
  auto& s = c->security;
  for (std::string* p : {&s.broker_secret_key, &s.broker_public_key,
                         &s.secret_key, &s.worker_keys, &s.client_keys})
    if (!p->empty() && std::filesystem::path(*p).is_relative())
      *p = (folder / *p).string();
  return c;
}

Result<HostPort> parse_host_port(std::string_view text) {
  const std::string shown = "'" + std::string(text) + "'";
  const auto colon = text.rfind(':');
  if (colon == std::string_view::npos)
    return Error{"must be HOST:PORT like \"127.0.0.1:9464\" (got " + shown +
                 ")"};
  std::string_view host = text.substr(0, colon);
  const std::string_view port = text.substr(colon + 1);
  bool bracketed =
      host.size() >= 2 && host.front() == '[' && host.back() == ']';
  if (bracketed) host = host.substr(1, host.size() - 2);
  // An IPv6 address needs brackets, or its last group reads as the port.
  const char* allowed = bracketed ? "0123456789abcdefABCDEF:." : nullptr;
  bool host_ok = !host.empty();
  for (char c : host) {
    const bool ok = allowed ? c != '\0' && std::strchr(allowed, c) != nullptr
                            : std::isalnum(static_cast<unsigned char>(c)) ||
                                  c == '.' || c == '-';
    if (!ok) host_ok = false;
  }
  if (!host_ok)
    return Error{
        "must be HOST:PORT with a host name, an IPv4 address or a "
        "bracketed IPv6 address like \"[::1]:9464\" (got " +
        shown + ")"};
  int value = 0;
  bool port_ok = !port.empty() && port.size() <= 5;
  // At most five digits are read: a longer port must not overflow the sum.
  for (char c : port) {
    if (!port_ok) break;
    if (!std::isdigit(static_cast<unsigned char>(c))) {
      port_ok = false;
      break;
    }
    value = value * 10 + (c - '0');
  }
  if (!port_ok || value < 1 || value > 65535)
    return Error{"the port must be a number from 1 to 65535 (got " + shown +
                 ")"};
  return HostPort{std::string(host), value};
}

Result<std::string> expand_env(const std::string& value) {
  std::string out;
  for (std::size_t i = 0; i < value.size();) {
    if (value.compare(i, 2, "${") == 0) {
      auto end = value.find('}', i + 2);
      if (end == std::string::npos)
        return Error{"unterminated ${ in a header value"};
      std::string name = value.substr(i + 2, end - i - 2);
      const char* v = std::getenv(name.c_str());
      if (!v) return Error{"environment variable " + name + " is not set"};
      out += v;
      i = end + 1;
    } else {
      out += value[i++];
    }
  }
  return out;
}

}  // namespace pacer
