#include "broker/quota.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/units.h"

namespace pacer {

using json = nlohmann::json;

namespace {

// Anything longer than this from a server is treated as this.
constexpr Millis kMaxWaitMs = 7LL * 86'400'000;
// Two observations this far apart (at least) estimate others' spending.
constexpr Millis kForeignSampleMs = 250;
constexpr double kForeignSmoothing = 0.3;
// Others spending this many units per server window (or per second when
// the window is unknown) make a counter unexplained by the lane's model.
constexpr double kForeignUnits = 0.5;

std::optional<Millis> millis_field(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number()) return std::nullopt;
  double v = it->get<double>();
  if (!std::isfinite(v) || v < 0) return std::nullopt;
  return static_cast<Millis>(std::min<double>(std::ceil(v), kMaxWaitMs));
}

std::string string_field(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>()
                                          : std::string();
}

bool counts_requests(const std::string& unit) {
  return unit.empty() || unit == "requests" || unit == "unknown";
}

std::int64_t along(const QuotaState::Mark& m, bool requests) {
  return requests ? m.requests : m.units;
}

}  // namespace

std::optional<QuotaObservation> QuotaObservation::from_json(const json& j) {
  if (!j.is_object()) return std::nullopt;
  QuotaObservation o;
  if (auto v = string_field(j, "verdict"); !v.empty()) o.verdict = v;
  if (auto b = j.find("blocking"); b != j.end() && b->is_boolean())
    o.blocking = b->get<bool>();
  o.retry_after_ms = millis_field(j, "retry_after_ms");
  if (auto p = millis_field(j, "retry_after_precision_ms"); p && *p > 0)
    o.retry_after_precision_ms = std::min<Millis>(*p, 86'400'000);
  o.wait_ms = millis_field(j, "wait_ms");
  auto limits = j.find("limits");
  if (limits != j.end() && limits->is_array()) {
    for (const auto& l : *limits) {
      if (!l.is_object()) continue;
      if (o.limits.size() >= QuotaState::kMaxTracked) break;
      ObservedLimit ol;
      ol.unit = string_field(l, "unit");
      if (ol.unit.empty()) ol.unit = "requests";
      ol.key = string_field(l, "source") + "/" + string_field(l, "name") + "/" +
               ol.unit;
      if (auto v = l.find("limit"); v != l.end() && v->is_number()) {
        double d = v->get<double>();
        if (std::isfinite(d) && d >= 0 && d < 1e15)
          ol.limit = static_cast<std::int64_t>(d);
      }
      if (auto v = l.find("remaining"); v != l.end() && v->is_number()) {
        double d = v->get<double>();
        if (std::isfinite(d)) ol.remaining = std::clamp(d, 0.0, 1e15);
      }
      ol.reset_in_ms = millis_field(l, "reset_in_ms");
      if (auto p = millis_field(l, "reset_precision_ms"); p && *p > 0)
        ol.reset_precision_ms = std::min<Millis>(*p, 86'400'000);
      ol.reset_kind = string_field(l, "reset_kind");
      if (auto v = l.find("window_s"); v != l.end() && v->is_number()) {
        double d = v->get<double>();
        if (std::isfinite(d) && d > 0 && d <= kMaxWaitMs / 1000.0)
          ol.window_s = static_cast<std::int64_t>(std::ceil(d));
      }
      if (auto v = l.find("policy_only"); v != l.end() && v->is_boolean())
        ol.policy_only = v->get<bool>();
      o.limits.push_back(std::move(ol));
    }
  }
  return o;
}

QuotaState::QuotaState(QuotaSettings settings) : settings_(settings) {}

bool QuotaState::pacing() const {
  if (recognized_) return true;
  if (!settings_.learn_rate || !caps_.empty()) return false;
  for (const auto& [key, l] : advertised_)
    if (l.spec.counts_requests()) return false;
  return true;
}

std::optional<Millis> QuotaState::known_window(const std::string& key,
                                               const Cap& c,
                                               bool confirmed) const {
  if (c.window_ms) return c.window_ms;
  if (auto w = windows_.find(key);
      w != windows_.end() && (confirmed ? w->second.learner.trusted()
                                        : w->second.learner.known()))
    return w->second.learner.hi();
  return std::nullopt;
}

bool QuotaState::covered_by(const std::vector<LimitSpec>& model,
                            const std::string& key, const Cap& c) const {
  if (!c.limit) return false;
  const std::optional<Millis> window = known_window(key, c);
  const auto limit = static_cast<double>(*c.limit);
  for (const auto& m : model) {
    if (m.counts_requests() != c.counts_requests) continue;
    if (!m.counts_requests() && m.unit != c.unit) continue;
    if (m.leaky()) {
      // At most burst + 1 + W / spacing starts in any window of length W.
      if (!window) continue;
      const double most = static_cast<double>(*m.burst + 1) +
                          static_cast<double>(*window) *
                              static_cast<double>(m.amount) /
                              static_cast<double>(m.window_ms);
      if (most <= limit) return true;
      continue;
    }
    if (static_cast<double>(m.amount) > limit) continue;
    // With the server's window unknown, the same amount is taken for the
    // same limit: the lane was told (or learned) what the server counts.
    if (window ? m.window_ms >= *window
               : static_cast<double>(m.amount) == limit)
      return true;
  }
  return false;
}

