// TailscaleIdentityProvider against FakeTailscaled: answers, address triage, caching and its
// invalidation, coalescing, failures (down, timeout, error statuses) and recovery.
#include "proxy/identity/tailscale_provider.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <future>
#include <thread>

#include "tests/support/fake_tailscaled.h"

namespace sepal::identity {
namespace {

using std::chrono::milliseconds;
using test::FakeTailscaled;
using Kind = LookupResult::Kind;

constexpr milliseconds kWait{5000};

template <typename Predicate>
bool Eventually(Predicate predicate, milliseconds timeout = kWait) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!predicate()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(milliseconds(5));
  }
  return true;
}

std::string UniqueSocketPath() {
  static int counter = 0;
  return "/tmp/sepal-fake-ts-" + std::to_string(::getpid()) + "-" + std::to_string(++counter) +
         ".sock";
}

class TailscaleProviderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    socket_path_ = UniqueSocketPath();
    fake_ = FakeTailscaled::Start(socket_path_);
    ASSERT_NE(fake_, nullptr);
    ASSERT_TRUE(fake_->AddPeer("100.101.12.34", FakeTailscaled::LoadFixture("tagged-node.json")));
    ASSERT_TRUE(fake_->AddPeer("fd7a:115c:a1e0::2f01:c22",
                               FakeTailscaled::LoadFixture("tagged-node.json")));
    ASSERT_TRUE(fake_->AddPeer("100.88.201.7", FakeTailscaled::LoadFixture("user-node.json")));
    reply_thread_ = std::thread([this] { reply_context_.run(); });
  }

  void TearDown() override {
    if (provider_) provider_->Shutdown();
    reply_work_.reset();
    reply_thread_.join();
  }

  // Starts the provider and, if tailscaled is up, waits until its watch stream is open, so
  // the flush that comes with it cannot land in the middle of a test.
  void StartProvider(milliseconds cache_ttl = milliseconds(60000),
                     milliseconds lookup_timeout = milliseconds(2000),
                     milliseconds negative_ttl = milliseconds(5000)) {
    config::TailscaleIdentityConfig config;
    config.socket = socket_path_;
    config.cache_ttl = cache_ttl;
    config.lookup_timeout = lookup_timeout;
    TailscaleIdentityProvider::Options options;
    options.negative_ttl = negative_ttl;
    options.watch_initial_backoff = milliseconds(50);
    options.watch_max_backoff = milliseconds(200);
    provider_ = std::make_unique<TailscaleIdentityProvider>(config, options);
    if (fake_->running()) {
      ASSERT_TRUE(Eventually([&] { return provider_->stats().watch_connects == 1; }));
    }
  }

  // Starts a lookup; the future is ready once the callback ran on the reply thread.
  std::future<LookupResult> LookupAsync(const std::string& ip, uint16_t port) {
    auto promise = std::make_shared<std::promise<LookupResult>>();
    std::future<LookupResult> future = promise->get_future();
    std::thread::id reply_thread = reply_thread_.get_id();
    provider_->Lookup(PeerAddress{boost::asio::ip::make_address(ip), port},
                      reply_context_.get_executor(), [promise, reply_thread](LookupResult r) {
                        EXPECT_EQ(std::this_thread::get_id(), reply_thread);
                        promise->set_value(std::move(r));
                      });
    return future;
  }

  LookupResult Lookup(const std::string& ip, uint16_t port = 41000) {
    std::future<LookupResult> future = LookupAsync(ip, port);
    if (future.wait_for(kWait) != std::future_status::ready) {
      ADD_FAILURE() << "no answer for " << ip << ":" << port;
      return LookupResult{};
    }
    return future.get();
  }

  TailscaleIdentityProvider::Stats stats() const { return provider_->stats(); }

  std::string socket_path_;
  std::unique_ptr<FakeTailscaled> fake_;
  std::unique_ptr<TailscaleIdentityProvider> provider_;
  boost::asio::io_context reply_context_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> reply_work_{
      reply_context_.get_executor()};
  std::thread reply_thread_;
};

