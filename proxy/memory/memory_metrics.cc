// Memory metric family declarations.
#include "proxy/memory/memory_metrics.h"

namespace sepal::memory {

const Families& GetFamilies() {
  static const Families families = [] {
    metrics::Registry& r = metrics::DefaultRegistry();
    Families f{};
    f.resident_bytes = &r.AddGauge("sepal_memory_resident_bytes",
                                   "Resident set size of the process, sampled every interval.", {});
    f.budget_bytes = &r.AddGauge("sepal_memory_budget_bytes",
                                 "The memory budget's watermarks (memory.high_watermark_bytes, "
                                 "low_watermark_bytes); absent when the budget is off.",
                                 {"watermark"});
    f.trims = &r.AddCounter(
        "sepal_memory_trims_total",
        "Free heap memory handed back to the kernel, by reason (quiet, overload, busy, retry).",
        {"reason"});
    f.trimmed_bytes = &r.AddCounter("sepal_memory_trimmed_bytes_total",
                                    "Resident bytes the trims gave back.", {});
    f.overload_active = &r.AddGauge(
        "sepal_overload_active",
        "1 while over the memory budget (new streams refused), from above the high watermark "
        "until below the low one.",
        {});
    f.overload_transitions = &r.AddCounter(
        "sepal_overload_transitions_total",
        "Memory budget state changes, by the state entered (active, inactive).", {"state"});
    f.shed_signals = &r.AddCounter(
        "sepal_overload_shed_signals_total",
        "Times the memory budget, still above the high watermark after a trim, asked the "
        "workers to end the calls that buffer the most.",
        {});
    return f;
  }();
  return families;
}

}  // namespace sepal::memory
