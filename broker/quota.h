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
//     limiter limits; a counter with no window has its window learned from
//     when it resets (WindowLearner); with no counters at all, the pace and
//     burst are learned from accepts and refusals (PaceLearner), and a
//     configured window whose server refuses bunched starts is recognised
//     as a leaky bucket;
//   - the margin: a refusal the lane's limits should have prevented means
//     starts bunch up on the way to the server, and widens the limiter's
//     margin; a quiet stretch narrows it back;
//   - the circuit breaker: N consecutive transient failures open it (the
//     lane pauses), one probe job half-opens it, a success closes it.
//
// The lane's limiter is the model; the servers' counters are evidence
// (docs/architecture.md, "How the servers' answers steer a lane"). A
// counter the model explains (a limit of the lane, configured or learned,
// that is at least as strict, and no usage by anyone else) adds no wait of
// its own; one it does not explain caps the lane as above.
// Time is passed in, never read. Not thread-safe; owned by the broker loop.
#pragma once

#include <array>
#include <deque>
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "broker/pace_learner.h"
#include "broker/window_learner.h"
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
  // How far the true reset may be from reset_in_ms either way (whole
  // seconds: 1000 or more); 1 when the worker did not say.
  Millis reset_precision_ms = 1;
  std::string reset_kind;  // "window_end", "full_replenish", ...
  std::optional<std::int64_t> window_s;
  bool policy_only = false;
};

struct QuotaObservation {
  std::string verdict = "ok";
  bool blocking = false;
  std::optional<Millis> retry_after_ms;
  Millis retry_after_precision_ms = 1;
  std::optional<Millis> wait_ms;
  std::vector<ObservedLimit> limits;

  static std::optional<QuotaObservation> from_json(const nlohmann::json& j);
};

struct QuotaSettings {
  // No configured request limit: learn the pace when the server does not
  // advertise a limit.
  bool learn_rate = true;
  // Learned limits join the limiter ([api.NAME] learn).
  bool learn = true;
  // Nothing is known of the server yet: one request goes first, and
  // nothing else until it is answered.
  bool probe_first = false;
  // The lane's configured limits: the model a counter is checked against.
  std::vector<LimitSpec> configured;
  Millis backoff_base_ms = 500;
  Millis backoff_cap_ms = 60'000;
  int circuit_failures = 5;  // 0 disables the breaker
  Millis circuit_cooldown_ms = 30'000;
  // One answer alone stops the lane for at most this long ([api.NAME]
  // max_pause): a pause it asks for, a counter's reset it reports, or the
  // spacing of a limit it advertises, beyond this, is held to it (or, for
  // a limit, not installed) until a second answer says as much. A forged
  // or mistaken answer costs at most this.
  Millis max_pause_ms = 3'600'000;
};

// A limit the lane learned, for the limiter.
struct LearnedLimit {
  std::string key;
  LimitSpec spec;
  // "advertised" (the server's policy), "window" (a counter's window,
  // learned from its resets), "pace" (learned from accepts and refusals)
  // or "recognized" (a configured rate, run as a leaky bucket).
  std::string source;
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

  // The margin: each unexplained refusal doubles its scale (up to
  // kMaxMarginScale; the limiter caps the margin itself at a tenth of the
  // window); every kMarginQuietMs without one takes a quarter off.
  static constexpr double kMaxMarginScale = 32;
  static constexpr Millis kMarginQuietMs = 30'000;
  // A cap with no advertised reset is trusted for this long, then probed.
  static constexpr Millis kUnknownResetMs = 1000;
  static constexpr std::size_t kMaxTracked = 16;  // caps / learned limits
  static constexpr std::size_t kMaxOutstanding = 1'000'000;
  // A reset this coarse (whole seconds) is only a bound on the window's
  // end: the window learner finds the real one.
  static constexpr Millis kCoarseResetMs = 100;

  explicit QuotaState(QuotaSettings settings = {});

  Mark mark() const { return started_; }

  // Only an answer still in flight can reopen the lane (a probe is out).
  // Distinct from Limiter::kNever (a cost that can never fit).
  static constexpr Millis kAwaitAnswer = INT64_MAX - 1;

