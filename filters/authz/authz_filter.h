// Authorization filter: decides whether a peer may call a method on a route, from the
// route's allow rules and the connection's identity lookup. Never fails open.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "proxy/config/config.h"
#include "proxy/grpc/grpc_status.h"
#include "proxy/identity/identity.h"

namespace sepal::filters {

struct AuthzDecision {
  bool allowed = false;
  // gRPC status for a denial: UNAUTHENTICATED (not a tailnet peer), PERMISSION_DENIED
  // (known peer, no rule matched) or UNAVAILABLE (identity lookup failed).
  grpc::StatusCode code = grpc::StatusCode::kOk;
  // Short label for metrics and logs: "tag", "user", "node", "capability", "any_peer",
  // "no_identity_provider", "no_rule_matched", "not_in_tailnet", "lookup_failed".
  std::string_view reason;
  std::string message;  // grpc-message for denials; names peer and method
  // The route is in audit mode (`mode: audit`) and its rules denied the call: it goes through
  // (`allowed`), with the denial's reason and message for the log.
  bool audited = false;

  // The label of sepal_authz_decisions_total and the access log: allow, deny or audit_deny.
  std::string_view label() const { return audited ? "audit_deny" : allowed ? "allow" : "deny"; }
};

// Each kind of allow rule on its own, as Authorize applies them (in this order; the first that
// matches admits the call). `sepal explain` prints them one by one.
// The first of the peer's tags that `allow.tags` lists, or nullptr.
const std::string* MatchingTag(const config::AllowRules& allow, const identity::PeerIdentity& peer);
// False for tagged nodes: their user is the pseudo-user "tagged-devices".
bool UserRuleMatches(const config::AllowRules& allow, const identity::PeerIdentity& peer);
// The peer's short name or FQDN if `allow.nodes` lists it, or nullptr.
const std::string* MatchingNode(const config::AllowRules& allow,
                                const identity::PeerIdentity& peer);
// What of the peer's `allow.capability` values covers `path`: the method pattern, or
// kAllMethods for a value without "methods"; nullopt if none does (or the rule is unset).
inline constexpr std::string_view kAllMethods = "all methods";
std::optional<std::string_view> CapabilityRuleMatch(const config::AllowRules& allow,
                                                    const identity::PeerIdentity& peer,
                                                    std::string_view path);

// `lookup` is null when no identity provider is configured (routing only).
AuthzDecision Authorize(const config::RouteConfig& route, const identity::LookupResult* lookup,
                        std::string_view path, std::string_view peer_address);

}  // namespace sepal::filters
