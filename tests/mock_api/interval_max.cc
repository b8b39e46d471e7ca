#include "tests/mock_api/interval_max.h"

#include <algorithm>

namespace pacer::mock {
namespace {

int64_t FloorDiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

}  // namespace

IntervalMaxTracker::IntervalMaxTracker(int64_t window_ns)
    : window_ns_(window_ns) {}

void IntervalMaxTracker::Record(int64_t t_ns) {
  while (!recent_.empty() && recent_.front() <= t_ns - window_ns_) {
    recent_.pop_front();
  }
  recent_.push_back(t_ns);
  max_ = std::max<int64_t>(max_, static_cast<int64_t>(recent_.size()));
}

void IntervalMaxTracker::Reset(int64_t window_ns) {
  window_ns_ = window_ns;
  recent_.clear();
  max_ = 0;
}

FixedWindowMaxTracker::FixedWindowMaxTracker(int64_t origin_ns,
                                             int64_t window_ns)
    : origin_ns_(origin_ns), window_ns_(window_ns) {}

void FixedWindowMaxTracker::Record(int64_t t_ns) {
  RecordInWindow(origin_ns_ +
                 FloorDiv(t_ns - origin_ns_, window_ns_) * window_ns_);
}

void FixedWindowMaxTracker::RecordInWindow(int64_t window_start_ns) {
  if (current_count_ == 0 || window_start_ns != current_start_ns_) {
    current_start_ns_ = window_start_ns;
    current_count_ = 0;
  }
  ++current_count_;
  max_ = std::max(max_, current_count_);
}

void FixedWindowMaxTracker::Reset(int64_t origin_ns, int64_t window_ns) {
  origin_ns_ = origin_ns;
  window_ns_ = window_ns;
  current_start_ns_ = 0;
  current_count_ = 0;
  max_ = 0;
}

}  // namespace pacer::mock