  // Earliest time a start of `cost` units may happen, for pauses, caps,
  // probes and the circuit; `now` when it may happen now, kAwaitAnswer.
  Millis gate(std::int64_t cost, Millis now) const;
  // The margin scale the lane's limiter should use (Limiter::set_margin_scale).
  double margin_scale() const { return margin_scale_; }
  // Records a start that the gate allowed.
  void on_start(std::int64_t cost, Millis now);

  // How one start was answered.
  struct Answer {
    const QuotaObservation* obs = nullptr;  // the parsed headers, when any
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
    // How much later than its start the request may have reached the
    // server (Lane::note_answered): the counts are read against that.
    Millis late_ms = 0;
  };
  // Returns the end of the lane's pause when this answer paused it.
  std::optional<Millis> on_answer(const Answer& a, Millis now);
  // A start whose answer will never come (worker lost, lease expired).
  void on_lost(Mark at, Millis now);
  // Call about once per turn: narrows the margin after a quiet stretch.
  void tick(Millis now);

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
  // The rate learned from accepts and refusals, per second, when one is in
  // force.
  std::optional<double> learned_rate() const;

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
    Millis reset_at = 0;   // the server's reset, as reported
    Millis precision = 1;  // ... exact to within this, either way
    bool reset_known = false;
    // When the lane takes the window to end: the reset, or what the
    // window learner predicts. Gating stops then and a probe goes.
    Millis open_until = 0;
    bool restored = false;  // from before a restart: probe first
    std::optional<Millis> window_ms;  // advertised with the counter
    std::string reset_kind;
    // The oldest start the counter still counts (a fixed window's first
    // request; a moving window's oldest), which probes count from; when
    // the lowest count was answered; and the latest start it counted.
    Millis opener = 0;
    Millis min_answered = 0;
    Millis last_counted = 0;
    // A request started no later than this was counted in an earlier
    // window: its answer says nothing about this one.
    Millis previous_last = -1;
    // Others' spending on this counter, estimated from how much more the
    // remaining count fell than this lane's own starts explain: between
    // two answers of one window (against a baseline), and in the count
    // as a whole against the lane's starts within the server's window.
    double foreign_per_ms = 0;
    double base_remaining = 0;
    Mark base_started;
    std::int64_t base_flying = 0;  // the lane's starts in flight then
    Millis base_at = 0;
    // When the window was first answered, and whether a second answer
    // confirmed a reset further off than max_pause (until then the lane
    // waits at most max_pause from seen_at).
    Millis seen_at = 0;
    bool long_confirmed = false;
  };
  enum class Circuit { kClosed, kOpen, kHalfOpen };
  // When a request can have arrived at the server: not before it was
  // sent (dispatched), and by `by` (the dispatch and the worker's delay
  // before the call; late by the way back at most). A bound of the window
  // takes whichever end keeps it true.
  struct Arrival {
    Millis sent = 0;
    Millis by = 0;
  };
  struct Outstanding {
    std::int64_t units = 0;
    Millis start = 0;
  };

  // `start`: when the answered request can have arrived (its dispatch and
  // the worker's delay before the call: the latest it arrived, give or
  // take the way there); `sent`: when the broker dispatched it (the
  // earliest); `refused`: it was refused for rate. Returns whether the
  // refusal (if any) is one the lane's model should have prevented (on a
  // count its own starts explain).
  bool observe_limits(const QuotaObservation& obs, Millis now, Millis start,
                      Millis sent, bool refused);
  // The server's window for a counter: advertised, learned, or that of
  // the lane's limit of the same amount.
  std::optional<Millis> server_window(const std::string& key,
                                      const Cap& c) const;
  // How much of the counter's count (`remaining`, answered for a start at
  // `start`) the lane's own starts cannot explain: every start the
  // server's window can hold, less the refused ones. Others' use, or a
  // limit the lane mistook; 0 when the window is unknown.
  double unexplained(const std::string& key, const Cap& c, double remaining,
                     Millis start) const;
  // Feeds a counter's window learner one answer: `count_up` when its
  // count went back up (the new window existed by `fresh_at`), `remaining`
  // as answered for a request that arrived at `at`. Sets the counter's
  // opener (the oldest arrival it still counts, by its latest).
  void learn_window(const std::string& key, Cap& c, bool count_up,
                    Millis fresh_at, Millis old_open_until, double remaining,
                    Arrival at, bool refused, Millis now);
  // A request a counter with a window learner counted.
  void note_counted(const std::string& key, Arrival at, Millis now);
  static constexpr std::size_t kMaxCounted = 100'000;
  // The lane's starts (and refusals) since `from`, in the counter's unit.
  double own_since(const Cap& c, Millis from) const;
  void note_foreign(Cap& c, double units, Millis over_ms);
  // Starts whose answers have not come back.
  Mark in_flight() const;
  std::optional<Outstanding> forget(std::int64_t request);
  void learn_advertised(const ObservedLimit& l);
  // The lane's limits explain this counter: gating on it adds nothing.
  bool covered(const std::string& key, const Cap& c) const;
  // Some limit of `model` is at least as strict as the counter.
  bool covered_by(const std::vector<LimitSpec>& model, const std::string& key,
                  const Cap& c) const;
  // The server's window for the counter: advertised, or learned (and
  // confirmed, unless `confirmed` is false).
  std::optional<Millis> known_window(const std::string& key, const Cap& c,
                                     bool confirmed = true) const;
  // The window learner of a counter, when its window can be learned.
  WindowLearner* window_learner(const std::string& key, const Cap& c);
  void schedule(const std::string& key, Cap& c);
  bool pacing() const;
  bool needs_probe(Millis now) const;
  // A refusal of a start at `start` the lane's model should have
  // prevented: widens the margin, once for all starts sent before.
  void widen_margin(Millis start, Millis now);
  void pause(Millis until, const std::string& why);
  // A refusal from a server that reported no counters, of the start made
  // at `start` with mark `mark`.
  void note_refusal_without_counters(Millis start, std::int64_t mark,
                                     Millis now);

  QuotaSettings settings_;
  Mark started_;
  // Starts without an answer yet: request mark -> units and start time.
  std::map<std::int64_t, Outstanding> outstanding_;
  std::int64_t outstanding_units_ = 0;
  // Start times of the last starts, by mark, to tell bunched starts.
  std::array<Millis, 64> recent_starts_{};
  // The lane's starts over the last kHistoryMs, as (time, mark after the
  // starts at that time), coalesced into kHistoryBucketMs; and the starts
  // the servers refused, by start time and units.
  static constexpr Millis kHistoryMs = 3'600'000;
  static constexpr Millis kHistoryBucketMs = 10;
  static constexpr std::size_t kMaxRefusals = 10'000;
  std::deque<std::pair<Millis, Mark>> history_;
  std::deque<std::pair<Millis, Mark>> refusals_;
  std::map<std::string, Cap> caps_;
  std::vector<std::string> refreshed_;  // the counters an answer carried
  // Window learners by counter key, with the counter's limit and unit.
  struct Window {
    WindowLearner learner;
    std::int64_t limit = 0;
    std::string unit;
    // What the limiter was last given: a learned window changes it.
    bool known = false;
    Millis hi = 0;
    // When the lane's requests the counter counted can have arrived, by
    // the latest, oldest first, until a count that went up shows the
    // oldest gone.
    std::deque<Arrival> counted;
  };
  std::map<std::string, Window> windows_;
  // A probe is out: no further start until an answer to a start made
  // after probe_mark_ (the mark just before the probe) arrives.
  bool probe_out_ = false;
  Mark probe_mark_;
  bool heard_ = false;  // an answer has come since the start

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
  // Advertised limits seen once that one answer may not install (stricter
  // than max_pause or a tenth of the lane's limit allows): installed when
  // the next answer advertises the same.
  std::map<std::string, LimitSpec> advertised_pending_;
  // A rate-limited answer asked for a wait longer than max_pause and was
  // held to it; the next one asking as much is believed. A success clears.
  bool long_wait_seen_ = false;
  // Counterless servers: the learned pace, and whether it was recognised
  // from a configured rate (a leaky bucket behind a window limit).
  PaceLearner pace_;
  bool recognized_ = false;
  std::string last_pace_;  // the pace limit last handed out (persisted)

  double margin_scale_ = 1.0;
  Millis margin_changed_ = 0;

  bool limits_changed_ = false;
  bool dirty_ = false;
};

}  // namespace pacer
