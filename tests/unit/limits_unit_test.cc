// The limit building blocks: token bucket, per-peer counters and table, the caps a peer
// gets, the upstream breaker, the log rate limit, and the config keys that set them.
#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "proxy/common/log_rate_limit.h"
#include "proxy/config/config.h"
#include "proxy/limits/peer_limits.h"
#include "proxy/limits/token_bucket.h"
#include "proxy/limits/upstream_breaker.h"

namespace sepal::limits {
namespace {

using Clock = TokenBucket::Clock;
using std::chrono::milliseconds;

TEST(TokenBucketTest, StartsFullThenRefillsAtTheRate) {
  TokenBucket bucket;
  Clock::time_point t0 = Clock::now();
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(bucket.TryTake(t0, /*rate=*/10, /*burst=*/5));
  EXPECT_FALSE(bucket.TryTake(t0, 10, 5));
  EXPECT_FALSE(bucket.TryTake(t0 + milliseconds(50), 10, 5));  // half a token
  EXPECT_TRUE(bucket.TryTake(t0 + milliseconds(100), 10, 5));
  EXPECT_FALSE(bucket.TryTake(t0 + milliseconds(100), 10, 5));
  // Never more than the burst, however long it waits.
  int taken = 0;
  while (bucket.TryTake(t0 + std::chrono::hours(1), 10, 5)) ++taken;
  EXPECT_EQ(taken, 5);
}

TEST(PeerTest, CapsAreExactUnderConcurrency) {
  Peer peer("node:a");
  std::atomic<int> admitted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) {
        if (peer.TryStartCall(/*cap=*/10)) ++admitted;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(admitted.load(), 10);
  EXPECT_EQ(peer.calls(), 10u);
  peer.EndCall();
  EXPECT_TRUE(peer.TryStartCall(10));
  EXPECT_FALSE(peer.TryStartCall(10));
  EXPECT_TRUE(peer.TryStartCall(0));  // 0 = no cap
}

TEST(PeerTableTest, SamePeerSameEntryAcrossLookups) {
  PeerTable table;
  auto a = table.Get("node:a");
  auto again = table.Get("node:a");
  auto b = table.Get("node:b");
  EXPECT_EQ(a.get(), again.get());
  EXPECT_NE(a.get(), b.get());
  EXPECT_EQ(table.size(), 2u);
}

TEST(PeerKeyTest, NodeWhenIdentifiedElseAddress) {
  identity::PeerIdentity who;
  who.node_name = "supernode-a";
  who.node_fqdn = "supernode-a.tail1234.ts.net";
  identity::PeerAddress address{boost::asio::ip::make_address("100.64.0.7"), 41000};
  EXPECT_EQ(PeerKey(&who, address), "node:supernode-a.tail1234.ts.net");
  who.node_fqdn.clear();
  EXPECT_EQ(PeerKey(&who, address), "node:supernode-a");
  EXPECT_EQ(PeerKey(nullptr, address), "addr:100.64.0.7");  // the port does not matter
}

TEST(LimitsForTest, FirstMatchingOverrideWins) {
  auto config = config::ParseConfig(R"(
identity: {provider: static, static: [{match: 127.0.0.0/8, node: n}]}
listeners:
  - name: fleet
    address: 127.0.0.1:0
    peer_limits:
      concurrent_calls: 4
      calls_per_second: 7
      overrides:
        - {users: [alice@example.com], concurrent_calls: 40}
        - {tags: ["tag:bulk"], concurrent_calls: 80}
        - {nodes: [big-node], connections: 2}
)", "test.yaml");
  ASSERT_TRUE(config.ok()) << config.status();
  const config::PeerLimitsConfig& peer_limits = config->listeners[0].peer_limits;
  identity::PeerIdentity who;
  who.node_name = "plain";
  EXPECT_EQ(LimitsFor(peer_limits, &who).concurrent_calls, 4u);
  EXPECT_EQ(LimitsFor(peer_limits, nullptr).concurrent_calls, 4u);
  who.tags = {"tag:other", "tag:bulk"};
  EXPECT_EQ(LimitsFor(peer_limits, &who).concurrent_calls, 80u);
  EXPECT_EQ(LimitsFor(peer_limits, &who).calls_per_second, 7u);  // the listener's, kept
  who.user_login = "alice@example.com";
  EXPECT_EQ(LimitsFor(peer_limits, &who).concurrent_calls, 40u);  // listed first
  identity::PeerIdentity big;
  big.node_fqdn = "big-node";
  EXPECT_EQ(LimitsFor(peer_limits, &big).connections, 2u);
  EXPECT_EQ(LimitsFor(peer_limits, &big).concurrent_calls, 4u);
}

TEST(UpstreamBreakerTest, ConcurrentAndRateCaps) {
  UpstreamBreaker breaker;
  config::CircuitBreakerConfig caps;
  caps.max_concurrent_streams = 2;
  Clock::time_point now = Clock::now();
  EXPECT_EQ(breaker.TryStartCall(caps, now), "");
  EXPECT_EQ(breaker.TryStartCall(caps, now), "");
  EXPECT_EQ(breaker.TryStartCall(caps, now), limit::kUpstreamConcurrent);
  breaker.EndCall();
  EXPECT_EQ(breaker.TryStartCall(caps, now), "");
  EXPECT_EQ(breaker.active(), 2u);
  breaker.EndCall();
  breaker.EndCall();
  caps.max_concurrent_streams = 0;
  caps.max_new_streams_per_second = 3;
  for (int i = 0; i < 3; ++i) EXPECT_EQ(breaker.TryStartCall(caps, now), "");
  EXPECT_EQ(breaker.TryStartCall(caps, now), limit::kUpstreamRate);
  EXPECT_EQ(breaker.active(), 3u);  // the refused one took no slot
  caps.max_pending_streams = 1;
  EXPECT_FALSE(breaker.PendingFull(caps));
  breaker.AddPending();
  EXPECT_TRUE(breaker.PendingFull(caps));
  breaker.RemovePending();
  EXPECT_FALSE(breaker.PendingFull(caps));
}

TEST(LogRateLimitTest, AllowsTheBudgetThenCountsWhatItDrops) {
  static LogRateLimit limit("unit test lines", 3);
  int allowed = 0;
  for (int i = 0; i < 100; ++i) allowed += limit.Allow() ? 1 : 0;
  EXPECT_EQ(allowed, 3);
  EXPECT_EQ(limit.suppressed_total(), 97u);
}

TEST(LimitsConfigTest, DefaultsAndErrors) {
  auto config = config::ParseConfig("listeners: [{name: a, address: 127.0.0.1:0}]\n"
                                    "upstreams: [{name: u, address: 127.0.0.1:1}]\n",
                                    "t.yaml");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->listeners[0].peer_limits.limits.connections, 16u);
  EXPECT_EQ(config->listeners[0].peer_limits.limits.concurrent_calls, 32u);
  EXPECT_EQ(config->listeners[0].limits.request_progress_timeout, std::chrono::seconds(30));
  EXPECT_EQ(config->upstreams[0].circuit_breaker.max_concurrent_streams, 900u);
  EXPECT_EQ(config->memory.high_watermark_bytes, uint64_t{1} << 30);
  EXPECT_EQ(config->memory.low_watermark_bytes, uint64_t{768} << 20);

