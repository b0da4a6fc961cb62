// Stand-in tailscaled: the LocalAPI subset sepal uses (whois, watch-ipn-bus, status, cert) on
// a unix socket, answering with the formats and error transcripts of the real one.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "tests/support/test_pki.h"

namespace boost::asio {
class io_context;
}  // namespace boost::asio

namespace sepal::test {

// Behaves as tailscaled's LocalAPI does (docs/deployment.md): Host must be exactly
// local-tailscaled.sock and no Referer/Origin may be present (else 403 "invalid localapi
// request\n" without the Tailscale-* headers); errors are text/plain with
// X-Content-Type-Options: nosniff; success carries Tailscale-Version and Tailscale-Cap. Whois
// bodies are served as given (the fixtures are tab-indented like json.MarshalIndent, without a
// trailing newline).
//
// Serves on its own thread; every method is thread-safe. Every wait has a timeout.
class FakeTailscaled {
 public:
  static constexpr std::string_view kVersion = "1.102.3-t9329c3677-ga522f65e9";
  static constexpr int kCapabilityVersion = 142;

  // Removes a stale socket file first. nullptr (and a message on stderr) if it cannot listen.
  static std::unique_ptr<FakeTailscaled> Start(std::string socket_path);

  // tests/fixtures/whois of the source tree.
  static std::string FixtureDir();
  // A file's text without its final newline, as tailscaled sends bodies; "" if unreadable.
  static std::string LoadBody(const std::string& path);
  // LoadBody of a fixture in FixtureDir() ("tagged-node.json").
  static std::string LoadFixture(std::string_view name);

  FakeTailscaled(const FakeTailscaled&) = delete;
  FakeTailscaled& operator=(const FakeTailscaled&) = delete;
  ~FakeTailscaled();

  const std::string& socket_path() const { return socket_path_; }

  // Serves `json_body` for whois of that IP with any port ("100.101.12.34"), or only of
  // that exact address ("127.0.0.1:40000", "[fd7a:115c:a1e0::1]:5"). False if it does not
  // parse as either.
  bool AddPeer(std::string_view ip_or_ip_port, std::string json_body);
  // What whois answers for that peer when asked toward `toward` (tailscaled 1.100 and later):
  // a tailnet IP, for &dst_ip=, or "svc:NAME", for &svc_name=. Without a match the AddPeer
  // answer applies, as for a destination the policy grants nothing special toward.
  bool AddPeerToward(std::string_view ip_or_ip_port, std::string_view toward,
                     std::string json_body);
  void RemovePeer(std::string_view ip_or_ip_port);

  // Holds every whois answer back this long (each request on its own timer).
  void SetDelay(std::chrono::milliseconds delay);
  // Answers every whois (that passes the Host check) with `status` and `body`, as
  // http.Error would. Status 0 goes back to normal answers.
  void SetFailure(unsigned status, std::string body);

  // Closes the listener and every connection (watchers see the stream end) and removes the
  // socket file, as a stopped tailscaled would. Idempotent.
  void Stop();
  // Listens again on the same path. False if it cannot.
  bool Restart();
  bool running() const;

  // Requests to /localapi/v0/whois, rejected ones included.
  int RequestCount() const;
  bool WaitForRequestCount(int n, std::chrono::milliseconds timeout) const;
  // Target and Host header of the most recent whois request ("" before the first).
  std::string LastRequestTarget() const;
  std::string LastHostHeader() const;

  // Sends `json_line` (a newline is added) to every open watch-ipn-bus stream.
  void PushNotification(std::string json_line);
  // Open watch-ipn-bus streams.
  int WatcherCount() const;
  bool WaitForWatcherCount(int n, std::chrono::milliseconds timeout) const;
  // The mask of the most recent watch-ipn-bus request, if any.
  std::optional<uint64_t> LastWatchMask() const;

