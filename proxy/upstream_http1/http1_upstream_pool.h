// Per-worker pool of keep-alive HTTP/1.1 connections to one upstream (`protocol: http1`, the
// SuperLink's Fleet REST listener): one request at a time per connection; a connection goes
// back to the pool when its response was read whole and both sides kept it alive.
//
// Idle connections are watched for readability: the upstream closing one (uvicorn, which
// serves Flower's REST API, closes idle keep-alive connections after 5 s) drops it from the
// pool at once, so a request is rarely written to a connection that is already gone; they
// are also closed after kIdleTimeout, before the upstream would.
#pragma once

#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "proxy/common/liveness.h"
#include "proxy/http1/transport_stream.h"
#include "proxy/http2/transport.h"

namespace sepal {

class UpstreamPool;
class Worker;

// One connection to the upstream, owned by the request using it or by the pool while idle.
class Http1Upstream {
 public:
  explicit Http1Upstream(boost::asio::io_context& io);
  Transport& transport() { return transport_; }
  http1::TransportStream& stream() { return stream_; }
  // Bytes read past a response (none, unless the upstream misbehaves) stay here.
  boost::beast::flat_buffer& buffer() { return buffer_; }
  // This connection carried a request before (it may have been closed by the upstream since).
  bool reused() const { return requests_ > 1; }
  void CountRequest() { ++requests_; }
  void Close() { transport_.Close(); }

 private:
  friend class Http1UpstreamPool;
  Transport transport_;
  http1::TransportStream stream_{transport_};
  boost::beast::flat_buffer buffer_;
  unsigned requests_ = 0;
  std::chrono::steady_clock::time_point idle_since_;
};

class Http1UpstreamPool {
 public:
  // `base` supplies the resolved address, the connect timeout and the failure counter.
  Http1UpstreamPool(Worker& worker, UpstreamPool& base);
  ~Http1UpstreamPool();
  Http1UpstreamPool(const Http1UpstreamPool&) = delete;
  Http1UpstreamPool& operator=(const Http1UpstreamPool&) = delete;

  // Calls `ready` with an idle connection or a new one (or null and why it failed) — later,
  // from the worker's event loop, never from inside Acquire.
  using Ready = std::function<void(std::shared_ptr<Http1Upstream>, std::string error)>;
  void Acquire(Ready ready);
  // A connection whose last response was read whole and that both sides keep alive.
  void Release(std::shared_ptr<Http1Upstream> connection);
  // Closes the idle connections (a retired pool, a stopping worker).
  void Shutdown();

  size_t idle_count() const { return idle_.size(); }
  static constexpr std::chrono::seconds kIdleTimeout{2};
  static constexpr size_t kMaxIdle = 64;

 private:
  void Connect(Ready ready);
  void WatchIdle(const std::shared_ptr<Http1Upstream>& connection);
  void Forget(Http1Upstream* connection);

  Worker& worker_;
  UpstreamPool& base_;
  std::vector<std::shared_ptr<Http1Upstream>> idle_;  // most recently used last
  Liveness liveness_;  // handlers may run after the pool is gone
};

}  // namespace sepal
