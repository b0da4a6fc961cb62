// Metric family declarations and label-handle caches.
#include "proxy/stats/proxy_metrics.h"

#include <nghttp2/nghttp2.h>

#include "proxy/common/build_info.h"

namespace sepal::stats {

const Families& GetFamilies() {
  static const Families families = [] {
    metrics::Registry& r = metrics::DefaultRegistry();
    Families f{};
    f.requests = &r.AddCounter("sepal_grpc_requests_total", "gRPC calls finished, by status code.",
                               {"listener", "grpc_service", "grpc_method", "grpc_code"});
    f.request_duration = &r.AddHistogram(
        "sepal_grpc_request_duration_seconds",
        "Time from request headers to the end of the call, in seconds.",
        {"listener", "grpc_service", "grpc_method"});
    f.request_bytes = &r.AddCounter("sepal_grpc_request_bytes_total",
                                    "Request body bytes (gRPC frames) received from clients.",
                                    {"listener", "grpc_service", "grpc_method"});
    f.response_bytes = &r.AddCounter("sepal_grpc_response_bytes_total",
                                     "Response body bytes (gRPC frames) received from upstreams.",
                                     {"listener", "grpc_service", "grpc_method"});
    f.streams_active = &r.AddGauge("sepal_grpc_streams_active", "gRPC calls in flight.",
                                   {"listener"});
    f.connections_total = &r.AddCounter("sepal_downstream_connections_total",
                                        "Client connections accepted.", {"listener"});
    f.connections_active = &r.AddGauge("sepal_downstream_connections_active",
                                       "Client connections open.", {"listener"});
    f.worker_connections = &r.AddGauge(
        "sepal_worker_connections_active",
        "Client connections open, by worker thread (the kernel spreads them: SO_REUSEPORT).",
        {"worker"});
    f.protocol_errors = &r.AddCounter(
        "sepal_downstream_protocol_errors_total",
        "Client connections closed for bad input (http1, tls_on_cleartext, bad_preface, "
        "http2_error, proxy_header, glitches).",
        {"listener", "kind"});
    f.glitches = &r.AddCounter(
        "sepal_downstream_glitches_total",
        "Frames and streams no well-behaved client needs (empty_data, tiny_data, ping, "
        "settings, priority, window_update, early_reset, refused_stream, stalled_request); "
        "too many close the connection (protocol_errors kind=\"glitches\").",
        {"listener", "kind"});
    f.limit_rejections = &r.AddCounter(
        "sepal_limit_rejections_total",
        "Calls, streams and connections refused by a limit (peer_connections, "
        "peer_concurrent_calls, peer_calls_per_second, upstream_concurrent_streams, "
        "upstream_pending_streams, upstream_new_streams_per_second, max_concurrent_streams, "
        "memory_overload, request_progress_timeout, max_header_list_bytes).",
        {"listener", "limit"});
    f.tls_handshake_errors = &r.AddCounter(
        "sepal_tls_handshake_errors_total",
        "Client connections on TLS listeners that failed before HTTP/2, by reason (timeout, "
        "not_tls, no_alpn_h2, protocol_version, no_shared_cipher, client_cert, peer_alert, "
        "client_closed, "
        "no_certificate, other).",
        {"listener", "reason"});
    f.tls_listener_certificate_expiry = &r.AddGauge(
        "sepal_tls_listener_certificate_expiry_timestamp_seconds",
        "notAfter of the certificate each TLS listener serves (files or tailscaled), Unix "
        "seconds; NaN once the listener is gone.",
        {"listener"});
    f.peers_connected = &r.AddGauge(
        "sepal_peers_connected",
        "Peers (tailnet nodes, or addresses without identity) with a connection open now.",
        {"listener"});
    f.tls_certificate_reloads = &r.AddCounter(
        "sepal_tls_certificate_reloads_total",
        "Listener certificate loads after start (every reload, or a pair from tailscaled), by "
        "result; a failure keeps the previous certificate.",
        {"listener", "result"});
    f.authz_decisions = &r.AddCounter("sepal_authz_decisions_total",
                                      "Authorization decisions, by outcome and reason.",
                                      {"listener", "decision", "reason"});
    f.grpc_adapter_inspections = &r.AddCounter(
        "sepal_grpc_adapter_inspections_total",
        "Calls on inspect: grpc_adapter routes, by what reading the wrapped message's name "
        "found (ok; refused with INVALID_ARGUMENT: malformed, too_large, compressed, "
        "unknown_message, extra_message).",
        {"listener", "result"});
    f.identity_lookups = &r.AddCounter("sepal_identity_lookups_total",
                                       "Per-connection identity lookups, by result.", {"result"});
    f.identity_lookup_duration = &r.AddHistogram("sepal_identity_lookup_duration_seconds",
                                                 "Time to learn a connection's identity.", {});
    f.upstream_connect_failures = &r.AddCounter("sepal_upstream_connect_failures_total",
                                                "Failed connection attempts to an upstream.",
                                                {"upstream"});
    f.config_reloads = &r.AddCounter("sepal_config_reloads_total",
                                     "Configuration reloads, by result.", {"result"});
    f.config_last_reload_success = &r.AddGauge(
        "sepal_config_last_reload_success_timestamp_seconds",
        "Unix time of the last successful configuration load.", {});
    f.build_info =
        &r.AddGauge("sepal_build_info", "Build information: version, git commit, build type.",
                    {"version", "commit", "build_type"});
    f.access_log_lines = &r.AddCounter(
        "sepal_access_log_lines_total",
        "Access log lines, by result (dropped: the output failed or fell behind).", {"result"});
    f.peer_request_bytes = &r.AddCounter(
        "sepal_peer_request_bytes_total",
        "Request body bytes by peer tailnet node (only with metrics.peer_node_label).",
        {"listener", "peer_node"});
    f.peer_response_bytes = &r.AddCounter(
        "sepal_peer_response_bytes_total",
        "Response body bytes by peer tailnet node (only with metrics.peer_node_label).",
        {"listener", "peer_node"});
    f.build_info
        ->WithLabels({std::string(BuildVersion()), std::string(BuildCommit()),
                      std::string(BuildType())})
        .Set(1);
    return f;
  }();
  return families;
}

ListenerStats::ListenerStats(std::string listener, unsigned shard)
    : listener_(std::move(listener)), shard_(shard) {
  const Families& f = GetFamilies();
  streams_active_ = f.streams_active->WithLabels({listener_});
  connections_total_ = f.connections_total->WithLabels({listener_});
  connections_active_ = f.connections_active->WithLabels({listener_});
}

MethodStats& ListenerStats::Resolve(std::unique_ptr<MethodStats>& slot, std::string_view service,
                                    std::string_view method) {
  const Families& f = GetFamilies();
  slot = std::make_unique<MethodStats>();
  std::string s(service), m(method);
  for (int code = 0; code <= 16; ++code) {
    slot->by_code[code] = f.requests->WithLabels(
        {listener_, s, m,
         std::string(grpc::StatusCodeName(static_cast<grpc::StatusCode>(code)))});
  }
  slot->duration = f.request_duration->WithLabels({listener_, s, m});
  slot->request_bytes = f.request_bytes->WithLabels({listener_, s, m});
  slot->response_bytes = f.response_bytes->WithLabels({listener_, s, m});
  return *slot;
}

MethodStats& ListenerStats::ForPath(std::string_view path, bool routed) {
  std::string_view service, method;
  bool valid = grpc::SplitGrpcPath(path, &service, &method);
  if (routed && valid) {
    auto it = methods_.find(std::string(path));
    if (it != methods_.end()) return *it->second;
    if (methods_.size() < kMaxMethods) {
      return Resolve(methods_[std::string(path)], service, method);
    }
  }
  if (!other_) Resolve(other_, valid && routed ? service : "other", "other");
  return *other_;
}

void ListenerStats::ConnectionOpened() {
  connections_total_.Increment(shard_);
  connections_active_.Add(shard_, 1);
}

void ListenerStats::ConnectionClosed() { connections_active_.Add(shard_, -1); }

void ListenerStats::ProtocolError(std::string_view kind) {
  GetFamilies().protocol_errors->WithLabels({listener_, std::string(kind)}).Increment(shard_);
}

metrics::Counter& ListenerStats::Cached(LabelCache& cache, metrics::CounterFamily* family,
                                        std::string_view label) {
  for (auto& [name, counter] : cache) {
    if (name.data() == label.data() || name == label) return counter;
  }
  cache.emplace_back(label, family->WithLabels({listener_, std::string(label)}));
  return cache.back().second;
}

void ListenerStats::TlsHandshakeError(std::string_view reason) {
  GetFamilies().tls_handshake_errors->WithLabels({listener_, std::string(reason)}).Increment(shard_);
}

void ListenerStats::AuthzDecision(std::string_view decision, std::string_view reason) {
  for (AuthzCounter& entry : authz_counters_) {
    if (entry.decision == decision && entry.reason == reason) {
      entry.counter.Increment(shard_);
      return;
    }
  }
  metrics::Counter counter = GetFamilies().authz_decisions->WithLabels(
      {listener_, std::string(decision), std::string(reason)});
  counter.Increment(shard_);
  authz_counters_.push_back({decision, reason, counter});
}

void ListenerStats::PeerBytes(const std::string& node, uint64_t request_bytes,
                              uint64_t response_bytes) {
  auto it = peers_.find(node);
  if (it == peers_.end()) {
    std::string label = peers_.size() < kMaxPeerNodes ? node : "other";
    it = peers_.find(label);
    if (it == peers_.end()) {
      const Families& f = GetFamilies();
      it = peers_
               .emplace(label, PeerCounters{f.peer_request_bytes->WithLabels({listener_, label}),
                                            f.peer_response_bytes->WithLabels({listener_, label})})
               .first;
    }
  }
  if (request_bytes > 0) it->second.request_bytes.Increment(shard_, request_bytes);
  if (response_bytes > 0) it->second.response_bytes.Increment(shard_, response_bytes);
}

grpc::StatusCode CodeForReset(uint32_t http2_error_code) {
  switch (http2_error_code) {
    case NGHTTP2_CANCEL: return grpc::StatusCode::kCancelled;
    case NGHTTP2_REFUSED_STREAM: return grpc::StatusCode::kUnavailable;
    case NGHTTP2_ENHANCE_YOUR_CALM: return grpc::StatusCode::kResourceExhausted;
    default: return grpc::StatusCode::kInternal;
  }
}

}  // namespace sepal::stats
