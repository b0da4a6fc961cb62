// The explain subcommand: one lookup with the configured provider, then, per listener, the
// router, the allow rules one by one (filters/authz's own matchers) and Authorize itself for
// the decision, so what it prints is what the proxy does.
#include "proxy/explain_command.h"

#include <cstdio>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "filters/authz/authz_filter.h"
#include "proxy/common/strings.h"
#include "proxy/config/config.h"
#include "proxy/http1/rest_request.h"
#include "proxy/grpc/grpc_status.h"
#include "proxy/identity/provider_factory.h"
#include "proxy/identity/tailscale_provider.h"
#include "proxy/limits/peer_limits.h"
#include "proxy/router/router.h"

namespace sepal {

namespace {

constexpr char kUsage[] =
    "usage: sepal explain --config FILE [--listener NAME] [--destination DEST] PEER METHOD\n"
    "  PEER    the caller's address: 100.64.0.2:41000, [fd7a:115c:a1e0::1]:41000 or a bare IP\n"
    "  METHOD  the gRPC path, /flwr.proto.Fleet/PullMessages (the leading / may be left out)\n"
    "  --listener  explain on this listener only (default: every listener)\n"
    "  --destination  ask for the capabilities toward this tailnet IP or svc:NAME (default:\n"
    "              with one listener explained, what it scopes by: its tailscale_service,\n"
    "              or its address if that is a tailnet IP)\n"
    "exit status: 0 forwarded, 1 refused, 2 bad arguments or config\n";

int Usage(const std::string& what) {
  std::fprintf(stderr, "sepal explain: %s\n%s", what.c_str(), kUsage);
  return 2;
}

std::string Join(const std::vector<std::string>& items) {
  std::string out;
  for (const std::string& item : items) out += (out.empty() ? "" : ", ") + item;
  return out.empty() ? "(none)" : out;
}

void PrintIdentity(const identity::LookupResult* lookup, const std::string& source) {
  if (lookup == nullptr) {
    std::printf("  identity:     none (no identity section: sepal routes only)\n");
    return;
  }
  std::printf("  identity:     asked the %s\n", source.c_str());
  switch (lookup->kind) {
    case identity::LookupResult::Kind::kFound: {
      const identity::PeerIdentity& who = *lookup->identity;
      std::printf("  node:         %s%s\n", who.node_name.c_str(),
                  who.node_fqdn.empty() || who.node_fqdn == who.node_name
                      ? ""
                      : StrCat(" (", who.node_fqdn, ")").c_str());
      std::printf("  user:         %s%s\n", who.user_login.empty() ? "(none)" : who.user_login.c_str(),
                  who.tagged() ? " (tagged node: user rules do not apply)" : "");
      std::printf("  tags:         %s\n", Join(who.tags).c_str());
      std::printf("  capabilities: %s\n", who.capabilities_json.c_str());
      return;
    }
    case identity::LookupResult::Kind::kNotInTailnet:
      std::printf("  result:       not a tailnet peer: %s\n", lookup->detail.c_str());
      return;
    case identity::LookupResult::Kind::kFailed:
      std::printf("  result:       lookup failed: %s\n", lookup->detail.c_str());
      return;
  }
}

// One line per kind of rule: what the route asks for, whether the peer has it, and why.
void PrintRules(const config::AllowRules& allow, const identity::PeerIdentity& peer,
                std::string_view path) {
  auto line = [](const char* kind, const std::string& wanted, const char* verdict,
                 const std::string& why) {
    std::string text = StrCat("    ", kind, std::string(12 - std::string_view(kind).size(), ' '),
                              wanted);
    if (wanted.size() < 35) text.append(35 - wanted.size(), ' ');
    text += StrCat(" ", verdict, why.empty() ? "" : std::string(6 - std::string_view(verdict).size(), ' '), why);
    std::printf("%s\n", text.c_str());
  };
  if (allow.tags.empty()) {
    line("tags", "(none)", "-", "");
  } else if (const std::string* tag = filters::MatchingTag(allow, peer)) {
    line("tags", Join(allow.tags), "MATCH", StrCat("peer has ", *tag));
  } else {
    line("tags", Join(allow.tags), "no", StrCat("peer's tags: ", Join(peer.tags)));
  }
  if (allow.users.empty()) {
    line("users", "(none)", "-", "");
  } else if (filters::UserRuleMatches(allow, peer)) {
    line("users", Join(allow.users), "MATCH", StrCat("peer's user is ", peer.user_login));
  } else {
    line("users", Join(allow.users), "no",
         peer.tagged() ? std::string("tagged node: user rules do not apply")
                       : StrCat("peer's user is ", peer.user_login));
  }
  if (allow.nodes.empty()) {
    line("nodes", "(none)", "-", "");
  } else if (const std::string* node = filters::MatchingNode(allow, peer)) {
    line("nodes", Join(allow.nodes), "MATCH", StrCat("peer is ", *node));
  } else {
    line("nodes", Join(allow.nodes), "no",
         StrCat("peer is ", peer.node_name, " (", peer.node_fqdn, ")"));
  }
  if (allow.capability.empty()) {
    line("capability", "(none)", "-", "");
  } else if (auto covered = filters::CapabilityRuleMatch(allow, peer, path)) {
    line("capability", allow.capability, "MATCH",
         *covered == filters::kAllMethods ? std::string("granted for all methods")
                                          : StrCat("granted by ", *covered));
  } else {
    auto held = peer.capabilities.find(allow.capability);
    std::string why = "the tailnet policy grants the peer no such capability";
    if (held != peer.capabilities.end()) {
      std::vector<std::string> patterns;
      for (const identity::CapabilityGrant& grant : held->second) {
        patterns.insert(patterns.end(), grant.methods.begin(), grant.methods.end());
      }
      why = StrCat("granted for ", Join(patterns), " only");
    }
    line("capability", allow.capability, "no", why);
  }
}

void PrintPeerLimits(const config::PeerLimitsConfig& peer_limits,
                     const identity::PeerIdentity* peer) {
  const config::PeerLimitValues& values = limits::LimitsFor(peer_limits, peer);
  std::string which = "the listener's";
  for (size_t i = 0; i < peer_limits.overrides.size(); ++i) {
    if (&peer_limits.overrides[i].limits == &values) which = StrCat("overrides[", i, "]");
  }
  auto cap = [](uint32_t n) { return n == 0 ? std::string("off") : StrCat(n); };
  std::printf("  peer limits:  %s: connections %s, calls in flight %s, calls/s %s (burst %s)\n",
              which.c_str(), cap(values.connections).c_str(),
              cap(values.concurrent_calls).c_str(), cap(values.calls_per_second).c_str(),
              cap(values.calls_burst).c_str());
}

// What a connection to `listener` is scoped to when its address is all that is known: its
// Tailscale Service, or its address when that is a tailnet IP (a wildcard address depends on
// what each peer dials).
identity::LookupDestination ListenerDestination(const config::ListenerConfig& listener) {
  identity::LookupDestination destination;
  destination.service = listener.tailscale_service;
  if (destination.service.empty() && listener.address.kind == config::SocketAddress::Kind::kTcp) {
    boost::system::error_code ec;
    boost::asio::ip::address ip = boost::asio::ip::make_address(listener.address.host, ec);
    if (!ec && identity::TailscaleIdentityProvider::IsTailscaleAddress(ip)) destination.ip = ip;
  }
  return destination;
}

enum class Outcome { kNoRoute, kForwarded, kRefused };

constexpr const char* kFleetService = "/flwr.proto.Fleet/";
constexpr const char* kAdapterMethod = "/flwr.proto.GrpcAdapter/SendReceive";

bool Inspects(const Route& route) {
  return route.config->inspect == config::RouteConfig::Inspect::kGrpcAdapter;
}

Outcome ExplainOnListener(const config::Config& config, const config::ListenerConfig& listener,
                          const identity::LookupResult* lookup, const std::string& path,
                          const std::string& peer_text, bool only_listener) {
  Router router(listener, config);
  const Route* route = router.Match(path);
  // A Fleet method with no route of its own may still arrive wrapped in the gRPC adapter's
  // SendReceive, on a route that inspects it: that route authorizes the wrapped method.
  bool via_adapter = false;
  if (route == nullptr && path.starts_with(kFleetService)) {
    const Route* adapter = router.Match(kAdapterMethod);
    if (adapter != nullptr && Inspects(*adapter)) {
      route = adapter;
      via_adapter = true;
    }
  }
  if (route == nullptr && !only_listener) {
    std::printf("\nlistener %s (%s): no route for this method (UNIMPLEMENTED there)\n",
                listener.name.c_str(), listener.address.text.c_str());
    return Outcome::kNoRoute;
  }
  std::printf("\nlistener %s (%s)\n", listener.name.c_str(), listener.address.text.c_str());
  bool rest = listener.protocol == config::Protocol::kHttp1;
  if (route == nullptr) {
    std::printf("  route:        none matches\n");
    std::printf("  decision:     %s \"sepal: no route for %s on listener %s\"\n",
                rest ? "HTTP 404" : "UNIMPLEMENTED", path.c_str(), listener.name.c_str());
    return Outcome::kNoRoute;
  }
  const config::RouteConfig& rc = *route->config;
  std::printf("  route:        %s (%s) -> upstream %s, mode %s\n", rc.match.c_str(),
              route->is_prefix ? (rest ? "every path under it" : "every method of the service")
                               : (rest ? "this path only" : "this method only"),
              rc.upstream.c_str(), rc.audit ? "audit" : "enforce");
  if (via_adapter) {
    std::printf("  transport:    the gRPC adapter: %s carrying a %sRequest (inspect: "
                "grpc_adapter authorizes the wrapped method)\n",
                kAdapterMethod, path.substr(std::string_view(kFleetService).size()).c_str());
  } else if (Inspects(*route)) {
    std::printf("  inspect:      grpc_adapter: each call is authorized as the Fleet method its "
                "MessageContainer wraps;\n                explain that method instead, e.g. "
                "/flwr.proto.Fleet/PullMessages\n");
    return Outcome::kRefused;
  }
  const identity::PeerIdentity* peer =
      lookup != nullptr && lookup->kind == identity::LookupResult::Kind::kFound
          ? lookup->identity.get()
          : nullptr;
  if (!rc.allow) {
    std::printf("  allow rules:  none: %s\n", lookup == nullptr ? "every peer may call"
                                                                : "every identified peer may call");
  } else if (peer != nullptr) {
    std::printf("  allow rules:  any one admits the call\n");
    PrintRules(*rc.allow, *peer, path);
  } else {
    std::printf("  allow rules:  not reached: the peer is not identified\n");
  }
  filters::AuthzDecision decision = filters::Authorize(rc, lookup, path, peer_text);
  if (decision.audited) {
    std::printf("  decision:     audit_deny (%s): forwarded to upstream %s because the route is "
                "in audit mode;\n                under mode: enforce it would get "
                "PERMISSION_DENIED \"%s\"\n",
                std::string(decision.reason).c_str(), rc.upstream.c_str(),
                decision.message.c_str());
  } else if (decision.allowed) {
    std::printf("  decision:     allow (%s): forwarded to upstream %s\n",
                std::string(decision.reason).c_str(), rc.upstream.c_str());
  } else {
    std::string answer = rest ? StrCat("HTTP ", http1::HttpStatusForCode(decision.code))
                              : std::string(grpc::StatusCodeName(decision.code));
    std::printf("  decision:     deny (%s): %s \"%s\"\n", std::string(decision.reason).c_str(),
                answer.c_str(), decision.message.c_str());
  }
  if (decision.allowed) PrintPeerLimits(listener.peer_limits, peer);
  return decision.allowed ? Outcome::kForwarded : Outcome::kRefused;
}

}  // namespace

int RunExplainCommand(int argc, char** argv) {
  std::string config_path, listener_name, destination_text;
  std::vector<std::string> positional;
  for (int i = 0; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (arg == "--config" || arg == "--listener" || arg == "--destination") {
      if (i + 1 >= argc) return Usage(std::string(arg) + " needs a value");
      (arg == "--config" ? config_path : arg == "--listener" ? listener_name : destination_text) =
          argv[++i];
    } else if (arg.starts_with("--")) {
      return Usage("unknown argument " + std::string(arg));
    } else {
      positional.emplace_back(arg);
    }
  }
  if (config_path.empty()) return Usage("--config is required");
  if (positional.size() != 2) return Usage("expected PEER and METHOD");
  std::optional<identity::PeerAddress> peer = identity::ParsePeerAddress(positional[0]);
  if (!peer) return Usage(positional[0] + " is not IP, IP:PORT or [IPv6]:PORT");
  std::string path = positional[1];
  if (!path.starts_with('/')) path.insert(0, "/");
  // A gRPC method path is explained on the h2 listeners, a REST path (/api/v0/fleet/x, as
  // the proxy normalizes it) on the protocol: http1 ones.
  std::string_view service, method;
  config::Protocol kind = config::Protocol::kHttp2;
  if (!grpc::SplitGrpcPath(path, &service, &method)) {
    std::string normalized, query, error;
    if (!http1::NormalizeTarget(path, &normalized, &query, &error) || !query.empty()) {
      return Usage(path + " is neither a gRPC method path (/package.Service/Method) nor a "
                          "REST path (/api/v0/fleet/pull-messages)");
    }
    path = normalized;
    kind = config::Protocol::kHttp1;
  }

  auto config = config::LoadConfigFile(config_path);
  if (!config.ok()) {
    std::fprintf(stderr, "sepal explain: %s\n", std::string(config.status().message()).c_str());
    return 2;
  }
  std::vector<const config::ListenerConfig*> listeners;
  for (const config::ListenerConfig& listener : config->listeners) {
    if (!listener_name.empty() ? listener.name == listener_name : listener.protocol == kind) {
      listeners.push_back(&listener);
    }
  }
  if (listeners.empty() && !listener_name.empty()) {
    return Usage(StrCat("no listener named ", listener_name, " in ", config_path));
  }
  if (listeners.empty()) {
    return Usage(kind == config::Protocol::kHttp1
                     ? path + " is not a gRPC method path (/package.Service/Method), and no "
                              "listener of " + config_path + " is protocol: http1 (REST paths)"
                     : "no HTTP/2 (gRPC) listener in " + config_path + " for " + path);
  }

  std::unique_ptr<identity::IdentityProvider> provider =
      identity::MakeIdentityProvider(config->identity);
  // The destination the capabilities are scoped to, as the proxy sends it to tailscaled.
  identity::LookupDestination destination;
  std::string destination_source;
  if (!destination_text.empty()) {
    std::optional<identity::LookupDestination> parsed =
        identity::ParseLookupDestination(destination_text);
    if (!parsed) return Usage("--destination " + destination_text + " is neither an IP nor svc:NAME");
    destination = *parsed;
    destination_source = "--destination";
  } else if (listeners.size() == 1) {
    destination = ListenerDestination(*listeners.front());
    destination_source = StrCat("listener ", listeners.front()->name);
  }
  std::optional<identity::LookupResult> lookup;
  std::string source;
  if (provider) {
    source = StrCat(provider->name(), " provider from ", config_path);
    if (!destination.empty()) {
      source += StrCat(", toward ", identity::DescribeDestination(destination), " (",
                       destination_source, ")");
    }
    lookup = identity::LookupAndWait(*provider, *peer, destination);
  }
  std::string peer_text = peer->ToString();
  std::printf("call %s from %s\n", path.c_str(), peer_text.c_str());
  PrintIdentity(lookup ? &*lookup : nullptr, source);

  int routed = 0, refused = 0;
  for (const config::ListenerConfig* listener : listeners) {
    Outcome outcome =
        ExplainOnListener(*config, *listener, lookup ? &*lookup : nullptr, path, peer_text,
                          !listener_name.empty());
    routed += outcome != Outcome::kNoRoute;
    refused += outcome != Outcome::kForwarded;
  }
  if (listener_name.empty() && routed == 0) {
    std::printf("\nno listener routes %s\n", path.c_str());
    return 1;
  }
  // Every listener: a listener without a route for it does not count against the call.
  if (listener_name.empty()) refused -= static_cast<int>(listeners.size()) - routed;
  return refused == 0 ? 0 : 1;
}

}  // namespace sepal