bool QuotaState::covered(const std::string& key, const Cap& c) const {
  if (!c.limit) return false;
  const double per =
      static_cast<double>(known_window(key, c).value_or(1000));
  if (c.foreign_per_ms * per >= kForeignUnits) return false;
  if (covered_by(settings_.configured, key, c)) return true;
  if (!settings_.learn) return false;
  // The learned limits, but the counter's own learned window only once
  // confirmed.
  const bool own_trusted = [&] {
    auto w = windows_.find(key);
    return w != windows_.end() && w->second.learner.trusted();
  }();
  std::vector<LimitSpec> model;
  for (const auto& l : learned())
    if (l.key != "window:" + key || own_trusted) model.push_back(l.spec);
  return covered_by(model, key, c);
}

WindowLearner* QuotaState::window_learner(const std::string& key,
                                          const Cap& c) {
  // A counter with an advertised window, or whose reset is not the end of
  // a window (a bucket's refill), has nothing to learn here.
  // An exact reset already says when the window ends.
  if (!settings_.learn || c.window_ms || !c.limit || *c.limit < 1 ||
      !c.reset_known || c.precision < kCoarseResetMs ||
      c.reset_kind == "full_replenish" || c.reset_kind == "next_request")
    return nullptr;
  auto it = windows_.find(key);
  if (it == windows_.end()) {
    if (windows_.size() >= kMaxTracked) return nullptr;
    it = windows_.emplace(key, Window{}).first;
  }
  Window& w = it->second;
  if (w.limit != *c.limit || w.unit != c.unit) {
    if (w.limit != 0) limits_changed_ = true;
    w.limit = *c.limit;
    w.unit = c.counts_requests ? "requests" : c.unit;
  }
  return w.learner.failed() ? nullptr : &w.learner;
}

void QuotaState::schedule(const std::string& key, Cap& c) {
  // The reported reset, unless the window learner knows better: its
  // candidate (learning) or the window it learned from the opener on.
  c.open_until = c.reset_at;
  auto it = windows_.find(key);
  if (it != windows_.end() && !it->second.learner.failed()) {
    const Millis at = it->second.learner.probe_at(c.opener);
    if (at != WindowLearner::kUnknown) c.open_until = at;
  }
  // One answer's reset stops the lane for at most max_pause: then a probe
  // asks again, and a second answer as far off is believed.
  if (!c.long_confirmed)
    c.open_until = std::min(c.open_until, c.seen_at + settings_.max_pause_ms);
}

bool QuotaState::needs_probe(Millis now) const {
  for (const auto& [key, c] : caps_) {
    if (!c.restored && c.open_until > now) continue;
    if (covered(key, c)) continue;
    return true;
  }
  return false;
}

Millis QuotaState::gate(std::int64_t cost, Millis now) const {
  Millis at = now;
  if (paused_until_ > now) at = std::max(at, paused_until_);
  if (circuit_ == Circuit::kOpen && circuit_until_ > now)
    at = std::max(at, circuit_until_);
  if (circuit_ == Circuit::kHalfOpen && circuit_probe_out_) return kAwaitAnswer;
  // Nothing is known of the server yet: its first answer says what it
  // counts before anything else goes.
  if (settings_.probe_first && !heard_ && !outstanding_.empty())
    return kAwaitAnswer;
  const Mark flying = in_flight();
  for (const auto& [key, c] : caps_) {
    if (c.restored || c.open_until <= now) continue;  // to be probed
    if (covered(key, c)) continue;  // the limiter already keeps to it
    const double reserve =
        c.foreign_per_ms * static_cast<double>(c.open_until - now);
    const double budget =
        c.remaining - static_cast<double>(along(flying, c.counts_requests)) -
        reserve;
    const double charge = c.counts_requests ? 1.0 : static_cast<double>(cost);
    if (budget < charge) at = std::max(at, c.open_until);
  }
  // A counter whose state is unknown: the next start is the probe, and
  // nothing else starts until its answer comes.
  if (probe_out_ && needs_probe(now)) return kAwaitAnswer;
  return at;
}

void QuotaState::on_start(std::int64_t cost, Millis now) {
  if (!probe_out_ && needs_probe(now)) {
    probe_out_ = true;
    probe_mark_ = started_;
  }
  if (circuit_ == Circuit::kOpen && circuit_until_ <= now) {
    circuit_ = Circuit::kHalfOpen;
    circuit_probe_out_ = true;
    circuit_probe_mark_ = started_;
    dirty_ = true;
  }
  const std::int64_t units = std::max<std::int64_t>(cost, 1);
  started_.requests += 1;
  started_.units += units;
  // Bounded: a start whose answer is never reported (a job canceled while
  // running) must not make the map grow forever.
  if (outstanding_.size() >= kMaxOutstanding)
    forget(outstanding_.begin()->first);
  outstanding_[started_.requests] = {units, now};
  outstanding_units_ += units;
  recent_starts_[static_cast<std::size_t>(started_.requests) %
                 recent_starts_.size()] = now;
  if (!history_.empty() && now - history_.back().first < kHistoryBucketMs)
    history_.back().second = started_;
  else
    history_.emplace_back(now, started_);
  while (!history_.empty() && history_.front().first < now - kHistoryMs)
    history_.pop_front();
}

void QuotaState::pause(Millis until, const std::string& why) {
  if (until <= paused_until_) return;
  paused_until_ = until;
  pause_reason_ = why;
  dirty_ = true;
}

