// Unit tests for the sharded metrics registry: exact exposition text, sharding, cardinality guard.
#include "proxy/metrics/metrics.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace sepal::metrics {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(MetricsTest, CounterWithLabelsAndEscaping) {
  Registry registry;
  auto& family = registry.AddCounter("sepal_test_requests_total", "Requests, with \\ and\nnewline.",
                                     {"listener", "grpc_code"});
  Counter ok = family.WithLabels({"fleet", "OK"});
  Counter odd = family.WithLabels({"we\"ird\\list\nener", "PERMISSION_DENIED"});
  ok.Increment(0);
  ok.Increment(0, 41);
  odd.Increment(kSharedShard);
  EXPECT_EQ(registry.Serialize(),
            R"(# HELP sepal_test_requests_total Requests, with \\ and\nnewline.
# TYPE sepal_test_requests_total counter
sepal_test_requests_total{listener="fleet",grpc_code="OK"} 42
sepal_test_requests_total{listener="we\"ird\\list\nener",grpc_code="PERMISSION_DENIED"} 1
)");
}

TEST(MetricsTest, GaugesSumShardsAndFormatValues) {
  Registry registry;
  registry.SetShardCount(2);
  registry.AddGauge("sepal_test_idle", "Never touched.", {});
  auto& active = registry.AddGauge("sepal_test_streams_active", "Open streams.", {"listener"});
  Gauge fleet = active.WithLabels({"fleet"});
  fleet.Add(0, 3);
  fleet.Add(1, 2);
  fleet.Add(1, -1);
  auto& values = registry.AddGauge("sepal_test_values", "Formatting.", {"case"});
  values.WithLabels({"big"}).Set(1e6);
  values.WithLabels({"fraction"}).Set(0.25);
  values.WithLabels({"huge"}).Set(1e20);
  values.WithLabels({"inf"}).Set(std::numeric_limits<double>::infinity());
  values.WithLabels({"nan"}).Set(std::nan(""));
  values.WithLabels({"negative"}).Set(-2.5);
  values.WithLabels({"tiny"}).Set(1.5e-9);
  values.WithLabels({"timestamp"}).Set(1700000000.5);
  // A labelled family without series is left out of the exposition.
  registry.AddGauge("sepal_test_unused", "No series yet.", {"listener"});
  EXPECT_EQ(registry.Serialize(), R"(# HELP sepal_test_idle Never touched.
# TYPE sepal_test_idle gauge
sepal_test_idle 0
# HELP sepal_test_streams_active Open streams.
# TYPE sepal_test_streams_active gauge
sepal_test_streams_active{listener="fleet"} 4
# HELP sepal_test_values Formatting.
# TYPE sepal_test_values gauge
sepal_test_values{case="big"} 1000000
sepal_test_values{case="fraction"} 0.25
sepal_test_values{case="huge"} 1e+20
sepal_test_values{case="inf"} +Inf
sepal_test_values{case="nan"} NaN
sepal_test_values{case="negative"} -2.5
sepal_test_values{case="timestamp"} 1700000000.5
sepal_test_values{case="tiny"} 1.5e-09
)");
}

TEST(MetricsTest, HistogramBucketsAreCumulative) {
  Registry registry;
  registry.SetShardCount(2);
  auto& family = registry.AddHistogram("sepal_test_duration_seconds", "Durations.", {"grpc_method"},
                                       {0.125, 1, 2.5});
  Histogram pull = family.WithLabels({"Pull"});
  pull.Observe(0, 0.0625);
  pull.Observe(1, 0.125);  // bounds are inclusive: le="0.125"
  pull.Observe(0, 0.5);
  pull.Observe(kSharedShard, 4);
  registry.AddHistogram("sepal_test_idle_seconds", "Unlabelled.", {}, {0.5});
  EXPECT_EQ(registry.Serialize(), R"(# HELP sepal_test_duration_seconds Durations.
# TYPE sepal_test_duration_seconds histogram
sepal_test_duration_seconds_bucket{grpc_method="Pull",le="0.125"} 2
sepal_test_duration_seconds_bucket{grpc_method="Pull",le="1"} 3
sepal_test_duration_seconds_bucket{grpc_method="Pull",le="2.5"} 3
sepal_test_duration_seconds_bucket{grpc_method="Pull",le="+Inf"} 4
sepal_test_duration_seconds_sum{grpc_method="Pull"} 4.6875
sepal_test_duration_seconds_count{grpc_method="Pull"} 4
# HELP sepal_test_idle_seconds Unlabelled.
# TYPE sepal_test_idle_seconds histogram
sepal_test_idle_seconds_bucket{le="0.5"} 0
sepal_test_idle_seconds_bucket{le="+Inf"} 0
sepal_test_idle_seconds_sum 0
sepal_test_idle_seconds_count 0
)");
}

