// One listening socket of one worker (SO_REUSEPORT spreads connections over workers) and
// the routes its connections use, replaced on reload.
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <memory>
#include <string>

#include "proxy/config/config.h"
#include "proxy/router/router.h"
#include "proxy/worker/generation.h"
#include "proxy/stats/proxy_metrics.h"

namespace sepal {

class Worker;

class Listener {
 public:
  Listener(Worker& worker, std::string name, boost::asio::ip::tcp::acceptor acceptor,
           ListenerRoutesPtr routes);

  void Start();
  // Stops accepting (closes the socket). Connections already accepted are not touched.
  void Stop();
  // Reload: new connections and new streams use `routes` from now on.
  void Update(ListenerRoutesPtr routes) { routes_ = std::move(routes); }
  // Reload removed or moved this listener: accept what is already queued on the socket
  // (so no client that connected before the reload is refused), then stop accepting.
  void Retire();
  bool retired() const { return retired_; }

  const std::string& name() const { return name_; }
  // Unique for the process's lifetime (a pointer may be reused after a retired listener is
  // destroyed; this never is).
  uint64_t id() const { return id_; }
  // The current routes (and listener config): taken by each new connection and stream.
  const ListenerRoutesPtr& routes() const { return routes_; }
  const config::ListenerConfig& config() const { return routes_->config; }
  stats::ListenerStats& stats() { return stats_; }
  uint16_t port() const { return port_; }

  // Open connections accepted here; a retired listener is destroyed when this reaches 0.
  size_t open_connections() const { return open_connections_; }
  void ConnectionOpened();
  void ConnectionClosed();

 private:
  void DoAccept();
  void Adopt(boost::asio::ip::tcp::socket socket);

  Worker& worker_;
  std::string name_;
  uint64_t id_;
  ListenerRoutesPtr routes_;
  stats::ListenerStats stats_;
  boost::asio::ip::tcp::acceptor acceptor_;
  uint16_t port_ = 0;
  bool stopped_ = false;
  bool retired_ = false;
  // Expires with this listener; pending accept and timer handlers hold it weakly.
  std::shared_ptr<const bool> alive_ = std::make_shared<const bool>(true);
  size_t open_connections_ = 0;
};

// Opens a listening TCP socket with SO_REUSEPORT on `io`. Port 0 picks a free port; pass
// the port the first worker got to the others.
absl::StatusOr<boost::asio::ip::tcp::acceptor> OpenListeningSocket(
    boost::asio::io_context& io, const config::SocketAddress& address, uint16_t port_override);

}  // namespace sepal
