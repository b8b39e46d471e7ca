// Alerts: conditions an operator wants to hear about before a quota runs out
// (docs/operations.md "Alerts" lists each with what to do about it).
//
// The broker loop hands the Engine each configured lane's snapshot (the same
// values the metrics publish) about once a second. The Engine keeps, per
// (api, alert, policy), whether the alert fires, and returns only
// transitions: an alert fires once when its condition becomes true and
// clears once when it has been false for `clear_after` (so a value hovering
// at a threshold does not send a flood). Usage alerts also clear only below
// their threshold less kUsageHysteresis.
//
// Conditions, per API (thresholds from AlertThresholds, 0 = off):
//   usage_warning / usage_critical  a limit's share used within its window
//       reaches the threshold: pacer's own count for each configured limit
//       whose window is at least usage_min_window (learned limits too, when
//       the server sends no counters), and 1 - remaining/limit for each of
//       the server's counters (a counter whose reset has passed reads empty);
//   unit_budget     a unit limit (tokens, ...) has at most that share left;
//   rate_limited    that many answers classed rate limited (429s) within
//                   rate_limited_window;
//   paused          the lane has been paused longer than paused_for;
//   circuit_open    the lane's circuit breaker is open (or half open);
//   dead_letters    that many new dead letters within dead_window.
//
// Pure logic over values and an explicit time: unit-tested under a fake
// clock. Not thread-safe (the broker loop owns it).
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <tuple>
#include <vector>

#include "broker/metrics.h"
#include "common/clock.h"
#include "common/config.h"

namespace pacer::alerts {

// How far below its threshold a firing usage alert's share must fall to
// count as cleared.
constexpr double kUsageHysteresis = 0.05;

// One transition: an alert fired or cleared.
struct Event {
  bool firing = true;  // false: it cleared
  std::string api;
  std::string alert;     // usage_warning, rate_limited, ...
  std::string severity;  // "warning" or "critical"
  std::string policy;    // the limit or server counter; empty: lane-wide
  double value = 0;      // the measured value when it fired / last seen
  double threshold = 0;
  std::string message;  // one line for a person
  Millis fired_at = 0;
  Millis at = 0;  // of this transition

  // The webhook's document (schema in docs/operations.md "Alerts").
  nlohmann::json to_json() const;
};

// An alert that fires now (for STATS and `pacer top`).
struct Active {
  std::string api, alert, severity, policy, message;
  double value = 0;
  double threshold = 0;
  Millis since = 0;
};

class Engine {
 public:
  // `apis`: the configured APIs, each with its thresholds.
  explicit Engine(const std::map<std::string, ApiConfig>& apis);

  // Feeds one lane's state at `now` (`lane.jobs` holds its job counts by
  // state, a state without jobs may be missing); returns the transitions it
  // caused, in a stable order.
  std::vector<Event> evaluate(const metrics::LaneSnapshot& lane, Millis now);

  std::vector<Active> active() const;
  std::vector<Active> active(const std::string& api) const;
  // Every alert that has fired since the start, firing or cleared.
  std::vector<metrics::AlertSample> samples() const;

 private:
  struct State {
    bool firing = false;
    Millis fired_at = 0;
    Millis false_since = -1;  // while firing: when its condition went false
    double value = 0;
    double threshold = 0;
    std::string severity;
    std::string message;
    std::int64_t fired_total = 0;
  };
  using Key = std::tuple<std::string, std::string, std::string>;
  // A counter's readings over a trailing window.
  struct Series {
    std::deque<std::pair<Millis, std::int64_t>> points;
    // Adds a reading; returns its growth over `window` (current less the
    // reading at the window's start, or less the lowest within it).
    std::int64_t growth(Millis now, std::int64_t value, Millis window,
                        bool from_lowest);
  };
  struct LaneTrack {
    Series rate_limited;
    Series dead;
    Millis paused_since = -1;
  };

  // One condition's reading: `holds` whether it is past its threshold.
  void check(const Key& key, bool holds, double value, double threshold,
             const char* severity, std::string message,
             const AlertThresholds& t, Millis now, std::vector<Event>& out);
  Event event(const Key& key, const State& s, bool firing, Millis now) const;

  std::map<std::string, AlertThresholds> thresholds_;
  std::map<Key, State> states_;
  std::map<std::string, LaneTrack> tracks_;
};

}  // namespace pacer::alerts
