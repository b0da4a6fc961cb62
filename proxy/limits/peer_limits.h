// Per-peer fairness: caps on connections, calls in flight and calls per second for each peer
// of a listener, over all workers. A peer is its tailnet node (from the identity lookup), or
// its address when no identity provider is configured (or the lookup found nobody).
//
// Data path: accept → identity → authz → **peer limits** → route → upstream. A connection
// takes its peer's entry once its identity is known and holds it until it closes; each
// allowed call then takes a call slot (released when the call ends) and a rate token.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "proxy/config/config.h"
#include "proxy/identity/identity.h"
#include "proxy/limits/token_bucket.h"
#include "proxy/peers/peer_activity.h"

namespace sepal::limits {

// What a call or connection was refused for: the `limit` label of
// sepal_limit_rejections_total (a fixed set).
namespace limit {
inline constexpr std::string_view kPeerConnections = "peer_connections";
inline constexpr std::string_view kPeerConcurrentCalls = "peer_concurrent_calls";
inline constexpr std::string_view kPeerCallRate = "peer_calls_per_second";
inline constexpr std::string_view kUpstreamConcurrent = "upstream_concurrent_streams";
inline constexpr std::string_view kUpstreamPending = "upstream_pending_streams";
inline constexpr std::string_view kUpstreamRate = "upstream_new_streams_per_second";
inline constexpr std::string_view kMaxConcurrentStreams = "max_concurrent_streams";
inline constexpr std::string_view kMemory = "memory_overload";
inline constexpr std::string_view kRequestProgress = "request_progress_timeout";
inline constexpr std::string_view kHeaderList = "max_header_list_bytes";
// HTTP/1.1 (REST) listeners: listeners[].http1.
inline constexpr std::string_view kHttp1RequestLine = "http1_max_request_line_bytes";
inline constexpr std::string_view kHttp1HeaderBytes = "http1_max_header_bytes";
inline constexpr std::string_view kHttp1Headers = "http1_max_headers";
inline constexpr std::string_view kHttp1BodyBytes = "http1_max_body_bytes";
inline constexpr std::string_view kHttp1HeaderTimeout = "http1_header_timeout";
inline constexpr std::string_view kHttp1BodyTimeout = "http1_body_timeout";
inline constexpr std::string_view kHttp1UpstreamTimeout = "http1_upstream_timeout";
}  // namespace limit

// One peer's counters, shared by its connections on every worker.
class Peer {
 public:
  explicit Peer(std::string key) : key_(std::move(key)) {}
  const std::string& key() const { return key_; }
  // The node or address without the key's "node:"/"addr:" prefix, for messages.
  std::string_view name() const { return std::string_view(key_).substr(5); }

  // Both return false (taking nothing) when the peer is at `cap` (0 = no cap).
  bool TryOpenConnection(uint32_t cap) { return TryIncrement(connections_, cap); }
  void CloseConnection() { connections_.fetch_sub(1, std::memory_order_relaxed); }
  bool TryStartCall(uint32_t cap) { return TryIncrement(calls_, cap); }
  void EndCall() { calls_.fetch_sub(1, std::memory_order_relaxed); }
  // A token of the peer's calls-per-second bucket (rate 0 = no cap).
  bool TryTakeCallToken(TokenBucket::Clock::time_point now, uint32_t rate, uint32_t burst);

  uint32_t connections() const { return connections_.load(std::memory_order_relaxed); }
  uint32_t calls() const { return calls_.load(std::memory_order_relaxed); }

  // What it did (for /peers): its connections record their opening and closing here, and
  // its calls their end.
  peers::PeerActivity& activity() { return activity_; }
  const peers::PeerActivity& activity() const { return activity_; }

 private:
  static bool TryIncrement(std::atomic<uint32_t>& counter, uint32_t cap);

  const std::string key_;
  std::atomic<uint32_t> connections_{0};
  std::atomic<uint32_t> calls_{0};
  std::mutex bucket_mutex_;
  TokenBucket bucket_;
  peers::PeerActivity activity_;
};

// The peers of one listener (thread-safe). Entries outlive their last connection for a
// while, so a peer that reconnects for every call still meets its calls-per-second cap.
class PeerTable {
 public:
  std::shared_ptr<Peer> Get(const std::string& key);
  size_t size() const;
  // The peers with at least one open connection (sepal_peers_connected, /peers).
  std::vector<std::shared_ptr<Peer>> Connected() const;
  size_t ConnectedCount() const;

  static constexpr std::chrono::seconds kIdleExpiry{60};

 private:
  void SweepLocked(TokenBucket::Clock::time_point now);

  struct Entry {
    std::shared_ptr<Peer> peer;
    TokenBucket::Clock::time_point last_used;
  };
  mutable std::mutex mutex_;
  std::unordered_map<std::string, Entry> peers_;
  TokenBucket::Clock::time_point last_sweep_{};
};

// The key of a peer: "node:<fqdn or name>" for an identified peer, "addr:<ip>" otherwise.
std::string PeerKey(const identity::PeerIdentity* identity, const identity::PeerAddress& address);

// The caps for a peer: the first override naming one of its tags, its user or its node, else
// the listener's own.
const config::PeerLimitValues& LimitsFor(const config::PeerLimitsConfig& config,
                                         const identity::PeerIdentity* identity);

}  // namespace sepal::limits
