// Admin HTTP/1.1 server (/metrics /healthz /ready /config /peers, the status page at /) on a
// thread of its own.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "proxy/admin/status.h"
#include "proxy/config/config.h"

namespace sepal::admin {

// What /ready reports. `problems` pairs a component ("upstream superlink-fleet") with what
// is wrong with it ("connect refused"); each becomes one line of the response body.
struct Readiness {
  bool ready = true;
  std::vector<std::pair<std::string, std::string>> problems;
};

// The configuration /config shows; fetched per request so reloads are visible at once.
struct ConfigInfo {
  config::ConfigSnapshot config;
  uint64_t generation = 0;
  std::chrono::system_clock::time_point loaded_at;
};

// Protection against misbehaving clients. The admin port is meant for Prometheus and
// operators, so the limits are tight; tests shorten the timeout.
struct AdminLimits {
  std::size_t max_header_bytes = 8 * 1024;
  // A whole request (or the idle wait for the next one on a keep-alive connection) and a
  // whole response write must each finish within this.
  std::chrono::milliseconds io_timeout = std::chrono::seconds(10);
  std::size_t max_connections = 64;  // further connections are closed on accept
};

// Serves the admin endpoints from its own io_context and thread, never a worker's, so a
// slow scrape cannot stall the data path and a busy worker cannot hide /healthz.
//
// The handlers run on the admin thread, one request at a time; they must be thread-safe
// with respect to whatever they read. A handler left empty makes its endpoint answer 503
// (/ready: ready). Stop() must not be called from inside a handler.
class AdminServer {
 public:
  struct Handlers {
    std::function<std::string()> metrics;  // Prometheus text exposition
    std::function<Readiness()> ready;
    std::function<ConfigInfo()> config;
    std::function<std::vector<PeerEntry>()> peers;  // /peers
    std::function<StatusInfo()> status;             // the page at /
  };

  AdminServer(config::SocketAddress address, Handlers handlers, AdminLimits limits = {});
  ~AdminServer();  // Stop()s
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;

  // Binds and starts the thread. Errors name the address. Call at most once.
  absl::Status Start();
  // Closes the listener and every connection, then joins the thread. Idempotent.
  void Stop();
  // The bound port (the ephemeral one when configured with port 0); 0 before Start().
  uint16_t port() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sepal::admin
