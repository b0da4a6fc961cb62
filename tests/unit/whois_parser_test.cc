// WhoIs body parsing against every fixture and the format variations tailscaled produced,
// plus capability values, method patterns and the small PeerIdentity/PeerAddress helpers.
#include "proxy/identity/whois_parser.h"

#include <gtest/gtest.h>

#include <boost/asio/ip/address.hpp>

#include "tests/support/fake_tailscaled.h"

namespace sepal::identity {
namespace {

using test::FakeTailscaled;

PeerIdentity ParseOk(std::string_view body) {
  absl::StatusOr<PeerIdentity> identity = ParseWhoIsResponse(body);
  EXPECT_TRUE(identity.ok()) << identity.status() << "\n" << body;
  return identity.ok() ? *identity : PeerIdentity{};
}

std::string Fixture(std::string_view name) {
  std::string body = FakeTailscaled::LoadFixture(name);
  EXPECT_FALSE(body.empty()) << "fixture " << name << " missing in "
                             << FakeTailscaled::FixtureDir();
  return body;
}

TEST(WhoisParserTest, TaggedNode) {
  PeerIdentity peer = ParseOk(Fixture("tagged-node.json"));
  EXPECT_EQ(peer.node_name, "supernode-a");
  EXPECT_EQ(peer.node_fqdn, "supernode-a.tail3c4d5e.ts.net");
  EXPECT_EQ(peer.user_login, "tagged-devices");
  EXPECT_EQ(peer.tags, std::vector<std::string>{"tag:supernode"});
  EXPECT_TRUE(peer.tagged());
  ASSERT_EQ(peer.capabilities.size(), 1u);
  const auto& grants = peer.capabilities.at("example.com/cap/flower");
  ASSERT_EQ(grants.size(), 1u);
  EXPECT_TRUE(grants[0].all_methods);
  EXPECT_EQ(peer.capabilities_json,
            R"({"example.com/cap/flower":[{"role":"supernode","federations":["default"]}]})");
  EXPECT_EQ(peer.Describe(), "supernode-a (tag:supernode)");
}

TEST(WhoisParserTest, TaggedNodeWithNullCapMap) {
  PeerIdentity peer = ParseOk(Fixture("tagged-node-no-caps.json"));
  EXPECT_EQ(peer.node_name, "superlink-b");
  EXPECT_EQ(peer.node_fqdn, "superlink-b.tail3c4d5e.ts.net");
  EXPECT_EQ(peer.tags, (std::vector<std::string>{"tag:superlink", "tag:prod"}));
  EXPECT_TRUE(peer.capabilities.empty());
  EXPECT_EQ(peer.capabilities_json, "{}");
  EXPECT_EQ(peer.Describe(), "superlink-b (tag:superlink,tag:prod)");
}

TEST(WhoisParserTest, UserNodeWithConcatenatedGrantsAndNullCapValue) {
  PeerIdentity peer = ParseOk(Fixture("user-node.json"));
  EXPECT_EQ(peer.node_name, "alice-laptop");
  EXPECT_EQ(peer.node_fqdn, "alice-laptop.tail3c4d5e.ts.net");
  EXPECT_EQ(peer.user_login, "alice@example.com");
  EXPECT_FALSE(peer.tagged());
  ASSERT_EQ(peer.capabilities.size(), 2u);
  EXPECT_EQ(peer.capabilities.at("example.com/cap/flower").size(), 2u);
  // A null value holds the capability with no values at all.
  ASSERT_EQ(peer.capabilities.count("https://tailscale.com/cap/file-sharing-target"), 1u);
  EXPECT_TRUE(peer.capabilities.at("https://tailscale.com/cap/file-sharing-target").empty());
  EXPECT_EQ(peer.capabilities_json,
            R"({"example.com/cap/flower":[{"role":"operator"},{"role":"observer"}],)"
            R"("https://tailscale.com/cap/file-sharing-target":null})");
  EXPECT_EQ(peer.Describe(), "alice-laptop (alice@example.com)");
}

TEST(WhoisParserTest, LegacyFormatGivesTheSameIdentity) {
  PeerIdentity legacy = ParseOk(Fixture("tagged-node-legacy-v1.90.json"));
  PeerIdentity current = ParseOk(Fixture("tagged-node.json"));
  EXPECT_EQ(legacy.node_name, current.node_name);
  EXPECT_EQ(legacy.node_fqdn, current.node_fqdn);
  EXPECT_EQ(legacy.user_login, current.user_login);
  EXPECT_EQ(legacy.tags, current.tags);
  EXPECT_EQ(legacy.capabilities_json, current.capabilities_json);
}

TEST(WhoisParserTest, AbsentCapMapIsEmpty) {
  PeerIdentity peer = ParseOk(R"({"Node":{"Name":"n.ts.net.","ComputedName":"n"},
                                  "UserProfile":{"LoginName":"bob@example.com"}})");
  EXPECT_TRUE(peer.capabilities.empty());
  EXPECT_EQ(peer.capabilities_json, "{}");
  EXPECT_FALSE(peer.tagged());
}

TEST(WhoisParserTest, FieldOrderUnknownFieldsAndOldZeroValuesDoNotMatter) {
  PeerIdentity peer = ParseOk(R"({
    "CapMap": {"z.example/cap": [1], "a.example/cap": [{"methods": ["/x/Y"]}]},
    "FutureField": {"nested": [1, 2, {"deep": null}]},
    "UserProfile": {"Roles": [], "ProfilePicURL": "", "Groups": ["group:x"],
                    "LoginName": "carol@example.com", "ID": 1},
    "Node": {"KeyExpiry": "0001-01-01T00:00:00Z", "Created": "0001-01-01T00:00:00Z",
             "Online": false, "ComputedName": "carol-pc", "Name": "carol-pc.example.ts.net.",
             "Tags": null, "Unknown": true}
  })");
  EXPECT_EQ(peer.node_name, "carol-pc");
  EXPECT_EQ(peer.user_login, "carol@example.com");
  EXPECT_FALSE(peer.tagged());
  // Sorted like Go's map marshalling, whatever the order in the body.
  EXPECT_EQ(peer.capabilities_json,
            R"({"a.example/cap":[{"methods":["/x/Y"]}],"z.example/cap":[1]})");
  ASSERT_EQ(peer.capabilities.at("a.example/cap").size(), 1u);
  EXPECT_FALSE(peer.capabilities.at("a.example/cap")[0].all_methods);
}

TEST(WhoisParserTest, IdsBeyondDoublePrecisionAreAccepted) {
  PeerIdentity peer = ParseOk(R"({"Node":{"ID":9223372036854775807,"User":18446744073709551615,
      "Name":"big.ts.net.","Tags":["tag:big"]},
      "UserProfile":{"ID":123456789012345678901234567890,"LoginName":"tagged-devices"}})");
  EXPECT_EQ(peer.node_fqdn, "big.ts.net");
  EXPECT_TRUE(peer.tagged());
}