TEST_F(TailscaleProviderTest, FindsATaggedPeerWithTheExactRequest) {
  StartProvider();
  LookupResult result = Lookup("100.101.12.34", 41000);
  ASSERT_EQ(result.kind, Kind::kFound) << result.detail;
  EXPECT_EQ(result.identity->node_name, "supernode-a");
  EXPECT_EQ(result.identity->tags, std::vector<std::string>{"tag:supernode"});
  EXPECT_EQ(fake_->LastRequestTarget(), "/localapi/v0/whois?addr=100.101.12.34%3A41000&proto=tcp");
  EXPECT_EQ(fake_->LastHostHeader(), "local-tailscaled.sock");
  EXPECT_EQ(stats().found, 1u);
  EXPECT_EQ(stats().whois_requests_sent, 1u);
  EXPECT_EQ(provider_->name(), "tailscale");
}

TEST_F(TailscaleProviderTest, FindsAUserPeerAndIpv6Peers) {
  StartProvider();
  LookupResult user = Lookup("100.88.201.7");
  ASSERT_EQ(user.kind, Kind::kFound) << user.detail;
  EXPECT_EQ(user.identity->user_login, "alice@example.com");
  EXPECT_FALSE(user.identity->tagged());

  LookupResult v6 = Lookup("fd7a:115c:a1e0::2f01:c22", 5);
  ASSERT_EQ(v6.kind, Kind::kFound) << v6.detail;
  EXPECT_EQ(fake_->LastRequestTarget(),
            "/localapi/v0/whois?addr=%5Bfd7a%3A115c%3Aa1e0%3A%3A2f01%3Ac22%5D%3A5&proto=tcp");
}

TEST_F(TailscaleProviderTest, UnknownTailnetAddressIsNotInTailnet) {
  StartProvider();
  LookupResult result = Lookup("100.64.0.9", 41000);
  EXPECT_EQ(result.kind, Kind::kNotInTailnet);
  EXPECT_EQ(result.identity, nullptr);
  EXPECT_NE(result.detail.find("100.64.0.9:41000"), std::string::npos) << result.detail;
  EXPECT_NE(result.detail.find("no match for IP:port"), std::string::npos) << result.detail;
  EXPECT_EQ(stats().not_in_tailnet, 1u);
}

TEST_F(TailscaleProviderTest, AddressesOutsideTheTailnetAreRejectedWithoutAsking) {
  StartProvider();
  for (const char* ip : {"8.8.8.8", "10.0.0.1", "100.63.255.255", "100.128.0.1", "100.115.92.1",
                         "100.115.93.254", "2001:db8::1", "fd7a:115c:a1e1::1", "::ffff:8.8.8.8"}) {
    LookupResult result = Lookup(ip);
    EXPECT_EQ(result.kind, Kind::kNotInTailnet) << ip;
    EXPECT_EQ(result.detail, "address is not a Tailscale address") << ip;
  }
  EXPECT_EQ(fake_->RequestCount(), 0);
  EXPECT_TRUE(
      TailscaleIdentityProvider::IsTailscaleAddress(boost::asio::ip::make_address("100.115.94.1")));
  EXPECT_TRUE(
      TailscaleIdentityProvider::IsTailscaleAddress(boost::asio::ip::make_address("100.64.0.0")));
}

TEST_F(TailscaleProviderTest, Ipv4MappedPeersAreLookedUpAsIpv4) {
  StartProvider();
  LookupResult result = Lookup("::ffff:100.101.12.34", 7000);
  ASSERT_EQ(result.kind, Kind::kFound) << result.detail;
  EXPECT_EQ(fake_->LastRequestTarget(), "/localapi/v0/whois?addr=100.101.12.34%3A7000&proto=tcp");
  // And share the IPv4 cache entry.
  EXPECT_EQ(Lookup("100.101.12.34", 7001).kind, Kind::kFound);
  EXPECT_EQ(fake_->RequestCount(), 1);
}

