#include "broker/quota.h"

#include <algorithm>
#include <cmath>

#include "common/units.h"

namespace pacer {

using json = nlohmann::json;

namespace {

// Anything longer than this from a server is treated as this.
constexpr Millis kMaxWaitMs = 7LL * 86'400'000;
// Two observations this far apart (at least) estimate others' spending.
constexpr Millis kForeignSampleMs = 250;
constexpr double kForeignSmoothing = 0.3;

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

std::optional<Observation> Observation::from_json(const json& j) {
  if (!j.is_object()) return std::nullopt;
  Observation o;
  if (auto v = string_field(j, "verdict"); !v.empty()) o.verdict = v;
  if (auto b = j.find("blocking"); b != j.end() && b->is_boolean())
    o.blocking = b->get<bool>();
  o.retry_after_ms = millis_field(j, "retry_after_ms");
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

bool QuotaState::learning() const {
  if (!settings_.learn_rate) return false;
  for (const auto& [key, l] : advertised_)
    if (l.spec.counts_requests()) return false;
  return true;
}

bool QuotaState::needs_probe(Millis now) const {
  for (const auto& [key, c] : caps_)
    if (c.restored || c.reset_at <= now) return true;
  return false;
}

Millis QuotaState::gate(std::int64_t cost, Millis now) const {
  Millis at = now;
  if (paused_until_ > now) at = std::max(at, paused_until_);
  if (circuit_ == Circuit::kOpen && circuit_until_ > now)
    at = std::max(at, circuit_until_);
  if (circuit_ == Circuit::kHalfOpen && circuit_probe_out_) return kAwaitAnswer;
  const Mark flying = in_flight();
  for (const auto& [key, c] : caps_) {
    if (c.restored || c.reset_at <= now) continue;  // to be probed
    const double reserve =
        c.foreign_per_ms * static_cast<double>(c.reset_at - now);
    const double budget =
        c.remaining - static_cast<double>(along(flying, c.counts_requests)) -
        reserve;
    const double charge = c.counts_requests ? 1.0 : static_cast<double>(cost);
    if (budget < charge) at = std::max(at, c.reset_at);
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
  started_.requests += 1;
  started_.units += std::max<std::int64_t>(cost, 1);
  // Bounded: a start whose answer is never reported (a job canceled while
  // running) must not make the map grow forever.
  if (outstanding_.size() >= kMaxOutstanding)
    forget(outstanding_.begin()->first);
  outstanding_[started_.requests] = std::max<std::int64_t>(cost, 1);
  outstanding_units_ += std::max<std::int64_t>(cost, 1);
  Millis bucket = now / 100;
  auto& slot = recent_[static_cast<std::size_t>(bucket % 10)];
  if (slot.first != bucket) slot = {bucket, 0};
  slot.second++;
}

std::int64_t QuotaState::starts_last_second(Millis now) const {
  Millis bucket = now / 100;
  std::int64_t n = 0;
  for (const auto& [b, count] : recent_)
    if (b > bucket - 10 && b <= bucket) n += count;
  return n;
}

void QuotaState::pause(Millis until, const std::string& why) {
  if (until <= paused_until_) return;
  paused_until_ = until;
  pause_reason_ = why;
  dirty_ = true;
}

void QuotaState::forget(std::int64_t request) {
  auto it = outstanding_.find(request);
  if (it == outstanding_.end()) return;
  outstanding_units_ -= it->second;
  outstanding_.erase(it);
}

QuotaState::Mark QuotaState::in_flight() const {
  return {static_cast<std::int64_t>(outstanding_.size()), outstanding_units_};
}

std::optional<Millis> QuotaState::on_answer(const Answer& a, Millis now) {
  forget(a.at.requests);
  const bool answers_probe = probe_out_ && a.at.requests > probe_mark_.requests;
  if (a.obs) observe_limits(*a.obs, now);
  if (answers_probe) {
    probe_out_ = false;
    // Counters the probe's answer did not refresh are gone (the server no
    // longer reports them for this lane).
    for (auto it = caps_.begin(); it != caps_.end();) {
      if (it->second.restored || it->second.reset_at <= now)
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
    if (circuit_ == Circuit::kHalfOpen && after_probe) {
      circuit_ = Circuit::kClosed;
      circuit_probe_out_ = false;
      dirty_ = true;
    }
  }

  if (a.overloaded) decrease(a.at, now);
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
  if (wait > backoff)
    why += a.obs && a.obs->retry_after_ms
               ? " (server asked to wait " + format_duration(wait) + ")"
               : " (until the reset)";
  else
    why += " (backoff " + format_duration(backoff) + ")";
  pause(now + std::min(std::max(wait, backoff), kMaxWaitMs), why);
  decrease(a.at, now);
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

void QuotaState::observe_limits(const Observation& obs, Millis now) {
  for (const auto& l : obs.limits) {
    if (l.unit == "concurrent_requests") continue;
    if (l.limit && l.window_s) learn_advertised(l);
    if (l.policy_only || !l.remaining) continue;
    auto it = caps_.find(l.key);
    const bool known = it != caps_.end();
    if (!known && caps_.size() >= kMaxTracked) continue;
    Cap c;
    c.unit = l.unit;
    c.counts_requests = counts_requests(l.unit);
    c.limit = l.limit;
    c.remaining = *l.remaining;
    c.reset_known = l.reset_in_ms.has_value();
    c.reset_at = now + (l.reset_in_ms ? std::max<Millis>(*l.reset_in_ms, 0)
                                      : kUnknownResetMs);
    c.base_remaining = c.remaining;
    c.base_started = started_;
    c.base_at = now;
    if (!known || it->second.restored || it->second.reset_at <= now) {
      // First count, or a new window after the old one's reset.
      if (known) c.foreign_per_ms = it->second.foreign_per_ms;
      caps_[l.key] = c;
      continue;
    }
    Cap& cur = it->second;
    // A straggler counted in an earlier window says nothing about this one.
    if (c.reset_known && cur.reset_known &&
        c.reset_at + kStragglerMs < cur.reset_at)
      continue;
    // The same window. The server's count only grows, so the lowest
    // remaining any answer showed is the latest count the lane knows of,
    // and every start counted after it is still unanswered (an answered one
    // would have shown less). The gate subtracts what is in flight from it.
    // Answers come back in any order, so this is independent of it.
    if (c.reset_known && cur.reset_known &&
        c.reset_at <= cur.reset_at + kForeignSampleMs * 4) {
      // Others' spending: how much more the count fell since a baseline
      // than every start of the lane since then could explain.
      const Millis dt = now - cur.base_at;
      if (dt >= kForeignSampleMs) {
        const double ours =
            static_cast<double>(along(started_, cur.counts_requests) -
                                along(cur.base_started, cur.counts_requests));
        const double foreign =
            std::max(0.0, cur.base_remaining - c.remaining - ours);
        cur.foreign_per_ms =
            (1 - kForeignSmoothing) * cur.foreign_per_ms +
            kForeignSmoothing * foreign / static_cast<double>(dt);
        cur.base_remaining = std::min(cur.remaining, c.remaining);
        cur.base_started = started_;
        cur.base_at = now;
      }
    }
    cur.remaining = std::min(cur.remaining, c.remaining);
    cur.limit = c.limit ? c.limit : cur.limit;
    if (c.reset_known && cur.reset_known)
      cur.reset_at = std::min(cur.reset_at, c.reset_at);
  }
}

void QuotaState::learn_advertised(const ObservedLimit& l) {
  const std::string key = "advertised:" + l.key;
  LimitSpec spec;
  spec.amount = *l.limit;
  spec.window_ms = *l.window_s * 1000;
  spec.unit = counts_requests(l.unit) ? "requests" : l.unit;
  if (spec.amount < 1) return;
  auto it = advertised_.find(key);
  if (it != advertised_.end()) {
    if (it->second.spec == spec) return;
    it->second.spec = spec;
  } else {
    if (advertised_.size() >= kMaxTracked) return;
    advertised_[key] = {key, spec, "advertised", std::nullopt};
  }
  // An advertised request limit replaces the learned rate.
  if (spec.counts_requests()) aimd_rate_.reset();
  limits_changed_ = true;
  dirty_ = true;
}

void QuotaState::decrease(Mark at, Millis now) {
  // Only when the server gives no counts: with counts, the caps and pauses
  // already follow its numbers exactly.
  if (!learning() || !caps_.empty()) return;
  if (aimd_rate_ && at.requests <= last_decrease_.requests) return;
  double base =
      aimd_rate_
          ? *aimd_rate_
          : std::max<double>(static_cast<double>(starts_last_second(now)), 1.0);
  aimd_rate_ = std::max(kMinRate, base * kBeta);
  last_decrease_ = started_;
  last_increase_ = now;
  limits_changed_ = true;
  dirty_ = true;
}

void QuotaState::tick(Millis now, bool backlog) {
  if (!aimd_rate_ || !learning()) return;
  if (now - last_increase_ < 1000) return;
  if (paused_until_ > now) {
    last_increase_ = now;
    return;
  }
  last_increase_ = now;
  if (!backlog) return;
  *aimd_rate_ += std::max(kMinStep, *aimd_rate_ * kAlpha);
  limits_changed_ = true;
  dirty_ = true;
}

LearnedLimit QuotaState::aimd_limit() const {
  // Evenly spaced starts: a few per window of at least ~50 ms, so an
  // upstream with no burst allowance (a leaky bucket) is not overrun.
  const double r = *aimd_rate_;
  const auto amount =
      std::max<std::int64_t>(1, static_cast<std::int64_t>(std::ceil(r / 20)));
  LimitSpec spec;
  spec.amount = amount;
  spec.window_ms = std::max<Millis>(
      1, std::llround(1000.0 * static_cast<double>(amount) / r));
  return {"aimd", spec, "aimd", 0};
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
  if (aimd_rate_ && learning()) out.push_back(aimd_limit());
  return out;
}

std::int64_t QuotaState::learned_seed(const std::string& key) const {
  const std::string prefix = "advertised:";
  if (key.rfind(prefix, 0) != 0) return 0;
  auto it = caps_.find(key.substr(prefix.size()));
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
                                  : json()}};
    if (c.foreign_per_ms > 0) u["shared_use_per_s"] = c.foreign_per_ms * 1000;
    upstream.push_back(std::move(u));
  }
  auto paused = paused_until(now);
  return {{"paused_until_ms", paused ? json(*paused) : json()},
          {"pause_reason",
           paused ? json(circuit_ == Circuit::kOpen && circuit_until_ > now &&
                                 circuit_until_ >= paused_until_
                             ? "circuit open"
                             : pause_reason_)
                  : json()},
          {"circuit", circuit()},
          {"learned", learned},
          {"aimd_rate_per_s", aimd_rate_ ? json(*aimd_rate_) : json()},
          {"upstream", upstream},
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
  return {{"paused_until", paused_until_},
          {"pause_reason", pause_reason_},
          {"circuit", circuit()},
          {"circuit_until", circuit_until_},
          {"aimd_rate", aimd_rate_ ? json(*aimd_rate_) : json()},
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
  if (auto v = num("aimd_rate"); v && std::isfinite(*v) && *v > 0)
    aimd_rate_ = std::max(kMinRate, *v);
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
