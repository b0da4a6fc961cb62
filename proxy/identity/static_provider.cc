// StaticIdentityProvider: CIDR table built once, answered by posting to the caller.
#include "proxy/identity/static_provider.h"

#include <boost/asio/post.hpp>
#include <boost/json.hpp>
#include <charconv>
#include <utility>

#include "proxy/common/strings.h"

namespace sepal::identity {
namespace {

namespace net = boost::asio;

std::vector<unsigned char> Bytes(const net::ip::address& ip) {
  if (ip.is_v4()) {
    auto bytes = ip.to_v4().to_bytes();
    return {bytes.begin(), bytes.end()};
  }
  auto bytes = ip.to_v6().to_bytes();
  return {bytes.begin(), bytes.end()};
}

bool PrefixMatches(const std::vector<unsigned char>& network, const std::vector<unsigned char>& ip,
                   unsigned prefix_length) {
  if (network.size() != ip.size() || prefix_length > network.size() * 8) return false;
  size_t whole = prefix_length / 8;
  for (size_t i = 0; i < whole; ++i) {
    if (network[i] != ip[i]) return false;
  }
  unsigned rest = prefix_length % 8;
  if (rest == 0) return true;
  unsigned char mask = static_cast<unsigned char>(0xFF << (8 - rest));
  return (network[whole] & mask) == (ip[whole] & mask);
}

std::shared_ptr<const PeerIdentity> MakeIdentity(const config::StaticIdentity& entry) {
  auto identity = std::make_shared<PeerIdentity>();
  identity->node_name = entry.node;
  identity->node_fqdn = entry.node;
  identity->user_login = entry.user;
  identity->tags = entry.tags;
  boost::json::object capabilities;  // std::map iterates sorted, as tailscaled's CapMap is
  for (const auto& [name, values_json] : entry.capabilities) {
    boost::system::error_code ec;
    boost::json::value values =
        boost::json::parse(boost::json::string_view(values_json.data(), values_json.size()), ec);
    // The loader writes valid arrays; anything else grants no values rather than guessing.
    if (ec || !values.is_array()) values = boost::json::array();
    identity->capabilities[name] = ParseCapabilityValues(boost::json::serialize(values));
    capabilities.emplace(boost::json::string_view(name.data(), name.size()), std::move(values));
  }
  identity->capabilities_json = boost::json::serialize(capabilities);
  return identity;
}

}  // namespace

StaticIdentityProvider::StaticIdentityProvider(const std::vector<config::StaticIdentity>& entries) {
  entries_.reserve(entries.size());
  for (const config::StaticIdentity& config_entry : entries) {
    Entry entry;
    entry.identity = MakeIdentity(config_entry);
    std::string_view cidr = config_entry.match;
    size_t slash = cidr.find('/');
    if (slash != std::string_view::npos) {
      boost::system::error_code ec;
      net::ip::address network = net::ip::make_address(std::string(cidr.substr(0, slash)), ec);
      std::string_view length = cidr.substr(slash + 1);
      auto [end, parse_ec] =
          std::from_chars(length.data(), length.data() + length.size(), entry.prefix_length);
      entry.network = Bytes(network);
      entry.valid = !ec && parse_ec == std::errc() && end == length.data() + length.size() &&
                    entry.prefix_length <= entry.network.size() * 8;
    }
    entries_.push_back(std::move(entry));
  }
}

std::shared_ptr<const PeerIdentity> StaticIdentityProvider::Find(
    const net::ip::address& address) const {
  net::ip::address ip = address;
  if (ip.is_v6() && ip.to_v6().is_v4_mapped()) {
    ip = net::ip::make_address_v4(net::ip::v4_mapped, ip.to_v6());
  }
  std::vector<unsigned char> ip_bytes = Bytes(ip);
  // An IPv6 entry may be written for mapped IPv4 (::ffff:127.0.0.0/104).
  std::vector<unsigned char> mapped_bytes =
      ip.is_v4() ? Bytes(net::ip::make_address_v6(net::ip::v4_mapped, ip.to_v4())) : ip_bytes;
  for (const Entry& entry : entries_) {
    if (!entry.valid) continue;
    const std::vector<unsigned char>& candidate =
        entry.network.size() == 16 ? mapped_bytes : ip_bytes;
    if (PrefixMatches(entry.network, candidate, entry.prefix_length)) {
      return entry.identity;
    }
  }
  return nullptr;
}

void StaticIdentityProvider::Lookup(const PeerAddress& peer, net::any_io_executor reply_to,
                                    LookupCallback done) {
  LookupResult result;
  result.identity = Find(peer.ip);
  if (result.identity != nullptr) {
    result.kind = LookupResult::Kind::kFound;
  } else {
    result.kind = LookupResult::Kind::kNotInTailnet;
    result.detail = StrCat("no static identity matches ", peer.ip.to_string());
  }
  net::post(reply_to, [done = std::move(done), result = std::move(result)]() mutable {
    done(std::move(result));
  });
}

}  // namespace sepal::identity