TEST_F(TailscaleProviderTest, LoopbackPeersAreLookedUpByExactPortAndNeverCached) {
  ASSERT_TRUE(fake_->AddPeer("127.0.0.1:40000", FakeTailscaled::LoadFixture("user-node.json")));
  StartProvider();
  LookupResult first = Lookup("127.0.0.1", 40000);
  ASSERT_EQ(first.kind, Kind::kFound) << first.detail;
  EXPECT_EQ(first.identity->user_login, "alice@example.com");
  EXPECT_EQ(fake_->LastRequestTarget(), "/localapi/v0/whois?addr=127.0.0.1%3A40000&proto=tcp");
  EXPECT_EQ(Lookup("127.0.0.1", 40000).kind, Kind::kFound);
  EXPECT_EQ(fake_->RequestCount(), 2);
  EXPECT_EQ(stats().cache_hits, 0u);
  // Another ephemeral port is another connection, maybe not from the tailnet at all.
  EXPECT_EQ(Lookup("127.0.0.1", 40001).kind, Kind::kNotInTailnet);
  EXPECT_EQ(Lookup("127.0.0.1", 40001).kind, Kind::kNotInTailnet);
  EXPECT_EQ(fake_->RequestCount(), 4);
}

TEST_F(TailscaleProviderTest, TailnetAnswersAreCachedByIpWithinTheTtl) {
  StartProvider();
  EXPECT_EQ(Lookup("100.101.12.34", 1000).kind, Kind::kFound);
  EXPECT_EQ(Lookup("100.101.12.34", 2000).kind, Kind::kFound);
  EXPECT_EQ(Lookup("100.101.12.34", 3000).kind, Kind::kFound);
  EXPECT_EQ(fake_->RequestCount(), 1);
  EXPECT_EQ(stats().cache_hits, 2u);
  EXPECT_EQ(stats().found, 3u);
}

TEST_F(TailscaleProviderTest, EntriesExpireAfterTheTtl) {
  StartProvider(milliseconds(200));
  EXPECT_EQ(Lookup("100.101.12.34").kind, Kind::kFound);
  EXPECT_EQ(Lookup("100.101.12.34").kind, Kind::kFound);
  EXPECT_EQ(fake_->RequestCount(), 1);
  std::this_thread::sleep_for(milliseconds(300));
  EXPECT_EQ(Lookup("100.101.12.34").kind, Kind::kFound);
  EXPECT_EQ(fake_->RequestCount(), 2);
}

TEST_F(TailscaleProviderTest, NotFoundAnswersAreCachedOnlyBriefly) {
  StartProvider(milliseconds(60000), milliseconds(2000), milliseconds(200));
  EXPECT_EQ(Lookup("100.64.7.7").kind, Kind::kNotInTailnet);
  EXPECT_EQ(Lookup("100.64.7.7").kind, Kind::kNotInTailnet);
  EXPECT_EQ(fake_->RequestCount(), 1);
  ASSERT_TRUE(fake_->AddPeer("100.64.7.7", FakeTailscaled::LoadFixture("user-node.json")));
  std::this_thread::sleep_for(milliseconds(300));
  EXPECT_EQ(Lookup("100.64.7.7").kind, Kind::kFound);
  EXPECT_EQ(fake_->RequestCount(), 2);
}

TEST_F(TailscaleProviderTest, ConcurrentLookupsShareOneRequest) {
  StartProvider();
  fake_->SetDelay(milliseconds(300));
  std::vector<std::future<LookupResult>> answers;
  for (int i = 0; i < 10; ++i) {
    answers.push_back(LookupAsync("100.101.12.34", static_cast<uint16_t>(50000 + i)));
  }
  for (auto& answer : answers) {
    ASSERT_EQ(answer.wait_for(kWait), std::future_status::ready);
    LookupResult result = answer.get();
    EXPECT_EQ(result.kind, Kind::kFound) << result.detail;
  }
  EXPECT_EQ(fake_->RequestCount(), 1);
  EXPECT_EQ(stats().whois_requests_sent, 1u);
  EXPECT_EQ(stats().found, 10u);
}

