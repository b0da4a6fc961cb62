// Server: worker startup, listener binding across workers, drain and stop.
#include "proxy/server/server.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <algorithm>
#include <cstring>
#include <thread>

#include "filters/access_log/access_log.h"
#include "proxy/admin/admin_server.h"
#include "proxy/metrics/metrics.h"

#include "proxy/common/build_info.h"
#include "proxy/common/log.h"
#include "proxy/identity/provider_factory.h"
#include "proxy/common/strings.h"
#include "proxy/listener/listener.h"
#include "proxy/stats/proxy_metrics.h"
#include "proxy/tls/context_store.h"
#include "proxy/tls/tailscale_certificates.h"
#include "proxy/tls/tls_context.h"
#include "proxy/worker/worker.h"

namespace sepal {

Server::Server(config::ConfigSnapshot config)
    : config_(std::move(config)),
      tls_contexts_(std::make_shared<tls::ServerContextStore>()),
      limits_(std::make_shared<limits::Registry>()),
      tailscale_certificates_(std::make_unique<tls::TailscaleCertificates>(
          [this](const std::string& listener, std::string_view certificate_chain_pem,
                 std::string_view private_key_pem) {
            return ApplyFetchedCertificate(listener, certificate_chain_pem, private_key_pem);
          })) {}

Server::~Server() { Stop(); }

namespace {

// Resolves every TCP upstream host now, so a reload with a name that does not resolve
// fails as a whole instead of leaving a worker with a pool that cannot connect. Returns each
// one's first address, the one its pool dials (/ready probes it); an upstream unchanged
// from `current` keeps its pool, so it keeps the address found then (in `known`).
absl::StatusOr<Server::UpstreamEndpoints> ResolveUpstreams(const config::Config& config,
                                                           const config::Config* current,
                                                           const Server::UpstreamEndpoints& known) {
  boost::asio::io_context io;
  boost::asio::ip::tcp::resolver resolver(io);
  Server::UpstreamEndpoints endpoints;
  for (const config::UpstreamConfig& upstream : config.upstreams) {
    if (upstream.address.kind != config::SocketAddress::Kind::kTcp) continue;
    boost::system::error_code ec;
    auto results = resolver.resolve(upstream.address.host, std::to_string(upstream.address.port),
                                    boost::asio::ip::tcp::resolver::numeric_service, ec);
    if (ec || results.empty()) {
      return absl::UnavailableError(StrCat("upstream ", upstream.name, ": cannot resolve ",
                                           upstream.address.host, ": ",
                                           ec ? ec.message() : std::string("no addresses")));
    }
    auto kept = known.find(upstream.name);
    bool unchanged = current != nullptr && kept != known.end() &&
                     std::ranges::find(current->upstreams, upstream) != current->upstreams.end();
    endpoints[upstream.name] = unchanged ? kept->second : results.begin()->endpoint();
  }
  return endpoints;
}

}  // namespace

absl::StatusOr<std::shared_ptr<filters::AccessLog>> Server::AccessLogFor(
    const config::Config& next) {
  if (next.access_log.output == config::AccessLogConfig::Output::kOff) return nullptr;
  if (access_log_ && config_ && config_->access_log == next.access_log) return access_log_;
  const stats::Families& families = stats::GetFamilies();
  return filters::AccessLog::Open(next.access_log, static_cast<unsigned>(workers_.size()),
                                  families.access_log_lines->WithLabels({"written"}),
                                  families.access_log_lines->WithLabels({"dropped"}));
}

absl::Status Server::OpenNewListeners(const config::Config* current, const config::Config& next,
                                      std::vector<WorkerPlan>& plans,
                                      std::map<std::string, uint16_t>& ports) {
  for (const config::ListenerConfig& listener : next.listeners) {
    if (current != nullptr) {
      auto same = std::find_if(current->listeners.begin(), current->listeners.end(),
                               [&](const config::ListenerConfig& l) {
                                 return l.name == listener.name && l.address == listener.address;
                               });
      if (same != current->listeners.end()) continue;  // keeps its sockets
    }
    uint16_t port = 0;
    for (size_t i = 0; i < workers_.size(); ++i) {
      auto acceptor = OpenListeningSocket(workers_[i]->io(), listener.address, port);
      if (!acceptor.ok()) {
        return absl::Status(acceptor.status().code(), StrCat("listener ", listener.name, ": ",
                                                             acceptor.status().message()));
      }
      port = acceptor->local_endpoint().port();
      plans[i].new_acceptors.emplace(listener.name, std::move(*acceptor));
    }
    ports[listener.name] = port;
  }
  return absl::OkStatus();
}

absl::Status Server::Start() {
  unsigned count = config_->workers;
  if (count == 0) count = std::max(1u, std::thread::hardware_concurrency());
  // One metrics shard per worker (plus the shared one), before any worker counts.
  stats::GetFamilies();
  metrics::DefaultRegistry().SetShardCount(count);
  auto endpoints = ResolveUpstreams(*config_, nullptr, {});
  if (!endpoints.ok()) return endpoints.status();
  // Certificates and keys are loaded now: a bad pair stops the start, naming the file.
  if (absl::Status status = tls::ValidateUpstreamTls(*config_); !status.ok()) return status;
  if (absl::Status status = tls_contexts_->Load(*config_); !status.ok()) return status;
  identity_ = identity::MakeIdentityProvider(config_->identity);
  memory_ = std::make_shared<memory::MemoryBudget>(memory::SettingsFrom(config_->memory));
  memory_->Start();
  for (unsigned i = 0; i < count; ++i) workers_.push_back(std::make_unique<Worker>(i));
  auto access_log = AccessLogFor(*config_);
  if (!access_log.ok()) return access_log.status();
  access_log_ = *std::move(access_log);

  std::vector<WorkerPlan> plans(count);
  std::map<std::string, uint16_t> ports;
  if (absl::Status status = OpenNewListeners(nullptr, *config_, plans, ports); !status.ok()) {
    return status;
  }
  for (unsigned i = 0; i < count; ++i) {
    plans[i].settings = {generation_, config_, identity_, access_log_, tls_contexts_,
                          limits_, memory_};
    workers_[i]->Apply(std::move(plans[i]));
  }
  {
    std::lock_guard lock(mutex_);
    bound_ports_ = ports;
    upstream_endpoints_ = *std::move(endpoints);
  }
  for (const config::ListenerConfig& listener : config_->listeners) {
    LogInfo("listener ", listener.name, " on ", listener.address.host, ":",
            ports[listener.name], " (", listener.routes.size(), " routes, ", count,
            " workers)");
  }
  if (access_log_) LogInfo("access log to ", access_log_->description());
  for (auto& worker : workers_) worker->Start();
  started_ = true;
  started_at_ = std::chrono::system_clock::now();
  tailscale_certificates_->Configure(*config_);
  stats::GetFamilies().config_last_reload_success->WithLabels({}).Set(
      std::chrono::duration<double>(loaded_at_.time_since_epoch()).count());
  if (config_->admin.address) {
    admin::AdminServer::Handlers handlers;
    handlers.metrics = [this] {
      // Computed at scrape time: a peer counts while it has a connection open.
      config::ConfigSnapshot current = config();
      for (const config::ListenerConfig& listener : current->listeners) {
        stats::GetFamilies().peers_connected->WithLabels({listener.name}).Set(
            static_cast<double>(limits_->PeerTableFor(listener.name)->ConnectedCount()));
      }
      return metrics::DefaultRegistry().Serialize();
    };
    handlers.ready = [this] { return CheckReadiness(); };
    handlers.config = [this] {
      std::lock_guard lock(mutex_);
      return admin::ConfigInfo{config_, generation_, loaded_at_};
    };
    handlers.peers = [this] { return ConnectedPeers(); };
    handlers.status = [this] { return StatusPageInfo(); };
    admin_ = std::make_unique<admin::AdminServer>(*config_->admin.address, std::move(handlers));
    if (absl::Status status = admin_->Start(); !status.ok()) return status;
  }
  return absl::OkStatus();
}

void Server::CountReload(bool success) {
  const stats::Families& families = stats::GetFamilies();
  families.config_reloads->WithLabels({success ? "success" : "failure"})
      .Increment(metrics::kSharedShard);
  if (success) {
    families.config_last_reload_success->WithLabels({}).Set(
        std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
            .count());
  }
}

absl::Status Server::Reload(config::ConfigSnapshot next) {
  if (!started_) return absl::FailedPreconditionError("reload before start");
  config::ConfigSnapshot current = config();
  auto fail = [&](const absl::Status& status) {
    CountReload(false);
    LogError("reload rejected, keeping generation ", generation(), ": ", status.message());
    return status;
  };
  // What cannot change in a running process is kept, with a warning, rather than refusing
  // the rest of the reload.
  if (next->workers != current->workers) {
    LogWarning("reload: workers changed (", current->workers, " -> ", next->workers,
               "); a restart applies that, keeping ", workers_.size());
  }
  if (next->admin.address != current->admin.address) {
    LogWarning("reload: admin.address changed; a restart applies that");
  }
  auto endpoints = ResolveUpstreams(*next, current.get(), upstream_endpoints());
  if (!endpoints.ok()) return fail(endpoints.status());
  if (absl::Status status = tls::ValidateUpstreamTls(*next); !status.ok()) return fail(status);
  auto access_log = AccessLogFor(*next);
  if (!access_log.ok()) return fail(access_log.status());
  std::vector<WorkerPlan> plans(workers_.size());
  std::map<std::string, uint16_t> new_ports;
  // On failure the sockets opened so far close with `plans`.
  if (absl::Status status = OpenNewListeners(current.get(), *next, plans, new_ports);
      !status.ok()) {
    return fail(status);
  }
  // Listener certificates are re-read even when the file is unchanged (rotation on disk).
  // Last of the checks: from here on the reload is applied.
  if (absl::Status status = tls_contexts_->Reload(*next); !status.ok()) return fail(status);
  // The identity provider (and its cache) survives a reload that leaves its section alone.
  std::shared_ptr<identity::IdentityProvider> identity =
      next->identity == current->identity ? identity_
                                          : identity::MakeIdentityProvider(next->identity);

  uint64_t number = generation() + 1;
  for (size_t i = 0; i < workers_.size(); ++i) {
    plans[i].settings = {number, next, identity, *access_log, tls_contexts_, limits_, memory_};
    workers_[i]->ApplyAndWait(std::move(plans[i]));
  }
  identity_ = std::move(identity);
  access_log_ = *std::move(access_log);
  if (memory_) memory_->Update(memory::SettingsFrom(next->memory));
  tailscale_certificates_->Configure(*next);
  {
    std::lock_guard lock(mutex_);
    config_ = next;
    upstream_endpoints_ = *std::move(endpoints);
    generation_ = number;
    loaded_at_ = std::chrono::system_clock::now();
    std::map<std::string, uint16_t> ports;
    for (const config::ListenerConfig& listener : next->listeners) {
      auto added = new_ports.find(listener.name);
      ports[listener.name] =
          added != new_ports.end() ? added->second : bound_ports_[listener.name];
    }
    bound_ports_ = std::move(ports);
  }
  CountReload(true);
  std::string sockets =
      new_ports.empty() ? "" : StrCat(", new sockets for ", new_ports.size(), " listeners");
  LogInfo("reload: generation ", number, " in force (", next->listeners.size(), " listeners, ",
          next->upstreams.size(), " upstreams", sockets, ")");
  return absl::OkStatus();
}

absl::Status Server::ApplyFetchedCertificate(const std::string& listener,
                                             std::string_view certificate_chain_pem,
                                             std::string_view private_key_pem) {
  return tls_contexts_->UpdatePair(listener, certificate_chain_pem, private_key_pem);
}

Server::UpstreamEndpoints Server::upstream_endpoints() const {
  std::lock_guard lock(mutex_);
  return upstream_endpoints_;
}

config::ConfigSnapshot Server::config() const {
  std::lock_guard lock(mutex_);
  return config_;
}

uint64_t Server::generation() const {
  std::lock_guard lock(mutex_);
  return generation_;
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
  config::ConfigSnapshot current;
  UpstreamEndpoints endpoints;
  {
    std::lock_guard lock(mutex_);  // the admin thread reads a consistent pair
    current = config_;
    endpoints = upstream_endpoints_;
  }
  auto problem = [&](std::string component, std::string what) {
    readiness.ready = false;
    readiness.problems.emplace_back(std::move(component), std::move(what));
  };
  if (!started_) problem("listeners", "not bound yet");
  for (const config::UpstreamConfig& upstream : current->upstreams) {
    boost::asio::generic::stream_protocol::endpoint endpoint;
    if (upstream.address.kind == config::SocketAddress::Kind::kUnix) {
      endpoint = boost::asio::local::stream_protocol::endpoint(upstream.address.path);
    } else {
      // The address the upstream's pools dial: resolved when the config was loaded.
      auto resolved = endpoints.find(upstream.name);
      if (resolved == endpoints.end()) {
        problem("upstream " + upstream.name, upstream.address.text + ": not resolved yet");
        continue;
      }
      endpoint = resolved->second;
    }
    std::string why = Probe(endpoint, std::chrono::milliseconds(500));
    if (!why.empty()) problem("upstream " + upstream.name, upstream.address.text + ": " + why);
  }
  if (current->identity.provider == config::IdentityConfig::Provider::kTailscale) {
    const std::string& socket = current->identity.tailscale.socket;
    std::string why = Probe(boost::asio::local::stream_protocol::endpoint(socket),
                            std::chrono::milliseconds(500));
    if (!why.empty()) problem("identity tailscale", socket + ": " + why);
  }
  for (const auto& [listener, why] : tailscale_certificates_->Missing()) {
    problem("tls " + listener, "no certificate: " + why);
  }
  return readiness;
}

std::vector<admin::PeerEntry> Server::ConnectedPeers() const {
  std::vector<admin::PeerEntry> out;
  config::ConfigSnapshot current = config();
  for (const config::ListenerConfig& listener : current->listeners) {
    for (const std::shared_ptr<limits::Peer>& peer :
         limits_->PeerTableFor(listener.name)->Connected()) {
      admin::PeerEntry entry;
      entry.listener = listener.name;
      entry.key = peer->key();
      entry.calls_in_flight = peer->calls();
      entry.activity = peer->activity().Snapshot();
      // Closed between the table's look and the snapshot: not connected any more.
      if (entry.activity.connection_count == 0) continue;
      out.push_back(std::move(entry));
    }
  }
  return out;
}

admin::StatusInfo Server::StatusPageInfo() const {
  admin::StatusInfo info;
  info.now = std::chrono::system_clock::now();
  info.version = StrCat(BuildVersion(), " (commit ", BuildCommit(), ")");
  info.started_at = started_at_;
  config::ConfigSnapshot current;
  {
    std::lock_guard lock(mutex_);
    current = config_;
    info.generation = generation_;
    info.loaded_at = loaded_at_;
  }
  info.config_path = current->source_path;
  admin::Readiness readiness = CheckReadiness();
  info.ready = readiness.ready;
  for (const config::ListenerConfig& listener : current->listeners) {
    admin::ListenerStatus status;
    status.name = listener.name;
    status.address = listener.address.text;
    status.bound_port = BoundPort(listener.name);
    status.tls = !listener.tls ? "none"
                 : listener.tls->source == config::ListenerTlsConfig::Source::kTailscale
                     ? "tailscale"
                 : listener.tls->client_ca.empty() ? "files"
                                                   : "files+client-certs";
    status.proxy_protocol = std::string(config::ProxyProtocolName(listener.proxy_protocol));
    status.routes = listener.routes.size();
    info.listeners.push_back(std::move(status));
  }
  for (const config::UpstreamConfig& upstream : current->upstreams) {
    admin::UpstreamStatus status{upstream.name, upstream.address.text, ""};
    for (const auto& [component, problem] : readiness.problems) {
      if (component == "upstream " + upstream.name) status.problem = problem;
    }
    info.upstreams.push_back(std::move(status));
  }
  for (const auto& [component, problem] : readiness.problems) {
    if (!component.starts_with("upstream ")) info.problems.push_back(component + ": " + problem);
  }
  for (const tls::ServerContextStore::CertificateInfo& certificate :
       tls_contexts_->Certificates()) {
    info.certificates.push_back({certificate.listener,
                                 certificate.from_tailscale ? "tailscale" : "files",
                                 certificate.installed, certificate.subject,
                                 certificate.not_after, certificate.expired});
  }
  info.peers = ConnectedPeers();
  return info;
}

uint16_t Server::BoundPort(const std::string& listener_name) const {
  std::lock_guard lock(mutex_);
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
  tailscale_certificates_->Stop();
  if (admin_) admin_->Stop();
  for (auto& worker : workers_) worker->Stop();
  // The identity provider answers lookups still in flight as it shuts down, by posting to
  // the waiting connection's worker: stop it while the (stopped) workers still exist.
  if (identity_) identity_->Shutdown();
  identity_.reset();
  workers_.clear();
  access_log_.reset();
  if (memory_) memory_->Stop();
}

}  // namespace sepal
