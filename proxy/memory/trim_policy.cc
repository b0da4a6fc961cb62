// TrimPolicy: baseline, floor, growth, quietness, retries.
#include "proxy/memory/trim_policy.h"

#include <algorithm>

namespace sepal::memory {

void TrimPolicy::UpdateQuiet(Clock::time_point now, std::chrono::microseconds cpu) {
  auto elapsed = now - window_start_;
  if (elapsed < settings_.quiet_window) return;
  double seconds = std::chrono::duration<double>(elapsed).count();
  double cpu_seconds = std::chrono::duration<double>(cpu - window_cpu_start_).count();
  quiet_ = cpu_seconds < settings_.quiet_cpu * seconds;
  window_start_ = now;
  window_cpu_start_ = cpu;
}

std::string_view TrimPolicy::Decide(Clock::time_point now, uint64_t resident_bytes,
                                    std::chrono::microseconds cpu, bool over_budget) {
  if (!started_) {
    started_ = true;
    baseline_ = floor_ = resident_bytes;
    window_start_ = now;
    window_cpu_start_ = cpu;
    return {};
  }
  UpdateQuiet(now, cpu);
  // Memory that went back on its own (glibc's top-of-heap trim, an allocator's decay) lowers
  // the baseline.
  baseline_ = std::min(baseline_, resident_bytes);
  floor_ = std::min(floor_, resident_bytes);
  bool grown = resident_bytes > baseline_ + settings_.slack_bytes;
  if (grown && !grown_) grown_since_ = now;
  grown_ = grown;
  if (trimmed_once_ && now - last_trim_ < settings_.min_interval) return {};
  if (over_budget) return trim_reason::kOverload;
  if (grown && quiet_) return trim_reason::kQuiet;
  if (grown && now - grown_since_ >= settings_.busy_interval) return trim_reason::kBusy;
  if (quiet_ && resident_bytes > floor_ + settings_.slack_bytes &&
      (!trimmed_once_ || now - last_trim_ >= retry_interval_)) {
    return trim_reason::kRetry;
  }
  return {};
}

void TrimPolicy::Trimmed(Clock::time_point now, uint64_t resident_before,
                         uint64_t resident_after) {
  last_trim_ = now;
  trimmed_once_ = true;
  baseline_ = resident_after;
  floor_ = std::min(floor_, resident_after);
  grown_ = false;
  bool productive = resident_before > resident_after &&
                    resident_before - resident_after >= settings_.slack_bytes / 2;
  retry_interval_ = productive ? settings_.min_interval
                               : std::min(settings_.max_retry_interval, retry_interval_ * 2);
}

}  // namespace sepal::memory
