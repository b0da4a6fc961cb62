// StaticIdentityProvider: CIDR matching (IPv4, IPv6, mapped), first match wins, misses,
// and answers that always arrive through the reply executor.
#include "proxy/identity/static_provider.h"

#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <optional>

namespace sepal::identity {
namespace {

config::StaticIdentity Entry(std::string match, std::string node, std::string user = "",
                             std::vector<std::string> tags = {}) {
  config::StaticIdentity entry;
  entry.match = std::move(match);
  entry.node = std::move(node);
  entry.user = std::move(user);
  entry.tags = std::move(tags);
  return entry;
}

class StaticProviderTest : public ::testing::Test {
 protected:
  LookupResult Lookup(StaticIdentityProvider& provider, const std::string& ip,
                      uint16_t port = 41000) {
    std::optional<LookupResult> result;
    provider.Lookup(PeerAddress{boost::asio::ip::make_address(ip), port},
                    io_context_.get_executor(), [&](LookupResult r) { result = std::move(r); });
    EXPECT_FALSE(result.has_value()) << "answered inline";
    io_context_.restart();
    io_context_.run();
    EXPECT_TRUE(result.has_value());
    return result.value_or(LookupResult{});
  }

  boost::asio::io_context io_context_;
};

TEST_F(StaticProviderTest, Ipv4CidrAndFirstMatchWins) {
  config::StaticIdentity narrow = Entry("127.0.0.2/32", "superlink", "", {"tag:superlink"});
  config::StaticIdentity wide = Entry("127.0.0.0/8", "dev-node", "alice@example.com");
  config::StaticIdentity shadowed = Entry("127.0.0.2/32", "never");
  StaticIdentityProvider provider({narrow, wide, shadowed});
  EXPECT_EQ(provider.name(), "static");

  LookupResult first = Lookup(provider, "127.0.0.2");
  ASSERT_EQ(first.kind, LookupResult::Kind::kFound);
  EXPECT_EQ(first.identity->node_name, "superlink");
  EXPECT_EQ(first.identity->node_fqdn, "superlink");
  EXPECT_TRUE(first.identity->tagged());

  LookupResult second = Lookup(provider, "127.9.8.7");
  ASSERT_EQ(second.kind, LookupResult::Kind::kFound);
  EXPECT_EQ(second.identity->node_name, "dev-node");
  EXPECT_EQ(second.identity->user_login, "alice@example.com");
  EXPECT_FALSE(second.identity->tagged());
}

TEST_F(StaticProviderTest, PartialByteCidr) {
  StaticIdentityProvider provider({Entry("100.64.0.0/10", "cgnat")});
  EXPECT_EQ(Lookup(provider, "100.127.255.255").kind, LookupResult::Kind::kFound);
  EXPECT_EQ(Lookup(provider, "100.128.0.0").kind, LookupResult::Kind::kNotInTailnet);
  EXPECT_EQ(Lookup(provider, "100.63.255.255").kind, LookupResult::Kind::kNotInTailnet);
}

TEST_F(StaticProviderTest, Ipv6CidrAndMappedIpv4) {
  StaticIdentityProvider provider({Entry("fd7a:115c:a1e0::/48", "tailnet-v6"),
                                   Entry("10.0.0.0/8", "lan"), Entry("0.0.0.0/0", "anything-v4")});
  LookupResult v6 = Lookup(provider, "fd7a:115c:a1e0:0:1234::1");
  ASSERT_EQ(v6.kind, LookupResult::Kind::kFound);
  EXPECT_EQ(v6.identity->node_name, "tailnet-v6");
  EXPECT_EQ(Lookup(provider, "fd7a:115c:a1e1::1").kind, LookupResult::Kind::kNotInTailnet);
  LookupResult mapped = Lookup(provider, "::ffff:10.1.2.3");
  ASSERT_EQ(mapped.kind, LookupResult::Kind::kFound);
  EXPECT_EQ(mapped.identity->node_name, "lan");
  // An IPv4 /0 does not swallow IPv6 peers.
  EXPECT_EQ(Lookup(provider, "2001:db8::1").kind, LookupResult::Kind::kNotInTailnet);
}

TEST_F(StaticProviderTest, NoMatchNamesTheAddress) {
  StaticIdentityProvider provider({Entry("127.0.0.0/8", "dev")});
  LookupResult result = Lookup(provider, "192.0.2.1");
  EXPECT_EQ(result.kind, LookupResult::Kind::kNotInTailnet);
  EXPECT_EQ(result.identity, nullptr);
  EXPECT_EQ(result.detail, "no static identity matches 192.0.2.1");
}

TEST_F(StaticProviderTest, CapabilitiesBecomeGrantsAndJson) {
  config::StaticIdentity entry = Entry("127.0.0.0/8", "dev");
  entry.capabilities["example.com/cap/flower"] = R"([{"methods": ["/flwr.proto.Fleet/*"]}])";
  entry.capabilities["a.example/cap"] = R"([{"role": "x"}, 2])";
  StaticIdentityProvider provider({entry});
  LookupResult result = Lookup(provider, "127.0.0.1");
  ASSERT_EQ(result.kind, LookupResult::Kind::kFound);
  const PeerIdentity& peer = *result.identity;
  ASSERT_EQ(peer.capabilities.at("example.com/cap/flower").size(), 1u);
  EXPECT_FALSE(peer.capabilities.at("example.com/cap/flower")[0].all_methods);
  EXPECT_EQ(peer.capabilities.at("a.example/cap").size(), 2u);
  EXPECT_EQ(peer.capabilities_json,
            R"({"a.example/cap":[{"role":"x"},2],)"
            R"("example.com/cap/flower":[{"methods":["/flwr.proto.Fleet/*"]}]})");
}

TEST_F(StaticProviderTest, UnparsableCidrNeverMatches) {
  StaticIdentityProvider provider({Entry("127.0.0.1", "no-prefix"), Entry("127.0.0.0/33", "bad"),
                                   Entry("nonsense/8", "bad"), Entry("127.0.0.0/8", "good")});
  LookupResult result = Lookup(provider, "127.0.0.1");
  ASSERT_EQ(result.kind, LookupResult::Kind::kFound);
  EXPECT_EQ(result.identity->node_name, "good");
}

}  // namespace
}  // namespace sepal::identity
