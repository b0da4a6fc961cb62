// The proxy as a whole: starts N workers with their listeners from one config snapshot,
// drains and stops them. Used by main() and, in-process, by integration tests.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "proxy/config/config.h"
#include "proxy/identity/identity.h"

namespace sepal {

class Worker;
namespace admin {
class AdminServer;
struct Readiness;
}  // namespace admin

class Server {
 public:
  explicit Server(config::ConfigSnapshot config);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds every listener on every worker and starts the worker threads.
  absl::Status Start();
  // Port a listener is bound to (useful with port 0 in tests); 0 if unknown.
  uint16_t BoundPort(const std::string& listener_name) const;
  unsigned worker_count() const { return static_cast<unsigned>(workers_.size()); }
  // Graceful: stop accepting, GOAWAY, wait up to `timeout` for connections to finish.
  // Returns true if everything finished in time.
  bool Drain(std::chrono::milliseconds timeout);
  // Closes whatever is left and joins the workers.
  void Stop();
  size_t connection_count() const;
  // Port of the admin server (/metrics, /healthz, /ready, /config); 0 if none.
  uint16_t admin_port() const;
  // What /ready reports: listeners bound, upstreams and identity provider reachable.
  admin::Readiness CheckReadiness() const;

 private:
  config::ConfigSnapshot config_;
  std::unique_ptr<identity::IdentityProvider> identity_;  // outlives the workers
  std::vector<std::unique_ptr<Worker>> workers_;
  std::map<std::string, uint16_t> bound_ports_;
  std::unique_ptr<admin::AdminServer> admin_;
  std::chrono::system_clock::time_point loaded_at_ = std::chrono::system_clock::now();
  bool started_ = false;
};

}  // namespace sepal
