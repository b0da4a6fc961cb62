// Allow-rule evaluation: any matching rule admits the call.
#include "filters/authz/authz_filter.h"

#include <algorithm>

#include "proxy/common/strings.h"

namespace sepal::filters {

namespace {

bool Contains(const std::vector<std::string>& list, std::string_view value) {
  return !value.empty() && std::find(list.begin(), list.end(), value) != list.end();
}

AuthzDecision Allow(std::string_view reason) {
  AuthzDecision decision;
  decision.allowed = true;
  decision.reason = reason;
  return decision;
}

AuthzDecision Deny(grpc::StatusCode code, std::string_view reason, std::string message) {
  AuthzDecision decision;
  decision.code = code;
  decision.reason = reason;
  decision.message = std::move(message);
  return decision;
}

}  // namespace

const std::string* MatchingTag(const config::AllowRules& allow,
                               const identity::PeerIdentity& peer) {
  for (const std::string& tag : peer.tags) {
    if (Contains(allow.tags, tag)) return &tag;
  }
  return nullptr;
}

bool UserRuleMatches(const config::AllowRules& allow, const identity::PeerIdentity& peer) {
  return !peer.tagged() && Contains(allow.users, peer.user_login);
}

const std::string* MatchingNode(const config::AllowRules& allow,
                                const identity::PeerIdentity& peer) {
  if (Contains(allow.nodes, peer.node_name)) return &peer.node_name;
  if (Contains(allow.nodes, peer.node_fqdn)) return &peer.node_fqdn;
  return nullptr;
}

std::optional<std::string_view> CapabilityRuleMatch(const config::AllowRules& allow,
                                                    const identity::PeerIdentity& peer,
                                                    std::string_view path) {
  if (allow.capability.empty()) return std::nullopt;
  auto it = peer.capabilities.find(allow.capability);
  if (it == peer.capabilities.end()) return std::nullopt;
  for (const identity::CapabilityGrant& grant : it->second) {
    if (grant.all_methods) return kAllMethods;
    for (const std::string& pattern : grant.methods) {
      if (identity::MethodPatternMatches(pattern, path)) return pattern;
    }
  }
  return std::nullopt;
}

AuthzDecision Authorize(const config::RouteConfig& route, const identity::LookupResult* lookup,
                        std::string_view path, std::string_view peer_address) {
  if (lookup == nullptr) {
    // Config validation refuses allow rules without an identity provider; stay closed
    // anyway should one slip through.
    if (route.allow) {
      return Deny(grpc::StatusCode::kPermissionDenied, "no_identity_provider",
                  StrCat("sepal: ", path, " requires an identity, but no identity provider is "
                                          "configured"));
    }
    return Allow("no_identity_provider");
  }
  switch (lookup->kind) {
    case identity::LookupResult::Kind::kNotInTailnet:
      return Deny(grpc::StatusCode::kUnauthenticated, "not_in_tailnet",
                  StrCat("sepal: peer ", peer_address, " is not a member of the tailnet (",
                         lookup->detail, ")"));
    case identity::LookupResult::Kind::kFailed:
      return Deny(grpc::StatusCode::kUnavailable, "lookup_failed",
                  StrCat("sepal: cannot identify peer ", peer_address, ": ", lookup->detail));
    case identity::LookupResult::Kind::kFound:
      break;
  }
  const identity::PeerIdentity& peer = *lookup->identity;
  if (!route.allow) return Allow("any_peer");
  const config::AllowRules& allow = *route.allow;
  if (MatchingTag(allow, peer) != nullptr) return Allow("tag");
  // A tagged node's user is the pseudo-user "tagged-devices": user rules are for people.
  if (UserRuleMatches(allow, peer)) return Allow("user");
  if (MatchingNode(allow, peer) != nullptr) return Allow("node");
  if (CapabilityRuleMatch(allow, peer, path)) return Allow("capability");
  AuthzDecision denied =
      Deny(grpc::StatusCode::kPermissionDenied, "no_rule_matched",
           StrCat("sepal: peer ", peer.Describe(), " at ", peer_address, " may not call ", path));
  // Audit mode covers the rules only: a peer that is not identified was refused above.
  if (route.audit) {
    denied.allowed = true;
    denied.audited = true;
    denied.code = grpc::StatusCode::kOk;
  }
  return denied;
}

}  // namespace sepal::filters
