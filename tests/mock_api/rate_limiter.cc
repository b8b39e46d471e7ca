#include "tests/mock_api/rate_limiter.h"

#include <algorithm>
#include <utility>

namespace pacer::mock {
namespace {

constexpr int64_t kNsPerMs = 1'000'000;
constexpr int64_t kNsPerSecond = 1'000'000'000;

// Integer division rounding towards negative infinity, so fixed windows
// stay aligned even for times before the origin.
int64_t FloorDiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

int64_t CeilDivPositive(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

std::string_view AlgorithmName(Algorithm algorithm) {
  switch (algorithm) {
    case Algorithm::kFixed:
      return "fixed";
    case Algorithm::kSliding:
      return "sliding";
    case Algorithm::kTokenBucket:
      return "token-bucket";
    case Algorithm::kLeaky:
      return "leaky";
  }
  return "fixed";
}

std::optional<Algorithm> ParseAlgorithm(std::string_view name) {
  if (name == "fixed") return Algorithm::kFixed;
  if (name == "sliding") return Algorithm::kSliding;
  if (name == "token-bucket") return Algorithm::kTokenBucket;
  if (name == "leaky") return Algorithm::kLeaky;
  return std::nullopt;
}

int64_t RetryAfterSeconds(int64_t retry_after_ns) {
  return std::max<int64_t>(1, CeilDivPositive(retry_after_ns, kNsPerSecond));
}

int64_t RetryAfterMillis(int64_t retry_after_ns) {
  return std::max<int64_t>(1, CeilDivPositive(retry_after_ns, kNsPerMs));
}

RateLimiter::RateLimiter(Algorithm algorithm, std::optional<LimitSpec> spec,
                         int64_t origin_ns)
    : algorithm_(algorithm), spec_(std::move(spec)) {
  Reset(origin_ns);
}

void RateLimiter::Reset(int64_t origin_ns) {
  origin_ns_ = origin_ns;
  last_now_ns_ = origin_ns;
  window_index_ = 0;
  window_count_ = 0;
  admitted_.clear();
  level_ = 0;
  if (spec_ && algorithm_ == Algorithm::kTokenBucket) {
    level_ =
        static_cast<Wide>(spec_->limit) * static_cast<Wide>(spec_->window_ns);
  }
}

Admission RateLimiter::TryAdmit(int64_t now_ns) {
  if (!spec_) return {};
  now_ns = std::max(now_ns, last_now_ns_);
  switch (algorithm_) {
    case Algorithm::kFixed:
      return AdmitFixed(now_ns);
    case Algorithm::kSliding:
      return AdmitSliding(now_ns);
    case Algorithm::kTokenBucket:
      return AdmitTokenBucket(now_ns);
    case Algorithm::kLeaky:
      return AdmitLeaky(now_ns);
  }
  return {};
}

Admission RateLimiter::AdmitFixed(int64_t now_ns) {
  last_now_ns_ = now_ns;
  const int64_t window = spec_->window_ns;
  const int64_t index = FloorDiv(now_ns - origin_ns_, window);
  if (index != window_index_) {
    window_index_ = index;
    window_count_ = 0;
  }
  if (window_count_ < spec_->limit) {
    ++window_count_;
    return {};
  }
  const int64_t next_window_start = origin_ns_ + (index + 1) * window;
  return {.admitted = false, .retry_after_ns = next_window_start - now_ns};
}

Admission RateLimiter::AdmitSliding(int64_t now_ns) {
  last_now_ns_ = now_ns;
  const int64_t window = spec_->window_ns;
  // The interval is half-open on the left: a request exactly W ago no
  // longer counts.
  while (!admitted_.empty() && admitted_.front() <= now_ns - window) {
    admitted_.pop_front();
  }
  if (static_cast<int64_t>(admitted_.size()) < spec_->limit) {
    admitted_.push_back(now_ns);
    return {};
  }
  return {.admitted = false,
          .retry_after_ns = admitted_.front() + window - now_ns};
}

Admission RateLimiter::AdmitTokenBucket(int64_t now_ns) {
  const Wide window = static_cast<Wide>(spec_->window_ns);
  const Wide rate = static_cast<Wide>(spec_->limit);
  const Wide capacity = rate * window;
  const Wide elapsed = static_cast<Wide>(now_ns - last_now_ns_);
  last_now_ns_ = now_ns;
  level_ = std::min(capacity, level_ + elapsed * rate);
  if (level_ >= window) {
    level_ -= window;
    return {};
  }
  const Wide missing = window - level_;
  const Wide wait = (missing + rate - 1) / rate;
  return {.admitted = false, .retry_after_ns = static_cast<int64_t>(wait)};
}

Admission RateLimiter::AdmitLeaky(int64_t now_ns) {
  const Wide window = static_cast<Wide>(spec_->window_ns);
  const Wide rate = static_cast<Wide>(spec_->limit);
  const Wide capacity = rate * window;
  const Wide drained = static_cast<Wide>(now_ns - last_now_ns_) * rate;
  last_now_ns_ = now_ns;
  level_ = drained >= level_ ? 0 : level_ - drained;
  if (level_ + window <= capacity) {
    level_ += window;
    return {};
  }
  const Wide overflow = level_ + window - capacity;
  const Wide wait = (overflow + rate - 1) / rate;
  return {.admitted = false, .retry_after_ns = static_cast<int64_t>(wait)};
}

}  // namespace pacer::mock
