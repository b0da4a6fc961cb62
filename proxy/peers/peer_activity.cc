// PeerActivity: a mutex-guarded record per peer; one short critical section per call.
#include "proxy/peers/peer_activity.h"

#include <algorithm>

namespace sepal::peers {

void PeerActivity::ConnectionOpened(const void* connection, std::string address,
                                    const identity::LookupResult* lookup, SystemTime now) {
  std::lock_guard lock(mutex_);
  if (first_seen_ == SystemTime{}) first_seen_ = now;
  if (lookup != nullptr) {
    identity_result_ = identity::LookupResultName(lookup->kind);
    if (lookup->identity) identity_ = lookup->identity;
  }
  connections_.emplace_back(connection, ConnectionRecord{std::move(address), now});
}

void PeerActivity::ConnectionClosed(const void* connection) {
  std::lock_guard lock(mutex_);
  auto it = std::find_if(connections_.begin(), connections_.end(),
                         [connection](const auto& item) { return item.first == connection; });
  if (it != connections_.end()) connections_.erase(it);
}

void PeerActivity::CallFinished(std::string_view method, int grpc_status, uint64_t request_bytes,
                                uint64_t response_bytes, std::string_view reason,
                                SystemTime now) {
  std::lock_guard lock(mutex_);
  auto it = methods_.find(method);
  if (it == methods_.end()) {
    it = methods_.size() < kMaxMethods ? methods_.emplace(std::string(method), MethodActivity{}).first
                                       : methods_.try_emplace("other").first;
  }
  MethodActivity& counts = it->second;
  ++counts.calls;
  counts.request_bytes += request_bytes;
  counts.response_bytes += response_bytes;
  last_call_.time = now;
  last_call_.method.assign(it->first);
  last_call_.grpc_status = grpc_status;
  last_call_.reason.assign(reason);
  if (grpc_status != 0) {
    ++counts.errors;
    last_error_ = last_call_;
  }
}

PeerSnapshot PeerActivity::Snapshot() const {
  PeerSnapshot snapshot;
  std::lock_guard lock(mutex_);
  snapshot.identity_result = identity_result_;
  snapshot.identity = identity_;
  snapshot.connection_count = connections_.size();
  size_t listed = std::min(connections_.size(), kMaxListedConnections);
  snapshot.connections.reserve(listed);
  for (size_t i = 0; i < listed; ++i) snapshot.connections.push_back(connections_[i].second);
  snapshot.first_seen = first_seen_;
  snapshot.methods = methods_;
  snapshot.last_call = last_call_;
  snapshot.last_error = last_error_;
  return snapshot;
}

}  // namespace sepal::peers
