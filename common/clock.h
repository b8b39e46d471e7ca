// Clock: the one source of time for code whose behaviour depends on it, so
// tests drive it with FakeClock instead of sleeping.
//
// Time is milliseconds since the Unix epoch (it is persisted and compared
// across restarts), but never moves backwards within a process: SystemClock
// returns max(previous, now), so a clock step back cannot reopen a limiter
// window early. Thread-safety: SystemClock is safe to share; FakeClock is not.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace pacer {

using Millis = std::int64_t;

class Clock {
 public:
  virtual ~Clock() = default;
  virtual Millis now_ms() = 0;
};

class SystemClock final : public Clock {
 public:
  Millis now_ms() override {
    Millis wall = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count();
    Millis prev = last_.load(std::memory_order_relaxed);
    while (wall > prev && !last_.compare_exchange_weak(
                              prev, wall, std::memory_order_relaxed)) {
    }
    return wall > prev ? wall : prev;
  }

 private:
  std::atomic<Millis> last_{0};
};

class FakeClock final : public Clock {
 public:
  explicit FakeClock(Millis start = 1'700'000'000'000) : now_(start) {}
  Millis now_ms() override { return now_; }
  void advance(Millis ms) { now_ += ms; }
  void set(Millis ms) { now_ = ms; }

 private:
  Millis now_;
};

}  // namespace pacer
