// ConnectionPeer: identity lookup, identity headers and the peer's slot, per connection.
#include "proxy/front/connection_peer.h"

#include "proxy/common/log.h"
#include "proxy/common/log_rate_limit.h"
#include "proxy/common/strings.h"
#include "proxy/identity/tailscale_provider.h"
#include "proxy/listener/listener.h"
#include "proxy/stats/proxy_metrics.h"
#include "proxy/worker/worker.h"

namespace sepal {

namespace {

LogRateLimit g_log_identity("identity lookups");
LogRateLimit g_log_peer_limits("peer limits");

}  // namespace

identity::LookupDestination LookupDestinationFor(const config::ListenerConfig& listener,
                                                 boost::asio::ip::address dialled) {
  identity::LookupDestination destination;
  destination.service = listener.tailscale_service;
  if (dialled.is_v6() && dialled.to_v6().is_v4_mapped()) {  // a [::] listener's IPv4 peer
    dialled = boost::asio::ip::make_address_v4(boost::asio::ip::v4_mapped, dialled.to_v6());
  }
  if (destination.service.empty() &&
      identity::TailscaleIdentityProvider::IsTailscaleAddress(dialled)) {
    destination.ip = dialled;
  }
  return destination;
}

ConnectionPeer::ConnectionPeer(Listener& listener, const ListenerRoutes& routes,
                               const void* connection)
    : listener_(listener), routes_(routes), connection_(connection) {}

void ConnectionPeer::Begin(Worker& worker, const identity::PeerAddress& address,
                           std::string peer_text, boost::asio::ip::address destination,
                           std::weak_ptr<void> owner, std::function<void()> on_ready) {
  address_ = address;
  peer_text_ = std::move(peer_text);
  worker_index_ = worker.index();
  identity::IdentityProvider* provider = routes_.generation->identity.get();
  if (provider == nullptr) {
    TakePeerSlot();  // the peer is its address
    return;
  }
  state_ = State::kPending;
  lookup_started_ = std::chrono::steady_clock::now();
  provider->LookupToward(address_, LookupDestinationFor(routes_.config, destination),
                         worker.io().get_executor(),
                         [this, owner = std::move(owner), on_ready = std::move(on_ready)](
                             identity::LookupResult result) {
                           auto alive = owner.lock();
                           if (!alive || released_) return;
                           OnIdentity(std::move(result));
                           on_ready();
                         });
}

void ConnectionPeer::OnIdentity(identity::LookupResult result) {
  lookup_ = std::move(result);
  state_ = State::kReady;
  const stats::Families& families = stats::GetFamilies();
  families.identity_lookups->WithLabels({std::string(identity::LookupResultName(lookup_.kind))})
      .Increment(worker_index_);
  families.identity_lookup_duration->WithLabels({}).Observe(
      worker_index_,
      std::chrono::duration<double>(std::chrono::steady_clock::now() - lookup_started_).count());
  switch (lookup_.kind) {
    case identity::LookupResult::Kind::kFound:
      identity_headers_ = std::make_unique<filters::IdentityHeaders>(*lookup_.identity);
      LogDebug("listener ", listener_.name(), ": ", peer_text_, " is ",
               lookup_.identity->Describe());
      break;
    case identity::LookupResult::Kind::kNotInTailnet:
      if (g_log_identity.Allow()) {
        LogInfo("listener ", listener_.name(), ": ", peer_text_,
                " is not a tailnet peer: ", lookup_.detail);
      }
      break;
    case identity::LookupResult::Kind::kFailed:
      if (g_log_identity.Allow()) {
        LogWarning("listener ", listener_.name(), ": identity lookup for ", peer_text_,
                   " failed: ", lookup_.detail);
      }
      break;
  }
  TakePeerSlot();
}

void ConnectionPeer::RecordCall(std::string_view path, int status, uint64_t request_bytes,
                                uint64_t response_bytes, std::string_view reason) {
  path = path.substr(0, kMaxRecordedPath);
  auto now = std::chrono::system_clock::now();
  if (holds_connection_slot_) {
    entry_->activity().CallFinished(path, status, request_bytes, response_bytes, reason, now);
  } else if (pending() && calls_before_identity_.size() < kMaxCallsBeforeIdentity) {
    calls_before_identity_.push_back({std::string(path), status, request_bytes, response_bytes,
                                      std::string(reason), now});
  }
}

void ConnectionPeer::TakePeerSlot() {
  if (!routes_.peers) {
    calls_before_identity_.clear();
    return;
  }
  const identity::PeerIdentity* who = identity();
  caps_ = &limits::LimitsFor(routes_.config.peer_limits, who);
  entry_ = routes_.peers->Get(limits::PeerKey(who, address_));
  if (entry_->TryOpenConnection(caps_->connections)) {
    holds_connection_slot_ = true;
    peers::PeerActivity& activity = entry_->activity();
    activity.ConnectionOpened(connection_, peer_text_, lookup(), std::chrono::system_clock::now());
    for (const FinishedCall& call : calls_before_identity_) {
      activity.CallFinished(call.path, call.status, call.request_bytes, call.response_bytes,
                            call.reason, call.time);
    }
    calls_before_identity_.clear();
    return;
  }
  calls_before_identity_.clear();
  over_connection_cap_ = true;
  listener_.stats().LimitRejection(limits::limit::kPeerConnections);
  if (g_log_peer_limits.Allow()) {
    LogWarning("listener ", listener_.name(), ": ", peer_text_, " (", entry_->key(),
               ") is over its cap of ", caps_->connections,
               " connections (peer_limits.connections); its calls are refused");
  }
}

std::string_view ConnectionPeer::AdmitCall(std::chrono::steady_clock::time_point now,
                                           std::shared_ptr<limits::Peer>* slot,
                                           std::string* message) {
  if (!entry_) return {};
  const config::PeerLimitValues& caps = *caps_;
  std::string_view refused;
  if (over_connection_cap_) {
    *message = StrCat("sepal: ", entry_->name(), " has ", caps.connections,
                      " connections open to listener ", listener_.name(),
                      " (peer_limits.connections); use one");
    return limits::limit::kPeerConnections;  // counted once, when the connection was refused
  }
  if (!entry_->TryStartCall(caps.concurrent_calls)) {
    refused = limits::limit::kPeerConcurrentCalls;
    *message = StrCat("sepal: ", entry_->name(), " has ", caps.concurrent_calls,
                      " calls in flight on listener ", listener_.name(),
                      " (peer_limits.concurrent_calls)");
  } else if (!entry_->TryTakeCallToken(now, caps.calls_per_second, caps.calls_burst)) {
    entry_->EndCall();
    refused = limits::limit::kPeerCallRate;
    *message = StrCat("sepal: ", entry_->name(), " is over ", caps.calls_per_second,
                      " calls per second on listener ", listener_.name(),
                      " (peer_limits.calls_per_second)");
  } else {
    *slot = entry_;
    return {};
  }
  listener_.stats().LimitRejection(refused);
  if (g_log_peer_limits.Allow()) {
    LogInfo("listener ", listener_.name(), ": refused a call from ", peer_text_, ": ", *message);
  }
  return refused;
}

void ConnectionPeer::Release() {
  released_ = true;  // a lookup answered after this takes no slot
  if (!holds_connection_slot_) return;
  holds_connection_slot_ = false;
  entry_->activity().ConnectionClosed(connection_);
  entry_->CloseConnection();
}

}  // namespace sepal
