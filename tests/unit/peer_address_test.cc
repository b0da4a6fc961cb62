// ParsePeerAddress: what `sepal whois` and `sepal explain` accept for a peer.
#include <gtest/gtest.h>

#include "proxy/identity/identity.h"

namespace sepal::identity {
namespace {

TEST(PeerAddressTest, ParsesIpv4AndIpv6WithAndWithoutPort) {
  auto v4 = ParsePeerAddress("100.64.0.2:41000");
  ASSERT_TRUE(v4.has_value());
  EXPECT_EQ(v4->ToString(), "100.64.0.2:41000");
  auto bare = ParsePeerAddress("100.64.0.2");
  ASSERT_TRUE(bare.has_value());
  EXPECT_EQ(bare->port, 0);
  auto v6 = ParsePeerAddress("[fd7a:115c:a1e0::1]:9092");
  ASSERT_TRUE(v6.has_value());
  EXPECT_EQ(v6->ToString(), "[fd7a:115c:a1e0::1]:9092");
  auto bare6 = ParsePeerAddress("fd7a:115c:a1e0::1");
  ASSERT_TRUE(bare6.has_value());
  EXPECT_TRUE(bare6->ip.is_v6());
  EXPECT_TRUE(ParsePeerAddress("[::1]").has_value());
  EXPECT_EQ(ParsePeerAddress("1.2.3.4:65535")->port, 65535);
}

// Both used to go wrong: std::stoul threw (abort) on "abc", and 99999 wrapped to 34463.
TEST(PeerAddressTest, RefusesPortsThatAreNotNumbersOrOutOfRange) {
  EXPECT_FALSE(ParsePeerAddress("[::1]:abc").has_value());
  EXPECT_FALSE(ParsePeerAddress("[::1]:99999").has_value());
  EXPECT_FALSE(ParsePeerAddress("1.2.3.4:99999").has_value());
  EXPECT_FALSE(ParsePeerAddress("1.2.3.4:65536").has_value());
  EXPECT_FALSE(ParsePeerAddress("1.2.3.4:").has_value());
  EXPECT_FALSE(ParsePeerAddress("1.2.3.4:-1").has_value());
  EXPECT_FALSE(ParsePeerAddress("[::1]:").has_value());
  EXPECT_FALSE(ParsePeerAddress("[::1]x").has_value());
  EXPECT_FALSE(ParsePeerAddress("[::1").has_value());
}

TEST(PeerAddressTest, RefusesNamesAndJunk) {
  EXPECT_FALSE(ParsePeerAddress("").has_value());
  EXPECT_FALSE(ParsePeerAddress("supernode-a:9092").has_value());
  EXPECT_FALSE(ParsePeerAddress("[1.2.3.4]:5").has_value());
  EXPECT_FALSE(ParsePeerAddress("1.2.3.4.5").has_value());
}

}  // namespace
}  // namespace sepal::identity
