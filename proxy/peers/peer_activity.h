// Who is connected: what one peer of a listener has done since its first connection (its
// open connections and their addresses, calls and bytes by method, the last call and the
// last error), for the admin endpoint /peers and the status page.
//
// Data path: accept → identity → **peer** (limits::Peer holds one of these for every
// connection of the peer, on every worker) → authz → route → upstream; each finished call
// is recorded here once. Thread-safe: workers record, the admin thread reads.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/identity/identity.h"

namespace sepal::peers {

using SystemTime = std::chrono::system_clock::time_point;

struct MethodActivity {
  uint64_t calls = 0;
  uint64_t errors = 0;  // calls that ended with a grpc-status other than OK
  uint64_t request_bytes = 0;
  uint64_t response_bytes = 0;
};

// One finished call or refusal, as the status page shows it.
struct CallRecord {
  SystemTime time{};
  std::string method;
  int grpc_status = 0;
  std::string reason;  // why sepal answered it itself ("no_rule_matched", ...); empty if not
};

struct ConnectionRecord {
  std::string address;  // "100.64.0.2:41000" (the PROXY header's source when there is one)
  SystemTime opened{};
};

// A copy of the record, taken under its lock.
struct PeerSnapshot {
  // How the peer was identified: "found", "not_in_tailnet", "failed" or "none" (no identity
  // provider); `identity` is set for "found".
  std::string identity_result;
  std::shared_ptr<const identity::PeerIdentity> identity;
  size_t connection_count = 0;
  std::vector<ConnectionRecord> connections;  // the first kMaxListedConnections
  uint32_t calls_in_flight = 0;  // filled in by the peer table (limits::Peer counts them)
  SystemTime first_seen{};
  std::map<std::string, MethodActivity, std::less<>> methods;
  CallRecord last_call;   // time{} when there was none
  CallRecord last_error;  // time{} when there was none
};

class PeerActivity {
 public:
  // Calls by method are kept for this many distinct methods; the rest add up under "other"
  // (a client can send any path, routed or not).
  static constexpr size_t kMaxMethods = 32;
  // The addresses of this many connections are listed; the count is always exact.
  static constexpr size_t kMaxListedConnections = 16;

  // `connection` identifies the connection until ConnectionClosed (its address in memory).
  void ConnectionOpened(const void* connection, std::string address,
                        const identity::LookupResult* lookup, SystemTime now);
  void ConnectionClosed(const void* connection);
  void CallFinished(std::string_view method, int grpc_status, uint64_t request_bytes,
                    uint64_t response_bytes, std::string_view reason, SystemTime now);

  PeerSnapshot Snapshot() const;

 private:
  mutable std::mutex mutex_;
  std::string identity_result_ = "none";
  std::shared_ptr<const identity::PeerIdentity> identity_;
  std::vector<std::pair<const void*, ConnectionRecord>> connections_;
  SystemTime first_seen_{};
  std::map<std::string, MethodActivity, std::less<>> methods_;
  CallRecord last_call_;
  CallRecord last_error_;
};

}  // namespace sepal::peers
