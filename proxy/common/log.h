// Minimal thread-safe logger: one write(2) per line, so lines from workers never interleave.
#pragma once

#include <atomic>
#include <string_view>

#include "proxy/common/strings.h"

namespace sepal {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// Lines below this level are dropped. Set once at startup (SEPAL_LOG_LEVEL or --log-level).
extern std::atomic<LogLevel> g_min_log_level;

void WriteLogLine(LogLevel level, std::string_view message);
bool ParseLogLevel(std::string_view text, LogLevel* out);

template <typename... Args>
void Log(LogLevel level, const Args&... args) {
  if (level < g_min_log_level.load(std::memory_order_relaxed)) return;
  WriteLogLine(level, StrCat(args...));
}
template <typename... Args>
void LogDebug(const Args&... args) { Log(LogLevel::kDebug, args...); }
template <typename... Args>
void LogInfo(const Args&... args) { Log(LogLevel::kInfo, args...); }
template <typename... Args>
void LogWarning(const Args&... args) { Log(LogLevel::kWarning, args...); }
template <typename... Args>
void LogError(const Args&... args) { Log(LogLevel::kError, args...); }

}  // namespace sepal
