// Exponential backoff with full jitter: delay = rand(0, min(cap, base * 2^n)),
// never less than a floor the server asked for (Retry-After). The random
// source is injected so tests are deterministic. Not thread-safe (owns an RNG).
#pragma once

#include <algorithm>
#include <cstdint>
#include <random>

#include "common/clock.h"

namespace pacer {

class Backoff {
 public:
  explicit Backoff(std::uint64_t seed = std::random_device{}()) : rng_(seed) {}

  // `failures` is the number of failed attempts so far (1 for the first retry).
  Millis next(int failures, Millis base, Millis cap, Millis floor = 0) {
    Millis ceiling = cap;
    if (failures < 1) failures = 1;
    if (failures < 40) {
      long double exp =
          static_cast<long double>(base) * (1ULL << (failures - 1));
      if (exp < static_cast<long double>(cap))
        ceiling = static_cast<Millis>(exp);
    }
    ceiling = std::max<Millis>(ceiling, 0);
    std::uniform_int_distribution<Millis> dist(0, ceiling);
    return std::max(dist(rng_), floor);
  }

 private:
  std::mt19937_64 rng_;
};

}  // namespace pacer
