#include "broker/limiter.h"

#include <algorithm>
#include <cmath>

namespace pacer {

namespace {

constexpr std::int64_t kUsPerMs = 1000;

// The leaky bucket's spacing per unit, rounded up (never faster).
std::int64_t interval_us(const LimitSpec& spec) {
  const std::int64_t total = spec.window_ms * kUsPerMs;
  return std::max<std::int64_t>(1, (total + spec.amount - 1) / spec.amount);
}

// A time in microseconds as the millisecond at or after it.
Millis ceil_ms(std::int64_t us) {
  return us >= 0 ? (us + kUsPerMs - 1) / kUsPerMs : us / kUsPerMs;
}

}  // namespace

Limiter::Limiter(std::vector<LimitSpec> limits, std::optional<Millis> margin)
    : specs_(std::move(limits)) {
  for (const auto& spec : specs_) logs_.push_back(make_log(spec, margin));
}

Limiter::Log Limiter::make_log(const LimitSpec& spec,
                               std::optional<Millis> margin) const {
  Log log;
  log.spec = spec;
  log.base_margin = margin ? *margin : default_margin(spec);
  if (spec.leaky()) log.interval_us = interval_us(spec);
  apply_margin(log);
  // Exact logs for short windows; for long ones, round so that at most
  // ~kMaxEntries distinct times exist within a span.
  if (!spec.leaky() && spec.amount > static_cast<std::int64_t>(kMaxEntries))
    log.bucket =
        std::max<Millis>(1, log.span / static_cast<Millis>(kMaxEntries));
  return log;
}

void Limiter::apply_margin(Log& log) const {
  const Millis scale_of =
      log.spec.leaky() ? ceil_ms(log.interval_us) : log.spec.window_ms;
  const Millis cap = std::max(log.base_margin, scale_of / 10);
  const double scaled = static_cast<double>(log.base_margin) * margin_scale_;
  log.margin = std::min<Millis>(cap, static_cast<Millis>(std::ceil(scaled)));
  // A leaky bucket's level can hold starts older than its window when the
  // burst is larger than the amount: replay after a restart must see them.
  Millis reach = log.spec.window_ms;
  if (log.spec.leaky())
    reach = std::max(reach, ceil_ms((*log.spec.burst + 1) * log.interval_us));
  log.span = reach + log.margin;
}

void Limiter::set_margin_scale(double scale) {
  margin_scale_ = std::isfinite(scale) ? std::max(1.0, scale) : 1.0;
  for (auto& log : logs_) apply_margin(log);
}

void Limiter::upsert_learned(const std::string& key, const LimitSpec& spec,
                             std::optional<Millis> margin,
                             std::int64_t seed_units, Millis now) {
  for (auto& log : logs_) {
    if (log.key != key) continue;
    if (log.spec == spec &&
        log.base_margin == (margin ? *margin : default_margin(spec)))
      return;
    Log fresh = make_log(spec, margin);
    fresh.key = key;
    // Keep what was started; re-round it for the new granularity (later,
    // never earlier, so the log stays safe). A leaky bucket keeps no
    // entries: its successor starts from its level, charged now.
    for (const auto& e : log.entries) add(fresh, e.units, e.t);
    if (log.spec.leaky() && log.tat_us > now * kUsPerMs)
      add(fresh,
          (log.tat_us - now * kUsPerMs + log.interval_us - 1) /
              log.interval_us,
          now);
    log = std::move(fresh);
    return;
  }
  Log log = make_log(spec, margin);
  log.key = key;
  if (seed_units > 0) add(log, seed_units, now);
  logs_.push_back(std::move(log));
}

void Limiter::retain_learned(const std::vector<std::string>& keys) {
  std::erase_if(logs_, [&](const Log& log) {
    return !log.key.empty() &&
           std::find(keys.begin(), keys.end(), log.key) == keys.end();
  });
}

void Limiter::correct(std::int64_t delta, Millis t, Millis now) {
  if (delta == 0) return;
  for (auto& log : logs_) {
    if (log.spec.counts_requests()) continue;
    if (log.spec.leaky()) {
      // The bucket's level moves by the difference; it never goes below
      // empty (a theoretical arrival time in the past).
      log.tat_us = std::max(log.tat_us + delta * log.interval_us,
                            std::min(log.tat_us, now * kUsPerMs));
      continue;
    }
    evict(log, now);
    Millis when = t;
    if (log.bucket > 0) when = (t + log.bucket - 1) / log.bucket * log.bucket;
    if (when <= now - log.span) continue;  // that start no longer counts
    if (delta > 0) {
      add(log, delta, when);
      continue;
    }
    // Give back at most what that start recorded (its entry), so the log
    // never holds negative units.
    auto it =
        std::lower_bound(log.entries.begin(), log.entries.end(), when,
                         [](const Entry& e, Millis v) { return e.t < v; });
    if (it == log.entries.end() || it->t != when) continue;
    std::int64_t back = std::min<std::int64_t>(-delta, it->units);
    it->units -= back;
    log.sum -= back;
  }
}

Millis Limiter::default_margin(Millis window_ms) {
  return std::clamp<Millis>(window_ms / 50, 1, 50);
}

Millis Limiter::default_margin(const LimitSpec& spec) {
  if (!spec.leaky()) return default_margin(spec.window_ms);
  const Millis spacing = ceil_ms(interval_us(spec));
  // A bucket with a burst keeps the margin in reserve at no cost to its
  // rate (it only shortens the first burst): a quarter of the burst's
  // time, up to 50 ms. Without one, every millisecond costs pace.
  return std::max(default_margin(spacing),
                  std::min<Millis>(50, spacing * *spec.burst / 4));
}

void Limiter::evict(Log& log, Millis now) {
  while (!log.entries.empty() && log.entries.front().t <= now - log.span) {
    log.sum -= log.entries.front().units;
    log.entries.pop_front();
  }
}

Millis Limiter::log_admit(const Log& log, std::int64_t c, Millis now) {
  if (log.spec.leaky()) {
    // GCRA: a start of c units fits once the bucket has room for them,
    // keeping the margin in reserve: tat + (c - burst - 1) * T + margin.
    const std::int64_t room = *log.spec.burst + 1;
    if (c > room) return kNever;
    const std::int64_t at_us = log.tat_us + (c - room) * log.interval_us +
                               log.margin * kUsPerMs;
    return std::max(now, ceil_ms(at_us));
  }
  if (c > log.spec.amount) return kNever;
  std::int64_t need = log.sum + c - log.spec.amount;
  if (need <= 0) return now;
  // Walk from the oldest start until enough units have expired; the start
  // that frees the last needed unit stops counting at t + span.
  std::int64_t freed = 0;
  for (const auto& e : log.entries) {
    freed += e.units;
    if (freed >= need) return std::max(now, e.t + log.span);
  }
  return now;
}

bool Limiter::admits(std::int64_t cost, Millis now, std::int64_t requests) {
  for (auto& log : logs_) {
    evict(log, now);
    if (log_admit(log, charge(log, cost, requests), now) > now) return false;
  }
  return true;
}

Millis Limiter::next_admit(std::int64_t cost, Millis now,
                           std::int64_t requests) {
  Millis at = now;
  for (auto& log : logs_) {
    evict(log, now);
    Millis t = log_admit(log, charge(log, cost, requests), now);
    if (t == kNever) return kNever;
    at = std::max(at, t);
  }
  return at;
}

void Limiter::record(std::int64_t cost, Millis t, std::int64_t requests) {
  for (auto& log : logs_) add(log, charge(log, cost, requests), t);
}

std::int64_t Limiter::max_units() const {
  std::int64_t m = INT64_MAX;
  for (const auto& log : logs_)
    if (!log.spec.counts_requests())
      m = std::min(m, log.spec.leaky() ? *log.spec.burst + 1 : log.spec.amount);
  return m;
}

std::int64_t Limiter::max_requests() const {
  std::int64_t m = INT64_MAX;
  for (const auto& log : logs_)
    if (log.spec.counts_requests())
      m = std::min(m, log.spec.leaky() ? *log.spec.burst + 1 : log.spec.amount);
  return m;
}

void Limiter::add(Log& log, std::int64_t c, Millis t) {
  if (log.spec.leaky()) {
    if (t != log.last_t) {
      log.tat_before_us = log.tat_us;
      log.last_t = t;
      log.last_units = 0;
    }
    log.last_units += c;
    log.tat_us = std::max(log.tat_us, t * kUsPerMs) + c * log.interval_us;
    return;
  }
  Millis when = t;
  if (log.bucket > 0) when = (t + log.bucket - 1) / log.bucket * log.bucket;
  // Starts are recorded in time order in practice; keep the deque sorted
  // anyway so a replayed older start cannot break eviction.
  if (!log.entries.empty() && log.entries.back().t == when) {
    log.entries.back().units += c;
  } else if (log.entries.empty() || log.entries.back().t < when) {
    log.entries.push_back({when, c});
  } else {
    auto it =
        std::lower_bound(log.entries.begin(), log.entries.end(), when,
                         [](const Entry& e, Millis v) { return e.t < v; });
    if (it != log.entries.end() && it->t == when)
      it->units += c;
    else
      log.entries.insert(it, {when, c});
  }
  log.sum += c;
}

void Limiter::restamp(Millis from, Millis to) {
  if (to <= from) return;
  for (auto& log : logs_) {
    if (log.spec.leaky()) {
      // The starts at `from` are the latest: charge them at `to` instead.
      if (log.last_t != from) continue;
      log.tat_us = std::max(log.tat_before_us, to * kUsPerMs) +
                   log.last_units * log.interval_us;
      log.last_t = to;
      continue;
    }
    auto round = [&](Millis t) {
      return log.bucket > 0 ? (t + log.bucket - 1) / log.bucket * log.bucket
                            : t;
    };
    Millis old_t = round(from), new_t = round(to);
    if (old_t == new_t || log.entries.empty() || log.entries.back().t != old_t)
      continue;
    // Starts at `from` are the newest entry (record keeps the log sorted
    // and merges equal times), so moving it later keeps the order.
    log.entries.back().t = new_t;
  }
}

void Limiter::move_later(Millis from, Millis to, std::int64_t cost,
                         std::int64_t requests) {
  if (to <= from) return;
  for (auto& log : logs_) {
    if (log.spec.leaky()) continue;
    const Millis at =
        log.bucket > 0 ? (from + log.bucket - 1) / log.bucket * log.bucket
                       : from;
    auto it = std::lower_bound(
        log.entries.begin(), log.entries.end(), at,
        [](const Entry& e, Millis v) { return e.t < v; });
    if (it == log.entries.end() || it->t != at) continue;  // expired
    const std::int64_t c = std::min(charge(log, cost, requests), it->units);
    it->units -= c;
    log.sum -= c;
    if (it->units == 0) log.entries.erase(it);
    add(log, c, to);
  }
}

std::vector<Limiter::Usage> Limiter::usage(Millis now) {
  std::vector<Usage> out;
  for (auto& log : logs_) {
    evict(log, now);
    std::int64_t used = log.sum;
    if (log.spec.leaky()) {
      const std::int64_t ahead = log.tat_us - now * kUsPerMs;
      used = ahead <= 0 ? 0 : (ahead + log.interval_us - 1) / log.interval_us;
    }
    out.push_back({log.spec, used, log.key, log.margin});
  }
  return out;
}

Millis Limiter::longest_span() const {
  Millis m = 0;
  for (const auto& log : logs_) m = std::max(m, log.span);
  return m;
}

}  // namespace pacer
