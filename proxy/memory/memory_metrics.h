// The memory budget's metric families (documented in docs/metrics.md). Process-wide values,
// written by the budget's sampling thread into the shared shard.
#pragma once

#include "proxy/metrics/metrics.h"

namespace sepal::memory {

struct Families {
  metrics::GaugeFamily* resident_bytes;      // none
  metrics::GaugeFamily* budget_bytes;        // watermark: high | low
  metrics::CounterFamily* trims;             // reason: quiet | overload | busy | retry
  metrics::CounterFamily* trimmed_bytes;     // none
  metrics::GaugeFamily* overload_active;     // none
  metrics::CounterFamily* overload_transitions;  // state: active | inactive
  metrics::CounterFamily* shed_signals;      // none
};

// Declares the families in the default registry on first use (thread-safe).
const Families& GetFamilies();

}  // namespace sepal::memory
