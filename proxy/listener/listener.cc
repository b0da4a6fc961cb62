// Listener: accept loop handing each new socket to a DownstreamConnection.
#include "proxy/listener/listener.h"

#include <netinet/tcp.h>
#include <sys/socket.h>

#include <atomic>

#include "proxy/common/log.h"
#include "proxy/common/strings.h"
#include "proxy/downstream/downstream_connection.h"
#include "proxy/http1/http1_connection.h"
#include "proxy/worker/worker.h"

namespace sepal {

namespace asio = boost::asio;
using asio::ip::tcp;

namespace {
uint64_t NextListenerId() {
  static std::atomic<uint64_t> next{1};
  return next.fetch_add(1, std::memory_order_relaxed);
}
}  // namespace

Listener::Listener(Worker& worker, std::string name, tcp::acceptor acceptor,
                   ListenerRoutesPtr routes)
    : worker_(worker),
      name_(std::move(name)),
      id_(NextListenerId()),
      routes_(std::move(routes)),
      stats_(name_, worker.index()),
      acceptor_(std::move(acceptor)) {
  boost::system::error_code ignored;
  port_ = acceptor_.local_endpoint(ignored).port();
}

void Listener::Start() { DoAccept(); }

void Listener::Stop() {
  stopped_ = true;
  boost::system::error_code ignored;
  acceptor_.close(ignored);
}

void Listener::Retire() {
  if (retired_) return;
  retired_ = true;
  if (!stopped_) {
    // Connections the kernel completed before the reload wait in the backlog; closing the
    // socket now would reset them. Take them (non-blocking) and serve them, then stop.
    boost::system::error_code ec;
    acceptor_.non_blocking(true, ec);
    for (int i = 0; !ec && i < 4096; ++i) {
      tcp::socket socket(worker_.io());
      acceptor_.accept(socket, ec);
      if (!ec) Adopt(std::move(socket));
    }
  }
  Stop();
}

void Listener::ConnectionOpened() {
  ++open_connections_;
  stats_.ConnectionOpened();
}

void Listener::ConnectionClosed() {
  --open_connections_;
  stats_.ConnectionClosed();
  if (retired_ && open_connections_ == 0) worker_.ReleaseRetiredListener(this);
}

void Listener::DoAccept() {
  acceptor_.async_accept([this, alive = liveness_.Watch()](boost::system::error_code ec,
                                                           tcp::socket socket) {
    if (alive.expired() || stopped_) return;
    if (ec) {
      // EMFILE and friends: log, back off a little, keep listening.
      LogWarning("listener ", name_, ": accept failed: ", ec.message());
      auto timer = std::make_shared<asio::steady_timer>(worker_.io(), std::chrono::milliseconds(50));
      timer->async_wait([this, timer, alive](boost::system::error_code) {
        if (!alive.expired() && !stopped_) DoAccept();
      });
      return;
    }
    Adopt(std::move(socket));
    DoAccept();
  });
}

void Listener::Adopt(tcp::socket socket) {
  boost::system::error_code ignored;
  socket.set_option(tcp::no_delay(true), ignored);
  identity::PeerAddress peer;
  auto remote = socket.remote_endpoint(ignored);
  if (!ignored) peer = {remote.address(), remote.port()};
  auto local = socket.local_endpoint(ignored);
  auto protocol = local.protocol();
  Http2Connection::Socket generic(worker_.io(),
                                  asio::generic::stream_protocol(protocol.family(), IPPROTO_TCP),
                                  socket.release());
  if (routes_->config.protocol == config::Protocol::kHttp1) {
    auto connection = std::make_shared<Http1Connection>(worker_, *this, std::move(generic),
                                                        std::move(peer), local.address());
    connection->Start();
    return;
  }
  auto connection = std::make_shared<DownstreamConnection>(worker_, *this, std::move(generic),
                                                           std::move(peer), local.address());
  connection->Start();
}

absl::StatusOr<tcp::acceptor> OpenListeningSocket(asio::io_context& io,
                                                  const config::SocketAddress& address,
                                                  uint16_t port_override) {
  boost::system::error_code ec;
  asio::ip::address ip = asio::ip::make_address(address.host, ec);
  if (ec) {
    tcp::resolver resolver(io);
    auto results = resolver.resolve(address.host, "0", ec);
    if (ec || results.empty()) {
      return absl::InvalidArgumentError(
          StrCat("cannot resolve listener address ", address.text, ": ", ec.message()));
    }
    ip = results.begin()->endpoint().address();
  }
  tcp::endpoint endpoint(ip, port_override != 0 ? port_override : address.port);
  tcp::acceptor acceptor(io);
  auto fail = [&](std::string_view what) {
    return absl::UnavailableError(
        StrCat("cannot ", what, " ", address.text, ": ", ec.message()));
  };
  acceptor.open(endpoint.protocol(), ec);
  if (ec) return fail("open socket for");
  acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  int one = 1;
  // Every worker binds the same address; the kernel spreads new connections over them.
  if (setsockopt(acceptor.native_handle(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) {
    ec.assign(errno, boost::system::system_category());
    return fail("set SO_REUSEPORT on");
  }
  acceptor.bind(endpoint, ec);
  if (ec) return fail("bind");
  acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return fail("listen on");
  return acceptor;
}

}  // namespace sepal
