// A worker thread: one io_context owning its listeners, downstream connections, upstream
// pools and chunk pool. Nothing here is shared with other workers; the Server hands each
// worker a new configuration generation with Apply().
#pragma once

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include "absl/status/status.h"
#include "proxy/buffer/chunk_buffer.h"
#include "proxy/buffer/write_queue.h"
#include "proxy/config/config.h"
#include "proxy/identity/identity.h"
#include "proxy/metrics/metrics.h"
#include "proxy/worker/generation.h"

namespace sepal {

class ClientConnection;
class Http2Connection;
class Listener;
class UpstreamPool;

// What a worker needs to switch to a new configuration.
struct WorkerPlan {
  GenerationSettings settings;
  // Sockets opened (on this worker's io_context) for listeners that are new or whose
  // address changed, by listener name. Every other listener keeps its socket.
  std::map<std::string, boost::asio::ip::tcp::acceptor> new_acceptors;
};

class Worker {
 public:
  explicit Worker(unsigned index);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Switches to the plan's generation: new pools for new or changed upstreams, new routes
  // for every listener, new listeners started, removed or moved ones retired (they stop
  // accepting and their connections drain). Before Start() on the caller's thread; after it,
  // post it to io() (ApplyAndWait does).
  void Apply(WorkerPlan plan);
  // From another thread, once the worker runs: applies on the worker thread and waits.
  void ApplyAndWait(WorkerPlan plan);
  void Start();
  // Stop accepting and send GOAWAY on every connection (thread-safe: posts to the worker).
  void BeginDrain();
  // Close everything still open and stop the thread (thread-safe); joins.
  void Stop();
  // Number of open downstream connections (approximate when read from another thread).
  size_t connection_count() const { return connection_count_.load(std::memory_order_relaxed); }
  // One idle connection's memory release (DownstreamConnection::Tick) out of this tick's
  // budget; false when it is spent.
  bool TakeIdleRelease() {
    if (idle_releases_left_ == 0) return false;
    --idle_releases_left_;
    return true;
  }

  unsigned index() const { return index_; }
  boost::asio::io_context& io() { return io_; }
  ChunkPool& chunk_pool() { return chunk_pool_; }
  WriteQueuePool& write_queues() { return write_queues_; }
  // One read buffer for every cleartext connection of this worker: nghttp2 takes each read
  // whole before the next one starts, so no connection needs a buffer of its own.
  static constexpr size_t kReadBufferSize = 256 * 1024;
  uint8_t* read_buffer() {
    if (!read_buffer_) read_buffer_.reset(new uint8_t[kReadBufferSize]);
    return read_buffer_.get();
  }
  const std::shared_ptr<const Generation>& generation() const { return generation_; }
  bool draining() const { return draining_; }
  // Seconds since the worker started, counted by its once-a-second tick (which also lets
  // every connection check its calls for stalled requests).
  uint64_t ticks() const { return ticks_; }

  // Connections with output to send (Http2Connection::ScheduleFlush). Inside a FlushBatch they
  // are flushed when the outermost batch ends, in the same handler: the upstream request that
  // a downstream read produced leaves without another pass through the event loop (and its
  // epoll_wait). Outside one, a posted handler flushes them.
  void MarkForFlush(std::shared_ptr<Http2Connection> connection);
  class FlushBatch {
   public:
    explicit FlushBatch(Worker& worker) : worker_(worker) { ++worker_.batch_depth_; }
    ~FlushBatch() {
      if (--worker_.batch_depth_ == 0) worker_.FlushMarked();
    }
    FlushBatch(const FlushBatch&) = delete;
    FlushBatch& operator=(const FlushBatch&) = delete;

   private:
    Worker& worker_;
  };

  void Register(ClientConnection* connection);
  void Unregister(ClientConnection* connection);
  // A retired listener's last connection closed: destroy it (deferred).
  void ReleaseRetiredListener(Listener* listener);

 private:
  void RetireListener(std::unique_ptr<Listener> listener);
  void FlushMarked();
  void SweepRetiredPools();
  void ScheduleTick();
  // Memory budget exceeded: ends the calls of this worker that buffer the most.
  void ShedLargestStreams();

  unsigned index_;
  std::shared_ptr<const Generation> generation_;
  // Buffers first: connections still captured by handlers die with io_, and give their
  // chunks back as they go.
  ChunkPool chunk_pool_;
  WriteQueuePool write_queues_{&chunk_pool_};
  std::unique_ptr<uint8_t[]> read_buffer_;
  boost::asio::io_context io_{1};
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_guard_;
  std::vector<std::unique_ptr<Listener>> listeners_;
  // Removed or moved by a reload, kept until their connections are gone.
  std::vector<std::unique_ptr<Listener>> retired_listeners_;
  // Pools of upstreams a reload removed or changed, closed once no stream can use them.
  std::vector<std::shared_ptr<UpstreamPool>> retired_pools_;
  std::unique_ptr<boost::asio::steady_timer> sweep_timer_;
  std::unique_ptr<boost::asio::steady_timer> tick_timer_;
  uint64_t ticks_ = 0;
  static constexpr unsigned kIdleReleasesPerTick = 512;
  unsigned idle_releases_left_ = kIdleReleasesPerTick;
  uint64_t seen_shed_epoch_ = 0;
  std::unordered_set<ClientConnection*> connections_;
  std::vector<std::shared_ptr<Http2Connection>> to_flush_;
  unsigned batch_depth_ = 0;
  bool flush_posted_ = false;
  std::atomic<size_t> connection_count_{0};
  metrics::Gauge connections_gauge_;  // sepal_worker_connections_active{worker}
  bool draining_ = false;
  bool running_ = false;
  std::thread thread_;
};

}  // namespace sepal
