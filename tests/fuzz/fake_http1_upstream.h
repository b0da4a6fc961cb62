// A minimal in-process HTTP/1.1 server (Boost.Beast) on a unix socket, driven by the caller's
// io_context: the stand-in REST SuperLink behind the rest fuzz target (no threads, no
// protobuf). Keep-alive, one request at a time per connection.
//
// What it answers depends on the last segment of the request path:
//   close     closes the connection without answering
//   hang      never answers (the connection stays open until sepal or Stop closes it)
//   early     answers 200 (Connection: close) as soon as the header is in, then closes
//   big       a 256 KiB body
//   chunked   the request body back, chunked
//   missing   404 with a text body
//   garbage   bytes that are not an HTTP response, then closes
//   anything else  200, the request body back (application/protobuf)
//
// It also checks what sepal sends it (FUZZ_CHECK, so a violation is a crash): every request
// parses as HTTP/1.1; its path is one sepal routes, with runs of '/' merged; a request under
// /api/v0/fleet/ carries the peer's identity exactly once (tailscale-user-login:
// `identity_login`) and no other tailscale-* field than sepal's; the path `denied_path` (a
// route the peer may not call) never arrives.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <memory>
#include <string>
#include <vector>

namespace sepal::fuzz {

class FakeHttp1Upstream {
 public:
  struct Expectations {
    std::string identity_login;  // the tailscale-user-login sepal sends for the tailnet peer
    std::string denied_path;     // the peer's identity never reaches this path
  };

  FakeHttp1Upstream(boost::asio::io_context& io, const std::string& socket_path,
                    Expectations expectations);
  ~FakeHttp1Upstream();
  FakeHttp1Upstream(const FakeHttp1Upstream&) = delete;
  FakeHttp1Upstream& operator=(const FakeHttp1Upstream&) = delete;

  // Stops accepting and closes every connection.
  void Stop();
  // Connections still open.
  size_t open_connections() const;
  // Requests whose header arrived.
  size_t requests() const { return requests_; }

  class Connection;

 private:
  friend class Connection;
  void Accept();

  boost::asio::local::stream_protocol::acceptor acceptor_;
  Expectations expectations_;
  std::vector<std::weak_ptr<Connection>> connections_;
  size_t requests_ = 0;
};

}  // namespace sepal::fuzz
