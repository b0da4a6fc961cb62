// Identity provider selection.
#include "proxy/identity/provider_factory.h"

#include "proxy/identity/static_provider.h"
#include "proxy/identity/tailscale_provider.h"

namespace sepal::identity {

std::unique_ptr<IdentityProvider> MakeIdentityProvider(const config::IdentityConfig& config) {
  switch (config.provider) {
    case config::IdentityConfig::Provider::kNone:
      return nullptr;
    case config::IdentityConfig::Provider::kStatic:
      return std::make_unique<StaticIdentityProvider>(config.static_identities);
    case config::IdentityConfig::Provider::kTailscale:
      return std::make_unique<TailscaleIdentityProvider>(config.tailscale);
  }
  return nullptr;
}

}  // namespace sepal::identity
