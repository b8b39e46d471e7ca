// QuotaState: what the servers' own answers say about one lane (DESIGN §5),
// turned into a gate on dispatch. It combines
//   - pauses: a rate-limited answer (429, or 403/503 with evidence) pauses the
//     whole lane for max(Retry-After, reset, backoff);
//   - upstream caps: an advertised `remaining = R` with a reset caps what the
//     lane starts before that reset: the lowest R any answer of the window
//     showed, minus what the lane has in flight (everything counted after
//     that answer's request is still unanswered), minus what other clients
//     of the same key are expected to spend until the reset;
//   - probes: when a cap's reset passes (or after a restart) the server's
//     count is unknown, so one request goes first and its answer sets the
//     next cap;
//   - learned limits: limits the server advertises with a window become
//     limiter limits; with no usable headers at all, the rate is found by
//     additive increase / multiplicative decrease (AIMD) on 429s and 503s;
//   - the circuit breaker: N consecutive transient failures open it (the
//     lane pauses), one probe job half-opens it, a success closes it.
// Time is passed in, never read. Not thread-safe; owned by the broker loop.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/limit_spec.h"

namespace pacer {

// The broker's view of the normalized observation a worker attached to a
// result (docs/architecture.md). Read defensively: a malformed observation
// yields nullopt and is ignored.
struct ObservedLimit {
  std::string key;   // source/name/unit: identifies the server's counter
  std::string unit;  // "requests", "tokens", ...
  std::optional<std::int64_t> limit;
  std::optional<double> remaining;
  std::optional<Millis> reset_in_ms;
  std::optional<std::int64_t> window_s;
  bool policy_only = false;
};

struct Observation {
  std::string verdict = "ok";
  bool blocking = false;
  std::optional<Millis> retry_after_ms;
  std::optional<Millis> wait_ms;
  std::vector<ObservedLimit> limits;

  static std::optional<Observation> from_json(const nlohmann::json& j);
};

struct QuotaSettings {
  // No configured request limit: learn the rate (AIMD) when the server does
  // not advertise one.
  bool learn_rate = true;
  Millis backoff_base_ms = 500;
  Millis backoff_cap_ms = 60'000;
  int circuit_failures = 5;  // 0 disables the breaker
  Millis circuit_cooldown_ms = 30'000;
};

// A limit the lane learned, for the limiter.
struct LearnedLimit {
  std::string key;
  LimitSpec spec;
  std::string source;  // "advertised" or "aimd"
  std::optional<Millis> margin_ms;
};

class QuotaState {
 public:
  // Counters of what the lane started, in requests and in units. A start's
  // mark is taken right after it (it counts itself), so what the lane
  // started after a request is mark() - that request's mark.
  struct Mark {
    std::int64_t requests = 0;
    std::int64_t units = 0;
  };

  // AIMD tuning. Decrease to kBeta of the rate that drew the rejection;
  // increase by kAlpha of the rate (at least kMinStep) per second in which
  // the lane had work and used its rate.
  static constexpr double kBeta = 0.85;
  static constexpr double kAlpha = 0.02;
  static constexpr double kMinStep = 0.5;
  static constexpr double kMinRate = 0.05;  // per second
  // A cap with no advertised reset is trusted for this long, then probed.
  static constexpr Millis kUnknownResetMs = 1000;
  static constexpr std::size_t kMaxTracked = 16;  // caps / learned limits
  static constexpr std::size_t kMaxOutstanding = 1'000'000;
  // An answer whose reset is this much earlier than the current window's
  // was counted in an earlier window.
  static constexpr Millis kStragglerMs = 500;

  explicit QuotaState(QuotaSettings settings = {});

  Mark mark() const { return started_; }

  // Only an answer still in flight can reopen the lane (a probe is out).
  // Distinct from Limiter::kNever (a cost that can never fit).
  static constexpr Millis kAwaitAnswer = INT64_MAX - 1;

  // Earliest time a start of `cost` units may happen, for pauses, caps,
  // probes and the circuit; `now` when it may happen now, kAwaitAnswer.
  Millis gate(std::int64_t cost, Millis now) const;
  // Records a start that the gate allowed.
  void on_start(std::int64_t cost, Millis now);

