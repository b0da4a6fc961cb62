// ServerContextStore: per-listener TLS contexts, reloaded on SIGHUP or from tailscaled.
#include "proxy/tls/context_store.h"

#include <limits>
#include <set>
#include <vector>

#include "proxy/common/log.h"
#include "proxy/common/strings.h"
#include "proxy/metrics/metrics.h"
#include "proxy/stats/proxy_metrics.h"

namespace sepal::tls {

using Source = config::ListenerTlsConfig::Source;

namespace {

// Served anyway (the operator may be mid-rotation), but clients will refuse it.
void WarnIfExpired(const std::string& listener, const ServerContext& context) {
  if (context.expired) {
    LogWarning("listener ", listener, ": the TLS certificate is outside its validity period; "
               "clients will refuse it: ", context.certificate_subject);
  }
}

}  // namespace

void ServerContextStore::CountReload(const std::string& listener, bool success) {
  stats::GetFamilies()
      .tls_certificate_reloads->WithLabels({listener, success ? "success" : "failure"})
      .Increment(metrics::kSharedShard);
}

void ServerContextStore::Install(const std::string& listener, ServerContextSlot& slot,
                                 std::shared_ptr<const ServerContext> context) {
  if (context) {
    stats::GetFamilies().tls_listener_certificate_expiry->WithLabels({listener}).Set(
        std::chrono::duration<double>(context->not_after.time_since_epoch()).count());
  }
  slot.Replace(std::move(context));
}

std::vector<ServerContextStore::CertificateInfo> ServerContextStore::Certificates() const {
  std::vector<CertificateInfo> out;
  std::lock_guard lock(mutex_);
  for (const auto& [listener, slot] : slots_) {
    CertificateInfo info;
    info.listener = listener;
    info.from_tailscale = slot->settings.source == Source::kTailscale;
    if (std::shared_ptr<const ServerContext> current = slot->Current()) {
      info.installed = true;
      info.subject = current->certificate_subject;
      info.not_after = current->not_after;
      info.expired = current->expired;
    }
    out.push_back(std::move(info));
  }
  return out;
}

absl::StatusOr<ServerContextStore::Built> ServerContextStore::Build(
    const config::ListenerConfig& listener,
    const std::optional<std::pair<std::string, std::string>>& pem) {
  Built built{listener.name, nullptr, std::nullopt, *listener.tls};
  absl::StatusOr<std::shared_ptr<const ServerContext>> context;
  if (listener.tls->source == Source::kFiles) {
    context = MakeServerContext(*listener.tls);
  } else if (pem) {
    context = MakeServerContextFromPem(*listener.tls, pem->first, pem->second);
    built.pem = pem;
  } else {
    return built;  // tailscale: no pair fetched yet
  }
  if (!context.ok()) {
    return absl::InvalidArgumentError(
        StrCat("listener ", listener.name, ": tls: ", context.status().message()));
  }
  built.context = *std::move(context);
  return built;
}

std::shared_ptr<ServerContextSlot>& ServerContextStore::SlotLocked(const std::string& listener) {
  std::shared_ptr<ServerContextSlot>& slot = slots_[listener];
  if (!slot) slot = std::make_shared<ServerContextSlot>();
  return slot;
}

std::shared_ptr<ServerContextSlot> ServerContextStore::Slot(const std::string& listener) {
  std::lock_guard lock(mutex_);
  return SlotLocked(listener);
}

absl::Status ServerContextStore::Load(const config::Config& config) {
  return Reload(config);
}

absl::Status ServerContextStore::Reload(const config::Config& config) {
  std::lock_guard lock(mutex_);
  // Everything is built first, so a failing new listener changes nothing.
  std::vector<Built> ready;
  std::vector<std::pair<std::string, std::string>> kept;  // listener, why
  for (const config::ListenerConfig& listener : config.listeners) {
    if (!listener.tls) continue;
    auto existing = slots_.find(listener.name);
    std::optional<std::pair<std::string, std::string>> pem;
    bool had_context = false;
    if (existing != slots_.end()) {
      pem = existing->second->fetched_pem;
      had_context = existing->second->Current() != nullptr;
    }
    auto built = Build(listener, pem);
    if (built.ok()) {
      ready.push_back(*std::move(built));
    } else if (had_context) {
      kept.emplace_back(listener.name, std::string(built.status().message()));
    } else {
      return built.status();
    }
  }
  for (Built& built : ready) {
    std::shared_ptr<ServerContextSlot>& slot = SlotLocked(built.listener);
    bool replaced = slot->Current() != nullptr;
    slot->settings = built.settings;
    slot->fetched_pem = std::move(built.pem);
    if (built.context) {
      LogInfo("listener ", built.listener, ": TLS certificate ", built.context->certificate_subject,
              replaced ? " (reloaded)" : "");
      WarnIfExpired(built.listener, *built.context);
      if (replaced) CountReload(built.listener, true);
    } else {
      LogInfo("listener ", built.listener,
              ": TLS certificate from tailscaled; handshakes wait for the first one");
    }
    Install(built.listener, *slot, std::move(built.context));
  }
  for (const auto& [listener, why] : kept) {
    LogError("listener ", listener, ": TLS certificate reload failed, keeping the current one: ",
             why);
    CountReload(listener, false);
  }
  // Slots of listeners without TLS (or gone) are dropped; their connections hold their
  // own contexts.
  std::set<std::string> tls_listeners;
  for (const config::ListenerConfig& listener : config.listeners) {
    if (listener.tls) tls_listeners.insert(listener.name);
  }
  std::erase_if(slots_, [&](const auto& entry) {
    if (tls_listeners.count(entry.first)) return false;
    // Series are never removed: NaN says "not served any more" (and keeps alerts quiet).
    stats::GetFamilies().tls_listener_certificate_expiry->WithLabels({entry.first}).Set(
        std::numeric_limits<double>::quiet_NaN());
    return true;
  });
  return absl::OkStatus();
}

absl::Status ServerContextStore::UpdatePair(const std::string& listener,
                                            std::string_view certificate_chain_pem,
                                            std::string_view private_key_pem) {
  std::lock_guard lock(mutex_);
  auto it = slots_.find(listener);
  if (it == slots_.end()) {
    return absl::NotFoundError(StrCat("listener ", listener, " has no tls section"));
  }
  ServerContextSlot& slot = *it->second;
  auto context =
      MakeServerContextFromPem(slot.settings, certificate_chain_pem, private_key_pem);
  if (!context.ok()) {
    LogError("listener ", listener, ": new TLS certificate rejected, keeping the current one: ",
             context.status().message());
    CountReload(listener, false);
    return context.status();
  }
  LogInfo("listener ", listener, ": TLS certificate ", (*context)->certificate_subject,
          " (updated)");
  WarnIfExpired(listener, **context);
  CountReload(listener, true);
  slot.fetched_pem.emplace(std::string(certificate_chain_pem), std::string(private_key_pem));
  Install(listener, slot, *std::move(context));
  return absl::OkStatus();
}

}  // namespace sepal::tls