  // ---- GET /localapi/v0/status and GET /localapi/v0/cert/<domain>?type=pair ----------
  // The node this tailscaled runs as, reported by /status (ipnstate.Status, tab-indented).
  struct SelfNode {
    std::string host_name = "superlink";
    std::string dns_name = "superlink.tail1234.ts.net.";  // FQDN with its trailing dot
    std::vector<std::string> tailscale_ips = {"100.101.102.103", "fd7a:115c:a1e0::6501:6667"};
    std::string magic_dns_suffix = "tail1234.ts.net";
  };
  // Also makes CertDomains the node's name (without the dot) while HTTPS is enabled.
  void SetSelf(SelfNode self);
  // "Running" (default), "NeedsLogin", "Stopped", ... Not running: no addresses, no
  // CertDomains, so /cert fails as it does with HTTPS off.
  void SetBackendState(std::string state);
  // HTTPS certificates for the tailnet (default on). Off: CertDomains is null and /cert
  // answers 500 "your Tailscale account does not support getting TLS certs", as tailscaled
  // does (ipnlocal checkCertDomain).
  void SetHttpsEnabled(bool enabled);
  // Replaces CertDomains (a domain outside them gets 500 `invalid domain "x"; must be one of
  // ["y"]`).
  void SetCertDomains(std::vector<std::string> domains);
  // Certificates it issues (from its own CA, for the domain only, EC key in SEC1 PEM) live
  // this long (default 90 days). Like tailscaled it serves the cached one until two thirds of
  // its lifetime have passed, then issues a new one.
  void SetCertLifetime(std::chrono::seconds lifetime);
  // Serves exactly this as the ?type=pair body instead (nullopt goes back to issuing).
  void SetCertPairOverride(std::optional<std::string> body);
  // Answers every /cert request with `status` and `body` (http.Error style) and, if not
  // empty, a Retry-After header. Status 0 goes back to normal answers.
  void SetCertFailure(unsigned status, std::string body, std::string retry_after = "");
  // Holds every /cert answer back this long (an ACME order takes seconds).
  void SetCertDelay(std::chrono::milliseconds delay);
  // The CA that signs the issued certificates.
  const std::string& CaPem() const { return ca_.certificate_pem(); }
  // Requests to /status and to /cert/ (failed ones included), and certificates issued.
  int StatusRequestCount() const;
  int CertRequestCount() const;
  bool WaitForCertRequestCount(int n, std::chrono::milliseconds timeout) const;
  int CertsIssued() const;
  // The error of /cert (500, this and a newline) when HTTPS is off (CertDomains empty).
  static constexpr std::string_view kHttpsDisabledError =
      "your Tailscale account does not support getting TLS certs";

 private:
  class Server;
  friend class Server;

  struct Response {
    unsigned status = 200;
    std::string content_type;
    std::string body;
    std::string retry_after;
  };
  // A parsed whois `addr`: the exact key ("ip:port") and the any-port key ("ip").
  struct PeerKeys {
    std::string exact;
    std::string any_port;
    bool has_port = false;  // written with a port (a bare IP means port 0)
  };
  static std::optional<PeerKeys> ParsePeer(std::string_view text);

  explicit FakeTailscaled(std::string socket_path);
  bool Listen();

  // Called from the server thread.
  void RecordWhoIs(std::string_view target, std::string_view host);
  Response AnswerWhoIs(std::string_view query) const;
  std::chrono::milliseconds delay() const;
  std::string AnswerStatus();
  Response AnswerCert(std::string_view domain, std::string_view query);
  std::chrono::milliseconds cert_delay() const;
  void RecordWatch(uint64_t mask);
  void WatcherOpened();
  void WatcherClosed();

  const std::string socket_path_;

  // Serializes Stop/Restart/PushNotification, which touch the server thread's objects.
  mutable std::mutex control_mutex_;

  mutable std::mutex mutex_;
  mutable std::condition_variable changed_;
  std::map<std::string, std::string> peers_;  // canonical "ip" or "ip:port" -> body
  std::map<std::string, std::string> peers_toward_;  // peers_'s key + "|" + toward -> body
  std::chrono::milliseconds delay_{0};
  unsigned failure_status_ = 0;
  std::string failure_body_;
  int request_count_ = 0;
  std::string last_target_;
  std::string last_host_;
  std::optional<uint64_t> last_watch_mask_;
  int watcher_count_ = 0;

  TestCa ca_{"fake tailscaled CA"};
  struct IssuedCert {
    std::string key_pem;
    std::string chain_pem;
    std::chrono::system_clock::time_point renew_after;
  };
  SelfNode self_;
  std::string backend_state_ = "Running";
  bool https_enabled_ = true;
  std::vector<std::string> cert_domains_ = {"superlink.tail1234.ts.net"};
  std::chrono::seconds cert_lifetime_{std::chrono::hours(24 * 90)};
  std::optional<std::string> cert_pair_override_;
  unsigned cert_failure_status_ = 0;
  std::string cert_failure_body_;
  std::string cert_failure_retry_after_;
  std::chrono::milliseconds cert_delay_{0};
  std::map<std::string, IssuedCert> issued_;
  int status_count_ = 0;
  int cert_count_ = 0;
  int certs_issued_ = 0;

  std::unique_ptr<boost::asio::io_context> io_context_;
  std::shared_ptr<Server> server_;
  std::thread thread_;
};

}  // namespace sepal::test
