// UpstreamBreaker.
#include "proxy/limits/upstream_breaker.h"

#include "proxy/limits/peer_limits.h"

namespace sepal::limits {

std::string_view UpstreamBreaker::TryStartCall(const config::CircuitBreakerConfig& config,
                                               TokenBucket::Clock::time_point now) {
  uint32_t current = active_.load(std::memory_order_relaxed);
  do {
    if (config.max_concurrent_streams != 0 && current >= config.max_concurrent_streams) {
      return limit::kUpstreamConcurrent;
    }
  } while (!active_.compare_exchange_weak(current, current + 1, std::memory_order_relaxed));
  if (config.max_new_streams_per_second != 0) {
    std::lock_guard lock(bucket_mutex_);
    double rate = config.max_new_streams_per_second;
    if (!bucket_.TryTake(now, rate, rate)) {
      active_.fetch_sub(1, std::memory_order_relaxed);
      return limit::kUpstreamRate;
    }
  }
  return {};
}

}  // namespace sepal::limits