TEST(WhoisParserTest, TaggedIsDecidedFromTagsOnly) {
  PeerIdentity peer =
      ParseOk(R"({"Node":{"Name":"x.ts.net."},"UserProfile":{"LoginName":"tagged-devices"}})");
  EXPECT_FALSE(peer.tagged());
  EXPECT_EQ(peer.user_login, "tagged-devices");
}

TEST(WhoisParserTest, NodeNameFallsBackToTheFirstLabel) {
  PeerIdentity peer =
      ParseOk(R"({"Node":{"Name":"edge-7.tail1.ts.net."},"UserProfile":{"LoginName":"u"}})");
  EXPECT_EQ(peer.node_name, "edge-7");
}

TEST(WhoisParserTest, GarbageIsAnError) {
  for (std::string_view body : {
           "",
           "not json",
           "[]",
           "{}",
           R"({"Node":null,"UserProfile":{}})",
           R"({"Node":{},"UserProfile":null})",
           R"({"Node":{"Tags":"tag:x"},"UserProfile":{}})",
           R"({"Node":{"Tags":[1]},"UserProfile":{}})",
           R"({"Node":{"Name":5},"UserProfile":{}})",
           R"({"Node":{},"UserProfile":{"LoginName":{}}})",
           R"({"Node":{},"UserProfile":{},"CapMap":[]})",
           R"({"Node":{},"UserProfile":{},"CapMap":{"c":{"methods":[]}}})",
       }) {
    EXPECT_FALSE(ParseWhoIsResponse(body).ok()) << body;
  }
  std::string truncated = Fixture("user-node.json");
  truncated.resize(truncated.size() / 2);
  EXPECT_FALSE(ParseWhoIsResponse(truncated).ok());
}