TEST(MetricsTest, DefaultDurationBucketsPrintPlainly) {
  Registry registry;
  registry.AddHistogram("sepal_test_seconds", "Defaults.", {});
  std::string text = registry.Serialize();
  for (const char* le : {"0.0001", "0.00025", "0.001", "2.5", "300", "3600", "+Inf"}) {
    EXPECT_THAT(text, HasSubstr(std::string("le=\"") + le + "\"} 0\n"));
  }
  EXPECT_THAT(text, Not(HasSubstr("e-")));
}

TEST(MetricsTest, SameLabelsGiveSameSeriesAndSameNameSameFamily) {
  Registry registry;
  auto& family = registry.AddCounter("sepal_test_total", "Test.", {"a"});
  family.WithLabels({"x"}).Increment(0);
  family.WithLabels({"x"}).Increment(0);
  auto& again = registry.AddCounter("sepal_test_total", "Other help is ignored.", {"a"});
  EXPECT_EQ(&again, &family);
  again.WithLabels({"x"}).Increment(0);
  EXPECT_THAT(registry.Serialize(), HasSubstr("sepal_test_total{a=\"x\"} 3\n"));
}

TEST(MetricsTest, OverflowFoldsIntoOtherSeries) {
  Registry registry;
  auto& family = registry.AddCounter("sepal_test_total", "Test.", {"grpc_service", "grpc_method"});
  family.set_max_series(2);
  family.WithLabels({"s", "A"}).Increment(0);
  family.WithLabels({"s", "B"}).Increment(0);
  family.WithLabels({"s", "C"}).Increment(0);  // over the cap
  family.WithLabels({"t", "D"}).Increment(0, 2);
  family.WithLabels({"s", "A"}).Increment(0);  // existing series keep resolving to themselves
  EXPECT_EQ(registry.Serialize(), R"(# HELP sepal_test_total Test.
# TYPE sepal_test_total counter
sepal_test_total{grpc_service="other",grpc_method="other"} 3
sepal_test_total{grpc_service="s",grpc_method="A"} 2
sepal_test_total{grpc_service="s",grpc_method="B"} 1
)");
}

