// The whois subcommand: the same provider and checks the proxy uses, printed for humans.
#include "proxy/whois_command.h"

#include <cstdio>
#include <optional>
#include <string>
#include <string_view>

#include "proxy/common/strings.h"
#include "proxy/config/config.h"
#include "proxy/identity/provider_factory.h"
#include "proxy/identity/tailscale_provider.h"

namespace sepal {

namespace {

constexpr char kUsage[] =
    "usage: sepal whois ADDR [--socket PATH | --config FILE] [--destination DEST]\n"
    "  ADDR     100.64.0.2:41000, [fd7a:115c:a1e0::1]:41000 or a bare IP\n"
    "  --socket tailscaled's LocalAPI socket (default /var/run/tailscale/tailscaled.sock)\n"
    "  --config use the identity provider of this sepal config (tailscale or static)\n"
    "  --destination  the capabilities toward this tailnet IP of this node, or toward the\n"
    "           Tailscale Service svc:NAME (tailscaled 1.100 and later)\n";

}  // namespace

int RunWhoisCommand(int argc, char** argv) {
  std::string addr_text, socket_path, config_path, destination_text;
  for (int i = 0; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--socket" && i + 1 < argc) {
      socket_path = argv[++i];
    } else if (arg == "--config" && i + 1 < argc) {
      config_path = argv[++i];
    } else if (arg == "--destination" && i + 1 < argc) {
      destination_text = argv[++i];
    } else if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (addr_text.empty() && !arg.starts_with("--")) {
      addr_text = arg;
    } else {
      std::fprintf(stderr, "sepal whois: unexpected argument %s\n%s", argv[i], kUsage);
      return 2;
    }
  }
  std::optional<identity::PeerAddress> peer = identity::ParsePeerAddress(addr_text);
  if (!peer) {
    std::fprintf(stderr, "sepal whois: %s is not IP, IP:PORT or [IPv6]:PORT\n%s",
                 addr_text.c_str(), kUsage);
    return 2;
  }

  identity::LookupDestination destination;
  if (!destination_text.empty()) {
    std::optional<identity::LookupDestination> parsed =
        identity::ParseLookupDestination(destination_text);
    if (!parsed) {
      std::fprintf(stderr, "sepal whois: --destination %s is neither an IP nor svc:NAME\n%s",
                   destination_text.c_str(), kUsage);
      return 2;
    }
    destination = *parsed;
  }

  std::unique_ptr<identity::IdentityProvider> provider;
  std::string source;
  if (!config_path.empty()) {
    auto config = config::LoadConfigFile(config_path);
    if (!config.ok()) {
      std::fprintf(stderr, "sepal whois: %s\n", std::string(config.status().message()).c_str());
      return 2;
    }
    provider = identity::MakeIdentityProvider(config->identity);
    if (!provider) {
      std::fprintf(stderr, "sepal whois: %s has no identity section (routing only)\n",
                   config_path.c_str());
      return 2;
    }
    source = StrCat(provider->name(), " provider from ", config_path);
  } else {
    config::TailscaleIdentityConfig tailscale;
    if (!socket_path.empty()) tailscale.socket = socket_path;
    source = StrCat("tailscaled at ", tailscale.socket);
    provider = std::make_unique<identity::TailscaleIdentityProvider>(tailscale);
  }

  identity::LookupResult result = identity::LookupAndWait(*provider, *peer, destination);

  std::printf("peer %s (asked %s)\n", peer->ToString().c_str(), source.c_str());
  if (!destination.empty()) {
    std::printf("  toward:       %s\n", identity::DescribeDestination(destination).c_str());
  }
  switch (result.kind) {
    case identity::LookupResult::Kind::kFound: {
      const identity::PeerIdentity& who = *result.identity;
      std::string tags;
      for (const std::string& tag : who.tags) tags += (tags.empty() ? "" : ", ") + tag;
      std::printf("  result:       identified\n");
      std::printf("  node:         %s (%s)\n", who.node_name.c_str(), who.node_fqdn.c_str());
      std::printf("  user:         %s%s\n", who.user_login.c_str(),
                  who.tagged() ? " (tagged node: user rules do not apply)" : "");
      std::printf("  tags:         %s\n", tags.empty() ? "(none)" : tags.c_str());
      std::printf("  capabilities: %s\n", who.capabilities_json.c_str());
      return 0;
    }
    case identity::LookupResult::Kind::kNotInTailnet:
      std::printf("  result:       not a tailnet peer (calls get UNAUTHENTICATED)\n  why:          %s\n",
                  result.detail.c_str());
      return 1;
    case identity::LookupResult::Kind::kFailed:
      std::printf("  result:       lookup failed (calls get UNAVAILABLE)\n  why:          %s\n",
                  result.detail.c_str());
      return 2;
  }
  return 2;
}

}  // namespace sepal
