// The node's Let's Encrypt certificate, fetched from tailscaled's LocalAPI and kept fresh: the
// source behind `tls: {source: tailscale}`.
//
//   GET /localapi/v0/status               -> the domain: CertDomains[0], else Self.DNSName
//                                            without its trailing dot
//   GET /localapi/v0/cert/<domain>?type=pair -> the private key PEM and the chain PEM
//
// The pair is split and checked with OpenSSL (the key matches the leaf, the leaf is valid now
// and names the domain, the chain is in order) before anyone sees it. The next fetch comes
// when a third of the certificate's lifetime remains (clamped to [min_refresh, max_refresh]);
// tailscaled renews at two thirds and keeps serving the old certificate meanwhile, so the
// source keeps polling at min_refresh until the new one appears. Failures are retried with
// capped exponential backoff (a 429's Retry-After is honoured) and reported with a specific
// message; a valid certificate already delivered stays in use.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>


namespace sepal::tls {

struct CertificatePair {
  std::string domain;
  std::string certificate_pem;  // the leaf first, then the rest of the chain
  std::string private_key_pem;
  std::chrono::system_clock::time_point not_before;
  std::chrono::system_clock::time_point not_after;
};

struct CertSourceError {
  enum class Kind {
    kConnect,        // tailscaled's socket cannot be reached (down, wrong path, permissions)
    kTimeout,        // no complete answer within the request timeout
    kIo,             // the connection broke, or the answer was malformed or too large
    kForbidden,      // 403: this user may not fetch certificates
    kNotRunning,     // tailscaled is up but not logged in / not running
    kNoDomain,       // the status names no MagicDNS name to get a certificate for
    kHttpsDisabled,  // HTTPS certificates are not enabled for the tailnet
    kRateLimited,    // 429, or Let's Encrypt's rate limit behind a 500
    kHttp,           // any other error answer
    kBadPair,        // the answer is not a usable key and certificate chain
  };
  Kind kind = Kind::kHttp;
  std::string message;                    // complete, for a log line
  std::chrono::milliseconds retry_in{0};  // when the next attempt starts
  int consecutive_failures = 0;
};

// "connect", "https_disabled", ... (the `result` label of the fetch counter).
std::string_view KindName(CertSourceError::Kind kind);

// Splits a ?type=pair body (PEM blocks in any order: one private key, one or more
// certificates, leaf first) and checks it as described above. On failure returns nullopt
// and sets `error` (kind kBadPair).
std::optional<CertificatePair> ParseCertificatePair(std::string_view body, std::string_view domain,
                                                    std::chrono::system_clock::time_point now,
                                                    std::string* error);

// The domain to ask for, from a /localapi/v0/status body. On failure returns nullopt and
// fills `error` (kind and message; kBadPair is not used).
std::optional<std::string> CertDomainFromStatus(std::string_view status_json,
                                                CertSourceError* error);

class TailscaleCertSource {
 public:
  using PairCallback = std::function<void(const CertificatePair&)>;
  using ErrorCallback = std::function<void(const CertSourceError&)>;

  struct Options {
    std::string domain;  // empty: discovered from /status on every fetch
    std::chrono::milliseconds status_timeout{std::chrono::seconds(10)};
    // A first issuance runs a whole ACME order (DNS-01) inside tailscaled: tens of seconds.
    std::chrono::milliseconds cert_timeout{std::chrono::seconds(180)};
    std::chrono::milliseconds min_refresh{std::chrono::minutes(1)};
    std::chrono::milliseconds max_refresh{std::chrono::hours(12)};
    std::chrono::milliseconds initial_backoff{std::chrono::seconds(1)};
    std::chrono::milliseconds max_backoff{std::chrono::minutes(5)};
    // Longest Retry-After honoured (a longer one is cut to this).
    std::chrono::milliseconds max_retry_after{std::chrono::hours(1)};
    std::function<std::chrono::system_clock::time_point()> now = [] {
      return std::chrono::system_clock::now();
    };
  };

  // Every method must be called on `executor`'s thread, and the callbacks run there.
  // `on_pair` runs after the first successful fetch and whenever the certificate changes;
  // `on_error` after every failed attempt. Either may Stop() or destroy the source.
  TailscaleCertSource(boost::asio::any_io_executor executor, std::string socket_path,
                      PairCallback on_pair, ErrorCallback on_error);
  TailscaleCertSource(boost::asio::any_io_executor executor, std::string socket_path,
                      PairCallback on_pair, ErrorCallback on_error, Options options);
  ~TailscaleCertSource();
  TailscaleCertSource(const TailscaleCertSource&) = delete;
  TailscaleCertSource& operator=(const TailscaleCertSource&) = delete;

  // Starts the first fetch (once; later calls do nothing).
  void Start();
  // No callback runs afterwards; pending requests and timers are dropped.
  void Stop();

  // The last certificate delivered, if any.
  const std::optional<CertificatePair>& current() const;
  // Delay until the next fetch after `pair` was fetched at `now`. Exposed for tests.
  static std::chrono::milliseconds RefreshDelay(const CertificatePair& pair,
                                                std::chrono::system_clock::time_point now,
                                                const Options& options);

 private:
  class Core;
  std::shared_ptr<Core> core_;
};

}  // namespace sepal::tls
