// sepal's metric families (documented in docs/metrics.md) and the per-listener, per-worker cache
// of label handles that keeps the request path to a hash lookup and relaxed atomic adds.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "proxy/grpc/grpc_status.h"
#include "proxy/metrics/metrics.h"

namespace sepal::stats {

struct Families {
  metrics::CounterFamily* requests;          // listener, grpc_service, grpc_method, grpc_code
  metrics::HistogramFamily* request_duration;  // listener, grpc_service, grpc_method
  metrics::CounterFamily* request_bytes;
  metrics::CounterFamily* response_bytes;
  metrics::GaugeFamily* streams_active;       // listener
  metrics::CounterFamily* connections_total;  // listener
  metrics::GaugeFamily* connections_active;   // listener
  metrics::GaugeFamily* worker_connections;   // worker
  metrics::CounterFamily* protocol_errors;    // listener, kind
  metrics::CounterFamily* glitches;           // listener, kind
  metrics::CounterFamily* limit_rejections;   // listener, limit
  metrics::CounterFamily* tls_handshake_errors;  // listener, reason
  metrics::CounterFamily* tls_certificate_reloads;  // listener, result
  metrics::GaugeFamily* tls_listener_certificate_expiry;  // listener
  metrics::GaugeFamily* peers_connected;      // listener
  metrics::CounterFamily* authz_decisions;    // listener, decision, reason
  metrics::CounterFamily* grpc_adapter_inspections;  // listener, result
  metrics::CounterFamily* identity_lookups;   // result
  metrics::HistogramFamily* identity_lookup_duration;
  metrics::CounterFamily* upstream_connect_failures;  // upstream
  metrics::CounterFamily* config_reloads;     // result
  metrics::GaugeFamily* config_last_reload_success;
  metrics::GaugeFamily* build_info;           // version
  metrics::CounterFamily* access_log_lines;   // result: written | dropped
  // Only with metrics.peer_node_label: bytes by listener and the peer's tailnet node.
  metrics::CounterFamily* peer_request_bytes;   // listener, peer_node
  metrics::CounterFamily* peer_response_bytes;  // listener, peer_node
};

// Declares every family in the default registry on first use (thread-safe).
const Families& GetFamilies();

// Label handles of one gRPC method on one listener.
struct MethodStats {
  metrics::Counter by_code[17];
  metrics::Histogram duration;
  metrics::Counter request_bytes;
  metrics::Counter response_bytes;
};

// Owned by a Listener, used only from its worker's thread.
class ListenerStats {
 public:
  ListenerStats(std::string listener, unsigned shard);

  // Methods seen on a route get their own labels, up to a bound; unrouted paths and
  // anything past the bound share grpc_method="other" (a peer cannot grow the series).
  MethodStats& ForPath(std::string_view path, bool routed);
  unsigned shard() const { return shard_; }

  void ConnectionOpened();
  void ConnectionClosed();
  void StreamOpened() { streams_active_.Add(shard_, 1); }
  void StreamClosed() { streams_active_.Add(shard_, -1); }
  void ProtocolError(std::string_view kind);
  // `kind`: one of limits::glitch (static literals; the handles are cached by address).
  void Glitch(std::string_view kind) { Cached(glitches_, GetFamilies().glitches, kind).Increment(shard_); }
  // A call, stream or connection refused by a limit; `limit`: one of limits::limit.
  void LimitRejection(std::string_view limit) {
    Cached(limit_rejections_, GetFamilies().limit_rejections, limit).Increment(shard_);
  }
  // `reason`: one of tls::reason (a bounded set).
  void TlsHandshakeError(std::string_view reason);
  // A call on an `inspect: grpc_adapter` route; `result`: one of
  // filters::grpc_adapter::result (static literals).
  void AdapterInspection(std::string_view result) {
    Cached(adapter_inspections_, GetFamilies().grpc_adapter_inspections, result)
        .Increment(shard_);
  }
  // `decision`: "allow", "deny" or "audit_deny" (a static literal).
  void AuthzDecision(std::string_view decision, std::string_view reason);
  // Bytes of one call by peer node (metrics.peer_node_label). At most kMaxPeerNodes nodes
  // get their own series per listener and worker; later ones share peer_node="other".
  void PeerBytes(const std::string& node, uint64_t request_bytes, uint64_t response_bytes);

 private:
  static constexpr size_t kMaxMethods = 256;
  static constexpr size_t kMaxPeerNodes = 1024;
  struct PeerCounters {
    metrics::Counter request_bytes;
    metrics::Counter response_bytes;
  };
  std::unordered_map<std::string, PeerCounters> peers_;
  MethodStats& Resolve(std::unique_ptr<MethodStats>& slot, std::string_view service,
                       std::string_view method);

  std::string listener_;
  unsigned shard_;
  std::unordered_map<std::string, std::unique_ptr<MethodStats>> methods_;
  std::unique_ptr<MethodStats> other_;
  struct AuthzCounter {
    std::string_view decision;
    std::string_view reason;  // one of the filter's static reason literals
    metrics::Counter counter;
  };
  std::vector<AuthzCounter> authz_counters_;
  using LabelCache = std::vector<std::pair<std::string_view, metrics::Counter>>;
  metrics::Counter& Cached(LabelCache& cache, metrics::CounterFamily* family,
                           std::string_view label);
  LabelCache glitches_;
  LabelCache limit_rejections_;
  LabelCache adapter_inspections_;
  metrics::Gauge streams_active_;
  metrics::Counter connections_total_;
  metrics::Gauge connections_active_;
};

// Maps a stream's end to a gRPC code for metrics when no grpc-status was seen.
grpc::StatusCode CodeForReset(uint32_t http2_error_code);

}  // namespace sepal::stats
