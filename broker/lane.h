// Lane: the dispatch state of one API. Owns the API's limiter, its in-flight
// count against the concurrency cap, and a bounded window of the lane's best
// ready jobs (the database holds the rest: memory does not grow with the
// queue). Not thread-safe; owned by the broker loop.
//
// Window invariant: the window holds the top of the lane's ready jobs in
// dispatch order (priority desc, run_at, id). When `complete` is false the
// database may hold more ready jobs, all ranked after the window's last.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "broker/limiter.h"
#include "broker/quota.h"
#include "broker/store.h"
#include "common/config.h"

namespace pacer {

class Lane {
 public:
  Lane(ApiConfig config, int window_cap);

  const std::string& name() const { return config_.name; }
  const ApiConfig& config() const { return config_; }
  Limiter& limiter() { return limiter_; }
  QuotaState& quota() { return quota_; }

  // The earliest time the head of the window may start: the configured and
  // learned limits, and what the server's answers said (pauses, remaining
  // counts, the circuit). Limiter::kNever when it never can (cost larger
  // than a limit), QuotaState::kAwaitAnswer when only an answer in flight
  // can reopen the lane.
  // `requests`: what the start counts against request limits (a batch
  // sent with cost = "per_item" counts one per member).
  Millis gate(std::int64_t cost, Millis now, std::int64_t requests = 1);
  // Records a start in the limiter and the quota state.
  void on_start(std::int64_t cost, Millis now, std::int64_t requests = 1);
  // Brings the limiter's learned limits in line with the quota state.
  void sync_learned(Millis now);
  // A start made at `start` was answered at `now`, its call taking
  // `took_ms` at the worker (from handing it to curl to the last byte of
  // the answer). The limiter records starts when they were sent; a call
  // that took longer than the lane's fastest may have reached the server
  // that much later (a connection still being set up, a queue on the way),
  // and a window the server opened with it ends that much later: its
  // record moves by the difference. The worker's own time is used, not
  // the broker's, so how results travel back and wait in the broker's
  // turn does not count. Until a call sent after the lane's first answer
  // (on a warm connection) has been answered, nothing bounds the way
  // back, so the first calls count as arriving when they completed.
  // Returns how late the request may have arrived (0 when on time); the
  // quota state reads the server's counts against that arrival.
  Millis note_answered(Millis start, Millis now, double took_ms,
                       std::int64_t cost, std::int64_t requests = 1);

  // --- the ready window ---
  bool has_ready() const { return !window_.empty(); }
  const ReadyEntry& head() const { return *window_.begin(); }
  ReadyEntry pop_head();
  // A job became ready (new submission, or a release): keeps the invariant.
  void offer(const ReadyEntry& e);
  void remove(JobId id);
  // True when the window is low and the database may hold more.
  bool wants_refill() const;
  // Merges the database's current top rows; `complete_hint`: the query
  // returned fewer rows than asked, so the database has no others.
  void refill(const std::vector<ReadyEntry>& rows, bool complete_hint);
  void mark_incomplete() { complete_ = false; }
  std::size_t window_size() const { return window_.size(); }
  int window_cap() const { return cap_; }

  // --- batching (lanes with an [api.NAME.batch] section) ---
  //
  // The window's jobs that carry a batch key form one accumulator per key.
  // What the lane sends next is the first entry in dispatch order that can
  // go now: a job without a key, or a flushable accumulator (full by items,
  // bytes or units, or its oldest member has waited max_wait). When nothing
  // is, the accumulator of the best-ranked keyed job goes: the lane has a
  // token and nothing else to send. Accumulators live in the window, so
  // while the lane waits (quota, concurrency, credit) they keep growing,
  // up to a batch's worth; the database holds the rest of the queue.
  bool batching() const { return config_.batch.has_value(); }
  struct Selection {
    bool batch = false;               // a batch call (members >= 1)
    std::string key;                  // its batch key
    std::vector<ReadyEntry> members;  // a single job: exactly one
    std::int64_t units = 0;           // charged to unit limits
    std::int64_t requests = 1;        // charged to request limits
    bool empty() const { return members.empty(); }
  };
  Selection select(Millis now) const;
  // Removes the selection's entries from the window.
  void take(const Selection& s);
  // Accumulator sizes, for tests and stats: members in the window per key.
  std::size_t accumulated(const std::string& key) const;

  // --- jobs that are not ready yet (delay, backoff) ---
  std::optional<Millis> next_due() const { return next_due_; }
  void set_next_due(std::optional<Millis> t) { next_due_ = t; }
  void note_future(Millis run_at) {
    if (!next_due_ || run_at < *next_due_) next_due_ = run_at;
  }

  // --- concurrency ---
  int in_flight() const { return in_flight_; }
  bool under_concurrency() const {
    return config_.concurrency <= 0 || in_flight_ < config_.concurrency;
  }
  void started() { ++in_flight_; }
  void finished() {
    if (in_flight_ > 0) --in_flight_;
  }

  // --- rate over the last seconds, for stats ---
  // One call left with `items` jobs in it (a batch when `batch`).
  void count_dispatch(Millis now, std::int64_t items = 1, bool batch = false);
  // Calls per second over the last whole seconds.
  double rate_per_s(Millis now) const;
  std::int64_t dispatched_total() const { return dispatched_total_; }
  std::int64_t requests_total() const { return requests_total_; }
  std::int64_t batches_total() const { return batches_total_; }
  std::int64_t batch_items_total() const { return batch_items_total_; }

 private:
  struct Order {
    bool operator()(const ReadyEntry& a, const ReadyEntry& b) const {
      if (a.priority != b.priority) return a.priority > b.priority;
      if (a.run_at != b.run_at) return a.run_at < b.run_at;
      return a.id < b.id;
    }
  };
  void evict_over_cap();
  // Every change of the window goes through these two, which keep the
  // accumulators in step.
  void insert_entry(const ReadyEntry& e);
  void erase_entry(std::set<ReadyEntry, Order>::const_iterator it);
  bool keyed(const ReadyEntry& e) const {
    return batching() && !e.batch_key.empty() && e.batch_error.empty();
  }
  struct Accumulator {
    std::int64_t items = 0;
    std::int64_t bytes = 0;       // sum of the members' batch_member_bytes
    std::int64_t units = 0;       // sum of their costs
    std::multiset<Millis> since;  // when each member became ready
  };
  bool flushable(const Accumulator& a, Millis now) const;
  Selection single(const ReadyEntry& e) const;
  Selection batch_of(const std::string& key) const;

  ApiConfig config_;
  Limiter limiter_;
  // Worker-side times of calls sent after the first answer came back (warm
  // connections): the least of the last kRttSamples bounds how long an
  // answer takes once the request has arrived.
  static constexpr std::size_t kRttSamples = 64;
  std::deque<Millis> rtts_;
  std::optional<Millis> first_answer_;
  QuotaState quota_;
  int cap_;
  std::set<ReadyEntry, Order> window_;
  std::unordered_map<std::string, Accumulator> accumulators_;
  std::int64_t envelope_bytes_ = 0;
  std::unordered_set<JobId> ids_;
  bool complete_ = false;
  std::optional<Millis> next_due_;
  int in_flight_ = 0;
  // Dispatches per second over the last kRateSeconds whole seconds.
  static constexpr int kRateSeconds = 10;
  std::deque<std::pair<Millis, std::int64_t>> rate_buckets_;
  std::int64_t dispatched_total_ = 0;
  std::int64_t requests_total_ = 0;
  std::int64_t batches_total_ = 0;
  std::int64_t batch_items_total_ = 0;
};

}  // namespace pacer
