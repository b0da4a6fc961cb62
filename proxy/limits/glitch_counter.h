// Glitch accounting for one client connection (HAProxy's glitch counters): frames and
// streams no well-behaved gRPC client needs cost a token each; a connection that runs out
// of tokens is sent GOAWAY ENHANCE_YOUR_CALM. Each kind is counted in
// sepal_downstream_glitches_total{listener,kind}.
#pragma once

#include <string_view>

#include "proxy/config/config.h"
#include "proxy/limits/token_bucket.h"

namespace sepal::limits {

// The `kind` label values (a fixed set).
namespace glitch {
inline constexpr std::string_view kEmptyData = "empty_data";        // DATA, no payload, no END_STREAM
inline constexpr std::string_view kTinyData = "tiny_data";          // DATA of 1-4 bytes, no END_STREAM
inline constexpr std::string_view kPing = "ping";
inline constexpr std::string_view kSettings = "settings";           // after the first
inline constexpr std::string_view kPriority = "priority";
inline constexpr std::string_view kWindowUpdate = "window_update";  // beyond 2 per stream and DATA sent
inline constexpr std::string_view kEarlyReset = "early_reset";      // reset before its answer
inline constexpr std::string_view kRefusedStream = "refused_stream";  // over max_concurrent_streams
inline constexpr std::string_view kStalledRequest = "stalled_request";  // request_progress_timeout
}  // namespace glitch

class GlitchCounter {
 public:
  // Counts one glitch; false once the connection is out of tokens (time for GOAWAY).
  bool Count(const config::Http2Limits& limits, TokenBucket::Clock::time_point now) {
    ++total_;
    return bucket_.TryTake(now, limits.glitch_rate, limits.glitch_burst);
  }
  uint64_t total() const { return total_; }

 private:
  TokenBucket bucket_;
  uint64_t total_ = 0;
};

}  // namespace sepal::limits
