// One proxied gRPC call: the downstream HTTP/2 stream, its route, and its upstream stream,
// with the two body buffers whose draining drives flow control on the opposite side.
#pragma once

#include <nghttp2/nghttp2.h>

#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "proxy/buffer/chunk_buffer.h"
#include "proxy/common/liveness.h"
#include "proxy/grpc/grpc_status.h"
#include "proxy/http2/header_list.h"
#include "proxy/http2/http2_connection.h"
#include "proxy/limits/peer_limits.h"
#include "proxy/limits/upstream_breaker.h"
#include "proxy/worker/generation.h"

namespace sepal {

class DownstreamConnection;
class UpstreamConnection;
struct Route;

class ProxyStream {
 public:
  ProxyStream(DownstreamConnection& downstream, int32_t stream_id);
  // Detaches from the upstream (resetting its stream if still open) and from any queue.
  ~ProxyStream();
  ProxyStream(const ProxyStream&) = delete;
  ProxyStream& operator=(const ProxyStream&) = delete;

  int32_t downstream_id() const { return downstream_id_; }
  int32_t upstream_id() const { return upstream_id_; }
  DownstreamConnection& downstream() const { return downstream_; }

  // --- Events from the downstream (client) session.
  void OnRequestHeader(nghttp2_rcbuf* name, nghttp2_rcbuf* value, uint8_t flags);
  void OnRequestHeadersComplete(bool end_stream);
  void OnRequestTrailer(nghttp2_rcbuf* name, nghttp2_rcbuf* value, uint8_t flags);
  void OnRequestData(const uint8_t* data, size_t length);
  void OnRequestEnd();
  // The connection's identity is known: authorize the call and dispatch it (or refuse).
  void ContinueAfterIdentity();
  // The downstream stream closed (normally or by RST_STREAM with `error_code`).
  void OnDownstreamClosed(uint32_t error_code);
  // Ticks (seconds, Worker::ticks) the call has been waiting for request bytes the client
  // does not send: 0 unless sepal waits on the client (request open, nothing buffered, no
  // answer yet).
  uint64_t RequestStalledFor(uint64_t now_ticks);
  // The request made no progress for `timeout`: answer UNAVAILABLE and stop the request.
  void OnRequestStalled(std::chrono::seconds timeout);
  bool response_started() const { return response_started_; }
  // Body bytes this call holds in memory (both directions).
  size_t buffered_bytes() const { return request_body_.size() + response_body_.size(); }
  // Memory budget exceeded and this call holds among the most: answer UNAVAILABLE now
  // (trailers, if its response had started), dropping what it buffered.
  void Shed();
  // RST_STREAM NO_ERROR once the response's END_STREAM is sent (the request is unwanted).
  bool reset_after_response() const { return reset_after_response_ && !request_ended_; }

  // --- Events from the upstream pool and session.
  // The stream waits in `upstream`'s queue until that connection is up.
  void OnQueued(UpstreamConnection& upstream);
  // The connection is ready for this stream: submit the request on it.
  void AttachUpstream(UpstreamConnection& upstream);
  void OnResponseHeader(nghttp2_rcbuf* name, nghttp2_rcbuf* value, uint8_t flags,
                        bool is_trailer);
  void OnResponseHeadersComplete(bool end_stream, bool is_trailer);
  void OnResponseData(const uint8_t* data, size_t length);
  void OnResponseEnd();
  // The upstream stream closed (error_code is the RST_STREAM code or NO_ERROR).
  void OnUpstreamStreamClosed(uint32_t error_code);
  // The upstream could not take the request (connect failure, connection lost, HEADERS
  // could not be sent). `refused` means the upstream never processed it (safe to retry).
  void OnUpstreamFailed(std::string_view why, bool refused);

  // --- Local replies (trailers-only when no response started yet).
  void LocalReply(grpc::StatusCode code, std::string_view message, std::string_view details);

  // nghttp2 data source callbacks.
  static ssize_t ReadRequestBody(nghttp2_session* session, int32_t stream_id, uint8_t* buf,
                                 size_t length, uint32_t* data_flags, nghttp2_data_source* source,
                                 void* user_data);
  static ssize_t ReadResponseBody(nghttp2_session* session, int32_t stream_id, uint8_t* buf,
                                  size_t length, uint32_t* data_flags,
                                  nghttp2_data_source* source, void* user_data);
  // nghttp2 send_data_callbacks (NO_COPY DATA): the frame header and a reference to the
  // payload go into the connection's write. The upstream session sends request bodies, the
  // downstream one response bodies.
  static int SendRequestData(nghttp2_session* session, const nghttp2_frame& frame,
                             const uint8_t* frame_header, size_t length,
                             Http2Connection& upstream);
  static int SendResponseData(nghttp2_session* session, const nghttp2_frame& frame,
                              const uint8_t* frame_header, size_t length,
                              Http2Connection& downstream);

