// Stand-in Flower SuperLink: a grpc++ server for Fleet, Control, Exec and the Echo test service.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace grpc {
class Server;
class ServerContext;
class Service;
}  // namespace grpc

namespace sepal::test {

class CallCounters;  // thread-safe per-method tallies, shared by the services

// Serves every service of tests/proto on one or more addresses. Each request message says
// how the server behaves (see echo.proto); responses report the client metadata seen in
// `seen_metadata` as "key=value" lines (FormatMetadata). Every wait has a timeout.
//
// Every reply carries initial metadata "x-superlink: stand-in", except an Echo.Unary error
// with sleep_ms == 0: that one is trailers-only (one HEADERS frame with END_STREAM).
//
// Cancellation (client RST_STREAM, deadline, connection loss) is counted once per call that
// noticed it before finishing; handlers poll for it while sleeping, so they notice within
// a few milliseconds.
class FakeSuperLink {
 public:
  struct Options {
    // "127.0.0.1:0" (ephemeral port), "127.0.0.1:19092", "unix:/path/sock" or any grpc URI.
    std::vector<std::string> addresses;
    // Completion queues polled by the synchronous server; 0 keeps grpc's default. Handlers
    // run on threads grpc adds on demand, so long streams never starve other calls.
    int threads = 0;
    // Shutdown() cancels calls still running after this long.
    std::chrono::milliseconds shutdown_grace{200};
    // Serve TLS (grpc::SslServerCredentials) with this PEM certificate chain and key; empty
    // = cleartext h2c.
    std::string tls_certificate_pem;
    std::string tls_private_key_pem;
    // With TLS: require client certificates signed by this PEM CA (empty = none asked).
    std::string tls_client_ca_pem;
    // Emulates Flower's grpcio server (maximum_concurrent_rpcs=1000): a call that arrives
    // while this many handlers are running is answered RESOURCE_EXHAUSTED at once, without
    // reaching a handler (not in CallCount; counted in RejectedCount). 0 = unlimited.
    // With a limit, Echo.Unary counts from its request HEADERS, as grpcio counts, so a call
    // whose body never comes holds its slot (its handler waits for the message).
    int max_concurrent_calls = 0;
  };

  // Largest message either direction; Flower itself allows 512 MiB.
  static constexpr int kMaxMessageBytes = 600 * 1024 * 1024;

  // Returns nullptr (and logs to stderr) if an address cannot be bound.
  static std::unique_ptr<FakeSuperLink> Start(const std::string& address);
  static std::unique_ptr<FakeSuperLink> Start(Options options);

  FakeSuperLink(const FakeSuperLink&) = delete;
  FakeSuperLink& operator=(const FakeSuperLink&) = delete;
  ~FakeSuperLink();

  // Port chosen for the first TCP listener (0 if there is none). Start("127.0.0.1:<port>")
  // after Shutdown() binds the same port again.
  int port() const { return port_; }
  // Dialable form of the first listener, e.g. "127.0.0.1:41234" or "unix:/tmp/x.sock".
  const std::string& address() const { return addresses_.front(); }
  // Dialable form of every listener, in the order given.
  const std::vector<std::string>& addresses() const { return addresses_; }

  // Stops accepting, cancels calls still running after Options::shutdown_grace and waits for
  // their handlers. Idempotent; the destructor calls it.
  void Shutdown();

  // Calls that reached a handler, by full method name ("/flwr.proto.Fleet/CreateNode"). A
  // GrpcAdapter.SendReceive call is also counted under the Fleet method it wraps.
  int CallCount(const std::string& full_method) const;
  int TotalCallCount() const;
  bool WaitForCallCount(const std::string& full_method, int n,
                        std::chrono::milliseconds timeout) const;
  // Calls whose handler saw the call cancelled before it finished.
  int CancelledCount() const;
  int CancelledCount(const std::string& full_method) const;
  // True once at least n calls were seen cancelled; false after `timeout`.
  bool WaitForCancelled(int n, std::chrono::milliseconds timeout) const;

  // Concurrency, for "the upstream saw at most N calls at once" (thread-safe, lock-free):
  // handlers running now, the most that ran at once since Start or ResetPeak, and the calls
  // refused by Options::max_concurrent_calls.
  int ActiveCalls() const;
  int PeakActiveCalls() const;
  void ResetPeak();  // the peak restarts from ActiveCalls()
  int RejectedCount() const;
  // One line of JSON: {"calls":N,"active":N,"peak":N,"rejected":N,"cancelled":N}.
  std::string StatsJson() const;

  // How one client metadata entry appears in `seen_metadata`: "key=value", where values of
  // binary ("-bin") keys are standard base64 with padding, e.g. "x-token-bin=AAEC".
  static std::string FormatMetadata(std::string_view key, std::string_view value);
  // The bytes sent when a request asks for `response_size` bytes: 'a'..'z' repeating.
  static std::string MakePayload(std::size_t size);

 private:
  explicit FakeSuperLink(int max_concurrent_calls);

  std::unique_ptr<CallCounters> counters_;
  std::vector<std::unique_ptr<grpc::Service>> services_;
  std::unique_ptr<grpc::Server> server_;  // declared last: stops before the services go
  std::vector<std::string> addresses_;
  int port_ = 0;
  std::chrono::milliseconds shutdown_grace_{200};
  std::mutex shutdown_mutex_;
  bool shut_down_ = false;
};

}  // namespace sepal::test
