#include "broker/limiter.h"

#include <algorithm>

namespace pacer {

Limiter::Limiter(std::vector<LimitSpec> limits, std::optional<Millis> margin)
    : specs_(std::move(limits)) {
  for (const auto& spec : specs_) logs_.push_back(make_log(spec, margin));
}

Limiter::Log Limiter::make_log(const LimitSpec& spec,
                               std::optional<Millis> margin) {
  Log log;
  log.spec = spec;
  log.span =
      spec.window_ms + (margin ? *margin : default_margin(spec.window_ms));
  // Exact logs for short windows; for long ones, round so that at most
  // ~kMaxEntries distinct times exist within a span.
  if (spec.amount > static_cast<std::int64_t>(kMaxEntries))
    log.bucket =
        std::max<Millis>(1, log.span / static_cast<Millis>(kMaxEntries));
  return log;
}

void Limiter::upsert_learned(const std::string& key, const LimitSpec& spec,
                             std::optional<Millis> margin,
                             std::int64_t seed_units, Millis now) {
  for (auto& log : logs_) {
    if (log.key != key) continue;
    Log fresh = make_log(spec, margin);
    fresh.key = key;
    // Keep what was started; re-round it for the new granularity (later,
    // never earlier, so the log stays safe).
    for (const auto& e : log.entries) add(fresh, e.units, e.t);
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

void Limiter::evict(Log& log, Millis now) {
  while (!log.entries.empty() && log.entries.front().t <= now - log.span) {
    log.sum -= log.entries.front().units;
    log.entries.pop_front();
  }
}

bool Limiter::admits(std::int64_t cost, Millis now, std::int64_t requests) {
  for (auto& log : logs_) {
    evict(log, now);
    if (log.sum + charge(log, cost, requests) > log.spec.amount) return false;
  }
  return true;
}

Millis Limiter::next_admit(std::int64_t cost, Millis now,
                           std::int64_t requests) {
  Millis at = now;
  for (auto& log : logs_) {
    evict(log, now);
    std::int64_t c = charge(log, cost, requests);
    if (c > log.spec.amount) return kNever;
    std::int64_t need = log.sum + c - log.spec.amount;
    if (need <= 0) continue;
    // Walk from the oldest start until enough units have expired; the start
    // that frees the last needed unit stops counting at t + span.
    std::int64_t freed = 0;
    for (const auto& e : log.entries) {
      freed += e.units;
      if (freed >= need) {
        at = std::max(at, e.t + log.span);
        break;
      }
    }
  }
  return at;
}

void Limiter::record(std::int64_t cost, Millis t, std::int64_t requests) {
  for (auto& log : logs_) add(log, charge(log, cost, requests), t);
}

std::int64_t Limiter::max_units() const {
  std::int64_t m = INT64_MAX;
  for (const auto& log : logs_)
    if (!log.spec.counts_requests()) m = std::min(m, log.spec.amount);
  return m;
}

std::int64_t Limiter::max_requests() const {
  std::int64_t m = INT64_MAX;
  for (const auto& log : logs_)
    if (log.spec.counts_requests()) m = std::min(m, log.spec.amount);
  return m;
}

void Limiter::add(Log& log, std::int64_t c, Millis t) {
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

std::vector<Limiter::Usage> Limiter::usage(Millis now) {
  std::vector<Usage> out;
  for (auto& log : logs_) {
    evict(log, now);
    out.push_back({log.spec, log.sum, log.key});
  }
  return out;
}

Millis Limiter::longest_span() const {
  Millis m = 0;
  for (const auto& log : logs_) m = std::max(m, log.span);
  return m;
}

}  // namespace pacer
