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
  // Windows [origin + kW, origin + (k+1)W) each admit at most N.
  kFixed,
  // At most N admitted in any interval (t-W, t].
  kSliding,
  // Capacity N, refilled continuously at N/W, starts full.
  kTokenBucket,
  // Level drains continuously at N/W; admit if level + 1 <= N.
  kLeaky,
};

std::string_view AlgorithmName(Algorithm algorithm);
// Accepts the CLI spellings: fixed, sliding, token-bucket, leaky.
std::optional<Algorithm> ParseAlgorithm(std::string_view name);

struct Admission {
  bool admitted = true;
  // Only meaningful when !admitted: the smallest delay (> 0) after which the
  // same request would be admitted if nothing else arrived meanwhile.
  int64_t retry_after_ns = 0;
};

// Retry-After header value: whole seconds, rounded up, at least 1, because
// HTTP cannot express fractions and "0" would invite an immediate retry.
int64_t RetryAfterSeconds(int64_t retry_after_ns);
// Same rounding in milliseconds for the JSON body.
int64_t RetryAfterMillis(int64_t retry_after_ns);

class RateLimiter {
 public:
  // `spec` == nullopt means unlimited. `origin_ns` anchors fixed windows.
  RateLimiter(Algorithm algorithm, std::optional<LimitSpec> spec,
              int64_t origin_ns);

  // Decides for one request arriving at `now_ns` and, if admitted, consumes
  // capacity. Times earlier than a previous call are treated as that call's
  // time so the state never runs backwards.
  Admission TryAdmit(int64_t now_ns);

  // Forgets all consumption, as if freshly constructed at `origin_ns`.
  void Reset(int64_t origin_ns);

  Algorithm algorithm() const { return algorithm_; }
  const std::optional<LimitSpec>& spec() const { return spec_; }
  int64_t origin_ns() const { return origin_ns_; }

 private:
  // Bucket levels are kept in units of 1/W of a request so that continuous
  // refill (N units per ns) stays exact integer arithmetic; N * W can exceed
  // 64 bits for long windows, hence 128-bit. Unsigned because levels never
  // go negative, and so UBSan builds need no 128-bit overflow helpers;
  // __extension__ keeps -Wpedantic quiet about the non-ISO type.
  __extension__ typedef unsigned __int128 Wide;

  Admission AdmitFixed(int64_t now_ns);
  Admission AdmitSliding(int64_t now_ns);
  Admission AdmitTokenBucket(int64_t now_ns);
  Admission AdmitLeaky(int64_t now_ns);

  Algorithm algorithm_;
  std::optional<LimitSpec> spec_;
  int64_t origin_ns_ = 0;
  int64_t last_now_ns_ = 0;

  // kFixed.
  int64_t window_index_ = 0;
  int64_t window_count_ = 0;
  // kSliding: admission times still inside (now - W, now].
  std::deque<int64_t> admitted_;
  // kTokenBucket: tokens; kLeaky: water level. Both scaled by W.
  Wide level_ = 0;
};

}  // namespace pacer::mock

#endif  // PACER_TESTS_MOCK_API_RATE_LIMITER_H_