TEST_F(TailscaleProviderTest, TailscaledDownFailsClosedThenRecovers) {
  fake_->Stop();
  StartProvider();
  LookupResult down = Lookup("100.101.12.34");
  EXPECT_EQ(down.kind, Kind::kFailed);
  EXPECT_EQ(down.detail,
            "tailscaled unreachable at " + socket_path_ + ": No such file or directory");
  // Failures are not cached: the next connection asks again.
  EXPECT_EQ(Lookup("100.101.12.34").kind, Kind::kFailed);
  EXPECT_EQ(stats().whois_requests_sent, 2u);
  EXPECT_EQ(stats().failed, 2u);

  ASSERT_TRUE(fake_->Restart());
  LookupResult up = Lookup("100.101.12.34");
  ASSERT_EQ(up.kind, Kind::kFound) << up.detail;
  // The watch comes up on its own too.
  EXPECT_TRUE(Eventually([&] { return stats().watch_connects == 1; }));
}

TEST_F(TailscaleProviderTest, SlowTailscaledTimesOutAndFailsClosed) {
  StartProvider(milliseconds(60000), milliseconds(200));
  fake_->SetDelay(milliseconds(1500));
  auto start = std::chrono::steady_clock::now();
  LookupResult slow = Lookup("100.101.12.34");
  EXPECT_LT(std::chrono::steady_clock::now() - start, milliseconds(1200));
  EXPECT_EQ(slow.kind, Kind::kFailed);
  EXPECT_EQ(slow.detail, "tailscaled WhoIs timed out after 200 ms");
  fake_->SetDelay(milliseconds(0));
  EXPECT_EQ(Lookup("100.101.12.34").kind, Kind::kFound);
}

TEST_F(TailscaleProviderTest, ErrorStatusesFailClosedWithTheirText) {
  StartProvider();
  fake_->SetFailure(500, "internal error\n");
  LookupResult server_error = Lookup("100.101.12.34");
  EXPECT_EQ(server_error.kind, Kind::kFailed);
  EXPECT_EQ(server_error.detail, "tailscaled WhoIs returned 500: internal error");
  fake_->SetFailure(403, "invalid localapi request\n");
  LookupResult forbidden = Lookup("100.101.12.34");
  EXPECT_EQ(forbidden.detail, "tailscaled WhoIs returned 403: invalid localapi request");
  fake_->SetFailure(0, "");
  EXPECT_EQ(Lookup("100.101.12.34").kind, Kind::kFound);
  EXPECT_EQ(fake_->RequestCount(), 3);
}

TEST_F(TailscaleProviderTest, UnusableBodyFailsClosed) {
  ASSERT_TRUE(fake_->AddPeer("100.64.0.50", "{\"Node\": "));
  StartProvider();
  LookupResult result = Lookup("100.64.0.50");
  EXPECT_EQ(result.kind, Kind::kFailed);
  EXPECT_NE(result.detail.find("unusable"), std::string::npos) << result.detail;
}

TEST_F(TailscaleProviderTest, OversizedBodyFailsClosed) {
  std::string huge = FakeTailscaled::LoadFixture("tagged-node.json");
  huge.insert(1, "\"Padding\":\"" + std::string(LocalApiClient::kMaxWhoIsBodyBytes, 'x') + "\",");
  ASSERT_TRUE(fake_->AddPeer("100.64.0.51", huge));
  StartProvider();
  LookupResult result = Lookup("100.64.0.51");
  EXPECT_EQ(result.kind, Kind::kFailed);
  EXPECT_NE(result.detail.find("tailscaled WhoIs failed"), std::string::npos) << result.detail;
}

