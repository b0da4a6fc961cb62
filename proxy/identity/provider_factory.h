// Builds the identity provider a config asks for (none, static, tailscale).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "proxy/config/config.h"
#include "proxy/identity/identity.h"

namespace sepal::identity {

// nullptr for `provider: none` (no identity section): sepal then routes only.
std::unique_ptr<IdentityProvider> MakeIdentityProvider(const config::IdentityConfig& config);

// One lookup (toward `destination`, as a listener scopes it), waited for on the calling thread
// (the command-line tools); then Shutdown().
LookupResult LookupAndWait(IdentityProvider& provider, const PeerAddress& peer,
                           const LookupDestination& destination = {});

// A command line's destination: "svc:NAME" (a Tailscale Service) or a tailnet IP; nullopt
// for anything else.
std::optional<LookupDestination> ParseLookupDestination(std::string_view text);
// "svc:superlink", "100.64.0.1", or "" (no destination).
std::string DescribeDestination(const LookupDestination& destination);

}  // namespace sepal::identity
