// MemoryBudget: the sampling thread, hysteresis, trims and shed signals.
#include "proxy/memory/memory_budget.h"

#include <pthread.h>

#include <algorithm>
#include <string>

#include "proxy/common/log.h"
#include "proxy/memory/memory_metrics.h"
#include "proxy/memory/process_memory.h"

namespace sepal::memory {
namespace {

BudgetSettings Normalized(BudgetSettings settings) {
  if (settings.high_bytes != 0 &&
      (settings.low_bytes == 0 || settings.low_bytes >= settings.high_bytes)) {
    settings.low_bytes = settings.high_bytes / 4 * 3;
  }
  if (settings.interval <= std::chrono::milliseconds(0)) {
    settings.interval = kDefaultSampleInterval;
  }
  return settings;
}

uint64_t MiB(uint64_t bytes) { return bytes >> 20; }

void PublishWatermarks(const BudgetSettings& settings) {
  const Families& f = GetFamilies();
  f.budget_bytes->WithLabels({"high"}).Set(static_cast<double>(settings.high_bytes));
  f.budget_bytes->WithLabels({"low"}).Set(
      static_cast<double>(settings.high_bytes == 0 ? 0 : settings.low_bytes));
}

}  // namespace

BudgetSettings SettingsFrom(const config::MemoryConfig& memory,
                            std::chrono::milliseconds interval) {
  return Normalized({memory.high_watermark_bytes, memory.low_watermark_bytes, interval});
}

Probes Probes::Process() {
  return {ResidentBytes, ProcessCpuTime, ReleaseFreeMemory, [] { return std::chrono::steady_clock::now(); }};
}

MemoryBudget::Subscription& MemoryBudget::Subscription::operator=(Subscription&& other) noexcept {
  if (this != &other) {
    reset();
    listeners_ = std::move(other.listeners_);
    id_ = std::exchange(other.id_, 0);
  }
  return *this;
}

void MemoryBudget::Subscription::reset() {
  if (std::shared_ptr<Listeners> listeners = listeners_.lock()) {
    std::lock_guard lock(listeners->mutex);  // waits for a notification in progress
    std::erase_if(listeners->list, [this](const auto& entry) { return entry.first == id_; });
  }
  listeners_.reset();
  id_ = 0;
}

MemoryBudget::MemoryBudget(BudgetSettings settings, Probes probes, TrimSettings trim)
    : probes_(std::move(probes)), policy_(trim), settings_(Normalized(settings)) {
  if (!probes_.resident_bytes) probes_.resident_bytes = ResidentBytes;
  if (!probes_.cpu_time) probes_.cpu_time = ProcessCpuTime;
  if (!probes_.now) probes_.now = [] { return Clock::now(); };
  const Families& f = GetFamilies();
  resident_gauge_ = f.resident_bytes->WithLabels({});
  overload_gauge_ = f.overload_active->WithLabels({});
  overload_gauge_.Set(0);
  if (settings_.high_bytes != 0) PublishWatermarks(settings_);
}

MemoryBudget::~MemoryBudget() { Stop(); }

void MemoryBudget::Start() {
  if (thread_.joinable()) return;
  {
    std::lock_guard lock(mutex_);
    stop_ = false;
  }
  SampleOnce();
  thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "sepal-memory");
    Run();
  });
}

void MemoryBudget::Stop() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void MemoryBudget::Run() {
  std::unique_lock lock(mutex_);
  while (!stop_) {
    if (wake_.wait_for(lock, settings_.interval, [this] { return stop_; })) break;
    lock.unlock();
    SampleOnce();
    lock.lock();
  }
}

void MemoryBudget::Update(const BudgetSettings& settings) {
  BudgetSettings normalized = Normalized(settings);
  {
    std::lock_guard lock(mutex_);
    if (settings_ == normalized) return;
    settings_ = normalized;
  }
  PublishWatermarks(normalized);
}

BudgetSettings MemoryBudget::settings() const {
  std::lock_guard lock(mutex_);
  return settings_;
}

MemoryBudget::Subscription MemoryBudget::OnShed(ShedListener listener) {
  std::lock_guard lock(listeners_->mutex);
  uint64_t id = listeners_->next_id++;
  listeners_->list.emplace_back(id, std::move(listener));
  return Subscription(listeners_, id);
}

void MemoryBudget::SampleOnce() {
  const BudgetSettings settings = this->settings();
  const Families& f = GetFamilies();
  const Clock::time_point now = probes_.now();
  const bool enabled = settings.high_bytes != 0;
  const bool was_overloaded = overloaded_.load(std::memory_order_relaxed);
  uint64_t rss = probes_.resident_bytes();

  // Give back what the allocator holds free before judging: glibc keeps the pages a burst
  // freed, and refusing streams for memory nobody uses would be wrong.
  if (probes_.release) {
    bool over_budget =
        enabled && (rss > settings.high_bytes || (was_overloaded && rss >= settings.low_bytes));
    std::string_view reason = policy_.Decide(now, rss, probes_.cpu_time(), over_budget);
    if (!reason.empty()) {
      probes_.release();
      uint64_t after = probes_.resident_bytes();
      policy_.Trimmed(now, rss, after);
      trims_.fetch_add(1, std::memory_order_relaxed);
      f.trims->WithLabels({std::string(reason)}).Increment(metrics::kSharedShard);
      if (after < rss) {
        f.trimmed_bytes->WithLabels({}).Increment(metrics::kSharedShard, rss - after);
        LogDebug("memory: trim (", reason, "): ", MiB(rss), " -> ", MiB(after), " MiB resident");
      }
      rss = after;
    }
  }
  resident_.store(rss, std::memory_order_relaxed);
  resident_gauge_.Set(static_cast<double>(rss));

  bool overloaded = was_overloaded ? enabled && rss >= settings.low_bytes
                                   : enabled && rss > settings.high_bytes;
  if (overloaded != was_overloaded) {
    overloaded_.store(overloaded, std::memory_order_relaxed);
    overload_gauge_.Set(overloaded ? 1 : 0);
    f.overload_transitions->WithLabels({overloaded ? "active" : "inactive"})
        .Increment(metrics::kSharedShard);
    if (overloaded) {
      LogWarning("memory: ", MiB(rss), " MiB resident, over memory.high_watermark_bytes (",
                 MiB(settings.high_bytes), " MiB): refusing new streams until below ",
                 MiB(settings.low_bytes), " MiB");
    } else {
      LogWarning("memory: ", MiB(rss), " MiB resident, below memory.low_watermark_bytes (",
                 MiB(settings.low_bytes), " MiB): accepting new streams again");
    }
  }

  // Still above the high watermark (after the trim): end the calls that buffer the most, at
  // most once a second so that what they freed shows in the RSS (after the next trim) first.
  if (overloaded && rss > settings.high_bytes &&
      (!shed_once_ || now - last_shed_ >= kShedInterval)) {
    shed_once_ = true;
    last_shed_ = now;
    shed_epoch_.fetch_add(1, std::memory_order_relaxed);
    f.shed_signals->WithLabels({}).Increment(metrics::kSharedShard);
    std::lock_guard lock(listeners_->mutex);
    for (const auto& [id, listener] : listeners_->list) listener();
  }
}

}  // namespace sepal::memory
