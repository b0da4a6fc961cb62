// Identity from a fixed table of CIDR -> identity (development and tests without tailscaled).
#pragma once

#include <boost/asio/ip/address.hpp>
#include <memory>
#include <string_view>
#include <vector>

#include "proxy/config/config.h"
#include "proxy/identity/identity.h"

namespace sepal::identity {

// The first entry whose `match` CIDR contains the peer's IP wins (IPv4-mapped IPv6 peers
// match IPv4 entries); no match is kNotInTailnet. Entries are immutable after construction,
// so lookups need no thread of their own: they answer by posting to `reply_to`. An entry
// whose CIDR does not parse never matches (the config loader rejects such files).
class StaticIdentityProvider final : public IdentityProvider {
 public:
  explicit StaticIdentityProvider(const std::vector<config::StaticIdentity>& entries);

  void Lookup(const PeerAddress& peer, boost::asio::any_io_executor reply_to,
              LookupCallback done) override;
  std::string_view name() const override { return "static"; }

  // The identity `ip` would get, or nullptr. Synchronous, for `sepal whois` and tests.
  std::shared_ptr<const PeerIdentity> Find(const boost::asio::ip::address& ip) const;

 private:
  struct Entry {
    bool valid = false;
    std::vector<unsigned char> network;  // 4 or 16 bytes
    unsigned prefix_length = 0;
    std::shared_ptr<const PeerIdentity> identity;
  };

  std::vector<Entry> entries_;
};

}  // namespace sepal::identity