TEST(CapabilityTest, ValuesWithAndWithoutMethods) {
  std::vector<CapabilityGrant> grants = ParseCapabilityValues(
      R"([{"methods":["/flwr.proto.Fleet/*","/flwr.proto.Control/StartRun"]},
          {"role":"x"}, "plain", 5, {"methods":"/a.B/C"}, {"methods":null},
          {"methods":[7,"/d.E/F"]}])");
  ASSERT_EQ(grants.size(), 7u);
  EXPECT_FALSE(grants[0].all_methods);
  EXPECT_EQ(grants[0].methods,
            (std::vector<std::string>{"/flwr.proto.Fleet/*", "/flwr.proto.Control/StartRun"}));
  EXPECT_TRUE(grants[1].all_methods);
  EXPECT_TRUE(grants[2].all_methods);
  EXPECT_TRUE(grants[3].all_methods);
  EXPECT_FALSE(grants[4].all_methods);
  EXPECT_EQ(grants[4].methods, std::vector<std::string>{"/a.B/C"});
  // A "methods" key that is not a list of patterns grants nothing.
  EXPECT_FALSE(grants[5].all_methods);
  EXPECT_TRUE(grants[5].methods.empty());
  EXPECT_EQ(grants[6].methods, std::vector<std::string>{"/d.E/F"});
}

TEST(CapabilityTest, InvalidOrNonArrayJsonGivesNoGrants) {
  EXPECT_TRUE(ParseCapabilityValues("").empty());
  EXPECT_TRUE(ParseCapabilityValues("[{").empty());
  EXPECT_TRUE(ParseCapabilityValues("null").empty());
  EXPECT_TRUE(ParseCapabilityValues(R"({"methods":["/a/b"]})").empty());
  EXPECT_TRUE(ParseCapabilityValues("[]").empty());
}

TEST(CapabilityTest, MethodPatterns) {
  EXPECT_TRUE(MethodPatternMatches("/flwr.proto.Fleet/*", "/flwr.proto.Fleet/PullMessages"));
  EXPECT_TRUE(MethodPatternMatches("/flwr.proto.Fleet/*", "/flwr.proto.Fleet/"));
  EXPECT_FALSE(MethodPatternMatches("/flwr.proto.Fleet/*", "/flwr.proto.FleetX/Pull"));
  EXPECT_TRUE(MethodPatternMatches("/flwr.proto.Fleet/Pull*", "/flwr.proto.Fleet/PullObject"));
  EXPECT_TRUE(MethodPatternMatches("/a.B/C", "/a.B/C"));
  EXPECT_FALSE(MethodPatternMatches("/a.B/C", "/a.B/CD"));
  EXPECT_FALSE(MethodPatternMatches("/a.B/", "/a.B/C"));  // no '*': exact only
  EXPECT_TRUE(MethodPatternMatches("*", "/anything/At"));
  EXPECT_FALSE(MethodPatternMatches("", "/a.B/C"));
}

TEST(PeerAddressTest, ToString) {
  PeerAddress v4{boost::asio::ip::make_address("100.64.0.2"), 41000};
  EXPECT_EQ(v4.ToString(), "100.64.0.2:41000");
  PeerAddress v6{boost::asio::ip::make_address("fd7a:115c:a1e0::1"), 41000};
  EXPECT_EQ(v6.ToString(), "[fd7a:115c:a1e0::1]:41000");
}

TEST(PeerIdentityTest, DescribeFallsBack) {
  PeerIdentity peer;
  peer.node_fqdn = "n.ts.net";
  EXPECT_EQ(peer.Describe(), "n.ts.net");
  // (Not a one-character name: g++ 12 at -O3 raises a bogus -Wrestrict on assigning a
  // one-character literal to a std::string, GCC PR105329.)
  peer.node_name = "node-a";
  peer.user_login = "dave@example.com";
  EXPECT_EQ(peer.Describe(), "node-a (dave@example.com)");
}

}  // namespace
}  // namespace sepal::identity
