// Token bucket for rate limits: `burst` tokens at most, refilled at `rate` per second. Not
// thread-safe (callers hold a lock or own it). Rate and burst are passed on every call, so a
// reload that changes them applies to buckets already in use.
#pragma once

#include <algorithm>
#include <chrono>

namespace sepal::limits {

class TokenBucket {
 public:
  using Clock = std::chrono::steady_clock;

  // Takes `cost` tokens if that many are there. A new bucket starts full.
  bool TryTake(Clock::time_point now, double rate, double burst, double cost = 1) {
    if (!started_) {
      started_ = true;
      tokens_ = burst;
    } else {
      double elapsed = std::chrono::duration<double>(now - last_).count();
      if (elapsed > 0) tokens_ = std::min(burst, tokens_ + elapsed * rate);
    }
    last_ = std::max(last_, now);
    if (tokens_ < cost) return false;
    tokens_ -= cost;
    return true;
  }

 private:
  bool started_ = false;
  double tokens_ = 0;
  Clock::time_point last_{};
};

}  // namespace sepal::limits
