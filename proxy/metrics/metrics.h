// Counters, gauges and histograms sharded per worker, exposed in Prometheus text format 0.0.4.
//
// Families are declared once (Registry::Add*), label sets are resolved to handles off the hot
// path (Family::WithLabels, which takes a mutex), and handles are bumped from workers with one
// relaxed atomic on a cache line that worker alone writes. Serialize() sums the shards.
//
//   auto& requests = metrics::DefaultRegistry().AddCounter(
//       "sepal_grpc_requests_total", "gRPC requests.", {"listener", "grpc_code"});
//   metrics::Counter ok = requests.WithLabels({"fleet", "OK"});   // at config load
//   ok.Increment(worker_index);                                   // per request
#pragma once

#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

namespace sepal::metrics {

// Shard for threads that are not workers (admin, config reload, main). Any index at or past the
// shard count lands in this shared shard; every shard takes atomic read-modify-writes, so a
// shared shard costs cache-line traffic, never lost updates.
inline constexpr unsigned kSharedShard = std::numeric_limits<unsigned>::max();

// Cardinality guard: once a family holds this many series, WithLabels hands out one overflow
// series whose every label value is kOverflowLabelValue (a partial label set would pin the
// overflow on whichever listener/method happened to come first).
inline constexpr std::size_t kDefaultMaxSeries = 10000;
inline constexpr char kOverflowLabelValue[] = "other";

using LabelValues = std::vector<std::string>;

enum class MetricType { kCounter, kGauge, kHistogram };

// Buckets (seconds) for both sub-millisecond unary calls and hour-long streams.
std::vector<double> DefaultDurationBuckets();

class Registry;

// What a family is, without its series: for listing every family a process declares.
struct FamilyInfo {
  std::string name;
  std::string help;
  MetricType type;
  std::vector<std::string> label_names;
};

namespace internal {

inline constexpr std::size_t kCacheLine = 64;

// The slots of one series for a fixed number of shards; each shard's slots start on a cache
// line of their own. Slots hold uint64 counts or, for sums and gauges, double bit patterns.
struct Slab {
  static constexpr std::size_t kSlotsPerLine = kCacheLine / sizeof(std::atomic<uint64_t>);
  struct alignas(kCacheLine) Line {
    std::atomic<uint64_t> slots[kSlotsPerLine];
  };

  Slab(unsigned shard_count, std::size_t width);

  std::atomic<uint64_t>& Slot(unsigned shard, std::size_t i) const {
    if (shard >= shards) shard = shards - 1;
    return lines[shard * lines_per_shard + i / kSlotsPerLine].slots[i % kSlotsPerLine];
  }

  unsigned shards;
  std::size_t lines_per_shard;
  std::unique_ptr<Line[]> lines;
};

// Which slots a series has per shard; those from first_double on hold double bit patterns.
struct SlotLayout {
  std::size_t width;
  std::size_t first_double;
};

// One label set. Resharding publishes a new slab but keeps the old ones and sums them all, so a
// bump racing SetShardCount lands in a slab that is still counted instead of in freed memory.
class Series {
 public:
  Series(unsigned shards, SlotLayout layout);

  std::atomic<uint64_t>& Slot(unsigned shard, std::size_t i) const {
    return current_.load(std::memory_order_acquire)->Slot(shard, i);
  }

  // Scrape side; callers hold the family mutex.
  uint64_t SumCount(std::size_t i) const;
  double SumDouble(std::size_t i) const;
  void Reshard(unsigned shards);

 private:
  const SlotLayout layout_;
  std::vector<std::unique_ptr<Slab>> slabs_;
  std::atomic<const Slab*> current_;
};

inline void AddDouble(std::atomic<uint64_t>& slot, double delta) {
  uint64_t old = slot.load(std::memory_order_relaxed);
  while (!slot.compare_exchange_weak(old,
                                     std::bit_cast<uint64_t>(std::bit_cast<double>(old) + delta),
                                     std::memory_order_relaxed)) {
  }
}

// A metric name, its fixed label names and its series. Series are never removed, so handles
// stay valid as long as the registry.
class Family {
 public:
  Family(std::string name, std::string help, MetricType type, std::vector<std::string> label_names,
         std::vector<double> buckets, unsigned shards);
  virtual ~Family() = default;
  Family(const Family&) = delete;
  Family& operator=(const Family&) = delete;

  const std::string& name() const { return name_; }
  MetricType type() const { return type_; }
  // Lowers (or raises) the cardinality guard; meant for startup and tests.
  void set_max_series(std::size_t max_series);

