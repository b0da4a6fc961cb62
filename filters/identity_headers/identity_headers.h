// Identity headers filter: strips client-sent tailscale-* metadata and renders the
// peer's identity as request metadata for the upstream.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "proxy/identity/identity.h"

namespace sepal::filters {

// True for metadata names only sepal may set ("tailscale-user-login", ...): a client's
// copies are dropped before forwarding, on every request.
inline bool IsReservedIdentityHeader(std::string_view name) {
  return name.starts_with("tailscale-");
}

// The identity metadata of one connection, rendered once and appended to each request.
class IdentityHeaders {
 public:
  IdentityHeaders() = default;
  explicit IdentityHeaders(const identity::PeerIdentity& peer);

  // Name/value views into this object; valid while it lives.
  const std::vector<std::pair<std::string_view, std::string_view>>& fields() const {
    return fields_;
  }

 private:
  std::string user_login_;
  std::string node_name_;
  std::string tags_;
  std::string capabilities_;
  std::vector<std::pair<std::string_view, std::string_view>> fields_;
};

}  // namespace sepal::filters
