#include "proxy/tls/tailscale_certificates.h"

#include <boost/asio/post.hpp>
#include <chrono>
#include <future>
#include <utility>

#include "proxy/common/log.h"
#include "proxy/common/time_format.h"
#include "proxy/tls/tailscale_cert_source.h"

namespace sepal::tls {

namespace {

constexpr std::string_view kFirstFetch = "waiting for the first certificate from tailscaled";

// Listener -> tailscaled socket, for the listeners that take their pair from tailscaled.
std::map<std::string, std::string> TailscaleListeners(const config::Config& config) {
  std::map<std::string, std::string> wanted;
  for (const config::ListenerConfig& listener : config.listeners) {
    if (listener.tls && listener.tls->source == config::ListenerTlsConfig::Source::kTailscale) {
      wanted[listener.name] = config.identity.tailscale.socket;
    }
  }
  return wanted;
}

}  // namespace

TailscaleCertificates::TailscaleCertificates(Apply apply) : apply_(std::move(apply)) {}

TailscaleCertificates::~TailscaleCertificates() { Stop(); }

void TailscaleCertificates::Configure(const config::Config& config) {
  std::map<std::string, std::string> wanted = TailscaleListeners(config);
  if (!thread_.joinable()) {
    if (wanted.empty()) return;  // no thread until some listener needs one
    work_.emplace(io_.get_executor());
    thread_ = std::thread([this] { io_.run(); });
  }
  std::promise<void> done;
  boost::asio::post(io_, [&] {
    ConfigureOnThread(wanted);
    done.set_value();
  });
  done.get_future().wait();
}

void TailscaleCertificates::ConfigureOnThread(const std::map<std::string, std::string>& wanted) {
  for (auto it = entries_.begin(); it != entries_.end();) {
    auto want = wanted.find(it->first);
    if (want != wanted.end() && want->second == it->second.socket) {
      ++it;
      continue;
    }
    it->second.source->Stop();
    SetState(it->first, std::nullopt);
    it = entries_.erase(it);
  }
  for (const auto& [listener, socket] : wanted) {
    if (entries_.contains(listener)) continue;
    SetState(listener, std::string(kFirstFetch));
    auto on_pair = [this, name = listener](const CertificatePair& pair) {
      absl::Status status = apply_(name, pair.certificate_pem, pair.private_key_pem);
      if (!status.ok()) {
        LogError("listener ", name, ": the certificate from tailscaled for ", pair.domain,
                 " cannot be used: ", status.message());
        return;
      }
      LogInfo("listener ", name, ": certificate for ", pair.domain, " from tailscaled, valid until ",
              FormatRfc3339(pair.not_after));
      SetState(name, std::nullopt);
    };
    auto on_error = [this, name = listener](const CertSourceError& error) {
      auto retry = std::chrono::duration_cast<std::chrono::seconds>(error.retry_in).count();
      LogWarning("listener ", name, ": no certificate from tailscaled: ", error.message,
                 " (", KindName(error.kind), "; retrying in ", retry, "s)");
      std::lock_guard lock(mutex_);
      // A listener that already has a certificate keeps serving it; only a missing one
      // changes its reason.
      if (auto it = missing_.find(name); it != missing_.end()) it->second = error.message;
    };
    Entry entry{socket, std::make_unique<TailscaleCertSource>(io_.get_executor(), socket,
                                                               std::move(on_pair),
                                                               std::move(on_error))};
    entry.source->Start();
    entries_.emplace(listener, std::move(entry));
  }
}

void TailscaleCertificates::SetState(const std::string& listener,
                                     std::optional<std::string> missing_reason) {
  std::lock_guard lock(mutex_);
  if (missing_reason) {
    missing_[listener] = std::move(*missing_reason);
  } else {
    missing_.erase(listener);
  }
}

void TailscaleCertificates::Stop() {
  if (!thread_.joinable()) return;
  boost::asio::post(io_, [this] {
    for (auto& [listener, entry] : entries_) entry.source->Stop();
    entries_.clear();
    work_.reset();
  });
  thread_.join();
  std::lock_guard lock(mutex_);
  missing_.clear();
}

std::map<std::string, std::string> TailscaleCertificates::Missing() const {
  std::lock_guard lock(mutex_);
  return missing_;
}

}  // namespace sepal::tls
