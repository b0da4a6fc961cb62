// Registry bookkeeping (off the hot path) and the Prometheus text exposition.
#include "proxy/metrics/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <string_view>
#include <type_traits>
#include <utility>

namespace sepal::metrics {
namespace {

// Misdeclared metrics are programming errors found at startup; stop there, in release too.
void Check(bool ok, const std::string& what) {
  if (ok) return;
  std::fprintf(stderr, "sepal metrics: %s\n", what.c_str());
  std::abort();
}

// Metric names may hold ':', label names may not; neither may start with a digit.
bool IsValidName(std::string_view name, bool allow_colon) {
  for (std::size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    if (!letter && !(allow_colon && c == ':') && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return !name.empty();
}

// Integers print without exponent (promtool and humans read "1000000", not "1e+06"); moderate
// fractions print in fixed notation so `le` labels read "0.0001"; the rest shortest round-trip.
void AppendValue(std::string& out, double value) {
  if (std::isnan(value)) {
    out += "NaN";
    return;
  }
  if (std::isinf(value)) {
    out += value > 0 ? "+Inf" : "-Inf";
    return;
  }
  char buffer[64];
  char* end = buffer + sizeof(buffer);
  double magnitude = std::fabs(value);
  std::to_chars_result result;
  if (magnitude < 1e15 && value == std::trunc(value)) {
    result = std::to_chars(buffer, end, static_cast<int64_t>(value));
  } else if (magnitude >= 1e-6 && magnitude < 1e15) {
    result = std::to_chars(buffer, end, value, std::chars_format::fixed);
  } else {
    result = std::to_chars(buffer, end, value);
  }
  out.append(buffer, result.ptr);
}

void AppendCount(std::string& out, uint64_t value) {
  char buffer[24];
  auto result = std::to_chars(buffer, buffer + sizeof(buffer), value);
  out.append(buffer, result.ptr);
}

// HELP text escapes backslash and newline; label values also escape the double quote.
void AppendEscaped(std::string& out, std::string_view text, bool in_quotes) {
  for (char c : text) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (in_quotes && c == '"') {
      out += "\\\"";
    } else {
      out += c;
    }
  }
}

// `name{a="x",le="0.1"} ` — the sample name, its labels and the separating space.
void AppendSampleName(std::string& out, std::string_view name, std::string_view suffix,
                      const std::vector<std::string>& label_names, const LabelValues& values,
                      const std::string* le) {
  out.append(name).append(suffix);
  if (label_names.empty() && le == nullptr) {
    out += ' ';
    return;
  }
  out += '{';
  for (std::size_t i = 0; i < label_names.size(); ++i) {
    if (i > 0) out += ',';
    out.append(label_names[i]).append("=\"");
    AppendEscaped(out, values[i], true);
    out += '"';
  }
  if (le != nullptr) {
    if (!label_names.empty()) out += ',';
    out.append("le=\"").append(*le).append("\"");
  }
  out += "} ";
}

std::vector<std::string> BucketLabels(const std::vector<double>& buckets) {
  std::vector<std::string> labels;
  for (double bound : buckets) AppendValue(labels.emplace_back(), bound);
  labels.emplace_back("+Inf");
  return labels;
}

// Slots per shard: a counter or gauge value; or a histogram's buckets, +Inf, then the sum.
internal::SlotLayout LayoutOf(MetricType type, std::size_t bucket_count) {
  if (type == MetricType::kHistogram) return {bucket_count + 2, bucket_count + 1};
  return {1, type == MetricType::kGauge ? 0u : 1u};
}

const char* TypeName(MetricType type) {
  switch (type) {
    case MetricType::kCounter:
      return "counter";
    case MetricType::kGauge:
      return "gauge";
    case MetricType::kHistogram:
      return "histogram";
  }
  return "untyped";
}

}  // namespace

std::vector<double> DefaultDurationBuckets() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
          0.5,    1,       2.5,    5,     10,     30,    60,   300,   900,  3600};
}

