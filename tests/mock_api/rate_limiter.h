// Owns the four admission algorithms the mock upstream can enforce. Time is
// passed in explicitly (ns on any monotonic scale) so tests can drive the
// algorithms without sleeping. Not thread-safe: the owner serialises calls.
#ifndef PACER_TESTS_MOCK_API_RATE_LIMITER_H_
#define PACER_TESTS_MOCK_API_RATE_LIMITER_H_

#include <cstdint>
#include <deque>
#include <optional>
#include <string_view>

#include "tests/mock_api/limit_spec.h"

namespace pacer::mock {

enum class Algorithm {
  // Windows of length W each admit at most N; where they begin is the
  // limiter's WindowStart.
  kFixed,
  // At most N admitted in any interval (t-W, t].
  kSliding,
  // Capacity N, refilled continuously at N/W, starts full.
  kTokenBucket,
  // Level drains continuously at N/W; admit if level + 1 <= capacity,
  // which is N requests unless a burst is set (LimiterOptions::burst).
  kLeaky,
};

std::string_view AlgorithmName(Algorithm algorithm);
// Accepts the CLI spellings: fixed, sliding, token-bucket, leaky.
std::optional<Algorithm> ParseAlgorithm(std::string_view name);

// Where kFixed windows begin.
enum class WindowStart {
  // [origin + kW, origin + (k+1)W): a grid laid when the limiter starts.
  kAligned,
  // [t, t + W), t being the first request charged after the previous
  // window ended, as express-rate-limit's MemoryStore and Python limits'
  // fixed window do. While no window is open nothing is counted.
  kFirstRequest,
};

std::string_view WindowStartName(WindowStart window_start);
// Accepts the CLI spellings: aligned, first-request.
std::optional<WindowStart> ParseWindowStart(std::string_view name);

// Largest --burst: the largest limit a LimitSpec allows.
inline constexpr int64_t kMaxBurst = 1'000'000'000'000;

// Tuning beyond the algorithm and N/W; each field is ignored by the
// algorithms it does not name.
struct LimiterOptions {
  // kFixed.
  WindowStart window_start = WindowStart::kAligned;
  // kLeaky: nginx limit_req's burst B (0..kMaxBurst). The bucket holds
  // B + 1 requests instead of N and still drains at N/W, so after idle
  // B + 1 requests are admitted at once, then one per W/N. nullopt keeps
  // capacity N, i.e. burst N - 1.
  std::optional<int64_t> burst;
};

struct Admission {
  bool admitted = true;
  // Only meaningful when !admitted: the smallest delay (> 0) after which the
  // same request would be admitted if nothing else arrived meanwhile.
  int64_t retry_after_ns = 0;
  // The request costs more than the whole limit (the bucket's capacity for
  // kLeaky with a burst), so no wait will ever admit it; retry_after_ns is
  // then 0.
  bool exceeds_limit = false;
};

// What the limiter would report to a client at the time of the last call:
// the configured limit, the whole units usable right now, and the delay
// until the limiter "resets", which depends on the algorithm:
//   fixed        -> the end of the current window (0 if no window is
//                   open, which only kFirstRequest allows);
//   sliding      -> when the oldest unit still counted leaves the window
//                   (0 if none is counted);
//   token-bucket -> when the bucket is full again (0 if it is full);
//   leaky        -> when the bucket has drained empty (0 if it is empty).
struct Quota {
  int64_t limit = 0;
  int64_t remaining = 0;
  int64_t reset_ns = 0;
  int64_t window_ns = 0;
};

// Retry-After header value with ResetRounding::kUp (the default): whole
// seconds, rounded up, at least 1, because HTTP cannot express fractions
// and "0" would invite an immediate retry.
int64_t RetryAfterSeconds(int64_t retry_after_ns);
// Same rounding in milliseconds for the JSON body.
int64_t RetryAfterMillis(int64_t retry_after_ns);

class RateLimiter {
 public:
  // `spec` == nullopt means unlimited. `origin_ns` anchors aligned fixed
  // windows.
  RateLimiter(Algorithm algorithm, std::optional<LimitSpec> spec,
              int64_t origin_ns, LimiterOptions options = {});

  // Decides for one request of `cost` units (>= 0) arriving at `now_ns` and,
  // if admitted, consumes them. Times earlier than a previous call are
  // treated as that call's time so the state never runs backwards.
  Admission TryAdmit(int64_t now_ns, int64_t cost = 1);

  // The same decision in steps, so that one request can be held against
  // several limiters and charged to all of them or to none: Advance moves
  // the state to `now_ns` (expiring, refilling, draining; admits nothing),
  // Check decides at that time without changing anything, and Consume
  // charges an admitted request (and, with kFirstRequest, opens a window
  // if none is open and the cost is not 0).
  void Advance(int64_t now_ns);
  Admission Check(int64_t cost) const;
  void Consume(int64_t cost);

  // The state as of the last call; nullopt when unlimited.
  std::optional<Quota> quota() const;

  // Forgets all consumption, as if freshly constructed at `origin_ns`.
  void Reset(int64_t origin_ns);

  Algorithm algorithm() const { return algorithm_; }
  const std::optional<LimitSpec>& spec() const { return spec_; }
  int64_t origin_ns() const { return origin_ns_; }
  // kFixed with a limit: the start of the current window. Only meaningful
  // while one is open, e.g. right after Consume.
  int64_t window_start_ns() const { return window_end_ns_ - spec_->window_ns; }

 private:
  // Bucket levels are kept in units of 1/W of a request so that continuous
  // refill (N units per ns) stays exact integer arithmetic; N * W can exceed
  // 64 bits for long windows, hence 128-bit. Unsigned because levels never
  // go negative, and so UBSan builds need no 128-bit overflow helpers;
  // __extension__ keeps -Wpedantic quiet about the non-ISO type.
  __extension__ typedef unsigned __int128 Wide;

  struct Entry {
    int64_t t_ns;
    int64_t cost;
  };

  // The most units one request may cost: the bucket's capacity for kLeaky
  // with a burst, N otherwise.
  int64_t MaxCost() const;
  // Bucket capacity, scaled by W: N * W, or (B + 1) * W for kLeaky with a
  // burst.
  Wide Capacity() const;

  Algorithm algorithm_;
  std::optional<LimitSpec> spec_;
  LimiterOptions options_;
  int64_t origin_ns_ = 0;
  int64_t last_now_ns_ = 0;

  // kFixed: the current window is [window_end_ns_ - W, window_end_ns_) and
  // holds window_count_ units. kAligned always has one open; kFirstRequest
  // has none between the end of one and the next charged request, and
  // window_count_ is then 0.
  bool window_open_ = false;
  int64_t window_end_ns_ = 0;
  int64_t window_count_ = 0;
  // kSliding: admissions still inside (now - W, now] and their total cost.
  std::deque<Entry> admitted_;
  int64_t admitted_cost_ = 0;
  // kTokenBucket: tokens; kLeaky: water level. Both scaled by W.
  Wide level_ = 0;
};

}  // namespace pacer::mock

#endif  // PACER_TESTS_MOCK_API_RATE_LIMITER_H_