 protected:
  Series* Resolve(const LabelValues& values);
  std::span<const double> buckets() const { return buckets_; }

 private:
  friend class sepal::metrics::Registry;
  void Reshard(unsigned shards);
  void Serialize(std::string& out) const;

  const std::string name_;
  const std::string help_;
  const MetricType type_;
  const std::vector<std::string> label_names_;
  const std::vector<double> buckets_;  // finite upper bounds, ascending; +Inf is implicit
  const std::vector<std::string> bucket_labels_;
  mutable std::mutex mutex_;
  std::map<LabelValues, std::unique_ptr<Series>> series_;
  std::size_t max_series_ = kDefaultMaxSeries;
  unsigned shards_;
};

}  // namespace internal

// Handles: cheap to copy, bumped from any thread. A default-constructed handle ignores bumps,
// so components can run without metrics wired in. `shard` is the worker index (0..N-1) or
// kSharedShard.
class Counter {
 public:
  Counter() = default;
  void Increment(unsigned shard, uint64_t n = 1) const {
    if (series_ != nullptr) series_->Slot(shard, 0).fetch_add(n, std::memory_order_relaxed);
  }

 private:
  friend class CounterFamily;
  explicit Counter(internal::Series* series) : series_(series) {}
  internal::Series* series_ = nullptr;
};

// The value is the sum over shards: workers Add(+1/-1) to their own shard. Set() is for
// process-wide gauges (build info, last reload time) and overwrites only the shared shard, so
// use either per-worker Add or Set on one gauge, not both.
class Gauge {
 public:
  Gauge() = default;
  void Add(unsigned shard, double delta) const {
    if (series_ != nullptr) internal::AddDouble(series_->Slot(shard, 0), delta);
  }
  void Set(double value) const {
    if (series_ != nullptr) {
      series_->Slot(kSharedShard, 0)
          .store(std::bit_cast<uint64_t>(value), std::memory_order_relaxed);
    }
  }

 private:
  friend class GaugeFamily;
  explicit Gauge(internal::Series* series) : series_(series) {}
  internal::Series* series_ = nullptr;
};

// Per shard: one count per bucket (the last is +Inf) then the sum. _count is the sum of the
// bucket counts, so it always equals the +Inf bucket in a scrape.
class Histogram {
 public:
  Histogram() = default;
  void Observe(unsigned shard, double value) const;

 private:
  friend class HistogramFamily;
  Histogram(internal::Series* series, std::span<const double> buckets)
      : series_(series), buckets_(buckets) {}
  internal::Series* series_ = nullptr;
  std::span<const double> buckets_;
};

// WithLabels takes values in label-name order; the same values always give the same series.
class CounterFamily : public internal::Family {
 public:
  using Family::Family;
  Counter WithLabels(const LabelValues& values) { return Counter(Resolve(values)); }
};

class GaugeFamily : public internal::Family {
 public:
  using Family::Family;
  Gauge WithLabels(const LabelValues& values) { return Gauge(Resolve(values)); }
};

class HistogramFamily : public internal::Family {
 public:
  using Family::Family;
  Histogram WithLabels(const LabelValues& values) { return Histogram(Resolve(values), buckets()); }
};

// All families of a process. Adding a name again with the same type, labels and buckets returns
// the existing family (several servers may live in one test process); any other mismatch, an
// invalid name, or a counter not ending in `_total` aborts: these are startup programming errors.
class Registry {
 public:
  Registry() = default;
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  CounterFamily& AddCounter(std::string name, std::string help,
                            std::vector<std::string> label_names);
  GaugeFamily& AddGauge(std::string name, std::string help, std::vector<std::string> label_names);
  HistogramFamily& AddHistogram(std::string name, std::string help,
                                std::vector<std::string> label_names,
                                std::vector<double> buckets = DefaultDurationBuckets());

  // `workers` shards plus the shared one. Call it before workers start; later calls are safe
  // (see Series) but leave the old slabs allocated.
  void SetShardCount(unsigned workers);
  unsigned shard_count() const;

  // Families sorted by name, series by label values; families without series are left out.
  std::string Serialize() const;
  // Every family added so far, sorted by name, series or not.
  std::vector<FamilyInfo> ListFamilies() const;

 private:
  internal::Family& Add(std::string name, std::string help, MetricType type,
                        std::vector<std::string> label_names, std::vector<double> buckets);

  mutable std::mutex mutex_;
  std::map<std::string, std::unique_ptr<internal::Family>, std::less<>> families_;
  unsigned shards_ = 1;
};

// The process-wide registry behind admin /metrics.
Registry& DefaultRegistry();

}  // namespace sepal::metrics