// Sends one raw request to the fake, as a client that gets the LocalAPI rules wrong would.
boost::beast::http::response<boost::beast::http::string_body> RawGet(
    const std::string& socket_path, const std::string& target, const std::string& host,
    const std::string& extra_header = "", const std::string& extra_value = "") {
  namespace http = boost::beast::http;
  boost::asio::io_context io_context;
  boost::asio::local::stream_protocol::socket socket(io_context);
  http::response<http::string_body> response;
  boost::system::error_code ec;
  socket.connect(boost::asio::local::stream_protocol::endpoint(socket_path), ec);
  if (ec) return response;
  http::request<http::empty_body> request(http::verb::get, target, 11);
  request.set(http::field::host, host);
  request.set(http::field::connection, "close");
  if (!extra_header.empty()) request.set(extra_header, extra_value);
  http::write(socket, request, ec);
  boost::beast::flat_buffer buffer;
  if (!ec) http::read(socket, buffer, response, ec);
  return response;
}

TEST_F(TailscaleProviderTest, FakeEnforcesTheLocalApiHostRules) {
  StartProvider();
  ASSERT_EQ(Lookup("100.101.12.34").kind, Kind::kFound);
  EXPECT_EQ(fake_->LastHostHeader(), "local-tailscaled.sock");

  const std::string target = "/localapi/v0/whois?addr=100.101.12.34%3A1&proto=tcp";
  auto wrong_host = RawGet(socket_path_, target, "localhost");
  EXPECT_EQ(wrong_host.result_int(), 403u);
  EXPECT_EQ(wrong_host.body(), "invalid localapi request\n");
  EXPECT_EQ(wrong_host["Content-Type"], "text/plain; charset=utf-8");
  EXPECT_EQ(wrong_host["X-Content-Type-Options"], "nosniff");
  EXPECT_EQ(wrong_host.count("Tailscale-Version"), 0u);
  EXPECT_EQ(
      RawGet(socket_path_, target, "local-tailscaled.sock", "Origin", "http://x").result_int(),
      403u);
  EXPECT_EQ(
      RawGet(socket_path_, target, "local-tailscaled.sock", "Referer", "http://x").result_int(),
      403u);

  auto ok = RawGet(socket_path_, target, "local-tailscaled.sock");
  EXPECT_EQ(ok.result_int(), 200u);
  EXPECT_EQ(ok["Content-Type"], "application/json");
  EXPECT_EQ(ok["Tailscale-Version"], FakeTailscaled::kVersion);
  EXPECT_EQ(ok.body(), FakeTailscaled::LoadFixture("tagged-node.json"));

  auto missing = RawGet(socket_path_, "/localapi/v0/whois", "local-tailscaled.sock");
  EXPECT_EQ(missing.result_int(), 400u);
  EXPECT_EQ(missing.body(), "missing 'addr' parameter\n");
  auto invalid = RawGet(socket_path_, "/localapi/v0/whois?addr=not-an-ip", "local-tailscaled.sock");
  EXPECT_EQ(invalid.body(), "invalid 'addr' parameter\n");
  auto miss = RawGet(socket_path_, "/localapi/v0/whois?addr=8.8.8.8:443", "local-tailscaled.sock");
  EXPECT_EQ(miss.result_int(), 404u);
  EXPECT_EQ(miss.body(), "no match for IP:port\n");
  EXPECT_EQ(miss["X-Content-Type-Options"], "nosniff");
  auto bare =
      RawGet(socket_path_, "/localapi/v0/whois?addr=100.101.12.34", "local-tailscaled.sock");
  EXPECT_EQ(bare.result_int(), 200u);
  auto unknown = RawGet(socket_path_, "/localapi/v0/nope", "local-tailscaled.sock");
  EXPECT_EQ(unknown.result_int(), 404u);
  EXPECT_EQ(unknown.body(), "404 page not found\n");
}

TEST_F(TailscaleProviderTest, WatchUsesTheDocumentedMask) {
  StartProvider();
  EXPECT_EQ(fake_->WatcherCount(), 1);
  ASSERT_TRUE(fake_->LastWatchMask().has_value());
  EXPECT_EQ(*fake_->LastWatchMask(), TailscaleIdentityProvider::kWatchMask);
}