namespace internal {

Slab::Slab(unsigned shard_count, std::size_t width)
    : shards(shard_count),
      lines_per_shard((width + kSlotsPerLine - 1) / kSlotsPerLine),
      lines(std::make_unique<Line[]>(shards * lines_per_shard)) {}

Series::Series(unsigned shards, SlotLayout layout) : layout_(layout) {
  slabs_.push_back(std::make_unique<Slab>(shards, layout.width));
  current_.store(slabs_.back().get(), std::memory_order_release);
}

uint64_t Series::SumCount(std::size_t i) const {
  uint64_t total = 0;
  for (const auto& slab : slabs_) {
    for (unsigned s = 0; s < slab->shards; ++s) {
      total += slab->Slot(s, i).load(std::memory_order_relaxed);
    }
  }
  return total;
}

double Series::SumDouble(std::size_t i) const {
  double total = 0;
  for (const auto& slab : slabs_) {
    for (unsigned s = 0; s < slab->shards; ++s) {
      total += std::bit_cast<double>(slab->Slot(s, i).load(std::memory_order_relaxed));
    }
  }
  return total;
}

// Old values move into the new slab's shared shard (so a later Gauge::Set replaces them rather
// than adding to a stale copy); each move is an atomic exchange, so racing bumps are kept.
void Series::Reshard(unsigned shards) {
  const Slab& old = *current_.load(std::memory_order_relaxed);
  if (old.shards == shards) return;
  auto& fresh = *slabs_.emplace_back(std::make_unique<Slab>(shards, layout_.width));
  for (unsigned s = 0; s < old.shards; ++s) {
    for (std::size_t i = 0; i < layout_.width; ++i) {
      uint64_t moved = old.Slot(s, i).exchange(0, std::memory_order_relaxed);
      if (i >= layout_.first_double) {
        AddDouble(fresh.Slot(kSharedShard, i), std::bit_cast<double>(moved));
      } else {
        fresh.Slot(kSharedShard, i).fetch_add(moved, std::memory_order_relaxed);
      }
    }
  }
  current_.store(&fresh, std::memory_order_release);
}

Family::Family(std::string name, std::string help, MetricType type,
               std::vector<std::string> label_names, std::vector<double> buckets, unsigned shards)
    : name_(std::move(name)),
      help_(std::move(help)),
      type_(type),
      label_names_(std::move(label_names)),
      buckets_(std::move(buckets)),
      bucket_labels_(BucketLabels(buckets_)),
      shards_(shards) {
  // An unlabelled metric has exactly one series; show it (at zero) from the start.
  if (label_names_.empty()) Resolve({});
}

void Family::set_max_series(std::size_t max_series) {
  std::lock_guard lock(mutex_);
  max_series_ = max_series;
}

Series* Family::Resolve(const LabelValues& values) {
  Check(values.size() == label_names_.size(),
        name_ + ": WithLabels got a wrong number of label values");
  std::lock_guard lock(mutex_);
  auto it = series_.find(values);
  if (it != series_.end()) return it->second.get();
  LabelValues key =
      series_.size() < max_series_ ? values : LabelValues(values.size(), kOverflowLabelValue);
  auto& series = series_[std::move(key)];
  if (series == nullptr) {
    series = std::make_unique<Series>(shards_, LayoutOf(type_, buckets_.size()));
  }
  return series.get();
}

void Family::Reshard(unsigned shards) {
  std::lock_guard lock(mutex_);
  shards_ = shards;
  for (auto& [values, series] : series_) series->Reshard(shards);
}

void Family::Serialize(std::string& out) const {
  std::lock_guard lock(mutex_);
  if (series_.empty()) return;
  out.append("# HELP ").append(name_).append(" ");
  AppendEscaped(out, help_, false);
  out.append("\n# TYPE ").append(name_).append(" ").append(TypeName(type_)).append("\n");
  for (const auto& [values, series] : series_) {
    switch (type_) {
      case MetricType::kCounter:
        AppendSampleName(out, name_, "", label_names_, values, nullptr);
        AppendCount(out, series->SumCount(0));
        break;
      case MetricType::kGauge:
        AppendSampleName(out, name_, "", label_names_, values, nullptr);
        AppendValue(out, series->SumDouble(0));
        break;
      case MetricType::kHistogram: {
        uint64_t cumulative = 0;
        for (std::size_t b = 0; b < bucket_labels_.size(); ++b) {
          cumulative += series->SumCount(b);
          AppendSampleName(out, name_, "_bucket", label_names_, values, &bucket_labels_[b]);
          AppendCount(out, cumulative);
          out += '\n';
        }
        AppendSampleName(out, name_, "_sum", label_names_, values, nullptr);
        AppendValue(out, series->SumDouble(bucket_labels_.size()));
        out += '\n';
        AppendSampleName(out, name_, "_count", label_names_, values, nullptr);
        AppendCount(out, cumulative);
        break;
      }
    }
    out += '\n';
  }
}

}  // namespace internal

