// Builds the identity provider a config asks for (none, static, tailscale).
#pragma once

#include <memory>

#include "proxy/config/config.h"
#include "proxy/identity/identity.h"

namespace sepal::identity {

// nullptr for `provider: none` (no identity section): sepal then routes only.
std::unique_ptr<IdentityProvider> MakeIdentityProvider(const config::IdentityConfig& config);

// One lookup, waited for on the calling thread (the command-line tools); then Shutdown().
LookupResult LookupAndWait(IdentityProvider& provider, const PeerAddress& peer);

}  // namespace sepal::identity