  auto low = config::ParseConfig(
      "memory: {high_watermark_bytes: 1000, low_watermark_bytes: 1000}\n"
      "listeners: [{name: a, address: 127.0.0.1:0}]\n",
      "t.yaml");
  ASSERT_FALSE(low.ok());
  EXPECT_NE(low.status().message().find("low_watermark_bytes must be below"), std::string::npos)
      << low.status();
  auto derived = config::ParseConfig(
      "memory: {high_watermark_bytes: 4000}\nlisteners: [{name: a, address: 127.0.0.1:0}]\n",
      "t.yaml");
  ASSERT_TRUE(derived.ok()) << derived.status();
  EXPECT_EQ(derived->memory.low_watermark_bytes, 3000u);

  auto no_selector = config::ParseConfig(
      "listeners: [{name: a, address: 127.0.0.1:0,\n"
      "             peer_limits: {overrides: [{concurrent_calls: 3}]}}]\n",
      "t.yaml");
  ASSERT_FALSE(no_selector.ok());
  EXPECT_NE(no_selector.status().message().find("needs at least one of tags, users, nodes"),
            std::string::npos)
      << no_selector.status();
  auto typo = config::ParseConfig(
      "listeners: [{name: a, address: 127.0.0.1:0, peer_limits: {concurent_calls: 3}}]\n",
      "t.yaml");
  ASSERT_FALSE(typo.ok());
  EXPECT_NE(typo.status().message().find("did you mean \"concurrent_calls\""), std::string::npos)
      << typo.status();
}

}  // namespace
}  // namespace sepal::limits
