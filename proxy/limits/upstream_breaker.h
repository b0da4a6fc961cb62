// Upstream protection (Envoy's circuit breakers): caps on the calls in flight to one upstream,
// on calls waiting for its connection and on new calls per second, over all workers. A call
// over a cap never reaches the upstream; sepal answers it UNAVAILABLE at once.
#pragma once

#include <atomic>
#include <mutex>
#include <string_view>

#include "proxy/config/config.h"
#include "proxy/limits/token_bucket.h"

namespace sepal::limits {

class UpstreamBreaker {
 public:
  // Takes a call slot (and a rate token). Returns the limit that refused it (one of
  // limit::kUpstream*), or an empty view when the call may go ahead; then EndCall() once.
  std::string_view TryStartCall(const config::CircuitBreakerConfig& config,
                                TokenBucket::Clock::time_point now);
  void EndCall() { active_.fetch_sub(1, std::memory_order_relaxed); }

  // Calls queued until a connection to the upstream is up.
  bool PendingFull(const config::CircuitBreakerConfig& config) const {
    return config.max_pending_streams != 0 &&
           pending_.load(std::memory_order_relaxed) >= config.max_pending_streams;
  }
  void AddPending() { pending_.fetch_add(1, std::memory_order_relaxed); }
  void RemovePending() { pending_.fetch_sub(1, std::memory_order_relaxed); }

  uint32_t active() const { return active_.load(std::memory_order_relaxed); }
  uint32_t pending() const { return pending_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint32_t> active_{0};
  std::atomic<uint32_t> pending_{0};
  std::mutex bucket_mutex_;
  TokenBucket bucket_;
};

}  // namespace sepal::limits
