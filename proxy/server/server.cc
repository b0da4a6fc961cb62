// Server: worker startup, listener binding across workers, drain and stop.
#include "proxy/server/server.h"

#include <thread>

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
  return absl::OkStatus();
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
  for (auto& worker : workers_) worker->Stop();
  workers_.clear();
  if (identity_) identity_->Shutdown();
  identity_.reset();
}

}  // namespace sepal
