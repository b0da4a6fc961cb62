// The memory budget with injected probes (no real RSS): hysteresis between the watermarks,
// trims before judging, shed signals and their pace, metrics, reloads; the trim policy on its
// own; and the real probes once, for sanity.
#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "proxy/buffer/chunk_buffer.h"
#include "proxy/memory/memory_budget.h"
#include "proxy/memory/memory_metrics.h"
#include "proxy/memory/process_memory.h"
#include "proxy/memory/trim_policy.h"
#include "proxy/metrics/metrics.h"

namespace sepal::memory {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::microseconds;
using std::chrono::milliseconds;
constexpr uint64_t kMiB = uint64_t{1} << 20;

// A fake process: its RSS, its CPU time and a clock the test moves; a trim brings the RSS down
// to `in_use` (what the heap really holds).
struct FakeProcess {
  uint64_t rss = 10 * kMiB;
  uint64_t in_use = 10 * kMiB;
  microseconds cpu{0};
  Clock::time_point now = Clock::time_point() + std::chrono::hours(1);
  int releases = 0;

  Probes probes(bool can_release = true) {
    Probes p;
    p.resident_bytes = [this] { return rss; };
    p.cpu_time = [this] { return cpu; };
    if (can_release) {
      p.release = [this] {
        ++releases;
        bool released = rss > in_use;
        rss = in_use;
        return released;
      };
    }
    p.now = [this] { return now; };
    return p;
  }
  // `ms` of wall time at `cores` of CPU.
  void Advance(milliseconds ms, double cores = 0) {
    now += ms;
    cpu += microseconds(static_cast<int64_t>(ms.count() * 1000 * cores));
  }
};

// The value of a series in the default registry's text ("" if absent).
std::string MetricValue(const std::string& series) {
  std::string text = metrics::DefaultRegistry().Serialize();
  std::string prefix = "\n" + series + " ";
  size_t at = text.find(prefix);
  if (at == std::string::npos) return "";
  at += prefix.size();
  return text.substr(at, text.find('\n', at) - at);
}

double Counter(const std::string& series) {
  std::string value = MetricValue(series);
  return value.empty() ? 0 : std::stod(value);
}

BudgetSettings Budget(uint64_t high_mib, uint64_t low_mib) {
  return {high_mib * kMiB, low_mib * kMiB, milliseconds(100)};
}

TEST(MemoryBudgetTest, OffByDefaultNeverOverloaded) {
  FakeProcess process;
  MemoryBudget budget(BudgetSettings{}, process.probes(false));
  process.rss = 100000 * kMiB;
  budget.SampleOnce();
  EXPECT_FALSE(budget.Overloaded());
  EXPECT_EQ(budget.resident_bytes(), 100000 * kMiB);
  EXPECT_EQ(budget.shed_epoch(), 0u);
}

TEST(MemoryBudgetTest, HysteresisBetweenTheWatermarks) {
  FakeProcess process;
  MemoryBudget budget(Budget(100, 80), process.probes(/*can_release=*/false));
  double entered = Counter("sepal_overload_transitions_total{state=\"active\"}");
  double left = Counter("sepal_overload_transitions_total{state=\"inactive\"}");
  auto at = [&](uint64_t mib) {
    process.rss = mib * kMiB;
    process.Advance(milliseconds(100));
    budget.SampleOnce();
    return budget.Overloaded();
  };
  EXPECT_FALSE(at(50));
  EXPECT_FALSE(at(100));  // at the watermark is not above it
  EXPECT_EQ(MetricValue("sepal_overload_active"), "0");
  EXPECT_TRUE(at(101));
  EXPECT_EQ(MetricValue("sepal_overload_active"), "1");
  EXPECT_TRUE(at(90));   // between the watermarks: stays on
  EXPECT_TRUE(at(80));   // at the low watermark: still on
  EXPECT_FALSE(at(79));  // below it: off
  EXPECT_EQ(MetricValue("sepal_overload_active"), "0");
  EXPECT_FALSE(at(95));  // between them from below: stays off
  EXPECT_TRUE(at(150));
  EXPECT_FALSE(at(10));
  EXPECT_EQ(Counter("sepal_overload_transitions_total{state=\"active\"}") - entered, 2);
  EXPECT_EQ(Counter("sepal_overload_transitions_total{state=\"inactive\"}") - left, 2);
  EXPECT_EQ(MetricValue("sepal_memory_resident_bytes"), std::to_string(10 * kMiB));
  EXPECT_EQ(MetricValue("sepal_memory_budget_bytes{watermark=\"high\"}"),
            std::to_string(100 * kMiB));
  EXPECT_EQ(MetricValue("sepal_memory_budget_bytes{watermark=\"low\"}"),
            std::to_string(80 * kMiB));
}

TEST(MemoryBudgetTest, LowWatermarkDefaultsToThreeQuartersOfHigh) {
  FakeProcess process;
  MemoryBudget budget(Budget(100, 0), process.probes(false));
  EXPECT_EQ(budget.settings().low_bytes, 75 * kMiB);
  MemoryBudget inverted(Budget(100, 200), process.probes(false));
  EXPECT_EQ(inverted.settings().low_bytes, 75 * kMiB);
  config::MemoryConfig memory;
  memory.high_watermark_bytes = 4000;
  memory.low_watermark_bytes = 3000;
  BudgetSettings mapped = SettingsFrom(memory);
  EXPECT_EQ(mapped.high_bytes, 4000u);
  EXPECT_EQ(mapped.low_bytes, 3000u);
  EXPECT_EQ(SettingsFrom(config::MemoryConfig{0, 0}).high_bytes, 0u);
}

TEST(MemoryBudgetTest, TrimsBeforeJudgingSoFreeMemoryRefusesNothing) {
  // 200 MiB resident, but the heap holds only 50: a trim, no overload, no shedding.
  FakeProcess process;
  MemoryBudget budget(Budget(100, 80), process.probes());
  budget.SampleOnce();
  double trims = Counter("sepal_memory_trims_total{reason=\"overload\"}");
  double trimmed = Counter("sepal_memory_trimmed_bytes_total");
  process.rss = 200 * kMiB;
  process.in_use = 50 * kMiB;
  process.Advance(milliseconds(100), 1.0);
  budget.SampleOnce();
  EXPECT_EQ(process.releases, 1);
  EXPECT_FALSE(budget.Overloaded());
  EXPECT_EQ(budget.resident_bytes(), 50 * kMiB);
  EXPECT_EQ(budget.shed_epoch(), 0u);
  EXPECT_EQ(Counter("sepal_memory_trims_total{reason=\"overload\"}") - trims, 1);
  EXPECT_EQ(Counter("sepal_memory_trimmed_bytes_total") - trimmed, 150.0 * kMiB);
}

TEST(MemoryBudgetTest, ShedsWhileStillAboveHighAtMostOnceASecond) {
  FakeProcess process;
  MemoryBudget budget(Budget(100, 80), process.probes());
  std::atomic<int> called{0};
  MemoryBudget::Subscription a = budget.OnShed([&] { ++called; });
  MemoryBudget::Subscription b = budget.OnShed([&] { ++called; });
  budget.SampleOnce();
  double signals = Counter("sepal_overload_shed_signals_total");

  process.rss = process.in_use = 150 * kMiB;  // really in use: the trim does not help
  process.Advance(milliseconds(100), 1.0);
  budget.SampleOnce();
  EXPECT_TRUE(budget.Overloaded());
  EXPECT_EQ(budget.shed_epoch(), 1u);
  EXPECT_EQ(called, 2);  // both listeners
  for (int i = 0; i < 9; ++i) {  // the next 900 ms: no second signal
    process.Advance(milliseconds(100), 1.0);
    budget.SampleOnce();
  }
  EXPECT_EQ(budget.shed_epoch(), 1u);
  process.Advance(milliseconds(100), 1.0);
  budget.SampleOnce();
  EXPECT_EQ(budget.shed_epoch(), 2u);
  EXPECT_EQ(called, 4);

  b.reset();  // unsubscribed: not called again
  process.rss = process.in_use = 90 * kMiB;  // between the watermarks: refusing, not shedding
  for (int i = 0; i < 20; ++i) {
    process.Advance(milliseconds(100), 1.0);
    budget.SampleOnce();
  }
  EXPECT_TRUE(budget.Overloaded());
  EXPECT_EQ(budget.shed_epoch(), 2u);
  process.rss = process.in_use = 120 * kMiB;
  process.Advance(milliseconds(100), 1.0);
  budget.SampleOnce();
  EXPECT_EQ(budget.shed_epoch(), 3u);
  EXPECT_EQ(called, 5);
  EXPECT_EQ(Counter("sepal_overload_shed_signals_total") - signals, 3);
  // While over the budget a trim runs every second (the shed calls' memory shows only after
  // one), never more often.
  EXPECT_EQ(process.releases, 4);
}

TEST(MemoryBudgetTest, SheddingThenTrimEndsTheOverload) {
  FakeProcess process;
  MemoryBudget budget(Budget(100, 80), process.probes());
  // The shed listener frees memory in the heap; the next trim returns it.
  MemoryBudget::Subscription s = budget.OnShed([&] { process.in_use = 60 * kMiB; });
  budget.SampleOnce();
  process.rss = process.in_use = 150 * kMiB;
  process.Advance(milliseconds(100), 1.0);
  budget.SampleOnce();
  EXPECT_TRUE(budget.Overloaded());
  EXPECT_EQ(process.rss, 150 * kMiB);  // freed, not yet returned
  for (int i = 0; i < 10 && budget.Overloaded(); ++i) {
    process.Advance(milliseconds(100), 1.0);
    budget.SampleOnce();
  }
  EXPECT_FALSE(budget.Overloaded());
  EXPECT_EQ(budget.resident_bytes(), 60 * kMiB);
  EXPECT_EQ(budget.shed_epoch(), 1u);
}

TEST(MemoryBudgetTest, SubscriptionsMoveAndMayOutliveTheBudget) {
  MemoryBudget::Subscription kept;
  int called = 0;
  {
    FakeProcess process;
    MemoryBudget budget(Budget(100, 80), process.probes(false));
    MemoryBudget::Subscription first = budget.OnShed([&] { ++called; });
    kept = std::move(first);
    first.reset();  // moved from: unsubscribes nothing
    budget.SampleOnce();
    process.rss = 200 * kMiB;
    process.Advance(milliseconds(100));
    budget.SampleOnce();
    EXPECT_EQ(called, 1);
  }
  kept.reset();  // the budget is gone: nothing to do, no crash
}

TEST(MemoryBudgetTest, UpdateChangesTheWatermarks) {
  FakeProcess process;
  MemoryBudget budget(Budget(100, 80), process.probes(false));
  process.rss = 150 * kMiB;
  budget.SampleOnce();
  EXPECT_TRUE(budget.Overloaded());
  budget.Update(Budget(200, 160));  // a reload raised the budget
  budget.SampleOnce();
  EXPECT_FALSE(budget.Overloaded());
  budget.Update(BudgetSettings{});  // and switched it off
  process.rss = 10000 * kMiB;
  budget.SampleOnce();
  EXPECT_FALSE(budget.Overloaded());
  EXPECT_EQ(MetricValue("sepal_memory_budget_bytes{watermark=\"high\"}"), "0");
}

TEST(MemoryBudgetTest, TheThreadSamplesAndStops) {
  std::atomic<uint64_t> rss{10 * kMiB};
  std::atomic<int> samples{0};
  Probes probes;
  probes.resident_bytes = [&] {
    ++samples;
    return rss.load();
  };
  probes.cpu_time = [] { return microseconds(0); };
  MemoryBudget budget({100 * kMiB, 80 * kMiB, milliseconds(5)}, probes);
  std::atomic<int> shed{0};
  MemoryBudget::Subscription s = budget.OnShed([&] { ++shed; });
  budget.Start();
  EXPECT_GE(samples, 1);  // the first sample before Start returns
  rss = 500 * kMiB;
  for (int i = 0; i < 400 && !budget.Overloaded(); ++i) {
    std::this_thread::sleep_for(milliseconds(5));
  }
  EXPECT_TRUE(budget.Overloaded());
  for (int i = 0; i < 400 && shed == 0; ++i) std::this_thread::sleep_for(milliseconds(5));
  EXPECT_GE(shed, 1);
  budget.Stop();
  int after_stop = samples;
  std::this_thread::sleep_for(milliseconds(30));
  EXPECT_EQ(samples, after_stop);
  budget.Stop();  // idempotent
}

// ---------------------------------------------------------------- TrimPolicy alone

struct PolicyRun {
  TrimPolicy policy;
  FakeProcess process;
  explicit PolicyRun(TrimSettings settings = {}) : policy(settings) {
    EXPECT_EQ(policy.Decide(process.now, process.rss, process.cpu, false), "");
  }
  // Advances and decides; a trim brings the RSS to in_use.
  std::string Step(milliseconds ms, double cores, bool over_budget = false) {
    process.Advance(ms, cores);
    std::string_view reason = policy.Decide(process.now, process.rss, process.cpu, over_budget);
    if (!reason.empty()) {
      uint64_t before = process.rss;
      process.rss = process.in_use;
      policy.Trimmed(process.now, before, process.rss);
    }
    return std::string(reason);
  }
};

TEST(TrimPolicyTest, TrimsOnceTheBurstIsOverNotDuringIt) {
  PolicyRun run;
  // A burst: the RSS climbs to 90 MiB at a full core for 5 s; no trim while busy.
  for (int i = 0; i < 50; ++i) {
    run.process.rss = run.process.in_use = (10 + i * 2) * kMiB;
    EXPECT_EQ(run.Step(milliseconds(100), 1.0), "") << i;
  }
  // Over: the heap holds 10 MiB again, the RSS stays (glibc). Quiet within a window or two.
  run.process.in_use = 10 * kMiB;
  std::string reason;
  int steps = 0;
  while (reason.empty() && steps < 50) {
    reason = run.Step(milliseconds(100), 0.01);
    ++steps;
  }
  EXPECT_EQ(reason, "quiet");
  EXPECT_LE(steps, 10);  // within a second of the end
  EXPECT_EQ(run.process.rss, 10 * kMiB);
  // Idle afterwards: nothing more to do, no more trims.
  for (int i = 0; i < 100; ++i) EXPECT_EQ(run.Step(milliseconds(100), 0.0), "");
}

TEST(TrimPolicyTest, SmallGrowthIsNotWorthATrim) {
  PolicyRun run;
  run.process.rss = 10 * kMiB + (3 * kMiB);  // under the 4 MiB slack
  for (int i = 0; i < 100; ++i) EXPECT_EQ(run.Step(milliseconds(100), 0.0), "");
}

TEST(TrimPolicyTest, UnproductiveTrimsBackOffToTheRetryInterval) {
  PolicyRun run;
  run.process.rss = run.process.in_use = 40 * kMiB;  // really in use, 30 MiB over the floor
  std::vector<std::pair<int, std::string>> trims;
  for (int i = 1; i <= 600; ++i) {  // 60 s, quiet
    std::string reason = run.Step(milliseconds(100), 0.0);
    if (!reason.empty()) trims.emplace_back(i, reason);
  }
  ASSERT_GE(trims.size(), 4u);
  // Quiet from the first half-second window on; then retries 2 s, 4 s, 4 s, ... apart.
  EXPECT_EQ(trims[0], (std::pair<int, std::string>{5, "quiet"}));
  EXPECT_EQ(trims[1], (std::pair<int, std::string>{25, "retry"}));
  EXPECT_EQ(trims[2], (std::pair<int, std::string>{65, "retry"}));
  for (size_t i = 3; i < trims.size(); ++i) EXPECT_EQ(trims[i].first - trims[i - 1].first, 40);
  EXPECT_EQ(trims.size(), 16u);  // one every 4 s at most: the cost of holding memory in a lull
  EXPECT_EQ(run.policy.baseline(), 40 * kMiB);
  EXPECT_EQ(run.policy.floor(), 10 * kMiB);
}

TEST(TrimPolicyTest, MemoryFreedAfterALullIsReturnedWithinTheRetryInterval) {
  PolicyRun run;
  // A burst that pauses: 90 MiB in use, the process waits (quiet) on a slow upstream, so a
  // trim runs and finds nothing to give back...
  run.process.rss = run.process.in_use = 90 * kMiB;
  for (int i = 0; i < 10; ++i) run.Step(milliseconds(100), 1.0);
  std::string lull;
  for (int i = 0; i < 20 && lull.empty(); ++i) lull = run.Step(milliseconds(100), 0.0);
  EXPECT_EQ(lull, "quiet");
  EXPECT_EQ(run.process.rss, 90 * kMiB);
  // ... it goes on for 10 s, busy, then ends: the heap holds 10 MiB, the RSS shows 90.
  for (int i = 0; i < 100; ++i) EXPECT_EQ(run.Step(milliseconds(100), 1.0), "");
  run.process.in_use = 10 * kMiB;
  std::string reason;
  int steps = 0;
  while (reason.empty() && steps < 100) {
    reason = run.Step(milliseconds(100), 0.0);
    ++steps;
  }
  EXPECT_EQ(reason, "retry");
  EXPECT_LE(steps, 45);  // the retry interval (2 s here, at most 4 s) plus a quiet window
  EXPECT_EQ(run.process.rss, 10 * kMiB);
  EXPECT_EQ(run.policy.retry_interval(), milliseconds(1000));  // productive: reset
}

TEST(TrimPolicyTest, SteadyLoadTrimsOnlyEveryBusyInterval) {
  TrimSettings settings;
  settings.busy_interval = milliseconds(5000);
  PolicyRun run(settings);
  run.process.rss = 60 * kMiB;
  run.process.in_use = 30 * kMiB;
  std::vector<int> at;
  for (int i = 1; i <= 120; ++i) {  // 12 s at a full core
    if (!run.Step(milliseconds(100), 1.0).empty()) at.push_back(i);
    if (!at.empty() && i == at.back()) run.process.rss = 60 * kMiB;  // grows back
  }
  EXPECT_EQ(at, (std::vector<int>{51, 102}));  // 5 s after each growth was first seen
}

TEST(TrimPolicyTest, OverBudgetTrimsEverySecondWhateverElse) {
  PolicyRun run;
  std::vector<int> at;
  for (int i = 1; i <= 30; ++i) {
    if (!run.Step(milliseconds(100), 1.0, /*over_budget=*/true).empty()) at.push_back(i);
  }
  EXPECT_EQ(at, (std::vector<int>{1, 11, 21}));
}

TEST(TrimPolicyTest, RssFallingOnItsOwnLowersTheBaseline) {
  PolicyRun run;
  run.process.rss = run.process.in_use = 6 * kMiB;
  EXPECT_EQ(run.Step(milliseconds(100), 0.0), "");
  EXPECT_EQ(run.policy.baseline(), 6 * kMiB);
}

// ---------------------------------------------------------------- the chunk pool's share

TEST(ChunkPoolTest, KeepsAMebibyteByDefaultAndReleasesOnRequest) {
  ChunkPool pool;
  EXPECT_EQ(ChunkPool::kDefaultMaxFree * Chunk::kSize, size_t{1} << 20);
  std::vector<Chunk*> chunks;
  for (int i = 0; i < 200; ++i) chunks.push_back(pool.Get());
  EXPECT_EQ(pool.in_use(), 200u);
  for (Chunk* chunk : chunks) pool.Put(chunk);
  EXPECT_EQ(pool.in_use(), 0u);
  EXPECT_EQ(pool.free_count(), 200u);  // the working set, until it decays
  pool.Tick();                         // 200 -> 50: the minimum (64) stays
  EXPECT_EQ(pool.free_count(), ChunkPool::kDefaultMaxFree);
  EXPECT_EQ(pool.Release(16), ChunkPool::kDefaultMaxFree - 16);
  EXPECT_EQ(pool.free_count(), 16u);
  EXPECT_EQ(pool.Release(), 16u);
  EXPECT_EQ(pool.free_count(), 0u);
  EXPECT_EQ(pool.Release(), 0u);
  ChunkBuffer buffer(&pool);  // still works after a release
  std::string data(3 * Chunk::kCapacity, 'x');
  buffer.Append(reinterpret_cast<const uint8_t*>(data.data()), data.size());
  EXPECT_EQ(pool.in_use(), 3u);
  buffer.Clear();
  EXPECT_EQ(pool.in_use(), 0u);
  EXPECT_EQ(pool.free_count(), 3u);
}

// ---------------------------------------------------------------- the real probes

TEST(ProcessMemoryTest, RealProbesAnswer) {
  uint64_t before = ResidentBytes();
  EXPECT_GT(before, 0u);
  std::vector<char> block(64 * kMiB, 1);  // touched: resident
  // Escapes, so an optimizer cannot elide the allocation (clang -O2 did).
  asm volatile("" : : "r"(block.data()) : "memory");
  EXPECT_GE(ResidentBytes(), before + 32 * kMiB);
  volatile uint64_t sink = 0;
  for (int i = 0; i < 20000000; ++i) sink = sink + static_cast<uint64_t>(i);
  EXPECT_GT(ProcessCpuTime().count(), 0);
  std::string_view name = AllocatorName();
  EXPECT_TRUE(name == "glibc" || name == "jemalloc" || name == "mimalloc") << name;
  ReleaseFreeMemory();  // must not crash whatever the allocator
}

}  // namespace
}  // namespace sepal::memory
