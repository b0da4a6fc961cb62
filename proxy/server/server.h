// The proxy as a whole: starts N workers with their listeners from one config snapshot,
// reloads them with a new one, drains and stops them. Used by main() and, in-process, by
// integration tests.
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "proxy/admin/status.h"
#include "proxy/config/config.h"
#include "proxy/identity/identity.h"
#include "proxy/limits/limits_registry.h"
#include "proxy/memory/memory_budget.h"

namespace sepal {

class Worker;
struct WorkerPlan;
namespace filters {
class AccessLog;
}  // namespace filters
namespace tls {
class ServerContextStore;
class TailscaleCertificates;
}  // namespace tls
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
  // Switches to `next` without dropping a connection or a stream: new streams use its
  // routes and allow rules, streams in flight finish under the config they started with,
  // added listeners open, removed ones stop accepting and drain, moved ones move. On error
  // (a socket that cannot be bound, an upstream that cannot be resolved, an access log
  // that cannot be opened) nothing changes. Counts sepal_config_reloads_total{result}.
  // Not for concurrent use with Start/Drain/Stop (main thread or test thread only).
  absl::Status Reload(config::ConfigSnapshot next);
  // The config in force and its generation (1 = the one started with).
  config::ConfigSnapshot config() const;
  // Each TCP upstream's address as its pools dial it (resolved at load), by name.
  using UpstreamEndpoints = std::map<std::string, boost::asio::ip::tcp::endpoint>;
  UpstreamEndpoints upstream_endpoints() const;
  uint64_t generation() const;
  // sepal_config_reloads_total{result} (+ the last-success time): Reload counts itself;
  // main() counts a file that did not parse.
  void CountReload(bool success);
  // Hook for the tailscaled certificate source (`tls: {source: tailscale}`): installs a
  // freshly fetched pair (PEM: certificate chain, private key) as `listener`'s context; new
  // handshakes use it, connections already up keep theirs. A bad pair keeps the current one
  // and is returned as an error. Thread-safe.
  absl::Status ApplyFetchedCertificate(const std::string& listener,
                                       std::string_view certificate_chain_pem,
                                       std::string_view private_key_pem);
  tls::ServerContextStore& tls_contexts() { return *tls_contexts_; }
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
  // The peers with a connection open now, on every listener of the config in force (/peers).
  std::vector<admin::PeerEntry> ConnectedPeers() const;
  // Everything the admin status page shows.
  admin::StatusInfo StatusPageInfo() const;

 private:
  // Opens sockets for the listeners of `next` that `current` (may be null) does not already
  // serve at the same address, one per worker, into `plans`; records their ports.
  absl::Status OpenNewListeners(const config::Config* current, const config::Config& next,
                                std::vector<WorkerPlan>& plans,
                                std::map<std::string, uint16_t>& ports);
  // The access log for `next`: the running one if its settings are unchanged.
  absl::StatusOr<std::shared_ptr<filters::AccessLog>> AccessLogFor(const config::Config& next);

  mutable std::mutex mutex_;  // guards config_, upstream_endpoints_, generation_, loaded_at_,
                              // bound_ports_
  config::ConfigSnapshot config_;
  UpstreamEndpoints upstream_endpoints_;
  uint64_t generation_ = 1;
  std::chrono::system_clock::time_point loaded_at_ = std::chrono::system_clock::now();
  std::map<std::string, uint16_t> bound_ports_;
  std::chrono::system_clock::time_point started_at_{};

  std::shared_ptr<identity::IdentityProvider> identity_;
  std::shared_ptr<filters::AccessLog> access_log_;
  std::shared_ptr<tls::ServerContextStore> tls_contexts_;
  std::shared_ptr<limits::Registry> limits_;  // per-peer and per-upstream limit state
  std::shared_ptr<memory::MemoryBudget> memory_;  // the `memory:` budget (its own thread)
  // Fetches and renews the pairs of `tls: {source: tailscale}` listeners.
  std::unique_ptr<tls::TailscaleCertificates> tailscale_certificates_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::unique_ptr<admin::AdminServer> admin_;
  bool started_ = false;
};

}  // namespace sepal
