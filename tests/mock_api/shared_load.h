// Owns the schedule of the invisible second client that --shared-load
// simulates: its requests are due at evenly spaced instants from an origin,
// and the owner replays the ones due so far through its limiter whenever it
// looks at the clock. Deterministic; no threads or timers. Not thread-safe:
// the owner serialises calls.
#ifndef PACER_TESTS_MOCK_API_SHARED_LOAD_H_
#define PACER_TESTS_MOCK_API_SHARED_LOAD_H_

#include <cstdint>

#include "tests/mock_api/limit_spec.h"

namespace pacer::mock {

class SharedLoad {
 public:
  // Fastest rate accepted: one request per 10 us (100,000 per second), so
  // that replaying a long idle stretch stays cheap.
  static constexpr int64_t kMinIntervalNs = 10'000;

  // `rate` is N requests per W; the k-th request (k = 0, 1, ...) is due at
  // origin + floor(k * W / N), so the first one is due at the origin.
  SharedLoad(const LimitSpec& rate, int64_t origin_ns);

  // Instant the next request not yet replayed is due.
  int64_t next_due_ns() const { return next_due_ns_; }
  // Marks that request as replayed.
  void Pop();

 private:
  int64_t ComputeDue() const;

  int64_t count_;
  int64_t window_ns_;
  int64_t origin_ns_;
  int64_t next_index_ = 0;
  int64_t next_due_ns_;
};

}  // namespace pacer::mock

#endif  // PACER_TESTS_MOCK_API_SHARED_LOAD_H_