std::optional<QuotaState::Outstanding> QuotaState::forget(
    std::int64_t request) {
  auto it = outstanding_.find(request);
  if (it == outstanding_.end()) return std::nullopt;
  Outstanding o = it->second;
  outstanding_units_ -= o.units;
  outstanding_.erase(it);
  return o;
}

QuotaState::Mark QuotaState::in_flight() const {
  return {static_cast<std::int64_t>(outstanding_.size()), outstanding_units_};
}

void QuotaState::widen_margin(Millis start, Millis now) {
  // Refusals of starts sent before the last change were sent with the old
  // margin: one widening answers them all.
  if (start <= margin_changed_) return;
  margin_scale_ = std::min(kMaxMarginScale, std::max(2.0, margin_scale_ * 2));
  margin_changed_ = now;
  limits_changed_ = true;
  dirty_ = true;
}

void QuotaState::note_refusal_without_counters(Millis start,
                                               std::int64_t mark, Millis now) {
  if (pacing()) {
    // The pace learner has it; once learned, a refusal is the margin's.
    if (pace_.learned()) widen_margin(start, now);
    return;
  }
  // A configured rate refused with no counters. If the refused start
  // followed the previous one closer than the rate's spacing, the server
  // refuses bunched starts within its rate: a leaky bucket (nginx's
  // limit_req), which the lane paces evenly from now on.
  const LimitSpec* window = nullptr;
  double spacing_ms = 0;
  for (const auto& m : settings_.configured) {
    if (!m.counts_requests()) continue;
    if (m.leaky()) {
      widen_margin(start, now);  // the lane already paces as the server does
      return;
    }
    const double s = static_cast<double>(m.window_ms) /
                     static_cast<double>(m.amount);
    if (!window || s > spacing_ms) {
      window = &m;
      spacing_ms = s;
    }
  }
  if (!window) return;
  const std::int64_t previous = mark - 1;
  const bool known = previous >= 1 &&
                     previous > started_.requests -
                                    static_cast<std::int64_t>(
                                        recent_starts_.size());
  const Millis gap =
      known ? start - recent_starts_[static_cast<std::size_t>(previous) %
                                     recent_starts_.size()]
            : INT64_MAX;
  if (gap >= static_cast<Millis>(spacing_ms)) {
    widen_margin(start, now);
    return;
  }
  recognized_ = true;
  margin_changed_ = now;  // what was sent before judges nothing now
  pace_.restore(static_cast<std::int64_t>(std::ceil(spacing_ms * 1000)), 0,
                true, now);
  pace_.take_changed();
  limits_changed_ = true;
  dirty_ = true;
}

std::optional<Millis> QuotaState::on_answer(const Answer& a, Millis now) {
  const auto out = forget(a.at.requests);
  heard_ = true;
  const bool answers_probe = probe_out_ && a.at.requests > probe_mark_.requests;
  bool model_refusal = false;
  bool counters = false;
  refreshed_.clear();
  if (out && a.rate_limited) {
    // A refused start used nothing at the server.
    refusals_.emplace_back(out->start, Mark{1, out->units});
    while (refusals_.size() > kMaxRefusals ||
           (!refusals_.empty() && refusals_.front().first < now - kHistoryMs))
      refusals_.pop_front();
  }
  if (a.obs) {
    for (const auto& l : a.obs->limits)
      if (l.remaining && !l.policy_only && l.unit != "concurrent_requests")
        counters = true;
    // Where the server counted it: when it can have arrived.
    const Millis arrived =
        out ? out->start + std::max<Millis>(a.late_ms, 0) : now;
    model_refusal = observe_limits(*a.obs, now, arrived,
                                   out ? out->start : now, a.rate_limited);
  }
  if (answers_probe) {
    probe_out_ = false;
    // Counters the probe's answer did not refresh are gone (the server no
    // longer reports them for this lane).
    for (auto it = caps_.begin(); it != caps_.end();) {
      const bool stale =
          it->second.restored || it->second.open_until <= now;
      if (stale && std::find(refreshed_.begin(), refreshed_.end(),
                             it->first) == refreshed_.end())
        it = caps_.erase(it);
      else
        ++it;
    }
  }

  // The circuit breaker.
  const bool after_probe =
      a.at.requests > circuit_probe_mark_.requests && circuit_probe_out_;
  if (a.transient) {
    if (circuit_ == Circuit::kHalfOpen && after_probe) {
      circuit_ = Circuit::kOpen;
      circuit_until_ = now + settings_.circuit_cooldown_ms;
      circuit_probe_out_ = false;
      dirty_ = true;
    } else if (circuit_ == Circuit::kClosed && settings_.circuit_failures > 0 &&
               ++consecutive_failures_ >= settings_.circuit_failures) {
      circuit_ = Circuit::kOpen;
      circuit_until_ = now + settings_.circuit_cooldown_ms;
      consecutive_failures_ = 0;
      dirty_ = true;
    }
  } else if (a.success) {
    consecutive_failures_ = 0;
    consecutive_rate_limited_ = 0;
    long_wait_seen_ = false;
    if (circuit_ == Circuit::kHalfOpen && after_probe) {
      circuit_ = Circuit::kClosed;
      circuit_probe_out_ = false;
      dirty_ = true;
    }
  }

  // What the answer teaches about the pace (no counters) or the margin.
  const bool refused = a.rate_limited || (a.overloaded && pacing());
  if (out && !counters && pacing()) {
    if (refused)
      pace_.on_refuse(out->start, now);
    else if (a.success)
      pace_.on_accept(out->start, now);
    if (pace_.take_changed()) {
      limits_changed_ = true;
      dirty_ = true;
    }
  }
  if (refused) {
    if (counters) {
      if (model_refusal && out) widen_margin(out->start, now);
    } else if (out) {
      note_refusal_without_counters(out->start, a.at.requests, now);
    }
  }
  if (!a.rate_limited) return std::nullopt;

  // One episode per burst: rejections of starts made before the previous
  // rejection was seen were sent blind and do not escalate the backoff.
  if (a.at.requests > rate_mark_.requests) {
    ++consecutive_rate_limited_;
    rate_mark_ = started_;
  }
  const int k = std::clamp(consecutive_rate_limited_, 1, 40);
  Millis backoff = settings_.backoff_cap_ms;
  long double exp =
      static_cast<long double>(settings_.backoff_base_ms) * (1ULL << (k - 1));
  if (exp < static_cast<long double>(backoff))
    backoff = static_cast<Millis>(exp);
  Millis wait = 0;
  if (a.obs) {
    if (a.obs->wait_ms)
      wait = *a.obs->wait_ms;
    else if (a.obs->retry_after_ms)
      wait = *a.obs->retry_after_ms;
  }
  std::string why = "rate limited";
  // One answer alone stops the lane for at most max_pause: a forged or
  // mistaken Retry-After of a week costs an hour. A second asking as much
  // is believed.
  bool held = false;
  if (wait > settings_.max_pause_ms && wait > backoff) {
    held = !long_wait_seen_;
    long_wait_seen_ = true;
  }
  if (held) {
    why += " (server asked to wait " + format_duration(wait) +
           "; held to max_pause " + format_duration(settings_.max_pause_ms) +
           " until a second answer asks as much)";
    wait = settings_.max_pause_ms;
    pause(now + std::max(wait, backoff), why);
    return paused_until_;
  }
  if (wait > backoff)
    why += a.obs && a.obs->retry_after_ms
               ? " (server asked to wait " + format_duration(wait) + ")"
               : " (until the reset)";
  else
    why += " (backoff " + format_duration(backoff) + ")";
  pause(now + std::min(std::max(wait, backoff), kMaxWaitMs), why);
  return paused_until_;
}

