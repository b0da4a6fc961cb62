// The process-wide memory budget (`memory:`; Envoy's overload manager is the model).
//
// One object per process, made by the Server. A thread of its own ("sepal-memory") samples
// the resident set every `interval` (25 ms: one pread of /proc/self/statm, ~2.5 µs; in a flood
// of 30000 new streams a 100 ms interval noticed the budget 40 MiB later, bench/memory.md) and:
//   - hands free heap memory back to the kernel when that pays (TrimPolicy: after a burst,
//     when the process is quiet; at once when over the budget, before anything is refused);
//   - above `high_bytes` (after that trim) turns Overloaded() on: callers refuse new streams
//     (RST_STREAM REFUSED_STREAM) until the RSS is below `low_bytes` (hysteresis);
//   - while still above `high_bytes`, asks for shedding at most once per second: the shed
//     epoch goes up and every OnShed() listener is called, so the workers end the calls that
//     buffer the most.
// Metrics (memory_metrics.h): sepal_memory_resident_bytes, sepal_memory_budget_bytes,
// sepal_memory_trims_total{reason}, sepal_memory_trimmed_bytes_total, sepal_overload_active,
// sepal_overload_transitions_total{state}, sepal_overload_shed_signals_total.
//
// Callers, on a worker thread:
//   if (budget->Overloaded()) { refuse the new stream; }           // one relaxed load
//   auto subscription = budget->OnShed([worker] {                   // at start, per worker
//     boost::asio::post(worker->io(), [worker] { worker->ShedLargestStreams(); });
//   });
// or poll: `if (budget->shed_epoch() != seen) { seen = ...; shed; }`.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "proxy/config/config.h"
#include "proxy/memory/trim_policy.h"
#include "proxy/metrics/metrics.h"

namespace sepal::memory {

inline constexpr std::chrono::milliseconds kDefaultSampleInterval{25};

struct BudgetSettings {
  uint64_t high_bytes = 0;  // 0 = off: never overloaded (the RSS is still sampled and trimmed)
  uint64_t low_bytes = 0;   // resume below this; 0 or >= high_bytes: three quarters of high
  std::chrono::milliseconds interval = kDefaultSampleInterval;

  bool operator==(const BudgetSettings&) const = default;
};

// The `memory:` section as the budget takes it.
BudgetSettings SettingsFrom(const config::MemoryConfig& memory,
                            std::chrono::milliseconds interval = kDefaultSampleInterval);

// Where the budget gets its numbers; the tests inject their own.
struct Probes {
  std::function<uint64_t()> resident_bytes;
  std::function<std::chrono::microseconds()> cpu_time;
  // Hands free memory back to the kernel; empty = never trim.
  std::function<bool()> release;
  std::function<std::chrono::steady_clock::time_point()> now;

  // The process's own: ResidentBytes, ProcessCpuTime, ReleaseFreeMemory, steady_clock.
  static Probes Process();
};

class MemoryBudget {
 public:
  using Clock = std::chrono::steady_clock;
  using ShedListener = std::function<void()>;
  static constexpr std::chrono::milliseconds kShedInterval{1000};

 private:
  struct Listeners {
    std::mutex mutex;
    std::vector<std::pair<uint64_t, ShedListener>> list;
    uint64_t next_id = 1;
  };

 public:
  // Unsubscribes when destroyed (or reset): once that returns, the listener is not running and
  // is never called again. May outlive the budget.
  class Subscription {
   public:
    Subscription() = default;
    Subscription(Subscription&&) noexcept = default;
    Subscription& operator=(Subscription&& other) noexcept;
    Subscription(const Subscription&) = delete;
    Subscription& operator=(const Subscription&) = delete;
    ~Subscription() { reset(); }
    void reset();

   private:
    friend class MemoryBudget;
    Subscription(std::weak_ptr<Listeners> listeners, uint64_t id)
        : listeners_(std::move(listeners)), id_(id) {}
    std::weak_ptr<Listeners> listeners_;
    uint64_t id_ = 0;
  };

  explicit MemoryBudget(BudgetSettings settings, Probes probes = Probes::Process(),
                        TrimSettings trim = {});
  ~MemoryBudget();
  MemoryBudget(const MemoryBudget&) = delete;
  MemoryBudget& operator=(const MemoryBudget&) = delete;

  // Starts the sampling thread; the first sample is taken before it returns.
  void Start();
  // Joins the thread; idempotent. Listeners are not called after it returns.
  void Stop();
  // New watermarks or interval (a reload); thread-safe, in force from the next sample (the
  // wait in progress keeps the old interval).
  void Update(const BudgetSettings& settings);
  BudgetSettings settings() const;

  // Over the budget: refuse new streams. Lock-free, any thread.
  bool Overloaded() const noexcept { return overloaded_.load(std::memory_order_relaxed); }
  // Goes up by one each time shedding is asked for.
  uint64_t shed_epoch() const noexcept { return shed_epoch_.load(std::memory_order_relaxed); }
  // The last sample (after a trim, if one ran).
  uint64_t resident_bytes() const noexcept { return resident_.load(std::memory_order_relaxed); }
  uint64_t trims() const noexcept { return trims_.load(std::memory_order_relaxed); }

  // `listener` runs on the sampling thread, under a lock: keep it short (post to your
  // io_context) and do not subscribe or unsubscribe from it.
  [[nodiscard]] Subscription OnShed(ShedListener listener);

  // One sample: what the thread does every interval. Tests call it directly (without Start).
  void SampleOnce();

 private:
  void Run();

  Probes probes_;
  TrimPolicy policy_;  // sampling thread (or the test calling SampleOnce) only
  metrics::Gauge resident_gauge_;
  metrics::Gauge overload_gauge_;

  mutable std::mutex mutex_;  // settings_, stop_
  std::condition_variable wake_;
  BudgetSettings settings_;
  bool stop_ = false;
  std::thread thread_;

  std::atomic<bool> overloaded_{false};
  std::atomic<uint64_t> shed_epoch_{0};
  std::atomic<uint64_t> resident_{0};
  std::atomic<uint64_t> trims_{0};
  bool shed_once_ = false;
  Clock::time_point last_shed_{};

  std::shared_ptr<Listeners> listeners_ = std::make_shared<Listeners>();
};

}  // namespace sepal::memory