TEST(MetricsTest, ConcurrentIncrementsOnDistinctShardsSum) {
  constexpr unsigned kWorkers = 4;
  constexpr int kPerWorker = 1'000'000;
  Registry registry;
  registry.SetShardCount(kWorkers);
  Counter ops = registry.AddCounter("sepal_test_ops_total", "Ops.", {}).WithLabels({});
  Counter shared = registry.AddCounter("sepal_test_shared_total", "Ops.", {}).WithLabels({});
  Histogram seconds =
      registry.AddHistogram("sepal_test_op_seconds", "Ops.", {}, {0.5}).WithLabels({});
  std::vector<std::thread> workers;
  for (unsigned w = 0; w < kWorkers; ++w) {
    workers.emplace_back([&, w] {
      for (int i = 0; i < kPerWorker; ++i) ops.Increment(w);
      // Shards are only a speed choice: threads sharing one still lose nothing.
      for (int i = 0; i < 100'000; ++i) shared.Increment(kSharedShard);
      for (int i = 0; i < 1000; ++i) seconds.Observe(w, 1.0);
    });
  }
  for (int i = 0; i < 20; ++i) registry.Serialize();  // scrapes racing the workers
  for (auto& worker : workers) worker.join();
  std::string text = registry.Serialize();
  EXPECT_THAT(text, HasSubstr("sepal_test_ops_total 4000000\n"));
  EXPECT_THAT(text, HasSubstr("sepal_test_shared_total 400000\n"));
  EXPECT_THAT(text, HasSubstr("sepal_test_op_seconds_bucket{le=\"0.5\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("sepal_test_op_seconds_bucket{le=\"+Inf\"} 4000\n"));
  EXPECT_THAT(text, HasSubstr("sepal_test_op_seconds_sum 4000\n"));
}

TEST(MetricsTest, ShardsOfASeriesNeverShareACacheLine) {
  // A histogram with the default buckets spans three lines per shard.
  internal::Slab slab(3, 23);
  auto address = [&](unsigned shard, std::size_t slot) {
    return reinterpret_cast<std::uintptr_t>(&slab.Slot(shard, slot));
  };
  EXPECT_EQ(address(0, 0) % internal::kCacheLine, 0u);
  EXPECT_EQ(address(1, 0) - address(0, 0), 3 * internal::kCacheLine);
  EXPECT_LT(address(0, 22), address(1, 0));
  EXPECT_EQ(address(kSharedShard, 0), address(2, 0));
}

TEST(MetricsTest, ReshardingKeepsValuesAndGaugeSetReplaces) {
  Registry registry;
  auto& counters = registry.AddCounter("sepal_test_total", "Test.", {});
  Gauge reload = registry.AddGauge("sepal_test_timestamp_seconds", "Test.", {}).WithLabels({});
  Histogram seconds = registry.AddHistogram("sepal_test_seconds", "Test.", {}, {1}).WithLabels({});
  Counter count = counters.WithLabels({});
  count.Increment(0, 5);
  reload.Set(100);
  seconds.Observe(0, 0.5);
  registry.SetShardCount(3);
  EXPECT_EQ(registry.shard_count(), 4u);
  count.Increment(2, 2);
  reload.Set(200);
  seconds.Observe(1, 0.25);
  std::string text = registry.Serialize();
  EXPECT_THAT(text, HasSubstr("sepal_test_total 7\n"));
  EXPECT_THAT(text, HasSubstr("sepal_test_timestamp_seconds 200\n"));
  EXPECT_THAT(text, HasSubstr("sepal_test_seconds_bucket{le=\"1\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("sepal_test_seconds_sum 0.75\n"));
}

TEST(MetricsTest, DefaultHandlesIgnoreBumps) {
  Counter counter;
  Gauge gauge;
  Histogram histogram;
  counter.Increment(0);
  gauge.Add(0, 1);
  gauge.Set(1);
  histogram.Observe(0, 1);
}

TEST(MetricsDeathTest, MisdeclaredMetricsAbortAtStartup) {
  Registry registry;
  registry.AddCounter("sepal_test_total", "Test.", {"a"});
  EXPECT_DEATH(registry.AddCounter("sepal_test_count", "Test.", {}), "end in _total");
  EXPECT_DEATH(registry.AddCounter("sepal_test_total", "Test.", {"b"}), "added again");
  EXPECT_DEATH(registry.AddGauge("sepal-test", "Test.", {}), "invalid metric name");
  EXPECT_DEATH(registry.AddGauge("sepal_test", "Test.", {"a", "a"}), "repeated label");
  EXPECT_DEATH(registry.AddHistogram("sepal_test_seconds", "Test.", {"le"}), "reserved");
  EXPECT_DEATH(registry.AddHistogram("sepal_test_seconds", "Test.", {}, {1, 1}), "ascending");
}

TEST(MetricsTest, PromtoolAcceptsTheExposition) {
  if (std::system("command -v promtool >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "promtool not on PATH (Debian package `prometheus`); exposition not checked";
  }
  Registry registry;
  registry.SetShardCount(2);
  auto& requests = registry.AddCounter("sepal_grpc_requests_total", "gRPC requests.\nBy code.",
                                       {"listener", "grpc_service", "grpc_method", "grpc_code"});
  requests.WithLabels({"fleet", "flwr.proto.Fleet", "PullMessages", "OK"}).Increment(0, 3);
  requests.WithLabels({"q\"uote\\d\nx", "flwr.proto.Fleet", "Push", "UNKNOWN"}).Increment(1);
  auto& duration = registry.AddHistogram("sepal_grpc_request_duration_seconds", "Durations.",
                                         {"listener", "grpc_service", "grpc_method"});
  Histogram pull = duration.WithLabels({"fleet", "flwr.proto.Fleet", "PullMessages"});
  for (double v : {0.00003, 0.0007, 0.2, 45.0, 5000.0}) pull.Observe(0, v);
  auto& values = registry.AddGauge("sepal_test_values", "Odd values.", {"case"});
  values.WithLabels({"nan"}).Set(std::nan(""));
  values.WithLabels({"inf"}).Set(-std::numeric_limits<double>::infinity());
  values.WithLabels({"tiny"}).Set(1.5e-9);
  registry.AddGauge("sepal_build_info", "Build.", {"version"}).WithLabels({"0.1.0"}).Set(1);

  std::string dir = testing::TempDir();
  std::string input = dir + "/metrics_" + std::to_string(getpid()) + ".prom";
  std::string output = input + ".out";
  std::ofstream(input) << registry.Serialize();
  int status =
      std::system(("promtool check metrics < " + input + " > " + output + " 2>&1").c_str());
  std::stringstream report;
  report << std::ifstream(output).rdbuf();
  EXPECT_EQ(status, 0) << report.str() << "\n--- input ---\n" << registry.Serialize();
  std::remove(input.c_str());
  std::remove(output.c_str());
}

}  // namespace
}  // namespace sepal::metrics
