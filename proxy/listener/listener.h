// One listening socket of one worker (SO_REUSEPORT spreads connections over workers) and
// the route table its connections use.
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <string>

#include "proxy/config/config.h"
#include "proxy/router/router.h"
#include "proxy/stats/proxy_metrics.h"

namespace sepal {

class Worker;

class Listener {
 public:
  Listener(Worker& worker, const config::ListenerConfig& config, const config::Config& root,
           boost::asio::ip::tcp::acceptor acceptor);

  void Start();
  void Stop();

  const std::string& name() const { return config_.name; }
  const config::ListenerConfig& config() const { return config_; }
  const Router& router() const { return router_; }
  stats::ListenerStats& stats() { return stats_; }

 private:
  void DoAccept();

  Worker& worker_;
  const config::ListenerConfig& config_;
  Router router_;
  stats::ListenerStats stats_;
  boost::asio::ip::tcp::acceptor acceptor_;
  bool stopped_ = false;
};

// Opens a listening TCP socket with SO_REUSEPORT on `io`. Port 0 picks a free port; pass
// the port the first worker got to the others.
absl::StatusOr<boost::asio::ip::tcp::acceptor> OpenListeningSocket(
    boost::asio::io_context& io, const config::SocketAddress& address, uint16_t port_override);

}  // namespace sepal