void Histogram::Observe(unsigned shard, double value) const {
  if (series_ == nullptr) return;
  // NaN compares false with every bound; like other clients, count it under +Inf only.
  std::size_t bucket =
      std::isnan(value)
          ? buckets_.size()
          : std::lower_bound(buckets_.begin(), buckets_.end(), value) - buckets_.begin();
  series_->Slot(shard, bucket).fetch_add(1, std::memory_order_relaxed);
  internal::AddDouble(series_->Slot(shard, buckets_.size() + 1), value);
}

CounterFamily& Registry::AddCounter(std::string name, std::string help,
                                    std::vector<std::string> label_names) {
  Check(name.ends_with("_total"), name + ": counter names end in _total");
  return static_cast<CounterFamily&>(
      Add(std::move(name), std::move(help), MetricType::kCounter, std::move(label_names), {}));
}

GaugeFamily& Registry::AddGauge(std::string name, std::string help,
                                std::vector<std::string> label_names) {
  return static_cast<GaugeFamily&>(
      Add(std::move(name), std::move(help), MetricType::kGauge, std::move(label_names), {}));
}

HistogramFamily& Registry::AddHistogram(std::string name, std::string help,
                                        std::vector<std::string> label_names,
                                        std::vector<double> buckets) {
  if (!buckets.empty() && std::isinf(buckets.back()) && buckets.back() > 0) buckets.pop_back();
  for (std::size_t i = 0; i < buckets.size(); ++i) {
    Check(std::isfinite(buckets[i]) && (i == 0 || buckets[i - 1] < buckets[i]),
          name + ": histogram buckets must be finite and strictly ascending");
  }
  for (const auto& label : label_names) Check(label != "le", name + ": `le` is reserved");
  return static_cast<HistogramFamily&>(Add(std::move(name), std::move(help), MetricType::kHistogram,
                                           std::move(label_names), std::move(buckets)));
}

internal::Family& Registry::Add(std::string name, std::string help, MetricType type,
                                std::vector<std::string> label_names, std::vector<double> buckets) {
  Check(IsValidName(name, true), "invalid metric name: " + name);
  std::set<std::string_view> seen;
  for (const auto& label : label_names) {
    Check(IsValidName(label, false) && !label.starts_with("__") && seen.insert(label).second,
          name + ": invalid or repeated label name: " + label);
  }
  std::lock_guard lock(mutex_);
  if (auto it = families_.find(name); it != families_.end()) {
    internal::Family& family = *it->second;
    Check(family.type_ == type && family.label_names_ == label_names && family.buckets_ == buckets,
          name + ": added again with another type, labels or buckets");
    return family;
  }
  auto make = [&]<typename T>(std::type_identity<T>) -> std::unique_ptr<internal::Family> {
    return std::make_unique<T>(std::move(name), std::move(help), type, std::move(label_names),
                               std::move(buckets), shards_);
  };
  std::unique_ptr<internal::Family> family =
      type == MetricType::kCounter ? make(std::type_identity<CounterFamily>{})
      : type == MetricType::kGauge ? make(std::type_identity<GaugeFamily>{})
                                   : make(std::type_identity<HistogramFamily>{});
  internal::Family& result = *family;
  families_.emplace(result.name(), std::move(family));
  return result;
}

void Registry::SetShardCount(unsigned workers) {
  std::lock_guard lock(mutex_);
  if (shards_ == workers + 1) return;
  shards_ = workers + 1;
  for (auto& [name, family] : families_) family->Reshard(shards_);
}

unsigned Registry::shard_count() const {
  std::lock_guard lock(mutex_);
  return shards_;
}

std::string Registry::Serialize() const {
  std::lock_guard lock(mutex_);
  std::string out;
  for (const auto& [name, family] : families_) family->Serialize(out);
  return out;
}

std::vector<FamilyInfo> Registry::ListFamilies() const {
  std::lock_guard lock(mutex_);
  std::vector<FamilyInfo> out;
  out.reserve(families_.size());
  for (const auto& [name, family] : families_) {
    out.push_back({family->name_, family->help_, family->type_, family->label_names_});
  }
  return out;
}

Registry& DefaultRegistry() {
  static Registry registry;
  return registry;
}

}  // namespace sepal::metrics
