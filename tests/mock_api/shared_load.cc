#include "tests/mock_api/shared_load.h"

namespace pacer::mock {

SharedLoad::SharedLoad(const LimitSpec& rate, int64_t origin_ns)
    : count_(rate.limit),
      window_ns_(rate.window_ns),
      origin_ns_(origin_ns),
      next_due_ns_(origin_ns) {}

void SharedLoad::Pop() {
  ++next_index_;
  next_due_ns_ = ComputeDue();
}

int64_t SharedLoad::ComputeDue() const {
  // 128-bit so k * W cannot overflow however long the mock runs;
  // __extension__ keeps -Wpedantic quiet about the non-ISO type.
  __extension__ typedef __int128 Wide;
  const Wide offset = static_cast<Wide>(next_index_) * window_ns_ / count_;
  return origin_ns_ + static_cast<int64_t>(offset);
}

}  // namespace pacer::mock
