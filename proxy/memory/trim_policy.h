// When to hand free heap memory back to the kernel. glibc keeps what a burst freed (3000
// short connections: 8 → 85 MiB, and it stays there; bench/memory.md); malloc_trim(0) gives it
// back but walks every free chunk under the arena locks, so it runs when it pays:
//   - the RSS grew by more than `slack_bytes` since the last trim and the process is quiet:
//     under `quiet_cpu` cores over the last `quiet_window` (a burst is over; trimming in the
//     middle of one would only be faulted back in);
//   - it is over its memory budget (trim before refusing or shedding anything);
//   - it grew and has not been quiet for `busy_interval` (steady load: once in a while);
//   - it is quiet but still more than `slack_bytes` above the lowest RSS seen (the floor):
//     a trim in a lull of a burst found the memory in use, and the RSS cannot show that it
//     was freed since. Retried with a back-off, doubled after every trim that gave back less
//     than `slack_bytes` / 2, up to `max_retry_interval` (so memory a burst leaves behind goes
//     back within that long of the end), and reset by a trim that gives back more.
// At most one trim per `min_interval`. Pure logic (time, RSS and CPU come in), so the tests
// drive it without a clock or a heap.
#pragma once

#include <chrono>
#include <cstdint>
#include <string_view>

namespace sepal::memory {

struct TrimSettings {
  std::chrono::milliseconds min_interval{1000};
  std::chrono::milliseconds quiet_window{500};
  double quiet_cpu = 0.2;  // cores
  uint64_t slack_bytes = uint64_t{4} << 20;
  std::chrono::milliseconds busy_interval{30000};
  std::chrono::milliseconds max_retry_interval{4000};
};

// Why a trim ran: the `reason` label of sepal_memory_trims_total.
namespace trim_reason {
inline constexpr std::string_view kQuiet = "quiet";
inline constexpr std::string_view kOverload = "overload";
inline constexpr std::string_view kBusy = "busy";
inline constexpr std::string_view kRetry = "retry";
}  // namespace trim_reason

class TrimPolicy {
 public:
  using Clock = std::chrono::steady_clock;

  explicit TrimPolicy(TrimSettings settings = {})
      : settings_(settings), retry_interval_(settings.min_interval) {}

  // One sample: the time, the RSS, the process's CPU time so far, and whether the budget is
  // exceeded (RSS over the high watermark, or overloaded and not yet below the low one).
  // Returns the reason to trim now, or an empty view.
  std::string_view Decide(Clock::time_point now, uint64_t resident_bytes,
                          std::chrono::microseconds cpu, bool over_budget);
  // The trim ran: the RSS sampled just before and just after it.
  void Trimmed(Clock::time_point now, uint64_t resident_before, uint64_t resident_after);

  bool quiet() const { return quiet_; }
  uint64_t baseline() const { return baseline_; }
  uint64_t floor() const { return floor_; }
  std::chrono::milliseconds retry_interval() const { return retry_interval_; }

 private:
  void UpdateQuiet(Clock::time_point now, std::chrono::microseconds cpu);

  TrimSettings settings_;
  bool started_ = false;
  uint64_t baseline_ = 0;  // RSS after the last trim (or the first sample), lowered by drops
  uint64_t floor_ = 0;     // the lowest RSS seen
  Clock::time_point last_trim_{};
  bool trimmed_once_ = false;
  std::chrono::milliseconds retry_interval_;
  // CPU over the window that ends now, measured window by window.
  Clock::time_point window_start_{};
  std::chrono::microseconds window_cpu_start_{0};
  bool quiet_ = false;
  // Since when the RSS has been above baseline + slack without a trim.
  Clock::time_point grown_since_{};
  bool grown_ = false;
};

}  // namespace sepal::memory
