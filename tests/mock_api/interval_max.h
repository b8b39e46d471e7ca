// Owns the "how many were accepted (or attempted) in the busiest window"
// bookkeeping that /stats reports, computed exactly from timestamps. Not
// thread-safe: the owner serialises calls.
#ifndef PACER_TESTS_MOCK_API_INTERVAL_MAX_H_
#define PACER_TESTS_MOCK_API_INTERVAL_MAX_H_

#include <cstdint>
#include <deque>

namespace pacer::mock {

// Largest number of events in any half-open interval (t - W, t]. Only the
// intervals ending at an event need checking: any other interval holds no
// more events than the one ending at its last event. Memory is bounded by
// the number of events in the most recent W.
class IntervalMaxTracker {
 public:
  explicit IntervalMaxTracker(int64_t window_ns);

  // `t_ns` must be non-decreasing across calls.
  void Record(int64_t t_ns);
  void Reset(int64_t window_ns);

  int64_t max() const { return max_; }
  int64_t window_ns() const { return window_ns_; }

 private:
  int64_t window_ns_;
  std::deque<int64_t> recent_;
  int64_t max_ = 0;
};

// Largest number of events in any one window of a fixed-window limiter.
// Windows are named by their start: either the aligned windows
// [origin + kW, origin + (k+1)W), or whatever windows the caller names,
// e.g. those a first-request limiter opened. Only the current window's
// count is kept.
class FixedWindowMaxTracker {
 public:
  FixedWindowMaxTracker(int64_t origin_ns, int64_t window_ns);

  // Both record one event; the windows they fall in must start at
  // non-decreasing times across calls. Record counts it in the aligned
  // window holding `t_ns`, RecordInWindow in the window starting at
  // `window_start_ns`.
  void Record(int64_t t_ns);
  void RecordInWindow(int64_t window_start_ns);
  void Reset(int64_t origin_ns, int64_t window_ns);

  int64_t max() const { return max_; }

 private:
  int64_t origin_ns_;
  int64_t window_ns_;
  int64_t current_start_ns_ = 0;
  int64_t current_count_ = 0;
  int64_t max_ = 0;
};

}  // namespace pacer::mock

#endif  // PACER_TESTS_MOCK_API_INTERVAL_MAX_H_
