#include "broker/alerts.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <set>

#include "common/log.h"
#include "common/units.h"

namespace pacer::alerts {
namespace {

using nlohmann::json;

std::string percent(double share) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.0f%%", share * 100.0);
  return buf;
}

std::string number(double v) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.0f", v);
  return buf;
}

}  // namespace

json Event::to_json() const {
  json j = {{"status", firing ? "firing" : "resolved"},
            {"alert", alert},
            {"severity", severity},
            {"api", api},
            {"policy", policy.empty() ? json() : json(policy)},
            {"value", value},
            {"threshold", threshold},
            {"message", message},
            {"fired_at", log::utc_timestamp(fired_at)},
            {"at", log::utc_timestamp(at)},
            {"source", "pacer-broker"}};
  if (!firing) j["resolved_at"] = log::utc_timestamp(at);
  return j;
}

Engine::Engine(const std::map<std::string, ApiConfig>& apis) {
  for (const auto& [name, api] : apis) thresholds_[name] = api.alerts;
}

std::int64_t Engine::Series::growth(Millis now, std::int64_t value,
                                    Millis window, bool from_lowest) {
  points.emplace_back(now, value);
  // Keep the newest reading at or before the window's start as the baseline.
  while (points.size() >= 2 && points[1].first <= now - window)
    points.pop_front();
  if (!from_lowest) return value - points.front().second;
  std::int64_t lowest = value;
  for (const auto& p : points) lowest = std::min(lowest, p.second);
  return value - lowest;
}

Event Engine::event(const Key& key, const State& s, bool firing,
                    Millis now) const {
  Event e;
  e.firing = firing;
  e.api = std::get<0>(key);
  e.alert = std::get<1>(key);
  e.policy = std::get<2>(key);
  e.severity = s.severity;
  e.value = s.value;
  e.threshold = s.threshold;
  e.message = s.message;
  e.fired_at = s.fired_at;
  e.at = now;
  return e;
}

void Engine::check(const Key& key, bool holds, double value, double threshold,
                   const char* severity, std::string message,
                   const AlertThresholds& t, Millis now,
                   std::vector<Event>& out) {
  State& s = states_[key];
  if (holds) {
    s.value = value;
    s.threshold = threshold;
    s.severity = severity;
    s.message = std::move(message);
    s.false_since = -1;
    if (!s.firing) {
      s.firing = true;
      s.fired_at = now;
      ++s.fired_total;
      out.push_back(event(key, s, true, now));
    }
    return;
  }
  if (!s.firing) return;
  if (s.false_since < 0) s.false_since = now;
  if (now - s.false_since >= t.clear_after_ms) {
    s.firing = false;
    s.value = value;
    out.push_back(event(key, s, false, now));
  }
}

