// Server: worker startup, listener binding across workers, drain and stop.
#include "proxy/server/server.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <cstring>
#include <thread>

#include "proxy/admin/admin_server.h"
#include "proxy/metrics/metrics.h"

#include "proxy/common/log.h"
#include "proxy/identity/provider_factory.h"
#include "proxy/common/strings.h"
#include "proxy/listener/listener.h"
#include "proxy/stats/proxy_metrics.h"
#include "proxy/worker/worker.h"

namespace sepal {

Server::Server(config::ConfigSnapshot config) : config_(std::move(config)) {}

Server::~Server() { Stop(); }

absl::Status Server::Start() {
  identity_ = identity::MakeIdentityProvider(config_->identity);
  unsigned count = config_->workers;
  if (count == 0) count = std::max(1u, std::thread::hardware_concurrency());
  // One metrics shard per worker (plus the shared one), before any worker counts.
  stats::GetFamilies();
  metrics::DefaultRegistry().SetShardCount(count);
  for (unsigned i = 0; i < count; ++i) {
    auto worker = std::make_unique<Worker>(i, config_, identity_.get());
    if (absl::Status status = worker->Init(); !status.ok()) return status;
    workers_.push_back(std::move(worker));
  }
  for (const config::ListenerConfig& listener : config_->listeners) {
    uint16_t port = 0;
    for (auto& worker : workers_) {
      auto acceptor = OpenListeningSocket(worker->io(), listener.address, port);
      if (!acceptor.ok()) {
        return absl::Status(acceptor.status().code(),
                            StrCat("listener ", listener.name, ": ",
                                         acceptor.status().message()));
      }
      port = acceptor->local_endpoint().port();
      worker->AddListener(
          std::make_unique<Listener>(*worker, listener, *config_, std::move(*acceptor)));
    }
    bound_ports_[listener.name] = port;
    LogInfo("listener ", listener.name, " on ", listener.address.host, ":", port, " (",
            listener.routes.size(), " routes, ", count, " workers)");
  }
  for (auto& worker : workers_) worker->Start();
  started_ = true;
  if (config_->admin.address) {
    admin::AdminServer::Handlers handlers;
    handlers.metrics = [] { return metrics::DefaultRegistry().Serialize(); };
    handlers.ready = [this] { return CheckReadiness(); };
    handlers.config = [this] { return admin::ConfigInfo{config_, 1, loaded_at_}; };
    admin_ = std::make_unique<admin::AdminServer>(*config_->admin.address, std::move(handlers));
    if (absl::Status status = admin_->Start(); !status.ok()) return status;
  }
  return absl::OkStatus();
}

uint16_t Server::admin_port() const { return admin_ ? admin_->port() : 0; }

namespace {

// Connect-only probe, bounded by `timeout`; empty on success, else why not.
std::string Probe(const boost::asio::generic::stream_protocol::endpoint& endpoint,
                  std::chrono::milliseconds timeout) {
  int fd = ::socket(endpoint.protocol().family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return strerror(errno);
  std::string problem;
  if (::connect(fd, endpoint.data(), static_cast<socklen_t>(endpoint.size())) != 0) {
    if (errno != EINPROGRESS) {
      problem = strerror(errno);
    } else {
      pollfd p{fd, POLLOUT, 0};
      int err = 0;
      socklen_t len = sizeof(err);
      if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) {
        problem = "connect timed out";
      } else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
        problem = strerror(err);
      }
    }
  }
  ::close(fd);
  return problem;
}

}  // namespace

admin::Readiness Server::CheckReadiness() const {
  admin::Readiness readiness;
  auto problem = [&](std::string component, std::string what) {
    readiness.ready = false;
    readiness.problems.emplace_back(std::move(component), std::move(what));
  };
  if (!started_) problem("listeners", "not bound yet");
  for (const config::UpstreamConfig& upstream : config_->upstreams) {
    boost::asio::generic::stream_protocol::endpoint endpoint;
    if (upstream.address.kind == config::SocketAddress::Kind::kUnix) {
      endpoint = boost::asio::local::stream_protocol::endpoint(upstream.address.path);
    } else {
      boost::system::error_code ec;
      auto ip = boost::asio::ip::make_address(upstream.address.host, ec);
      if (ec) ip = boost::asio::ip::make_address("127.0.0.1");  // names: probe loopback
      endpoint = boost::asio::ip::tcp::endpoint(ip, upstream.address.port);
    }
    std::string why = Probe(endpoint, std::chrono::milliseconds(500));
    if (!why.empty()) problem("upstream " + upstream.name, upstream.address.text + ": " + why);
  }
  if (config_->identity.provider == config::IdentityConfig::Provider::kTailscale) {
    const std::string& socket = config_->identity.tailscale.socket;
    std::string why = Probe(boost::asio::local::stream_protocol::endpoint(socket),
                            std::chrono::milliseconds(500));
    if (!why.empty()) problem("identity tailscale", socket + ": " + why);
  }
  return readiness;
}

uint16_t Server::BoundPort(const std::string& listener_name) const {
  auto it = bound_ports_.find(listener_name);
  return it == bound_ports_.end() ? 0 : it->second;
}

size_t Server::connection_count() const {
  size_t total = 0;
  for (const auto& worker : workers_) total += worker->connection_count();
  return total;
}

bool Server::Drain(std::chrono::milliseconds timeout) {
  for (auto& worker : workers_) worker->BeginDrain();
  auto deadline = std::chrono::steady_clock::now() + timeout;
  // Give the two-step GOAWAY its grace period before counting.
  std::this_thread::sleep_for(std::chrono::milliseconds(250));
  while (connection_count() > 0) {
    if (std::chrono::steady_clock::now() >= deadline) {
      LogWarning("drain timeout: closing ", connection_count(), " connections still open");
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

void Server::Stop() {
  if (admin_) admin_->Stop();
  for (auto& worker : workers_) worker->Stop();
  workers_.clear();
  if (identity_) identity_->Shutdown();
  identity_.reset();
}

}  // namespace sepal
