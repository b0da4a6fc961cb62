// LogRateLimit.
#include "proxy/common/log_rate_limit.h"

#include "proxy/common/log.h"

namespace sepal {

namespace {
std::atomic<LogRateLimit*> g_limits{nullptr};

int64_t NowSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace

LogRateLimit::LogRateLimit(std::string_view what, uint32_t lines_per_interval)
    : what_(what), budget_(lines_per_interval) {
  next_ = g_limits.load();
  while (!g_limits.compare_exchange_weak(next_, this)) {
  }
}

void LogRateLimit::MaybeStartInterval(int64_t now_seconds) {
  int64_t start = interval_start_.load(std::memory_order_relaxed);
  if (start != INT64_MIN && now_seconds < start + kInterval.count()) return;
  if (!interval_start_.compare_exchange_strong(start, now_seconds)) return;  // another thread did
  written_.store(0, std::memory_order_relaxed);
  uint64_t dropped = suppressed_.exchange(0, std::memory_order_relaxed);
  if (dropped > 0) {
    LogWarning(what_, ": ", dropped, " similar lines suppressed in the last ",
               now_seconds - start, " s");
  }
}

bool LogRateLimit::Allow() {
  MaybeStartInterval(NowSeconds());
  if (written_.fetch_add(1, std::memory_order_relaxed) < budget_) return true;
  suppressed_.fetch_add(1, std::memory_order_relaxed);
  suppressed_total_.fetch_add(1, std::memory_order_relaxed);
  return false;
}

void LogRateLimit::FlushAll() {
  int64_t now = NowSeconds();
  for (LogRateLimit* limit = g_limits.load(); limit != nullptr; limit = limit->next_) {
    if (limit->suppressed_.load(std::memory_order_relaxed) > 0) limit->MaybeStartInterval(now);
  }
}

}  // namespace sepal