  // How one start was answered.
  struct Answer {
    const Observation* obs = nullptr;  // the parsed headers, when any
    Mark at;                           // mark() right after the start
    bool success = false;              // 2xx
    // A rejection for rate: 429, a 403/503 with rate-limit evidence, or a
    // status configured as rate limited. Pauses the lane.
    bool rate_limited = false;
    // A failure that counts toward the circuit breaker (5xx, timeout,
    // connection error).
    bool transient = false;
    // An answer that means "too much" without saying how much (503): a
    // decrease signal while the lane learns its rate.
    bool overloaded = false;
  };
  // Returns the end of the lane's pause when this answer paused it.
  std::optional<Millis> on_answer(const Answer& a, Millis now);
  // A start whose answer will never come (worker lost, lease expired).
  void on_lost(Mark at, Millis now);
  // Additive increase; call about once per turn. `backlog`: the lane had
  // ready work it could not start because of the learned rate.
  void tick(Millis now, bool backlog);

  // Learned limits changed since the last call (the lane rebuilds them in
  // its limiter).
  bool take_limits_changed();
  std::vector<LearnedLimit> learned() const;
  // Units to seed a newly learned advertised limit with: what the server
  // said was already used in the current window.
  std::int64_t learned_seed(const std::string& key) const;
  // Persisted state changed since the last call (the lane row is rewritten).
  bool take_dirty();

  std::optional<Millis> paused_until(Millis now) const;
  std::string pause_reason() const { return pause_reason_; }
  std::string circuit() const;  // "closed", "open", "half_open"
  std::optional<double> aimd_rate() const { return aimd_rate_; }

  // For stats and the database.
  nlohmann::json to_json(Millis now) const;
  nlohmann::json persisted(Millis now) const;
  void restore(const nlohmann::json& j, Millis now);

 private:
  struct Cap {
    std::string unit;
    bool counts_requests = true;
    std::optional<std::int64_t> limit;
    double remaining = 0;  // the lowest count any answer of this window showed
    Millis reset_at = 0;
    bool reset_known = false;
    bool restored = false;  // from before a restart: probe first
    // Others' spending on this counter, estimated from how much more the
    // remaining count fell than this lane's own starts explain, measured
    // against a baseline observation of the same window.
    double foreign_per_ms = 0;
    double base_remaining = 0;
    Mark base_started;
    Millis base_at = 0;
  };
  enum class Circuit { kClosed, kOpen, kHalfOpen };

  void observe_limits(const Observation& obs, Millis now);
  // Starts whose answers have not come back.
  Mark in_flight() const;
  void forget(std::int64_t request);
  void learn_advertised(const ObservedLimit& l);
  void decrease(Mark at, Millis now);
  bool learning() const;
  LearnedLimit aimd_limit() const;
  bool needs_probe(Millis now) const;
  std::int64_t starts_last_second(Millis now) const;
  void pause(Millis until, const std::string& why);

  QuotaSettings settings_;
  Mark started_;
  // Starts without an answer yet: request mark -> units.
  std::map<std::int64_t, std::int64_t> outstanding_;
  std::int64_t outstanding_units_ = 0;
  std::map<std::string, Cap> caps_;
  // A probe is out: no further start until an answer to a start made
  // after probe_mark_ (the mark just before the probe) arrives.
  bool probe_out_ = false;
  Mark probe_mark_;

  Millis paused_until_ = 0;
  std::string pause_reason_;
  int consecutive_rate_limited_ = 0;
  Mark rate_mark_;  // rejections of starts up to this are one episode

  Circuit circuit_ = Circuit::kClosed;
  int consecutive_failures_ = 0;
  Millis circuit_until_ = 0;
  bool circuit_probe_out_ = false;
  Mark circuit_probe_mark_;

  std::map<std::string, LearnedLimit> advertised_;
  std::optional<double> aimd_rate_;
  Mark last_decrease_;
  Millis last_increase_ = 0;
  // Starts per 100 ms over the last second, for the rate that drew a 429.
  std::array<std::pair<Millis, std::int64_t>, 10> recent_{};

  bool limits_changed_ = false;
  bool dirty_ = false;
};

}  // namespace pacer
