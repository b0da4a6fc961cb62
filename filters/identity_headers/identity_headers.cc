// Renders tailscale-user-login, tailscale-node-name, tailscale-node-tags and
// tailscale-app-capabilities.
#include "filters/identity_headers/identity_headers.h"

namespace sepal::filters {

IdentityHeaders::IdentityHeaders(const identity::PeerIdentity& peer)
    : user_login_(peer.user_login),
      node_name_(peer.node_name),
      capabilities_(peer.capabilities_json) {
  for (const std::string& tag : peer.tags) {
    if (!tags_.empty()) tags_.push_back(',');
    tags_ += tag;
  }
  fields_ = {{"tailscale-user-login", user_login_},
             {"tailscale-node-name", node_name_},
             {"tailscale-node-tags", tags_},
             {"tailscale-app-capabilities", capabilities_}};
}

}  // namespace sepal::filters