std::vector<Event> Engine::evaluate(const metrics::LaneSnapshot& lane,
                                    Millis now) {
  std::vector<Event> out;
  auto th = thresholds_.find(lane.api);
  if (th == thresholds_.end() || !lane.configured) return out;
  const AlertThresholds& t = th->second;
  const std::string& api = lane.api;
  std::set<Key> seen;
  auto firing = [&](const Key& k) {
    auto it = states_.find(k);
    return it != states_.end() && it->second.firing;
  };
  auto run = [&](Key key, bool holds, double value, double threshold,
                 const char* severity, std::string message) {
    seen.insert(key);
    check(key, holds, value, threshold, severity, std::move(message), t, now,
          out);
  };

  // Usage of one limit (share used) and, for a unit limit, its budget left.
  auto usage = [&](const std::string& policy, double share, bool units,
                   const std::string& what) {
    struct Level {
      const char* name;
      double threshold;
      const char* severity;
    };
    for (const Level& lv :
         {Level{"usage_warning", t.usage_warning, "warning"},
          Level{"usage_critical", t.usage_critical, "critical"}}) {
      if (lv.threshold <= 0) continue;
      Key k{api, lv.name, policy};
      const double bar =
          firing(k) ? lv.threshold - kUsageHysteresis : lv.threshold;
      run(k, share >= bar, share, lv.threshold, lv.severity,
          api + ": " + percent(share) + " of " + what + " used");
    }
    if (units && t.unit_budget > 0) {
      Key k{api, "unit_budget", policy};
      const double left = std::max(0.0, 1.0 - share);
      const double bar =
          firing(k) ? t.unit_budget + kUsageHysteresis : t.unit_budget;
      run(k, left <= bar, left, t.unit_budget, "critical",
          api + ": only " + percent(left) + " of " + what + " left");
    }
  };

  bool server_counters = false;
  for (const auto& u : lane.upstream)
    if (u.limit && *u.limit > 0 && u.remaining) server_counters = true;
  for (const auto& lim : lane.limits) {
    if (lim.limit <= 0 || lim.window_ms < t.usage_min_window_ms) continue;
    // A learned limit repeats what the server's counters say; when those
    // are at hand they are the better reading.
    if (lim.source == "learned" && server_counters) continue;
    const double share =
        static_cast<double>(lim.used) / static_cast<double>(lim.limit);
    usage(lim.policy, share, lim.unit != "requests",
          lim.policy + " (" + std::to_string(lim.used) + " of " +
              std::to_string(lim.limit) + ")");
  }
  for (const auto& u : lane.upstream) {
    if (!u.limit || *u.limit <= 0 || !u.remaining) continue;
    const double limit = static_cast<double>(*u.limit);
    // Past its reset, the counter is full again until an answer says more.
    const double remaining =
        u.reset_seconds && *u.reset_seconds <= 0 ? limit : *u.remaining;
    const double share = std::clamp(1.0 - remaining / limit, 0.0, 1.0);
    usage(u.policy, share, u.unit != "requests",
          "the server's counter " + u.policy + " (" + number(remaining) +
              " of " + number(limit) + " left)");
  }

  LaneTrack& track = tracks_[api];
  if (t.rate_limited > 0) {
    const std::int64_t n = track.rate_limited.growth(
        now, lane.counters.rate_limited, t.rate_limited_window_ms, false);
    run(Key{api, "rate_limited", ""}, n >= t.rate_limited,
        static_cast<double>(n), static_cast<double>(t.rate_limited), "warning",
        api + ": " + std::to_string(n) + " answers rate limited (429) in " +
            format_duration(t.rate_limited_window_ms));
  }
  if (!lane.paused)
    track.paused_since = -1;
  else if (track.paused_since < 0)
    track.paused_since = now;
  if (t.paused_ms >= 0) {
    const Millis paused_for = lane.paused ? now - track.paused_since : 0;
    run(Key{api, "paused", ""}, lane.paused && paused_for >= t.paused_ms,
        static_cast<double>(paused_for) / 1000.0,
        static_cast<double>(t.paused_ms) / 1000.0, "warning",
        api + ": paused for " + format_duration(paused_for) +
            (lane.pause_reason.empty() ? "" : ": " + lane.pause_reason));
  }
  if (t.circuit_open) {
    run(Key{api, "circuit_open", ""}, lane.circuit != "closed",
        lane.circuit == "closed" ? 0 : 1, 1, "critical",
        api + ": circuit " + lane.circuit +
            " after repeated failures; calls are held back");
  }
  if (t.dead_letters > 0) {
    // A lane without dead jobs has no "dead" count at all: 0.
    auto d = lane.jobs.find("dead");
    const std::int64_t dead = d == lane.jobs.end() ? 0 : d->second;
    const std::int64_t n = track.dead.growth(now, dead, t.dead_window_ms, true);
    run(Key{api, "dead_letters", ""}, n >= t.dead_letters,
        static_cast<double>(n), static_cast<double>(t.dead_letters), "warning",
        api + ": " + std::to_string(n) + " new dead letters in " +
            format_duration(t.dead_window_ms));
  }

  // A firing alert not checked this time (its limit went away, or the alert
  // was turned off) has no condition left: it clears like any other.
  std::vector<Key> gone;
  for (const auto& [key, s] : states_)
    if (std::get<0>(key) == api && s.firing && !seen.count(key))
      gone.push_back(key);
  for (const auto& key : gone) {
    const State& s = states_[key];
    check(key, false, s.value, s.threshold, s.severity.c_str(), s.message, t,
          now, out);
  }
  return out;
}

std::vector<Active> Engine::active() const {
  std::vector<Active> out;
  for (const auto& [key, s] : states_)
    if (s.firing)
      out.push_back({std::get<0>(key), std::get<1>(key), s.severity,
                     std::get<2>(key), s.message, s.value, s.threshold,
                     s.fired_at});
  return out;
}

std::vector<Active> Engine::active(const std::string& api) const {
  std::vector<Active> out;
  for (auto& a : active())
    if (a.api == api) out.push_back(std::move(a));
  return out;
}

std::vector<metrics::AlertSample> Engine::samples() const {
  std::vector<metrics::AlertSample> out;
  for (const auto& [key, s] : states_)
    if (s.fired_total > 0)
      out.push_back({std::get<0>(key), std::get<1>(key), std::get<2>(key),
                     s.firing, s.fired_total});
  return out;
}

}  // namespace pacer::alerts
