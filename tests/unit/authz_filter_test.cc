// Allow-rule evaluation: each rule kind, tagged pseudo-user, capabilities, fail-closed.
#include "filters/authz/authz_filter.h"

#include <gtest/gtest.h>

namespace sepal::filters {
namespace {

identity::LookupResult Found(identity::PeerIdentity peer) {
  identity::LookupResult result;
  result.kind = identity::LookupResult::Kind::kFound;
  result.identity = std::make_shared<const identity::PeerIdentity>(std::move(peer));
  return result;
}

identity::PeerIdentity SuperNode() {
  identity::PeerIdentity peer;
  peer.node_name = "supernode-a";
  peer.node_fqdn = "supernode-a.tail3c4d5e.ts.net";
  peer.user_login = "tagged-devices";
  peer.tags = {"tag:supernode"};
  return peer;
}

config::RouteConfig RouteWith(config::AllowRules rules) {
  config::RouteConfig route;
  route.match = "/flwr.proto.Fleet/";
  route.upstream = "fleet";
  route.allow = std::move(rules);
  return route;
}

TEST(AuthzFilterTest, NoProviderRoutesOnly) {
  config::RouteConfig route;
  EXPECT_TRUE(Authorize(route, nullptr, "/a/b", "1.2.3.4:5").allowed);
  config::AllowRules rules;
  rules.tags = {"tag:x"};
  AuthzDecision closed = Authorize(RouteWith(rules), nullptr, "/a/b", "1.2.3.4:5");
  EXPECT_FALSE(closed.allowed);
}

TEST(AuthzFilterTest, NotInTailnetIsUnauthenticatedAndFailureIsUnavailable) {
  config::RouteConfig route;  // no allow: any identified peer
  identity::LookupResult missing;
  missing.kind = identity::LookupResult::Kind::kNotInTailnet;
  AuthzDecision a = Authorize(route, &missing, "/flwr.proto.Fleet/X", "100.1.2.3:4");
  EXPECT_FALSE(a.allowed);
  EXPECT_EQ(a.code, grpc::StatusCode::kUnauthenticated);
  identity::LookupResult failed;
  failed.kind = identity::LookupResult::Kind::kFailed;
  failed.detail = "tailscaled unreachable";
  AuthzDecision b = Authorize(route, &failed, "/flwr.proto.Fleet/X", "100.1.2.3:4");
  EXPECT_FALSE(b.allowed);
  EXPECT_EQ(b.code, grpc::StatusCode::kUnavailable);
  EXPECT_NE(b.message.find("tailscaled unreachable"), std::string::npos);
}

TEST(AuthzFilterTest, AuditModeAdmitsWhatTheRulesDenyButNotUnidentifiedPeers) {
  config::AllowRules users;
  users.users = {"alice@example.com"};
  config::RouteConfig route = RouteWith(users);
  route.audit = true;
  identity::LookupResult node = Found(SuperNode());
  AuthzDecision audited = Authorize(route, &node, "/flwr.proto.Fleet/X", "x");
  EXPECT_TRUE(audited.allowed);
  EXPECT_TRUE(audited.audited);
  EXPECT_EQ(audited.label(), "audit_deny");
  EXPECT_EQ(audited.reason, "no_rule_matched");
  EXPECT_NE(audited.message.find("/flwr.proto.Fleet/X"), std::string::npos);
  identity::LookupResult missing;
  missing.kind = identity::LookupResult::Kind::kNotInTailnet;
  AuthzDecision stranger = Authorize(route, &missing, "/flwr.proto.Fleet/X", "x");
  EXPECT_FALSE(stranger.allowed);
  EXPECT_EQ(stranger.label(), "deny");
  route.audit = false;
  EXPECT_EQ(Authorize(route, &node, "/flwr.proto.Fleet/X", "x").label(), "deny");
  route.allow->users = {};
  route.allow->tags = {"tag:supernode"};
  EXPECT_EQ(Authorize(route, &node, "/flwr.proto.Fleet/X", "x").label(), "allow");
}

TEST(AuthzFilterTest, EachRuleKindAdmits) {
  identity::LookupResult node = Found(SuperNode());
  config::AllowRules tags;
  tags.tags = {"tag:other", "tag:supernode"};
  EXPECT_EQ(Authorize(RouteWith(tags), &node, "/p/M", "x").reason, "tag");
  config::AllowRules nodes;
  nodes.nodes = {"supernode-a.tail3c4d5e.ts.net"};
  EXPECT_EQ(Authorize(RouteWith(nodes), &node, "/p/M", "x").reason, "node");
  identity::PeerIdentity alice;
  alice.node_name = "alice-laptop";
  alice.user_login = "alice@example.com";
  identity::LookupResult user = Found(alice);
  config::AllowRules users;
  users.users = {"alice@example.com"};
  EXPECT_EQ(Authorize(RouteWith(users), &user, "/p/M", "x").reason, "user");
}

TEST(AuthzFilterTest, TaggedDevicesPseudoUserNeverMatchesUserRules) {
  identity::LookupResult node = Found(SuperNode());
  config::AllowRules users;
  users.users = {"tagged-devices"};
  AuthzDecision decision = Authorize(RouteWith(users), &node, "/flwr.proto.Fleet/X", "x");
  EXPECT_FALSE(decision.allowed);
  EXPECT_EQ(decision.code, grpc::StatusCode::kPermissionDenied);
  EXPECT_NE(decision.message.find("supernode-a"), std::string::npos);
  EXPECT_NE(decision.message.find("/flwr.proto.Fleet/X"), std::string::npos);
}

TEST(AuthzFilterTest, CapabilityMethodsRestrictTheGrant) {
  identity::PeerIdentity peer = SuperNode();
  peer.tags.clear();
  identity::CapabilityGrant grant;
  grant.all_methods = false;
  grant.methods = {"/flwr.proto.Fleet/Pull*"};
  peer.capabilities["example.com/cap/flower"] = {grant};
  identity::LookupResult lookup = Found(peer);
  config::AllowRules rules;
  rules.capability = "example.com/cap/flower";
  EXPECT_TRUE(Authorize(RouteWith(rules), &lookup, "/flwr.proto.Fleet/PullMessages", "x").allowed);
  EXPECT_FALSE(Authorize(RouteWith(rules), &lookup, "/flwr.proto.Fleet/PushMessages", "x").allowed);
  config::AllowRules other;
  other.capability = "example.com/cap/other";
  EXPECT_FALSE(Authorize(RouteWith(other), &lookup, "/flwr.proto.Fleet/PullMessages", "x").allowed);
}

TEST(AuthzFilterTest, CapabilityValueWithoutMethodsGrantsAll) {
  identity::PeerIdentity peer = SuperNode();
  peer.tags.clear();
  peer.capabilities["example.com/cap/flower"] = {identity::CapabilityGrant{}};
  identity::LookupResult lookup = Found(peer);
  config::AllowRules rules;
  rules.capability = "example.com/cap/flower";
  EXPECT_TRUE(Authorize(RouteWith(rules), &lookup, "/flwr.proto.Control/StopRun", "x").allowed);
}

}  // namespace
}  // namespace sepal::filters
