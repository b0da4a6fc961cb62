// Identity provider selection.
#include "proxy/identity/provider_factory.h"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

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

LookupResult LookupAndWait(IdentityProvider& provider, const PeerAddress& peer,
                           const LookupDestination& destination) {
  boost::asio::io_context io;
  // The answer is posted from the provider's thread: keep run() waiting for it.
  auto guard = boost::asio::make_work_guard(io);
  LookupResult result;
  provider.LookupToward(peer, destination, io.get_executor(), [&](LookupResult r) {
    result = std::move(r);
    guard.reset();
  });
  io.run();
  provider.Shutdown();
  return result;
}

std::optional<LookupDestination> ParseLookupDestination(std::string_view text) {
  LookupDestination destination;
  if (text.starts_with("svc:") && text.size() > 4) {
    destination.service = std::string(text);
    return destination;
  }
  boost::system::error_code ec;
  boost::asio::ip::address ip = boost::asio::ip::make_address(std::string(text), ec);
  if (ec) return std::nullopt;
  destination.ip = ip;
  return destination;
}

std::string DescribeDestination(const LookupDestination& destination) {
  if (!destination.service.empty()) return destination.service;
  return destination.ip ? destination.ip->to_string() : std::string();
}

}  // namespace sepal::identity