void QuotaState::on_lost(Mark at, Millis now) {
  forget(at.requests);
  if (probe_out_ && at.requests > probe_mark_.requests) probe_out_ = false;
  Answer a;
  a.at = at;
  a.transient = true;
  on_answer(a, now);
}

void QuotaState::learn_window(const std::string& key, Cap& c, bool count_up,
                              Millis fresh_at, Millis old_open_until,
                              double remaining, Arrival at, bool refused,
                              Millis now) {
  WindowLearner* w = window_learner(key, c);
  if (!w) return;
  auto& counted = windows_[key].counted;
  // The count went up: the oldest request it counted is gone, all of the
  // window's (a fixed window) or the oldest ones (a moving one). The
  // window is no longer than from that request's arrival (at the
  // earliest) to when the new one was there.
  if (count_up && !counted.empty()) {
    // A probe sent at the predicted end found the count gone.
    if (w->known() && at.by >= old_open_until) w->confirm();
    w->fresh(counted.front().sent, fresh_at);
  }
  if (!refused) note_counted(key, at, now);
  // What the server counts now are the lane's latest `used` requests (this
  // one among them, unless refused): after a count went up, older ones
  // are gone.
  const auto used = static_cast<std::size_t>(std::max(
      0.0, c.limit ? static_cast<double>(*c.limit) - remaining : 0.0));
  if (count_up)
    while (counted.size() > used) counted.pop_front();
  if (used < 1 || counted.size() < used) return;
  // The reported reset is when the oldest of them, or the window it
  // opened, leaves (or later).
  if (c.reset_known)
    w->reported(counted[counted.size() - used].sent, now, c.reset_at,
                c.precision);
  // The oldest of them is still counted: the window is longer than from
  // its arrival (at the latest) to this one's (at the earliest). Probes
  // count from it. But a server that reads its count for the headers
  // after the call (Flask-Limiter) also counts the lane's requests that
  // arrived meanwhile, still in flight here: they may be the newest of
  // `used`, which makes the oldest a newer one.
  const std::size_t flying = outstanding_.size();
  if (used <= flying) return;
  const Arrival& oldest = counted[counted.size() - (used - flying)];
  w->counted(oldest.by, at.sent);
  c.opener = oldest.by;
}

void QuotaState::note_counted(const std::string& key, Arrival at,
                              Millis now) {
  auto w = windows_.find(key);
  if (w == windows_.end()) return;
  auto& counted = w->second.counted;
  counted.insert(
      std::upper_bound(counted.begin(), counted.end(), at.by,
                       [](Millis t, const Arrival& a) { return t < a.by; }),
      at);
  // Requests older than the window could be are gone whether or not a
  // count showed it; and the list stays bounded.
  const Millis hi = w->second.learner.hi();
  while (!counted.empty() &&
         (counted.size() > kMaxCounted ||
          (hi != WindowLearner::kUnknown && counted.front().by < now - 2 * hi)))
    counted.pop_front();
}

