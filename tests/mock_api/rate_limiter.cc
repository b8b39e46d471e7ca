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

std::string_view WindowStartName(WindowStart window_start) {
  switch (window_start) {
    case WindowStart::kAligned:
      return "aligned";
    case WindowStart::kFirstRequest:
      return "first-request";
  }
  return "aligned";
}

std::optional<WindowStart> ParseWindowStart(std::string_view name) {
  if (name == "aligned") return WindowStart::kAligned;
  if (name == "first-request") return WindowStart::kFirstRequest;
  return std::nullopt;
}

int64_t RetryAfterSeconds(int64_t retry_after_ns) {
  return std::max<int64_t>(1, CeilDivPositive(retry_after_ns, kNsPerSecond));
}

int64_t RetryAfterMillis(int64_t retry_after_ns) {
  return std::max<int64_t>(1, CeilDivPositive(retry_after_ns, kNsPerMs));
}

RateLimiter::RateLimiter(Algorithm algorithm, std::optional<LimitSpec> spec,
                         int64_t origin_ns, LimiterOptions options)
    : algorithm_(algorithm), spec_(std::move(spec)), options_(options) {
  Reset(origin_ns);
}

void RateLimiter::Reset(int64_t origin_ns) {
  origin_ns_ = origin_ns;
  last_now_ns_ = origin_ns;
  window_open_ = options_.window_start == WindowStart::kAligned;
  window_end_ns_ = spec_ ? origin_ns + spec_->window_ns : origin_ns;
  window_count_ = 0;
  admitted_.clear();
  admitted_cost_ = 0;
  level_ = 0;
  if (spec_ && algorithm_ == Algorithm::kTokenBucket) level_ = Capacity();
}

int64_t RateLimiter::MaxCost() const {
  if (algorithm_ == Algorithm::kLeaky && options_.burst) {
    return *options_.burst + 1;
  }
  return spec_->limit;
}

RateLimiter::Wide RateLimiter::Capacity() const {
  return static_cast<Wide>(MaxCost()) * static_cast<Wide>(spec_->window_ns);
}

Admission RateLimiter::TryAdmit(int64_t now_ns, int64_t cost) {
  Advance(now_ns);
  const Admission admission = Check(cost);
  if (admission.admitted) Consume(cost);
  return admission;
}

void RateLimiter::Advance(int64_t now_ns) {
  if (!spec_) return;
  now_ns = std::max(now_ns, last_now_ns_);
  const int64_t window = spec_->window_ns;
  const Wide rate = static_cast<Wide>(spec_->limit);
  const Wide elapsed = static_cast<Wide>(now_ns - last_now_ns_);
  last_now_ns_ = now_ns;
  switch (algorithm_) {
    case Algorithm::kFixed:
      if (window_open_ && now_ns >= window_end_ns_) {
        window_count_ = 0;
        if (options_.window_start == WindowStart::kAligned) {
          // The grid goes on: the window holding now.
          window_end_ns_ =
              origin_ns_ + (FloorDiv(now_ns - origin_ns_, window) + 1) * window;
        } else {
          // The next charged request opens the next window.
          window_open_ = false;
        }
      }
      break;
    case Algorithm::kSliding:
      // The interval is half-open on the left: a request exactly W ago no
      // longer counts.
      while (!admitted_.empty() && admitted_.front().t_ns <= now_ns - window) {
        admitted_cost_ -= admitted_.front().cost;
        admitted_.pop_front();
      }
      break;
    case Algorithm::kTokenBucket:
      level_ = std::min(Capacity(), level_ + elapsed * rate);
      break;
    case Algorithm::kLeaky: {
      const Wide drained = elapsed * rate;
      level_ = drained >= level_ ? 0 : level_ - drained;
      break;
    }
  }
}

Admission RateLimiter::Check(int64_t cost) const {
  if (!spec_) return {};
  const int64_t limit = spec_->limit;
  if (cost > MaxCost()) return {.admitted = false, .exceeds_limit = true};
  const int64_t now_ns = last_now_ns_;
  const int64_t window = spec_->window_ns;
  const Wide wide_window = static_cast<Wide>(window);
  const Wide rate = static_cast<Wide>(limit);
  const Wide need = static_cast<Wide>(cost) * wide_window;
  switch (algorithm_) {
    case Algorithm::kFixed:
      if (window_count_ + cost <= limit) return {};
      // Something is counted, so a window is open; the next one admits.
      return {.admitted = false, .retry_after_ns = window_end_ns_ - now_ns};
    case Algorithm::kSliding: {
      if (admitted_cost_ + cost <= limit) return {};
      // The request fits once enough of the oldest admissions have left.
      int64_t counted = admitted_cost_;
      for (const Entry& entry : admitted_) {
        counted -= entry.cost;
        if (counted + cost <= limit) {
          return {.admitted = false,
                  .retry_after_ns = entry.t_ns + window - now_ns};
        }
      }
      return {.admitted = false, .exceeds_limit = true};  // unreachable
    }
    case Algorithm::kTokenBucket: {
      if (level_ >= need) return {};
      const Wide wait = (need - level_ + rate - 1) / rate;
      return {.admitted = false, .retry_after_ns = static_cast<int64_t>(wait)};
    }
    case Algorithm::kLeaky: {
      const Wide capacity = Capacity();
      if (level_ + need <= capacity) return {};
      const Wide wait = (level_ + need - capacity + rate - 1) / rate;
      return {.admitted = false, .retry_after_ns = static_cast<int64_t>(wait)};
    }
  }
  return {};
}

void RateLimiter::Consume(int64_t cost) {
  if (!spec_ || cost <= 0) return;
  const Wide need =
      static_cast<Wide>(cost) * static_cast<Wide>(spec_->window_ns);
  switch (algorithm_) {
    case Algorithm::kFixed:
      if (!window_open_) {
        window_open_ = true;
        window_end_ns_ = last_now_ns_ + spec_->window_ns;
      }
      window_count_ += cost;
      break;
    case Algorithm::kSliding:
      admitted_.push_back({.t_ns = last_now_ns_, .cost = cost});
      admitted_cost_ += cost;
      break;
    case Algorithm::kTokenBucket:
      level_ -= std::min(level_, need);
      break;
    case Algorithm::kLeaky:
      level_ += need;
      break;
  }
}

std::optional<Quota> RateLimiter::quota() const {
  if (!spec_) return std::nullopt;
  Quota quota;
  quota.limit = spec_->limit;
  quota.window_ns = spec_->window_ns;
  const Wide window = static_cast<Wide>(spec_->window_ns);
  const Wide rate = static_cast<Wide>(spec_->limit);
  switch (algorithm_) {
    case Algorithm::kFixed:
      quota.remaining = std::max<int64_t>(0, spec_->limit - window_count_);
      quota.reset_ns = window_open_ ? window_end_ns_ - last_now_ns_ : 0;
      break;
    case Algorithm::kSliding:
      quota.remaining = std::max<int64_t>(0, spec_->limit - admitted_cost_);
      quota.reset_ns = admitted_.empty() ? 0
                                         : admitted_.front().t_ns +
                                               spec_->window_ns - last_now_ns_;
      break;
    case Algorithm::kTokenBucket:
      quota.remaining = static_cast<int64_t>(level_ / window);
      quota.reset_ns =
          static_cast<int64_t>((Capacity() - level_ + rate - 1) / rate);
      break;
    case Algorithm::kLeaky:
      quota.remaining = static_cast<int64_t>((Capacity() - level_) / window);
      quota.reset_ns = static_cast<int64_t>((level_ + rate - 1) / rate);
      break;
  }
  return quota;
}

}  // namespace pacer::mock
