// A client connection on a `protocol: http1` listener (Flower's Fleet REST transport): the
// same front as HTTP/2 (PROXY header, TLS with ALPN http/1.1, identity once per connection,
// the peer's slot), then HTTP/1.1 requests one at a time, each
//
//   header (bounded size, count, time) → route → authz → admit → [100 Continue]
//     → upstream connection (keep-alive pool) → request body, streamed
//     → response header → response body, streamed → next request (keep-alive) or close
//
// Bodies move through one 64 KiB buffer per direction: a read is not started before the
// previous chunk was written on, so a slow reader on either side slows the writer (TCP
// back-pressure both ways) and a 2 GiB object costs 128 KiB. Pipelined requests wait in the
// read buffer (bounded by the header limit) until the one before them is answered.
#pragma once

#include <boost/asio/ip/address.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/serializer.hpp>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "proxy/front/client_connection.h"
#include "proxy/front/connection_front.h"
#include "proxy/front/connection_peer.h"
#include "proxy/http1/transport_stream.h"
#include "proxy/http2/transport.h"
#include "proxy/limits/peer_limits.h"
#include "proxy/limits/upstream_breaker.h"
#include "proxy/worker/generation.h"

namespace sepal {

class Http1Upstream;
class Listener;
class Worker;
struct Route;

class Http1Connection final : public std::enable_shared_from_this<Http1Connection>,
                              public ClientConnection,
                              private ConnectionFront::Owner {
 public:
  using Socket = Transport::Socket;

  Http1Connection(Worker& worker, Listener& listener, Socket socket, identity::PeerAddress peer,
                  boost::asio::ip::address local_ip);
  ~Http1Connection();

  void Start();

  // ClientConnection
  Listener& listener() const override { return listener_; }
  // Idle: closed now; in a request: its response carries Connection: close.
  void BeginShutdown(bool final_goaway) override;
  void ForceClose(std::string_view reason) override { Close(reason); }
  void Tick() override {}

  static constexpr size_t kChunkBytes = 64 * 1024;

 private:
  using RequestParser = boost::beast::http::request_parser<boost::beast::http::buffer_body>;
  using ResponseParser = boost::beast::http::response_parser<boost::beast::http::buffer_body>;
  using UpstreamRequest = boost::beast::http::request<boost::beast::http::buffer_body>;
  using ClientResponse = boost::beast::http::response<boost::beast::http::buffer_body>;

  // ConnectionFront::Owner
  void OnFrontDone(std::string_view initial_bytes) override;
  void CloseConnection(std::string_view reason) override { Close(reason); }
  void WriteRawAndCloseConnection(std::string bytes, std::string reason) override;
  bool connection_closed() const override { return closed_; }
  std::shared_ptr<void> KeepAlive() override { return shared_from_this(); }

  // --- One request after another.
  void WaitForRequest();  // keep-alive: the next request's first byte (idle_timeout)
  void ReadHeader();      // its header (header_timeout)
  void OnHeader(boost::system::error_code ec);
  void OnIdentity();
  void Authorize();
  bool Admit();
  void ContinueIfExpected();
  void ReadFirstBodyChunk();
  void AcquireUpstream();
  void OnUpstream(std::shared_ptr<Http1Upstream> upstream, std::string error);
  void BuildUpstreamRequest();
  void WriteRequestChunk(size_t n, bool last);
  void ReadRequestBody();
  void OnRequestBodyError(boost::system::error_code ec);
  void ReadResponseHeader();
  // While the upstream answers (from the end of the request to the end of the response),
  // nothing reads the client: a wait for readability sees one that left (end of stream,
  // reset) and closes the connection, its upstream connection and the call (499) at once,
  // instead of when the upstream answers or upstream_timeout fires. Bytes it sends meanwhile
  // (pipelining) are moved to the read buffer on a cleartext connection and the wait goes
  // on; on TLS they end the watch.
  void WatchForClientLeaving();
  void OnClientReadable();
  void OnResponseHeader(boost::system::error_code ec);
  void WriteResponseHeader();
  void ReadResponseBody();
  void WriteResponseChunk(size_t n, bool last);
  void FinishRequest();
  // The upstream failed before any response byte: retry once on a new connection when the
  // request can be replayed (its body was read whole into the first chunk), else 502.
  void UpstreamFailed(std::string_view why);

  // A local answer (sepal's own: refusals, limits, timeouts) with a one-line text body.
  // `reason`: a static literal for logs and /peers. The connection stays open only if the
  // request body was read whole (nothing of it is left on the wire).
  void Refuse(int status, std::string_view reason, std::string message);
  // Sends the answer, then shuts down the write side and reads (and drops) what the client
  // still sends for a moment, so it reads the answer instead of a reset.
  // Reads a small rest of the refused request's body (at most kChunkBytes), then Refuse.
  void DrainThenRefuse(int status, std::string_view reason, std::string message);
  void WriteAndLinger(std::string bytes, std::string reason);
  void Linger(size_t dropped);
  void Close(std::string_view reason);

  // One timer per connection: each phase arms it for what it waits on; on expiry the
  // pending operation is cancelled and completes with operation_aborted.
  enum class Phase { kNone, kIdle, kHeader, kBody, kUpstream, kClientWrite, kLinger };
  void Arm(Phase phase, std::chrono::milliseconds timeout);
  void Disarm() { phase_ = Phase::kNone; }
  void OnTimeout();
  bool TimedOut(Phase phase) const { return timed_out_ == phase; }

  void RecordRequest();
  // The request's peer and breaker slots are given back.
  void EndRequestCalls();
  // ... and its state dropped (only when nothing is pending on it).
  void ResetRequest();
  void Count(std::string_view limit);
  void CountProtocolError(std::string_view kind);

  Worker& worker_;
  Listener& listener_;
  ListenerRoutesPtr routes_;  // as accepted: limits, PROXY mode, identity provider
  Transport transport_;
  ConnectionFront::Endpoints endpoints_;
  ConnectionFront front_;
  ConnectionPeer peer_session_;
  http1::TransportStream client_stream_;
  bool closed_ = false;
  bool shutting_down_ = false;
  bool in_request_ = false;
  bool awaiting_identity_ = false;    // a request's header is in; the identity is not
  bool lingering_ = false;            // the last answer is out; closing
  bool watching_client_ = false;      // WatchForClientLeaving's wait is pending
  bool client_watch_active_ = false;  // ... and still wanted (the request is in its upstream phase)
  boost::beast::flat_buffer buffer_;
  boost::asio::steady_timer timer_;
  Phase phase_ = Phase::kNone;
  Phase timed_out_ = Phase::kNone;
  uint64_t timer_epoch_ = 0;

  // --- The request being served.
  struct Request {
    // Declared, not defaulted here: clang decides whether std::optional<Request> can
    // emplace() before this class's member initializers are parsed.
    Request();
    std::optional<RequestParser> parser;
    ListenerRoutesPtr routes;  // the listener's routes when the request began
    const Route* route = nullptr;
    std::string path, query;
    std::chrono::steady_clock::time_point started;
    size_t first_chunk = 0;     // body bytes in request_chunk_ before the upstream is asked
    bool counted_open = false;  // in sepal_streams_active
    bool recorded = false;
    bool drained = false;  // DrainThenRefuse ran
    bool keep_alive = true;
    bool expect_continue = false;
    bool body_done = false;      // the request body was read whole
    bool replayable = false;     // ... and fits in the first chunk (still in request_chunk_)
    uint64_t request_bytes = 0;  // body bytes from the client
    uint64_t response_bytes = 0;
    int status = 0;  // sent to the client (0: none yet)
    bool response_started = false;
    int attempts = 0;
    std::string_view decision;  // "allow", "deny", "audit_deny", "" (never authorized)
    std::string_view reason;
    std::shared_ptr<limits::Peer> peer_call;
    limits::UpstreamBreaker* breaker_call = nullptr;
    std::shared_ptr<Http1Upstream> upstream;
    std::optional<UpstreamRequest> upstream_request;
    std::optional<boost::beast::http::request_serializer<boost::beast::http::buffer_body>>
        upstream_serializer;
    std::optional<ResponseParser> response_parser;
    std::optional<ClientResponse> response;
    std::optional<boost::beast::http::response_serializer<boost::beast::http::buffer_body>>
        response_serializer;
    bool upstream_keep_alive = false;
  };
  std::optional<Request> request_;
  std::unique_ptr<char[]> request_chunk_;
  std::unique_ptr<char[]> response_chunk_;
};

}  // namespace sepal
