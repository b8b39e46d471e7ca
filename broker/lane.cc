#include "broker/lane.h"

#include <algorithm>

namespace pacer {

namespace {

QuotaSettings quota_settings(const ApiConfig& api) {
  QuotaSettings s;
  s.learn_rate = api.learn && std::none_of(api.limits.begin(), api.limits.end(),
                                           [](const LimitSpec& l) {
                                             return l.counts_requests();
                                           });
  s.backoff_base_ms = api.backoff_base_ms;
  s.backoff_cap_ms = api.backoff_cap_ms;
  s.circuit_failures = api.circuit_failures;
  s.circuit_cooldown_ms = api.circuit_cooldown_ms;
  return s;
}

}  // namespace

Lane::Lane(ApiConfig config, int window_cap)
    : config_(std::move(config)),
      limiter_(config_.limits, config_.margin_ms),
      quota_(quota_settings(config_)),
      cap_(window_cap) {}

Millis Lane::gate(std::int64_t cost, Millis now) {
  Millis at = limiter_.next_admit(cost, now);
  if (at == Limiter::kNever) return at;
  return std::max(at, quota_.gate(cost, now));
}

void Lane::on_start(std::int64_t cost, Millis now) {
  limiter_.record(cost, now);
  quota_.on_start(cost, now);
}

void Lane::sync_learned(Millis now) {
  if (!quota_.take_limits_changed()) return;
  std::vector<std::string> keys;
  for (const auto& l : quota_.learned()) {
    // learn = false: the configured limits are the only limiter limits
    // (what the server advertised is still shown by stats).
    if (!config_.learn) continue;
    limiter_.upsert_learned(l.key, l.spec, l.margin_ms,
                            quota_.learned_seed(l.key), now);
    keys.push_back(l.key);
  }
  limiter_.retain_learned(keys);
}

ReadyEntry Lane::pop_head() {
  ReadyEntry e = *window_.begin();
  window_.erase(window_.begin());
  ids_.erase(e.id);
  return e;
}

void Lane::offer(const ReadyEntry& e) {
  if (ids_.count(e.id)) return;
  if (!complete_ && !window_.empty() && !Order{}(e, *window_.rbegin())) {
    return;  // ranks after the window: the database has it
  }
  if (!complete_ && window_.empty()) return;  // the next refill will find it
  window_.insert(e);
  ids_.insert(e.id);
  evict_over_cap();
}

void Lane::remove(JobId id) {
  if (!ids_.erase(id)) return;
  for (auto it = window_.begin(); it != window_.end(); ++it) {
    if (it->id == id) {
      window_.erase(it);
      return;
    }
  }
}

bool Lane::wants_refill() const {
  return !complete_ && static_cast<int>(window_.size()) <= cap_ / 2;
}

void Lane::refill(const std::vector<ReadyEntry>& rows, bool complete_hint) {
  for (const auto& r : rows) {
    if (ids_.insert(r.id).second) window_.insert(r);
  }
  complete_ = complete_hint;
  evict_over_cap();
}

void Lane::evict_over_cap() {
  while (static_cast<int>(window_.size()) > cap_) {
    auto last = std::prev(window_.end());
    ids_.erase(last->id);
    window_.erase(last);
    complete_ = false;
  }
}

void Lane::count_dispatch(Millis now) {
  Millis second = now / 1000;
  if (rate_buckets_.empty() || rate_buckets_.back().first != second)
    rate_buckets_.emplace_back(second, 0);
  rate_buckets_.back().second++;
  while (!rate_buckets_.empty() &&
         rate_buckets_.front().first < second - kRateSeconds)
    rate_buckets_.pop_front();
  ++dispatched_total_;
}

double Lane::rate_per_s(Millis now) const {
  Millis second = now / 1000;
  std::int64_t n = 0;
  // Whole seconds only: the current, partial second would bias the rate low.
  for (auto& [s, c] : rate_buckets_)
    if (s < second && s >= second - kRateSeconds) n += c;
  return static_cast<double>(n) / kRateSeconds;
}

}  // namespace pacer
