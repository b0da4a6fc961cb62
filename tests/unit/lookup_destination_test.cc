// Which destination a connection's WhoIs asks toward (LookupDestinationFor): the listener's
// Tailscale Service, else the tailnet address the peer dialled, in the form tailscaled knows
// the node's addresses by; nothing for other addresses.
#include <gtest/gtest.h>

#include <boost/asio/ip/address.hpp>

#include "proxy/config/config.h"
#include "proxy/front/connection_peer.h"

namespace sepal {
namespace {

using boost::asio::ip::make_address;

identity::LookupDestination For(const std::string& dialled, const std::string& service = "") {
  config::ListenerConfig listener;
  listener.tailscale_service = service;
  return LookupDestinationFor(listener, make_address(dialled));
}

TEST(LookupDestinationTest, ATailnetAddressIsSentAsDialled) {
  EXPECT_EQ(For("100.101.12.34").ip, make_address("100.101.12.34"));
  EXPECT_EQ(For("fd7a:115c:a1e0::1:2").ip, make_address("fd7a:115c:a1e0::1:2"));
  EXPECT_EQ(For("100.101.12.34").Key(), "|dst=100.101.12.34");
}

// A listener on [::] accepts IPv4 peers with IPv4-mapped local addresses; tailscaled lists
// the node's address as plain IPv4, so that is what is sent.
TEST(LookupDestinationTest, AnIpv4MappedTailnetAddressIsSentAsPlainIpv4) {
  auto destination = For("::ffff:100.101.12.34");
  ASSERT_TRUE(destination.ip.has_value());
  EXPECT_TRUE(destination.ip->is_v4());
  EXPECT_EQ(*destination.ip, make_address("100.101.12.34"));
  EXPECT_FALSE(For("::ffff:127.0.0.1").ip.has_value());
}

TEST(LookupDestinationTest, OtherAddressesAreNotSent) {
  for (const char* dialled : {"127.0.0.1", "::1", "10.0.0.5", "192.168.1.1", "100.63.255.255",
                              "100.128.0.1", "100.115.92.7", "fd7a:115c:a1e1::1", "0.0.0.0"}) {
    EXPECT_TRUE(For(dialled).empty()) << dialled;
  }
}

TEST(LookupDestinationTest, AServiceListenerAsksTowardItsServiceOnly) {
  auto destination = For("100.101.12.34", "svc:superlink");
  EXPECT_EQ(destination.service, "svc:superlink");
  EXPECT_FALSE(destination.ip.has_value());
  EXPECT_EQ(destination.Key(), "|svc=svc:superlink");
  EXPECT_EQ(For("127.0.0.1", "svc:superlink").service, "svc:superlink");
}

}  // namespace
}  // namespace sepal
