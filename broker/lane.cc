#include "broker/lane.h"

#include <algorithm>
#include <cmath>

#include "common/batch.h"

namespace pacer {

namespace {

QuotaSettings quota_settings(const ApiConfig& api) {
  QuotaSettings s;
  s.learn_rate = api.learn && std::none_of(api.limits.begin(), api.limits.end(),
                                           [](const LimitSpec& l) {
                                             return l.counts_requests();
                                           });
  s.learn = api.learn;
  // A lane with no request limit of its own learns the server first.
  s.probe_first = s.learn_rate;
  s.configured = api.limits;
  s.backoff_base_ms = api.backoff_base_ms;
  s.backoff_cap_ms = api.backoff_cap_ms;
  s.circuit_failures = api.circuit_failures;
  s.circuit_cooldown_ms = api.circuit_cooldown_ms;
  s.max_pause_ms = api.max_pause_ms;
  return s;
}

}  // namespace

Lane::Lane(ApiConfig config, int window_cap)
    : config_(std::move(config)),
      limiter_(config_.limits, config_.margin_ms),
      quota_(quota_settings(config_)),
      cap_(window_cap) {
  if (config_.batch) {
    // The window must hold a full batch or accumulators could never fill.
    cap_ = std::max(cap_, 2 * config_.batch->max_items);
    envelope_bytes_ =
        static_cast<std::int64_t>(batch_envelope_bytes(*config_.batch));
  }
}

Millis Lane::gate(std::int64_t cost, Millis now, std::int64_t requests) {
  Millis at = limiter_.next_admit(cost, now, requests);
  if (at == Limiter::kNever) return at;
  // The server counts a batch as one call (what its remaining counts see).
  return std::max(at, quota_.gate(cost, now));
}

void Lane::on_start(std::int64_t cost, Millis now, std::int64_t requests) {
  limiter_.record(cost, now, requests);
  quota_.on_start(cost, now);
}

Millis Lane::note_answered(Millis start, Millis now, double took_ms,
                           std::int64_t cost, std::int64_t requests) {
  if (!std::isfinite(took_ms) || took_ms <= 0) return 0;
  const auto took = static_cast<Millis>(std::ceil(took_ms));
  if (!first_answer_) first_answer_ = now;
  if (start >= *first_answer_) {
    rtts_.push_back(took);
    if (rtts_.size() > kRttSamples) rtts_.pop_front();
  }
  Millis fastest = 0;
  if (!rtts_.empty()) fastest = *std::min_element(rtts_.begin(), rtts_.end());
  // Only late by more than a millisecond moves a record.
  const Millis late = took - fastest;
  if (late <= 1) return 0;
  limiter_.move_later(start, start + late, cost, requests);
  return late;
}

void Lane::sync_learned(Millis now) {
  if (!quota_.take_limits_changed()) return;
  limiter_.set_margin_scale(quota_.margin_scale());
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
  erase_entry(window_.begin());
  return e;
}

void Lane::insert_entry(const ReadyEntry& e) {
  if (!ids_.insert(e.id).second) return;
  window_.insert(e);
  if (!keyed(e)) return;
  auto& a = accumulators_[e.batch_key];
  a.items += 1;
  a.bytes += e.batch_bytes;
  a.units += e.cost;
  a.since.insert(e.run_at);
}

void Lane::erase_entry(std::set<ReadyEntry, Order>::const_iterator it) {
  const ReadyEntry& e = *it;
  ids_.erase(e.id);
  if (keyed(e)) {
    auto acc = accumulators_.find(e.batch_key);
    if (acc != accumulators_.end()) {
      auto& a = acc->second;
      a.items -= 1;
      a.bytes -= e.batch_bytes;
      a.units -= e.cost;
      if (auto s = a.since.find(e.run_at); s != a.since.end()) a.since.erase(s);
      if (a.items <= 0) accumulators_.erase(acc);
    }
  }
  window_.erase(it);
}

bool Lane::flushable(const Accumulator& a, Millis now) const {
  const BatchConfig& b = *config_.batch;
  if (a.items >= b.max_items) return true;
  // A body of all members would reach max_bytes: a batch's worth is here.
  if (envelope_bytes_ + a.bytes - 1 >= b.max_bytes) return true;
  if (a.units >= limiter_.max_units()) return true;
  return !a.since.empty() && now - *a.since.begin() >= b.max_wait_ms;
}

Lane::Selection Lane::single(const ReadyEntry& e) const {
  Selection s;
  s.members.push_back(e);
  s.units = e.cost;
  return s;
}

Lane::Selection Lane::batch_of(const std::string& key) const {
  const BatchConfig& b = *config_.batch;
  const std::int64_t max_units = limiter_.max_units();
  const std::int64_t max_requests =
      b.cost == BatchCost::kPerItem ? limiter_.max_requests() : INT64_MAX;
  Selection s;
  s.batch = true;
  s.key = key;
  std::int64_t bytes = envelope_bytes_ - 1;
  for (const auto& e : window_) {
    if (!keyed(e) || e.batch_key != key) continue;
    const auto n = static_cast<std::int64_t>(s.members.size());
    // The first member always goes (it fits on its own: checked when it
    // entered, and a cost that can never fit is the dispatcher's to end);
    // the others while the batch stays within every bound. Members are
    // taken in dispatch order and the batch stops at the first that does
    // not fit, so no job is overtaken for long by smaller ones.
    if (n > 0 && (n + 1 > b.max_items || bytes + e.batch_bytes > b.max_bytes ||
                  s.units + e.cost > max_units || n + 1 > max_requests))
      break;
    s.members.push_back(e);
    bytes += e.batch_bytes;
    s.units += e.cost;
  }
  s.requests = b.cost == BatchCost::kPerItem
                   ? static_cast<std::int64_t>(s.members.size())
                   : 1;
  return s;
}

Lane::Selection Lane::select(Millis now) const {
  if (window_.empty()) return {};
  if (!batching()) return single(*window_.begin());
  const std::string* fallback = nullptr;
  std::unordered_set<std::string_view> waiting;
  for (const auto& e : window_) {
    if (!keyed(e)) return single(e);
    if (waiting.count(e.batch_key)) continue;
    const auto& a = accumulators_.at(e.batch_key);
    if (flushable(a, now)) return batch_of(e.batch_key);
    waiting.insert(e.batch_key);
    if (!fallback) fallback = &e.batch_key;
  }
  // Nothing else can go: the best-ranked accumulator goes as it is.
  return batch_of(*fallback);
}

void Lane::take(const Selection& s) {
  if (s.members.size() == 1) {
    remove(s.members.front().id);
    return;
  }
  std::unordered_set<JobId> ids;
  for (const auto& m : s.members) ids.insert(m.id);
  for (auto it = window_.begin(); it != window_.end() && !ids.empty();) {
    auto next = std::next(it);
    if (ids.erase(it->id)) erase_entry(it);
    it = next;
  }
}

std::size_t Lane::accumulated(const std::string& key) const {
  auto it = accumulators_.find(key);
  return it == accumulators_.end() ? 0
                                   : static_cast<std::size_t>(it->second.items);
}

void Lane::offer(const ReadyEntry& e) {
  if (ids_.count(e.id)) return;
  if (!complete_ && !window_.empty() && !Order{}(e, *window_.rbegin())) {
    return;  // ranks after the window: the database has it
  }
  if (!complete_ && window_.empty()) return;  // the next refill will find it
  insert_entry(e);
  evict_over_cap();
}

void Lane::remove(JobId id) {
  if (!ids_.count(id)) return;
  for (auto it = window_.begin(); it != window_.end(); ++it) {
    if (it->id == id) {
      erase_entry(it);
      return;
    }
  }
}

bool Lane::wants_refill() const {
  return !complete_ && static_cast<int>(window_.size()) <= cap_ / 2;
}

void Lane::refill(const std::vector<ReadyEntry>& rows, bool complete_hint) {
  for (const auto& r : rows) insert_entry(r);
  complete_ = complete_hint;
  evict_over_cap();
}

void Lane::evict_over_cap() {
  while (static_cast<int>(window_.size()) > cap_) {
    erase_entry(std::prev(window_.end()));
    complete_ = false;
  }
}

void Lane::count_dispatch(Millis now, std::int64_t items, bool batch) {
  Millis second = now / 1000;
  if (rate_buckets_.empty() || rate_buckets_.back().first != second)
    rate_buckets_.emplace_back(second, 0);
  rate_buckets_.back().second++;
  while (!rate_buckets_.empty() &&
         rate_buckets_.front().first < second - kRateSeconds)
    rate_buckets_.pop_front();
  dispatched_total_ += items;
  ++requests_total_;
  if (batch) {
    ++batches_total_;
    batch_items_total_ += items;
  }
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