std::optional<Millis> QuotaState::server_window(const std::string& key,
                                                const Cap& c) const {
  if (auto w = known_window(key, c, false)) return w;
  if (!c.limit) return std::nullopt;
  auto same = [&](const LimitSpec& m) {
    return !m.leaky() && m.counts_requests() == c.counts_requests &&
           m.amount == *c.limit;
  };
  for (const auto& m : settings_.configured)
    if (same(m)) return m.window_ms;
  for (const auto& [k, l] : advertised_)
    if (same(l.spec)) return l.spec.window_ms;
  return std::nullopt;
}

double QuotaState::own_since(const Cap& c, Millis from) const {
  // The mark before the first start at or after `from`: buckets are
  // kHistoryBucketMs wide, so one that began before it may hold later
  // starts; counting them as the lane's errs towards "explained".
  Mark before;
  auto it = std::lower_bound(
      history_.begin(), history_.end(), from - kHistoryBucketMs,
      [](const auto& e, Millis t) { return e.first < t; });
  if (it != history_.begin()) before = std::prev(it)->second;
  double ours = static_cast<double>(along(started_, c.counts_requests) -
                                    along(before, c.counts_requests));
  for (const auto& [t, m] : refusals_)
    if (t >= from) ours -= static_cast<double>(along(m, c.counts_requests));
  return std::max(0.0, ours);
}

double QuotaState::unexplained(const std::string& key, const Cap& c,
                               double remaining, Millis start) const {
  if (!c.limit) return 0;
  const auto window = server_window(key, c);
  if (!window) return 0;
  // A window holding the request's arrival began at most W before it;
  // the lane's starts that can have arrived in it began at most W (and a
  // little jitter) before the request itself.
  const double used = static_cast<double>(*c.limit) - remaining;
  return std::max(0.0, used - own_since(c, start - *window - 10));
}

void QuotaState::note_foreign(Cap& c, double units, Millis over_ms) {
  // The most others were seen to use holds until answers show less.
  const double sample = units / static_cast<double>(std::max<Millis>(over_ms, 1));
  c.foreign_per_ms = std::max(c.foreign_per_ms, sample);
}

