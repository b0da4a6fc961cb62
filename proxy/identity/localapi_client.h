// Asynchronous client for tailscaled's LocalAPI (HTTP/1.1 over its unix socket): WhoIs and
// other GET requests, and the watch-ipn-bus notification stream.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "proxy/identity/identity.h"

namespace sepal::identity {

struct LocalApiResponse {
  enum class Failure {
    kNone,     // a complete HTTP response arrived: see status and body
    kConnect,  // the socket could not be reached (tailscaled down, wrong path, permissions)
    kTimeout,  // no complete response within the timeout
    kIo,       // the connection broke, or the response was malformed or too large
  };
  Failure failure = Failure::kNone;
  unsigned status = 0;  // HTTP status when failure == kNone
  std::string body;
  std::string retry_after;  // the Retry-After header, if the response had one
  std::string error;  // what went wrong when failure != kNone, e.g. "No such file or directory"

  bool ok() const { return failure == Failure::kNone; }
};

// Every method must be called on `executor`'s thread, and every callback runs there. Each
// request uses a fresh connection (`Connection: close`): lookups are rare and cached, and
// tailscaled closes idle connections anyway. Operations keep themselves alive, so the
// client may be destroyed while they run; stopping the executor's io_context drops them
// without calling their callbacks.
class LocalApiClient {
 public:
  // tailscaled rejects anything else with 403 "invalid localapi request" (DNS rebinding
  // protection), and also any Referer or Origin header, which this client never sends.
  static constexpr std::string_view kHost = "local-tailscaled.sock";
  static constexpr size_t kMaxWhoIsBodyBytes = 1024 * 1024;
  // A notification larger than this (a full netmap of a huge tailnet) is cut to this size.
  static constexpr size_t kMaxNotificationBytes = 64 * 1024 * 1024;

  using ResponseCallback = std::function<void(LocalApiResponse)>;
  using LineCallback = std::function<void(std::string_view line)>;
  using DisconnectCallback = std::function<void(std::string_view reason)>;

  // A running watch-ipn-bus stream.
  class Watch {
   public:
    virtual ~Watch() = default;
    // Closes the stream; no callback runs afterwards.
    virtual void Cancel() = 0;
  };

  LocalApiClient(boost::asio::any_io_executor executor, std::string socket_path);

  const std::string& socket_path() const { return socket_path_; }

  // GET /localapi/v0/whois?addr=<addr>&proto=tcp[&dst_ip=IP][&svc_name=svc:NAME]. `addr` is
  // "IP:PORT" ("[v6]:PORT"); `destination` scopes the CapMap (tailscaled 1.100 and later;
  // older ones ignore the parameters). `done` runs exactly once; after `timeout` the socket
  // is closed and kTimeout reported.
  void WhoIs(std::string_view addr, const LookupDestination& destination,
             std::chrono::milliseconds timeout, ResponseCallback done);

  // GET `target` ("/localapi/v0/status"): one response, its body cut off (kIo) past
  // `max_body` bytes. `done` runs exactly once; after `timeout` it reports kTimeout.
  void Get(std::string_view target, std::chrono::milliseconds timeout, size_t max_body,
           ResponseCallback done);

  // GET /localapi/v0/watch-ipn-bus?mask=<mask>: calls `on_line` for each newline-delimited
  // JSON notification and `on_disconnect` once when the stream fails or ends (including a
  // non-200 answer, whose status and text are in the reason). `header_timeout` bounds the
  // wait for the response headers; an established stream may stay idle forever.
  std::shared_ptr<Watch> WatchIpnBus(
      uint64_t mask, LineCallback on_line, DisconnectCallback on_disconnect,
      std::chrono::milliseconds header_timeout = std::chrono::seconds(10));

  // The request target of a WhoIs, with `addr` percent-encoded. Exposed for tests.
  static std::string WhoIsTarget(std::string_view addr, const LookupDestination& destination = {});

 private:
  boost::asio::any_io_executor executor_;
  std::string socket_path_;
};

}  // namespace sepal::identity
