// Log sink: timestamps in UTC, level tag, one atomic write to stderr per line.
#include "proxy/common/log.h"
#include "proxy/common/strings.h"

#include <unistd.h>

#include <ctime>
#include <string>

namespace sepal {

std::atomic<LogLevel> g_min_log_level{LogLevel::kInfo};

namespace {
constexpr std::string_view kLevelNames[] = {"debug", "info", "warn", "error"};
}

void WriteLogLine(LogLevel level, std::string_view message) {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  tm parts;
  gmtime_r(&ts.tv_sec, &parts);
  char stamp[40];
  size_t n = strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &parts);
  snprintf(stamp + n, sizeof(stamp) - n, ".%03ldZ", ts.tv_nsec / 1000000);
  std::string line = StrCat(stamp, " ", kLevelNames[static_cast<int>(level)], " ", message,
                                  "\n");
  // A failed or short write to stderr is not worth failing a request over.
  [[maybe_unused]] ssize_t ignored = ::write(STDERR_FILENO, line.data(), line.size());
}

bool ParseLogLevel(std::string_view text, LogLevel* out) {
  for (int i = 0; i < 4; ++i) {
    if (text == kLevelNames[i]) {
      *out = static_cast<LogLevel>(i);
      return true;
    }
  }
  if (text == "warning") {
    *out = LogLevel::kWarning;
    return true;
  }
  return false;
}

}  // namespace sepal
