// Who is at the other end of one client connection, whatever its protocol: the identity
// lookup (once per connection, toward the destination the peer reached), the identity
// headers rendered from it, and the peer's slot in the listener's peer table (connection
// cap, call admission, the activity /peers shows).
#pragma once

#include <boost/asio/ip/address.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "filters/identity_headers/identity_headers.h"
#include "proxy/config/config.h"
#include "proxy/identity/identity.h"
#include "proxy/limits/peer_limits.h"
#include "proxy/worker/generation.h"

namespace sepal {

class Listener;
class Worker;

// The CapMap tailscaled is asked for: toward the listener's Tailscale Service, else toward
// the tailnet address the peer dialled (several addresses, or a Service's own address, grant
// differently). Loopback and other addresses are not sent: tailscaled's default applies.
identity::LookupDestination LookupDestinationFor(const config::ListenerConfig& listener,
                                                 boost::asio::ip::address dialled);

class ConnectionPeer {
 public:
  // `connection` names the connection in the peer's activity (its address in memory).
  ConnectionPeer(Listener& listener, const ListenerRoutes& routes, const void* connection);
  ConnectionPeer(const ConnectionPeer&) = delete;
  ConnectionPeer& operator=(const ConnectionPeer&) = delete;

  // Starts the lookup (or, without an identity provider, takes the peer slot at once).
  // `on_ready` runs on the worker once the identity is known, unless `owner` is gone.
  void Begin(Worker& worker, const identity::PeerAddress& address, std::string peer_text,
             boost::asio::ip::address destination, std::weak_ptr<void> owner,
             std::function<void()> on_ready);

  bool pending() const { return state_ == State::kPending; }
  // The lookup result; null when no identity provider is configured.
  const identity::LookupResult* lookup() const {
    return state_ == State::kNone ? nullptr : &lookup_;
  }
  // The peer's identity, if it was found.
  const identity::PeerIdentity* identity() const {
    return state_ == State::kReady && lookup_.identity ? lookup_.identity.get() : nullptr;
  }
  // Metadata to add to every request; null unless the peer was identified.
  const filters::IdentityHeaders* identity_headers() const { return identity_headers_.get(); }

  // Admits an authorized call: an empty view, with *slot holding the peer's call slot
  // (Peer::EndCall when the call ends, if set); or the limit that refuses it (counted in
  // sepal_limit_rejections_total, except peer_connections, counted once per connection) and
  // the reason in *message.
  std::string_view AdmitCall(std::chrono::steady_clock::time_point now,
                             std::shared_ptr<limits::Peer>* slot, std::string* message);
  // Over the peer's connection cap: every call is refused (AdmitCall).
  bool over_connection_cap() const { return over_connection_cap_; }
  // Records a finished call in the peer's activity (/peers). A call that ends before the peer
  // is known (answered at once, not waiting for tailscaled) is kept, up to
  // kMaxCallsBeforeIdentity, until it is; a connection that never takes a peer slot (over
  // the connection cap, no peer table) records nothing.
  void RecordCall(std::string_view path, int status, uint64_t request_bytes,
                  uint64_t response_bytes, std::string_view reason);
  static constexpr size_t kMaxRecordedPath = 128;
  static constexpr size_t kMaxCallsBeforeIdentity = 8;
  // The connection closed: gives the slot back.
  void Release();

 private:
  void OnIdentity(identity::LookupResult result);
  // Finds the peer's entry and takes a connection slot (or marks the connection over cap).
  void TakePeerSlot();

  Listener& listener_;
  const ListenerRoutes& routes_;
  const void* connection_;
  identity::PeerAddress address_;
  std::string peer_text_;
  unsigned worker_index_ = 0;

  enum class State { kNone, kPending, kReady };
  State state_ = State::kNone;
  identity::LookupResult lookup_;
  std::unique_ptr<filters::IdentityHeaders> identity_headers_;
  std::chrono::steady_clock::time_point lookup_started_;

  // Limits: the peer (null when the listener has no peer table), its caps.
  std::shared_ptr<limits::Peer> entry_;
  const config::PeerLimitValues* caps_ = nullptr;
  bool holds_connection_slot_ = false;
  bool over_connection_cap_ = false;
  bool released_ = false;
  struct FinishedCall {
    std::string path;
    int status;
    uint64_t request_bytes, response_bytes;
    std::string reason;
    std::chrono::system_clock::time_point time;
  };
  std::vector<FinishedCall> calls_before_identity_;
};

}  // namespace sepal