TEST_F(TailscaleProviderTest, PeerChangeNotificationsFlushTheCache) {
  StartProvider();
  EXPECT_EQ(Lookup("100.101.12.34").kind, Kind::kFound);
  EXPECT_EQ(Lookup("100.101.12.34").kind, Kind::kFound);
  EXPECT_EQ(fake_->RequestCount(), 1);
  uint64_t flushes = stats().cache_flushes;

  // Go marshals "NetMap":null into every notification; only a real change flushes. Lines
  // are handled in order, so once the second one flushed the first one was seen too.
  fake_->PushNotification(R"({"Version":"x","NetMap":null,"PeersChanged":null})");
  fake_->PushNotification(R"({"Version":"x","NetMap":{"SelfNode":{"ID":1}}})");
  ASSERT_TRUE(Eventually([&] { return stats().cache_flushes >= flushes + 1; }));
  EXPECT_EQ(stats().cache_flushes, flushes + 1);
  EXPECT_EQ(Lookup("100.101.12.34").kind, Kind::kFound);
  EXPECT_EQ(fake_->RequestCount(), 2);

  // New-style deltas (NotifyPeerChanges) flush as well.
  fake_->PushNotification(R"({"Version":"x","PeersRemoved":[6187213345029]})");
  ASSERT_TRUE(Eventually([&] { return stats().cache_flushes == flushes + 2; }));
  EXPECT_EQ(Lookup("100.101.12.34").kind, Kind::kFound);
  EXPECT_EQ(fake_->RequestCount(), 3);
}

TEST_F(TailscaleProviderTest, WatchReconnectsAfterTailscaledRestarts) {
  StartProvider();
  EXPECT_EQ(Lookup("100.101.12.34").kind, Kind::kFound);
  uint64_t flushes = stats().cache_flushes;
  fake_->Stop();
  EXPECT_EQ(fake_->WatcherCount(), 0);
  ASSERT_TRUE(fake_->Restart());
  ASSERT_TRUE(Eventually([&] { return stats().watch_connects == 2; }));
  EXPECT_TRUE(fake_->WaitForWatcherCount(1, kWait));
  // Reconnecting flushes: notifications may have been missed meanwhile.
  EXPECT_GT(stats().cache_flushes, flushes);
  EXPECT_EQ(Lookup("100.101.12.34").kind, Kind::kFound);
  EXPECT_EQ(fake_->RequestCount(), 2);
  // And the new stream delivers notifications.
  flushes = stats().cache_flushes;
  fake_->PushNotification(R"({"PeersChanged":[{"ID":1}]})");
  EXPECT_TRUE(Eventually([&] { return stats().cache_flushes == flushes + 1; }));
}

TEST_F(TailscaleProviderTest, LookupsDoNotWaitForTheWatch) {
  fake_->Stop();
  StartProvider();
  ASSERT_TRUE(fake_->Restart());
  // Backoff may still hold the watch back; the lookup goes ahead regardless.
  EXPECT_EQ(Lookup("100.101.12.34").kind, Kind::kFound);
}

TEST_F(TailscaleProviderTest, ShutdownFailsPendingAndLaterLookups) {
  StartProvider(milliseconds(60000), milliseconds(10000));
  fake_->SetDelay(milliseconds(3000));
  std::future<LookupResult> pending = LookupAsync("100.101.12.34", 1);
  ASSERT_TRUE(fake_->WaitForRequestCount(1, kWait));
  auto start = std::chrono::steady_clock::now();
  provider_->Shutdown();
  EXPECT_LT(std::chrono::steady_clock::now() - start, milliseconds(1000));
  ASSERT_EQ(pending.wait_for(kWait), std::future_status::ready);
  LookupResult result = pending.get();
  EXPECT_EQ(result.kind, Kind::kFailed);
  EXPECT_EQ(result.detail, "shutting down");
  LookupResult later = Lookup("100.101.12.34");
  EXPECT_EQ(later.kind, Kind::kFailed);
  EXPECT_EQ(later.detail, "shutting down");
  EXPECT_EQ(Lookup("8.8.8.8").kind, Kind::kNotInTailnet);
  provider_->Shutdown();  // idempotent
}

}  // namespace
}  // namespace sepal::identity
