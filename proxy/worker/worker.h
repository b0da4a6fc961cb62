// A worker thread: one io_context owning its listeners, downstream connections, upstream
// pools and chunk pool. Nothing here is shared with other workers.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <memory>
#include <thread>
#include <unordered_set>
#include <vector>

#include "absl/status/status.h"
#include "proxy/buffer/chunk_buffer.h"
#include "proxy/config/config.h"
#include "proxy/identity/identity.h"

namespace sepal {

class DownstreamConnection;
class Listener;
class UpstreamPool;

class Worker {
 public:
  // `identity` (may be null: routing only) is owned by the Server and outlives workers.
  Worker(unsigned index, config::ConfigSnapshot config, identity::IdentityProvider* identity);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Before Start(): resolves upstreams and adopts listening sockets opened on io().
  absl::Status Init();
  void AddListener(std::unique_ptr<Listener> listener);
  void Start();
  // Stop accepting and send GOAWAY on every connection (thread-safe: posts to the worker).
  void BeginDrain();
  // Close everything still open and stop the thread (thread-safe); joins.
  void Stop();
  // Number of open downstream connections (approximate when read from another thread).
  size_t connection_count() const { return connection_count_.load(std::memory_order_relaxed); }

  unsigned index() const { return index_; }
  boost::asio::io_context& io() { return io_; }
  ChunkPool& chunk_pool() { return chunk_pool_; }
  const config::ConfigSnapshot& config() const { return config_; }
  UpstreamPool& upstream_pool(size_t index) { return *pools_[index]; }
  bool draining() const { return draining_; }
  identity::IdentityProvider* identity_provider() const { return identity_; }

  void Register(DownstreamConnection* connection);
  void Unregister(DownstreamConnection* connection);

 private:
  unsigned index_;
  config::ConfigSnapshot config_;
  identity::IdentityProvider* identity_;
  boost::asio::io_context io_{1};
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_guard_;
  ChunkPool chunk_pool_;
  std::vector<std::unique_ptr<Listener>> listeners_;
  std::vector<std::unique_ptr<UpstreamPool>> pools_;
  std::unordered_set<DownstreamConnection*> connections_;
  std::atomic<size_t> connection_count_{0};
  bool draining_ = false;
  std::thread thread_;
};

}  // namespace sepal