bool QuotaState::observe_limits(const QuotaObservation& obs, Millis now,
                                Millis start, Millis sent, bool refused) {
  bool model_refusal = false;
  for (const auto& l : obs.limits) {
    if (l.unit == "concurrent_requests") continue;
    if (l.limit && l.window_s) learn_advertised(l);
    if (l.policy_only || !l.remaining) continue;
    auto it = caps_.find(l.key);
    const bool known = it != caps_.end();
    if (!known && caps_.size() >= kMaxTracked) continue;
    refreshed_.push_back(l.key);
    Cap c;
    c.unit = l.unit;
    c.counts_requests = counts_requests(l.unit);
    c.limit = l.limit;
    c.remaining = *l.remaining;
    c.reset_known = l.reset_in_ms.has_value();
    c.reset_at = now + (l.reset_in_ms ? std::max<Millis>(*l.reset_in_ms, 0)
                                      : kUnknownResetMs);
    c.precision = l.reset_in_ms ? l.reset_precision_ms : 1;
    if (l.window_s) c.window_ms = *l.window_s * 1000;
    c.reset_kind = l.reset_kind;
    c.opener = start;
    c.seen_at = now;
    c.min_answered = now;
    c.last_counted = start;
    c.base_remaining = c.remaining;
    c.base_started = started_;
    c.base_flying = static_cast<std::int64_t>(outstanding_.size());
    c.base_at = now;

    bool fresh = !known || it->second.restored;
    bool count_up = false;
    Millis fresh_at = start;
    if (!fresh) {
      Cap& cur = it->second;
      // A request sent before one the previous window counted says
      // nothing about this window.
      if (sent <= cur.previous_last) continue;
      // A server's count only falls within a window. A request sent after
      // the lowest count was answered that shows as much or more (more,
      // for a refusal, which uses nothing) was answered from a new window.
      // (Sent, not arrived: the arrival is an estimate, late by the way
      // back; causality needs the dispatch.)
      count_up = (c.remaining > cur.remaining ||
                  (c.remaining == cur.remaining && !refused)) &&
                 sent > cur.min_answered;
      if (count_up) {
        fresh = true;
        // Where the new window began by. Accepted after the old window
        // was full: by the arrival, which it opened or joined. Otherwise
        // only by the answer: servers that read the count for the headers
        // after the call (Flask-Limiter) report a window that turned over
        // while the request ran, though the old one refused or counted it.
        fresh_at = !refused && cur.remaining <= 0 ? start : now;
        // Refused, so the old window was still there when it arrived,
        // though the answer shows the new one.
        if (refused)
          if (WindowLearner* w = window_learner(l.key, cur))
            w->counted(cur.opener, sent);
      }
      // The server's own reset has passed, whatever its rounding.
      if (cur.reset_known && now >= cur.reset_at + cur.precision &&
          start >= cur.reset_at + cur.precision)
        fresh = true;
    }
    if (fresh) {
      if (known && !it->second.restored) {
        const Cap& old = it->second;
        // The window before reported a reset as far off: believed.
        c.long_confirmed = c.reset_at > now + settings_.max_pause_ms &&
                           old.reset_at > old.seen_at + settings_.max_pause_ms;
        c.previous_last = old.last_counted;
        c.foreign_per_ms = old.foreign_per_ms;
        learn_window(l.key, c, count_up, fresh_at, old.open_until,
                     c.remaining, {sent, start}, refused, now);
      } else if (known) {
        c.foreign_per_ms = it->second.foreign_per_ms;
      }
      if (!known || it->second.restored)
        learn_window(l.key, c, false, start, 0, c.remaining, {sent, start},
                     refused, now);
      schedule(l.key, c);
      Cap& placed = caps_[l.key] = c;
      // The count as a whole against the lane's starts the server's window
      // can hold: more is someone else's (a first count after a restart
      // may hold the lane's own from before, which this cannot tell).
      if (known) {
        const auto window = server_window(l.key, placed);
        const double other = unexplained(l.key, placed, c.remaining, start);
        if (window && other >= 1)
          note_foreign(placed, other, *window);
        else if (window)
          placed.foreign_per_ms *= 1 - kForeignSmoothing;
      }
      if (refused && unexplained(l.key, placed, c.remaining, start) < 1 &&
          covered(l.key, placed))
        model_refusal = true;
      continue;
    }
    Cap& cur = it->second;
    // The same window. One read while it held nothing (a refusal answered
    // after its window ended, by a server that reads the count after the
    // call) had no window: its reset is not that of the window the next
    // request opened.
    if (cur.limit && cur.remaining >= static_cast<double>(*cur.limit) &&
        c.remaining < cur.remaining) {
      cur.reset_known = c.reset_known;
      cur.reset_at = c.reset_at;
      cur.precision = c.precision;
    }
    // A second answer of the window with a reset as far off: believed.
    if (c.reset_at > now + settings_.max_pause_ms &&
        cur.reset_at > cur.seen_at + settings_.max_pause_ms)
      cur.long_confirmed = true;
    learn_window(l.key, cur, false, start, 0, c.remaining, {sent, start},
                 refused, now);
    if (start > cur.last_counted && !refused) cur.last_counted = start;
    // Others' spending between two answers of the window: how much more
    // the count fell since a baseline than the lane's starts since then,
    // and those in flight then, could explain. The server's count only
    // grows, so the lowest remaining any answer showed is the latest count
    // the lane knows of, and every start counted after it is still
    // unanswered (an answered one would have shown less). The gate
    // subtracts what is in flight from it. Answers come back in any order,
    // so this is independent of it.
    // (Only while the server's window is unknown: with it known, the count
    // as a whole is checked against the lane's starts the window can hold,
    // below, which a moving window's counts, rising as old requests leave,
    // cannot mislead.)
    if (!server_window(l.key, cur) && c.reset_known && cur.reset_known &&
        c.reset_at <=
            cur.reset_at + kForeignSampleMs * 4 + 2 * cur.precision) {
      const Millis dt = now - cur.base_at;
      if (dt >= kForeignSampleMs) {
        const double ours =
            static_cast<double>(along(started_, cur.counts_requests) -
                                along(cur.base_started, cur.counts_requests) +
                                cur.base_flying);
        note_foreign(cur, std::max(0.0, cur.base_remaining - c.remaining - ours),
                     dt);
        cur.base_remaining = std::min(cur.remaining, c.remaining);
        cur.base_started = started_;
        cur.base_flying = static_cast<std::int64_t>(outstanding_.size());
        cur.base_at = now;
      }
    }
    if (c.remaining < cur.remaining) {
      cur.remaining = c.remaining;
      cur.min_answered = now;
    }
    cur.limit = c.limit ? c.limit : cur.limit;
    if (c.reset_known && cur.reset_known)
      cur.reset_at = std::min(cur.reset_at, c.reset_at);
    schedule(l.key, cur);
    // The count as a whole against the lane's starts the server's window
    // can hold, as for a new window above.
    const double other = unexplained(l.key, cur, c.remaining, start);
    if (const auto window = server_window(l.key, cur)) {
      if (other >= 1)
        note_foreign(cur, other, *window);
      else if (!refused)
        cur.foreign_per_ms *= 1 - kForeignSmoothing;
    }
    if (refused) {
      // Refused on a count the lane's own starts can all explain: they
      // bunched up on the way (the margin). One they cannot: others.
      if (other >= 1) {
        const auto window = server_window(l.key, cur);
        cur.foreign_per_ms =
            std::max(cur.foreign_per_ms,
                     other / static_cast<double>(std::max<Millis>(
                                 window.value_or(1000), 1)));
      } else if (covered(l.key, cur)) {
        model_refusal = true;
      }
    }
  }
  // A window learned (or given up, or narrowed) changes the lane's limits.
  for (auto& [key, w] : windows_) {
    const bool k = w.learner.known();
    if (k != w.known || (k && w.learner.hi() != w.hi)) {
      w.known = k;
      w.hi = w.learner.hi();
      limits_changed_ = true;
      dirty_ = true;
    }
  }
  return model_refusal;
}

