// Keeps every listener with `tls: {source: tailscale}` supplied with the node's certificate
// from tailscaled: one TailscaleCertSource per such listener, all on one thread of their
// own (started only when some listener needs it). Each pair fetched is handed to `apply`
// (the Server installs it in the listener's context slot); until a listener's first pair
// arrives its handshakes are refused, and Missing() says why for /ready.
#pragma once

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include "absl/status/status.h"
#include "proxy/config/config.h"

namespace sepal::tls {

class TailscaleCertSource;

class TailscaleCertificates {
 public:
  using Apply = std::function<absl::Status(const std::string& listener,
                                           std::string_view certificate_chain_pem,
                                           std::string_view private_key_pem)>;

  explicit TailscaleCertificates(Apply apply);
  ~TailscaleCertificates();
  TailscaleCertificates(const TailscaleCertificates&) = delete;
  TailscaleCertificates& operator=(const TailscaleCertificates&) = delete;

  // Starts a source for each tailscale-sourced listener of `config` that has none, restarts
  // one whose tailscaled socket changed, stops those of listeners that are gone or no
  // longer tailscale-sourced. Returns once that is done. Main thread only.
  void Configure(const config::Config& config);
  // Stops every source and the thread. Idempotent.
  void Stop();
  // Tailscale-sourced listeners still without a certificate, and why (the last fetch error,
  // or that the first fetch is under way). Thread-safe.
  std::map<std::string, std::string> Missing() const;

 private:
  struct Entry {
    std::string socket;
    std::unique_ptr<TailscaleCertSource> source;
  };
  void ConfigureOnThread(const std::map<std::string, std::string>& wanted);
  void SetState(const std::string& listener, std::optional<std::string> missing_reason);

  Apply apply_;
  boost::asio::io_context io_;
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> work_;
  std::thread thread_;
  std::map<std::string, Entry> entries_;  // touched on thread_ only

  mutable std::mutex mutex_;
  std::map<std::string, std::string> missing_;  // listener -> why it has no certificate
};

}  // namespace sepal::tls
