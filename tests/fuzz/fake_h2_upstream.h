// A minimal in-process HTTP/2 (h2c) server on a unix socket, driven by the caller's
// io_context: the stand-in upstream behind the downstream fuzz target. Far lighter than the
// grpc++ FakeSuperLink (no threads, no protobuf), so an input runs in well under a millisecond.
//
// What it answers depends on the method (the last :path segment):
//   Reset / Refuse   RST_STREAM CANCEL / REFUSED_STREAM as soon as the request headers arrive
//   Goaway           GOAWAY (last stream id = this one), then answers as Echo
//   GoawayRefuse     GOAWAY with last stream id 0: the request was refused, sepal may replay it
//   Close            closes the connection
//   Big              a 256 KiB response body, then trailers
//   TrailersOnly     one HEADERS frame with grpc-status 5 and END_STREAM
//   Early            answers (headers, empty body, trailers) before the request has ended
//   Trailers         answers with the request's trailers as the body, "name=value\n" each
//   Hang             never answers
//   anything else    Echo: the request body back (up to 64 KiB), then grpc-status 0
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <memory>
#include <string>
#include <vector>

namespace sepal::fuzz {

class FakeH2Upstream {
 public:
  FakeH2Upstream(boost::asio::io_context& io, const std::string& socket_path);
  ~FakeH2Upstream();
  FakeH2Upstream(const FakeH2Upstream&) = delete;
  FakeH2Upstream& operator=(const FakeH2Upstream&) = delete;

  // Stops accepting and closes every connection.
  void Stop();
  // Connections still open.
  size_t open_connections() const;

  class Connection;

 private:
  void Accept();

  boost::asio::local::stream_protocol::acceptor acceptor_;
  std::vector<std::weak_ptr<Connection>> connections_;
};

}  // namespace sepal::fuzz