void QuotaState::learn_advertised(const ObservedLimit& l) {
  const std::string key = "advertised:" + l.key;
  LimitSpec spec;
  spec.amount = *l.limit;
  spec.window_ms = *l.window_s * 1000;
  spec.unit = counts_requests(l.unit) ? "requests" : l.unit;
  if (spec.amount < 1) return;
  auto it = advertised_.find(key);
  if (it != advertised_.end() && it->second.spec == spec) return;
  // One answer never installs a limit whose spacing is longer than
  // max_pause, or a tenth of the rate of the lane's own limit of the kind
  // (configured, or learned before under this key): a forged or mistaken
  // policy would stop the lane. The next answer advertising the same does.
  auto rate = [](const LimitSpec& s) {
    return static_cast<double>(s.amount) /
           static_cast<double>(std::max<Millis>(s.window_ms, 1));
  };
  bool suspect = spec.window_ms / spec.amount > settings_.max_pause_ms;
  for (const auto& m : settings_.configured)
    if (!m.leaky() && m.counts_requests() == spec.counts_requests() &&
        rate(spec) < rate(m) / 10)
      suspect = true;
  if (it != advertised_.end() && rate(spec) < rate(it->second.spec) / 10)
    suspect = true;
  if (suspect) {
    auto p = advertised_pending_.find(key);
    if (p == advertised_pending_.end() || !(p->second == spec)) {
      if (advertised_pending_.size() < kMaxTracked ||
          p != advertised_pending_.end())
        advertised_pending_[key] = spec;
      return;
    }
  }
  advertised_pending_.erase(key);
  if (it != advertised_.end()) {
    it->second.spec = spec;
  } else {
    if (advertised_.size() >= kMaxTracked) return;
    advertised_[key] = {key, spec, "advertised", std::nullopt};
  }
  limits_changed_ = true;
  dirty_ = true;
}

void QuotaState::tick(Millis now) {
  // The margin narrows back after a quiet stretch.
  if (margin_scale_ > 1 && now - margin_changed_ >= kMarginQuietMs) {
    margin_scale_ = std::max(1.0, margin_scale_ * 0.75);
    margin_changed_ = now;
    limits_changed_ = true;
    dirty_ = true;
  }
}

bool QuotaState::take_limits_changed() {
  bool c = limits_changed_;
  limits_changed_ = false;
  return c;
}

bool QuotaState::take_dirty() {
  bool d = dirty_;
  dirty_ = false;
  return d;
}

std::vector<LearnedLimit> QuotaState::learned() const {
  std::vector<LearnedLimit> out;
  for (const auto& [key, l] : advertised_) out.push_back(l);
  for (const auto& [key, w] : windows_) {
    if (!w.learner.known() || w.limit < 1) continue;
    // A counter the configured limits already model needs no learned
    // window (an upper bound, at worst a little slower than they are).
    if (auto c = caps_.find(key);
        c != caps_.end() && covered_by(settings_.configured, key, c->second))
      continue;
    LimitSpec spec;
    spec.amount = w.limit;
    spec.window_ms = w.learner.hi();
    spec.unit = w.unit;
    out.push_back({"window:" + key, spec, "window", std::nullopt});
  }
  // A learned pace is the spacing seen to work, jitter and all: no margin
  // on top. A recognised one is the configured rate, with its margin.
  if (pacing())
    if (auto spec = pace_.limit())
      out.push_back({"pace", *spec, recognized_ ? "recognized" : "pace",
                     recognized_ ? std::nullopt : std::optional<Millis>(0)});
  return out;
}

std::optional<double> QuotaState::learned_rate() const {
  if (!pacing() || pace_.spacing_us() <= 0) return std::nullopt;
  return 1e6 / static_cast<double>(pace_.spacing_us());
}

std::int64_t QuotaState::learned_seed(const std::string& key) const {
  std::string counter;
  for (const char* prefix : {"advertised:", "window:"})
    if (key.rfind(prefix, 0) == 0) counter = key.substr(std::strlen(prefix));
  if (counter.empty()) return 0;
  auto it = caps_.find(counter);
  if (it == caps_.end() || !it->second.limit) return 0;
  return std::max<std::int64_t>(
      0, *it->second.limit -
             static_cast<std::int64_t>(std::floor(it->second.remaining)));
}

std::optional<Millis> QuotaState::paused_until(Millis now) const {
  Millis until = 0;
  if (paused_until_ > now) until = paused_until_;
  if (circuit_ == Circuit::kOpen && circuit_until_ > now)
    until = std::max(until, circuit_until_);
  if (until == 0) return std::nullopt;
  return until;
}

std::string QuotaState::circuit() const {
  switch (circuit_) {
    case Circuit::kOpen:
      return "open";
    case Circuit::kHalfOpen:
      return "half_open";
    default:
      return "closed";
  }
}

json QuotaState::to_json(Millis now) const {
  json learned = json::array();
  for (const auto& l : this->learned())
    learned.push_back({{"limit", l.spec.to_string()}, {"source", l.source}});
  json upstream = json::array();
  for (const auto& [key, c] : caps_) {
    const std::int64_t used = along(in_flight(), c.counts_requests);
    json u = {{"key", key},
              {"unit", c.unit},
              {"limit", c.limit ? json(*c.limit) : json()},
              {"remaining",
               c.restored ? json()
                          : json(std::max(
                                0.0, c.remaining - static_cast<double>(used)))},
              {"reset_in_ms", c.reset_known || c.restored
                                  ? json(std::max<Millis>(0, c.reset_at - now))
                                  : json()},
              {"explained", covered(key, c)}};
    if (c.foreign_per_ms > 0) u["shared_use_per_s"] = c.foreign_per_ms * 1000;
    upstream.push_back(std::move(u));
  }
  json windows = json::array();
  for (const auto& [key, w] : windows_) {
    const auto& l = w.learner;
    windows.push_back(
        {{"key", key},
         {"state", l.failed()    ? "given_up"
                   : l.trusted() ? "learned"
                   : l.known()   ? "confirming"
                                 : "learning"},
         {"above_ms", l.lo()},
         {"at_most_ms",
          l.hi() == WindowLearner::kUnknown ? json() : json(l.hi())}});
  }
  auto paused = paused_until(now);
  auto rate = learned_rate();
  return {{"paused_until_ms", paused ? json(*paused) : json()},
          {"pause_reason",
           paused ? json(circuit_ == Circuit::kOpen && circuit_until_ > now &&
                                 circuit_until_ >= paused_until_
                             ? "circuit open"
                             : pause_reason_)
                  : json()},
          {"circuit", circuit()},
          {"learned", learned},
          {"learned_rate_per_s", rate ? json(*rate) : json()},
          {"pace_learned", pacing() && pace_.learned()},
          {"margin_scale", margin_scale_},
          {"upstream", upstream},
          {"windows", windows},
          {"probing", probe_out_}};
}