 private:
  static int SendBodyFrame(const nghttp2_frame& frame, const uint8_t* frame_header,
                           size_t length, ChunkBuffer& body, Http2Connection& connection);
  // The method the call is authorized, counted and logged as: its :path, or on an
  // `inspect: grpc_adapter` route the wrapped Fleet method once it is read.
  std::string_view method_path() const;
  // Identity known (and, on an inspecting route, the wrapped method read): authorize the
  // call and dispatch it, or refuse it.
  void AuthorizeAndDispatch();
  // inspect: grpc_adapter — reads the wrapped method from the buffered request prefix;
  // refuses a malformed one.
  void TryInspect();
  // A body past the one message an inspected call may carry: refuse (true) the call.
  bool RefusedExtraMessage();
  void Dispatch();
  // Peer limits, then the upstream's breaker; false if the call was refused (answered).
  bool Admit();
  // The circuit breaker caps of this call's upstream, in the configuration it runs under.
  const config::CircuitBreakerConfig& BreakerCaps() const;
  void SetPending(bool pending);
  void DetachUpstream(uint32_t reset_code);
  void StartDeadline(std::chrono::nanoseconds timeout);
  void ResumeUpstreamSend();
  void ResumeDownstreamSend();
  void DropRequestBody();
  void ConsumeDownstream(size_t n);
  // Credits `n` response bytes that left response_body_ (forwarded or dropped) to the
  // upstream's flow-control window, even after the upstream stream has closed: otherwise
  // the upstream connection's window would shrink with every call.
  void AckResponseBytes(size_t n);
  void DropResponseBody();
  void SetFinalCode(grpc::StatusCode code) {
    if (final_code_ < 0) final_code_ = static_cast<int>(code);
  }
  void RecordStats();

  DownstreamConnection& downstream_;
  const int32_t downstream_id_;
  // The upstream connection carrying (upstream_id_ > 0) or queueing (-1) this stream.
  UpstreamConnection* upstream_ = nullptr;
  int32_t upstream_id_ = -1;
  // The listener's routes when this stream began: a reload does not change them under it.
  ListenerRoutesPtr routes_;
  const Route* route_ = nullptr;  // in routes_->router

  // inspect: grpc_adapter (filters/grpc_adapter): kPending until the first message's name
  // is read; the call is authorized only then. identity_ready_: the identity arrived first.
  enum class Inspect : uint8_t { kNone, kPending, kDone };
  Inspect inspect_ = Inspect::kNone;
  bool identity_ready_ = false;
  std::string wrapped_method_;  // "/flwr.proto.Fleet/PullMessages"
  uint64_t message_end_ = 0;    // body bytes of the one message an inspected call carries

  HeaderList request_headers_;
  HeaderList request_trailers_;
  HeaderList response_headers_;
  HeaderList response_trailers_;
  size_t request_header_bytes_ = 0;
  bool request_headers_too_large_ = false;

  ChunkBuffer request_body_;
  ChunkBuffer response_body_;
  // Bytes of request body acknowledged to the client's flow control window so far,
  // and the read position in the body (replays after a refused attempt re-read bytes).
  uint64_t request_received_ = 0;
  uint64_t request_consumed_ = 0;
  uint64_t request_read_position_ = 0;
  // The connection the response comes from, for AckResponseBytes after its stream closed.
  std::weak_ptr<Http2Connection> response_source_;

  bool request_ended_ = false;       // client sent END_STREAM
  bool upstream_ended_ = false;      // upstream sent END_STREAM (or a local reply ended it)
  bool response_started_ = false;    // response HEADERS submitted downstream
  bool response_finished_ = false;   // nothing more will be sent downstream
  bool upstream_send_deferred_ = false;
  bool downstream_send_deferred_ = false;
  bool local_trailers_pending_ = false;
  bool reset_after_response_ = false;
  int attempts_ = 0;
  grpc::StatusCode local_code_ = grpc::StatusCode::kOk;
  std::string local_message_;

  // Limit slots held while the call runs (released by the destructor).
  std::shared_ptr<limits::Peer> peer_call_;
  limits::UpstreamBreaker* breaker_call_ = nullptr;  // lives in routes_
  bool pending_ = false;  // counted in the breaker's pending calls
  uint64_t progress_tick_ = 0;  // Worker::ticks at the last request progress

  std::unique_ptr<boost::asio::steady_timer> deadline_;
  Liveness liveness_;  // for the deadline handler, which may run after this stream is gone

  // For metrics: when the call started, bytes each way, and how it ended (-1: unknown yet).
  std::chrono::steady_clock::time_point started_;
  uint64_t request_bytes_ = 0;
  uint64_t response_bytes_ = 0;
  int final_code_ = -1;
  // For the access log: the authz outcome ("allow"/"deny", empty if never authorized) and
  // the reasons (static literals of the authz filter and of LocalReply callers).
  std::string_view decision_;
  std::string_view authz_reason_;
  std::string_view local_reason_;
};

}  // namespace sepal
