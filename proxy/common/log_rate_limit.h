// Rate limits for log lines a peer can cause (bad TLS, bad frames, refused peers, limits):
// a flood of bad clients must not flood the log. Each kind of line gets a budget per
// interval; the lines past it are dropped and counted, and the next line of that kind after
// the interval — or the periodic FlushAll() — says how many were suppressed. Metrics are
// never rate-limited; only the log is.
//
//   static LogRateLimit limit("listener: bad PROXY header");
//   if (limit.Allow()) LogWarning(...);
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string_view>

namespace sepal {

class LogRateLimit {
 public:
  static constexpr std::chrono::seconds kInterval{10};

  // `what` names the kind in the "suppressed" line; a string literal (kept by reference).
  // Thread-safe; instances register themselves for FlushAll() and must be static.
  explicit LogRateLimit(std::string_view what, uint32_t lines_per_interval = 20);
  LogRateLimit(const LogRateLimit&) = delete;
  LogRateLimit& operator=(const LogRateLimit&) = delete;

  // True if this line may be written.
  bool Allow();
  uint64_t suppressed_total() const { return suppressed_total_.load(std::memory_order_relaxed); }

  // Writes the "N similar lines suppressed" line of every limit whose interval has passed.
  static void FlushAll();

 private:
  void MaybeStartInterval(int64_t now_seconds);

  const std::string_view what_;
  const uint32_t budget_;
  std::atomic<int64_t> interval_start_{INT64_MIN};
  std::atomic<uint32_t> written_{0};
  std::atomic<uint64_t> suppressed_{0};
  std::atomic<uint64_t> suppressed_total_{0};
  LogRateLimit* next_ = nullptr;  // registry of every limit, for FlushAll
};

}  // namespace sepal