json QuotaState::persisted(Millis now) const {
  json adv = json::array();
  for (const auto& [key, l] : advertised_)
    adv.push_back({{"key", key},
                   {"amount", l.spec.amount},
                   {"window_ms", l.spec.window_ms},
                   {"unit", l.spec.unit}});
  json caps = json::array();
  for (const auto& [key, c] : caps_) {
    if (c.reset_at <= now) continue;
    caps.push_back({{"key", key},
                    {"unit", c.unit},
                    {"limit", c.limit ? json(*c.limit) : json()},
                    {"remaining", c.remaining},
                    {"reset_at", c.reset_at}});
  }
  json pace;
  if (pace_.spacing_us() > 0)
    pace = {{"spacing_us", pace_.spacing_us()},
            {"burst", pace_.burst()},
            {"learned", pace_.learned()},
            {"recognized", recognized_}};
  return {{"paused_until", paused_until_},
          {"pause_reason", pause_reason_},
          {"circuit", circuit()},
          {"circuit_until", circuit_until_},
          {"pace", pace},
          {"margin_scale", margin_scale_},
          {"advertised", adv},
          {"caps", caps}};
}

void QuotaState::restore(const json& j, Millis now) {
  if (!j.is_object()) return;
  auto num = [&](const char* k) -> std::optional<double> {
    auto it = j.find(k);
    if (it == j.end() || !it->is_number()) return std::nullopt;
    return it->get<double>();
  };
  if (auto v = num("paused_until"); v && *v > static_cast<double>(now)) {
    paused_until_ = static_cast<Millis>(*v);
    pause_reason_ = string_field(j, "pause_reason");
  }
  if (string_field(j, "circuit") != "closed" &&
      string_field(j, "circuit") != "") {
    // Open, or half open with its probe lost in the restart: open until the
    // cooldown ends, then probe again.
    circuit_ = Circuit::kOpen;
    circuit_until_ = static_cast<Millis>(num("circuit_until").value_or(0));
  }
  if (auto p = j.find("pace"); p != j.end() && p->is_object()) {
    const auto spacing = p->value("spacing_us", std::int64_t{0});
    if (spacing > 0) {
      recognized_ = p->value("recognized", false);
      pace_.restore(spacing, p->value("burst", std::int64_t{0}),
                    p->value("learned", false), now);
      pace_.take_changed();
    }
  } else if (auto v = num("aimd_rate"); v && std::isfinite(*v) && *v > 0) {
    // Written before the pace learner: a rate to start learning from.
    pace_.restore(static_cast<std::int64_t>(1e6 / *v), 0, false, now);
    pace_.take_changed();
  }
  if (auto v = num("margin_scale"); v && std::isfinite(*v))
    margin_scale_ = std::clamp(*v, 1.0, kMaxMarginScale);
  margin_changed_ = now;
  if (auto a = j.find("advertised"); a != j.end() && a->is_array()) {
    for (const auto& e : *a) {
      if (!e.is_object() || advertised_.size() >= kMaxTracked) continue;
      LimitSpec spec;
      spec.amount = e.value("amount", std::int64_t{0});
      spec.window_ms = e.value("window_ms", Millis{0});
      spec.unit = e.value("unit", std::string("requests"));
      std::string key = e.value("key", std::string());
      if (key.empty() || spec.amount < 1 || spec.window_ms < 1) continue;
      advertised_[key] = {key, spec, "advertised", std::nullopt};
    }
  }
  if (auto c = j.find("caps"); c != j.end() && c->is_array()) {
    for (const auto& e : *c) {
      if (!e.is_object() || caps_.size() >= kMaxTracked) continue;
      Cap cap;
      cap.unit = e.value("unit", std::string("requests"));
      cap.counts_requests = counts_requests(cap.unit);
      if (auto l = e.find("limit"); l != e.end() && l->is_number_integer())
        cap.limit = l->get<std::int64_t>();
      cap.remaining = e.value("remaining", 0.0);
      cap.reset_at = e.value("reset_at", Millis{0});
      cap.open_until = cap.reset_at;
      cap.reset_known = true;
      // Exhausted: wait for the reset. Otherwise the count went on after
      // the snapshot, so probe before trusting it.
      cap.restored = cap.remaining >= 1;
      std::string key = e.value("key", std::string());
      if (key.empty() || cap.reset_at <= now) continue;
      caps_[key] = cap;
    }
  }
  limits_changed_ = true;
}

}  // namespace pacer
