// Who a peer is (node, user, tags, app capabilities) and the provider interface that
// answers it: tailscaled's WhoIs, or a static table for development and tests.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/ip/address.hpp>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sepal::identity {

// One value of an app capability granted to the peer. Flower-style grants may restrict
// the methods: {"methods": ["/flwr.proto.Fleet/*"]}. A value without a "methods" key
// (or that is not an object) grants every method.
struct CapabilityGrant {
  bool all_methods = true;
  std::vector<std::string> methods;  // patterns; a trailing '*' matches any suffix
};

struct PeerIdentity {
  std::string node_name;  // Node.ComputedName, e.g. "supernode-a"
  std::string node_fqdn;  // Node.Name without the trailing dot, "supernode-a.tail3c4d5e.ts.net"
  std::string user_login;  // UserProfile.LoginName ("tagged-devices" for tagged nodes)
  std::vector<std::string> tags;  // Node.Tags; non-empty <=> tagged node
  // CapMap: capability name -> its grant values (concatenated across grants).
  std::map<std::string, std::vector<CapabilityGrant>> capabilities;
  // CapMap as compact JSON ("{}" when null/absent), sent upstream as
  // tailscale-app-capabilities.
  std::string capabilities_json = "{}";

  bool tagged() const { return !tags.empty(); }
  // "supernode-a (tag:supernode)" / "alice-laptop (alice@example.com)" for messages.
  std::string Describe() const;
};

// Parses a JSON array of capability values (as in CapMap or the static config) into
// grants. Invalid JSON yields an empty list.
std::vector<CapabilityGrant> ParseCapabilityValues(std::string_view json_array);

// True if `pattern` (exact, or with a trailing '*') matches the request path.
bool MethodPatternMatches(std::string_view pattern, std::string_view path);

struct LookupResult {
  enum class Kind {
    kFound,          // identity known
    kNotInTailnet,   // WhoIs 404, or an address outside the tailnet ranges: UNAUTHENTICATED
    kFailed,         // tailscaled unreachable, timed out, 4xx/5xx: UNAVAILABLE (fail closed)
  };
  Kind kind = Kind::kFailed;
  std::shared_ptr<const PeerIdentity> identity;  // set iff kFound
  std::string detail;  // why, for logs and grpc-message ("tailscaled: connect: No such file")
};

using LookupCallback = std::function<void(LookupResult)>;

// "found", "not_in_tailnet" or "failed": the result label of sepal_identity_lookups_total and
// the identity field of /peers.
std::string_view LookupResultName(LookupResult::Kind kind);

// Where a connection comes from: the socket peer, or the PROXY protocol source.
struct PeerAddress {
  boost::asio::ip::address ip;
  uint16_t port = 0;
  std::string ToString() const;  // "100.64.0.2:41000", "[fd7a::1]:41000"
};

// Parses what an operator types for a peer: "100.64.0.2:41000", "[fd7a:115c:a1e0::1]:41000",
// or a bare IPv4/IPv6 address (port 0). Anything else, a port that is not 0-65535 included,
// is nullopt.
std::optional<PeerAddress> ParsePeerAddress(std::string_view text);

// Where the connection went. tailscaled 1.100 and later compute a peer's CapMap toward a
// destination (WhoIs &dst_ip= or &svc_name=); without one, toward the node's first address.
struct LookupDestination {
  std::optional<boost::asio::ip::address> ip;  // a tailnet address of this node
  std::string service;                          // "svc:NAME", a Tailscale Service
  bool empty() const { return !ip && service.empty(); }
  // "" when empty, else "|dst=100.64.0.1|svc=svc:superlink": what caches add to the peer.
  std::string Key() const;
};

class IdentityProvider {
 public:
  virtual ~IdentityProvider() = default;
  // Thread-safe. Calls `done` exactly once, on `reply_to` (the calling worker's executor),
  // never inline from inside Lookup.
  virtual void Lookup(const PeerAddress& peer, boost::asio::any_io_executor reply_to,
                      LookupCallback done) = 0;
  // The same, for a connection that reached `destination`. Providers that cannot scope
  // an identity to a destination (static) ignore it.
  virtual void LookupToward(const PeerAddress& peer, const LookupDestination& destination,
                            boost::asio::any_io_executor reply_to, LookupCallback done) {
    (void)destination;
    Lookup(peer, std::move(reply_to), std::move(done));
  }
  // Stops background work (threads, watchers); pending lookups complete with kFailed.
  virtual void Shutdown() {}
  virtual std::string_view name() const = 0;
};

}  // namespace sepal::identity
