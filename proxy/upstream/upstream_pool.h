// Per-worker pool of HTTP/2 connections to one upstream: reuses a connection while it has
// stream capacity, opens another when all are full, forgets dead ones.
#pragma once

#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/ssl/context.hpp>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "proxy/config/config.h"
#include "proxy/metrics/metrics.h"

namespace sepal {

class Http1UpstreamPool;
class ProxyStream;
class UpstreamConnection;
class Worker;

class UpstreamPool {
 public:
  UpstreamPool(Worker& worker, const config::UpstreamConfig& config);
  ~UpstreamPool();

  // Resolves the address and loads the TLS settings once (at worker start).
  absl::Status Init();
  // Finds or opens a connection for the stream. The stream is attached when ready, or told
  // that the upstream failed.
  void Dispatch(ProxyStream* stream);
  void OnConnectionClosed(UpstreamConnection* connection);
  // True if a connected connection can take another stream now (Dispatch would not queue).
  bool HasReadyCapacity() const;
  void Shutdown();

  const std::string& name() const { return name_; }
  // The config this pool was made for; a reload keeps the pool while it is unchanged.
  const config::UpstreamConfig& config() const { return config_; }
  size_t connection_count() const { return connections_.size(); }
  const std::string& address_text() const { return address_text_; }
  void CountConnectFailure();
  // TLS to the upstream (null: cleartext h2c), and the name its certificate must carry.
  const std::shared_ptr<boost::asio::ssl::context>& tls_context() const { return tls_context_; }
  const std::string& server_name() const { return server_name_; }
  // For the HTTP/1.1 pool: the resolved address, or why it could not be resolved.
  const boost::asio::generic::stream_protocol::endpoint& endpoint() const { return endpoint_; }
  const std::string& init_error() const { return init_error_; }
  std::chrono::milliseconds connect_timeout() const { return connect_timeout_; }
  // An upstream with `protocol: http1`: its keep-alive HTTP/1.1 connections (null for h2).
  Http1UpstreamPool* http1() const { return http1_.get(); }

 private:
  Worker& worker_;
  config::UpstreamConfig config_;
  std::string name_;
  std::string address_text_;
  config::SocketAddress address_;
  std::chrono::milliseconds connect_timeout_;
  boost::asio::generic::stream_protocol::endpoint endpoint_;
  std::string init_error_;  // set when Init could not resolve the address or load TLS files
  std::shared_ptr<boost::asio::ssl::context> tls_context_;
  std::string server_name_;
  std::vector<std::shared_ptr<UpstreamConnection>> connections_;
  std::unique_ptr<Http1UpstreamPool> http1_;
  metrics::Counter connect_failures_;
};

}  // namespace sepal
