// The TLS context in force for each listener, shared by all workers.
//
// Every new handshake takes its listener's current context (one atomic shared_ptr load per
// connection); connections already up keep the context they started with. The Server
// loads the pairs at start (a bad pair is a startup error) and again on every reload, even
// when the config text is unchanged, since certificate rotation on disk is the common case;
// a pair that fails to load then keeps the listener's previous context (logged, and counted
// in sepal_tls_certificate_reloads_total{listener,result="failure"}).
//
// For `tls: {source: tailscale}` the pair comes from tailscaled instead of files: whoever
// fetches it calls UpdatePair() (see Server::ApplyFetchedCertificate); until the first pair
// arrives, handshakes on that listener are refused (reason "no_certificate").
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "proxy/config/config.h"
#include "proxy/tls/tls_context.h"

namespace sepal::tls {

// One listener's current context. Read by workers, written by the store.
class ServerContextSlot {
 public:
  // Null while a tailscale-sourced listener has no certificate yet.
  std::shared_ptr<const ServerContext> Current() const {
    std::lock_guard lock(current_mutex_);
    return current_;
  }

 private:
  friend class ServerContextStore;
  void Replace(std::shared_ptr<const ServerContext> context) {
    std::lock_guard lock(current_mutex_);
    current_.swap(context);  // the old context is released outside the lock
  }

  // A mutex, not std::atomic<std::shared_ptr>: libstdc++ 12's atomic load releases its lock
  // bit with a relaxed store, so a load and the next store are not ordered (ThreadSanitizer
  // reports it). One uncontended lock per TLS handshake costs nothing next to the handshake.
  mutable std::mutex current_mutex_;
  std::shared_ptr<const ServerContext> current_;
  // Guarded by the store's mutex: what the context was built from.
  config::ListenerTlsConfig settings;
  std::optional<std::pair<std::string, std::string>> fetched_pem;  // tailscale: cert, key
};

class ServerContextStore {
 public:
  // Start: builds a context for every TLS listener with `source: files`. Any failure is an
  // error naming the listener, the file and OpenSSL's reason.
  absl::Status Load(const config::Config& config);
  // Reload: rebuilds every TLS listener's context from its files (or, for tailscale, from
  // the last fetched pair with the new settings). A listener that already had a context and
  // whose new one fails keeps the old one; a listener that never had one and cannot get one
  // makes the whole reload fail (nothing is changed then). Listeners gone from `config`
  // are forgotten.
  absl::Status Reload(const config::Config& config);
  // Replaces a listener's pair with PEM text (the tailscaled certificate source). Fails,
  // keeping the current context, when the listener is unknown, has no TLS, or the pair is
  // bad.
  absl::Status UpdatePair(const std::string& listener, std::string_view certificate_chain_pem,
                          std::string_view private_key_pem);
  // The slot of a TLS listener (created on first use); stable across reloads.
  std::shared_ptr<ServerContextSlot> Slot(const std::string& listener);

  // The certificate each TLS listener serves now (the status page). A tailscale listener
  // still waiting for its first certificate has `installed` false.
  struct CertificateInfo {
    std::string listener;
    bool from_tailscale = false;
    bool installed = false;
    std::string subject;  // ServerContext::certificate_subject
    std::chrono::system_clock::time_point not_after{};
    bool expired = false;
  };
  std::vector<CertificateInfo> Certificates() const;

 private:
  struct Built {
    std::string listener;
    std::shared_ptr<const ServerContext> context;  // null: tailscale pair not fetched yet
    std::optional<std::pair<std::string, std::string>> pem;
    config::ListenerTlsConfig settings;
  };
  // Builds `listener`'s context as configured; `previous_pem` is a tailscale pair to reuse.
  absl::StatusOr<Built> Build(const config::ListenerConfig& listener,
                              const std::optional<std::pair<std::string, std::string>>& pem);
  std::shared_ptr<ServerContextSlot>& SlotLocked(const std::string& listener);
  static void CountReload(const std::string& listener, bool success);

  // Replaces the slot's context and publishes its notAfter
  // (sepal_tls_listener_certificate_expiry_timestamp_seconds{listener}).
  static void Install(const std::string& listener, ServerContextSlot& slot,
                      std::shared_ptr<const ServerContext> context);

  mutable std::mutex mutex_;
  std::map<std::string, std::shared_ptr<ServerContextSlot>> slots_;
};

}  // namespace sepal::tls
