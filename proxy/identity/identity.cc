// PeerIdentity helpers shared by both providers and the authz filter: descriptions,
// capability value parsing and method pattern matching.
#include "proxy/identity/identity.h"

#include <algorithm>
#include <boost/json.hpp>

#include "proxy/common/strings.h"

namespace sepal::identity {
namespace {

// One capability value. Anything but an object cannot restrict methods, so it grants all;
// a "methods" key of an unexpected type grants nothing, because guessing what an operator
// meant must never widen access.
CapabilityGrant GrantFromValue(const boost::json::value& value) {
  CapabilityGrant grant;
  const boost::json::object* object = value.if_object();
  if (object == nullptr) return grant;
  const boost::json::value* methods = object->if_contains("methods");
  if (methods == nullptr) return grant;
  grant.all_methods = false;
  if (const boost::json::string* single = methods->if_string()) {
    grant.methods.emplace_back(single->data(), single->size());
  } else if (const boost::json::array* list = methods->if_array()) {
    for (const boost::json::value& pattern : *list) {
      if (const boost::json::string* text = pattern.if_string()) {
        grant.methods.emplace_back(text->data(), text->size());
      }
    }
  }
  return grant;
}

bool ParsePort(std::string_view digits, uint16_t* port) {
  if (digits.empty() || digits.size() > 5) return false;
  uint32_t value = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return false;
    value = value * 10 + static_cast<uint32_t>(c - '0');
  }
  if (value > 65535) return false;
  *port = static_cast<uint16_t>(value);
  return true;
}

}  // namespace

std::string PeerIdentity::Describe() const {
  std::string name = !node_name.empty() ? node_name : node_fqdn;
  if (name.empty()) name = "unnamed node";
  if (tagged()) {
    std::string tag_list;
    for (const std::string& tag : tags) {
      if (!tag_list.empty()) tag_list += ',';
      tag_list += tag;
    }
    return StrCat(name, " (", tag_list, ")");
  }
  if (!user_login.empty()) return StrCat(name, " (", user_login, ")");
  return name;
}

std::vector<CapabilityGrant> ParseCapabilityValues(std::string_view json_array) {
  std::vector<CapabilityGrant> grants;
  boost::system::error_code ec;
  boost::json::value parsed =
      boost::json::parse(boost::json::string_view(json_array.data(), json_array.size()), ec);
  if (ec) return grants;
  const boost::json::array* values = parsed.if_array();
  if (values == nullptr) return grants;
  grants.reserve(values->size());
  for (const boost::json::value& value : *values) grants.push_back(GrantFromValue(value));
  return grants;
}

bool MethodPatternMatches(std::string_view pattern, std::string_view path) {
  if (!pattern.empty() && pattern.back() == '*') {
    pattern.remove_suffix(1);
    return path.substr(0, pattern.size()) == pattern;
  }
  return pattern == path;
}

std::optional<PeerAddress> ParsePeerAddress(std::string_view text) {
  std::string_view host = text;
  uint16_t port = 0;
  if (text.starts_with('[')) {
    size_t close = text.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    host = text.substr(1, close - 1);
    std::string_view rest = text.substr(close + 1);
    if (!rest.empty() && (!rest.starts_with(':') || !ParsePort(rest.substr(1), &port))) {
      return std::nullopt;
    }
  } else if (std::count(text.begin(), text.end(), ':') == 1) {
    size_t colon = text.find(':');
    host = text.substr(0, colon);
    if (!ParsePort(text.substr(colon + 1), &port)) return std::nullopt;
  }
  boost::system::error_code ec;
  auto ip = boost::asio::ip::make_address(std::string(host), ec);
  if (ec) return std::nullopt;
  // "[1.2.3.4]:5" is not how anyone writes an IPv4 peer.
  if (text.starts_with('[') && !ip.is_v6()) return std::nullopt;
  return PeerAddress{ip, port};
}

std::string PeerAddress::ToString() const {
  if (ip.is_v6()) return StrCat("[", ip.to_string(), "]:", port);
  return StrCat(ip.to_string(), ":", port);
}

std::string_view LookupResultName(LookupResult::Kind kind) {
  switch (kind) {
    case LookupResult::Kind::kFound: return "found";
    case LookupResult::Kind::kNotInTailnet: return "not_in_tailnet";
    case LookupResult::Kind::kFailed: return "failed";
  }
  return "failed";
}

std::string LookupDestination::Key() const {
  std::string key;
  if (ip) key += StrCat("|dst=", ip->to_string());
  if (!service.empty()) key += StrCat("|svc=", service);
  return key;
}

}  // namespace sepal::identity
