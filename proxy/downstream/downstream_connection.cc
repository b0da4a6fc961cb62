// DownstreamConnection: HTTP/2 server session callbacks → ProxyStream events.
#include "proxy/downstream/downstream_connection.h"

#include <cstring>

#include "proxy/common/log.h"
#include "proxy/common/log_rate_limit.h"
#include "proxy/common/strings.h"
#include "proxy/http2/session_options.h"
#include "proxy/listener/listener.h"
#include "proxy/stats/proxy_metrics.h"
#include "proxy/stream/proxy_stream.h"
#include "proxy/worker/worker.h"

namespace sepal {

namespace {

constexpr std::string_view kClientPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

ProxyStream* StreamOf(nghttp2_session* session, int32_t stream_id) {
  return static_cast<ProxyStream*>(nghttp2_session_get_stream_user_data(session, stream_id));
}

// Lines a peer can cause, each kind rate-limited (the metrics count every event).
LogRateLimit g_log_bad_input("bad client input");
LogRateLimit g_log_glitches("too many glitches");
LogRateLimit g_log_stalled("stalled requests");

}  // namespace

DownstreamConnection::DownstreamConnection(Worker& worker, Listener& listener, Socket socket,
                                           identity::PeerAddress peer,
                                           boost::asio::ip::address local_ip)
    : Http2Connection(worker, std::move(socket)),
      listener_(listener),
      routes_(listener.routes()),
      endpoints_{peer, peer.ToString(), local_ip},
      front_(*this, worker, listener, *routes_, transport_, &endpoints_),
      peer_session_(listener, *routes_, this) {}

DownstreamConnection::~DownstreamConnection() = default;

void DownstreamConnection::Start() {
  worker_.Register(this);
  listener_.ConnectionOpened();
  front_.Start();
}

void DownstreamConnection::StartHttp2(std::string_view initial_bytes) {
  std::weak_ptr<Http2Connection> weak = shared_from_this();
  peer_session_.Begin(worker_, endpoints_.peer, endpoints_.peer_text, endpoints_.destination,
                      weak, [this] {
                        if (!closed()) OnIdentity();
                      });
  nghttp2_session_callbacks* callbacks = nullptr;
  nghttp2_session_callbacks_new(&callbacks);
  nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks, &OnBeginHeaders);
  nghttp2_session_callbacks_set_on_header_callback2(callbacks, &OnHeader);
  nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, &OnFrameRecv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, &OnDataChunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, &OnStreamClose);
  nghttp2_session_callbacks_set_send_data_callback(callbacks, &OnSendData);
  nghttp2_session_callbacks_set_on_frame_send_callback(callbacks, &OnFrameSend);
  nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(callbacks, &OnInvalidFrame);
  const config::Http2Limits& limits = routes_->config.limits;
  NgOption options = MakeServerOptions(limits);
  session_memory().BeginSessionCreation();
  int rv = nghttp2_session_server_new3(&session_, callbacks, this, options.get(),
                                       session_memory().mem());
  session_memory().EndSessionCreation();
  nghttp2_session_callbacks_del(callbacks);
  if (rv == 0) rv = SubmitInitialSettings(session_, limits, /*is_server=*/true);
  AdvertiseMaxConcurrentStreams(limits.max_concurrent_streams);
  if (rv != 0) {
    LogError("listener ", listener_.name(), ": cannot start HTTP/2 session: ",
             nghttp2_strerror(rv));
    Close("session setup failed");
    return;
  }
  // Our SETTINGS wait for the client's preface, so a client that is not speaking HTTP/2
  // gets a plain answer instead of binary frames.
  StartIo(/*speak_first=*/false, initial_bytes);
  // Accepted before a drain (or the listener's retirement) but speaking HTTP/2 only now,
  // after a PROXY header or a TLS handshake: it missed the GOAWAY the others got, so it gets
  // its own (covering any stream already in `initial_bytes`).
  if (front_.started_late() && !closed() && (worker_.draining() || listener_.retired())) {
    BeginShutdown(/*final_goaway=*/true);
  }
}

void DownstreamConnection::OnIdentity() {
  std::vector<int32_t> waiting;
  waiting.swap(waiting_for_identity_);
  for (int32_t id : waiting) {
    auto it = streams_.find(id);
    if (it != streams_.end()) it->second->ContinueAfterIdentity();
  }
  ScheduleFlush();
}

bool DownstreamConnection::OnFirstBytes(const uint8_t* data, size_t length) {
  size_t n = std::min(length, kClientPreface.size());
  if (std::memcmp(data, kClientPreface.data(), n) == 0) return true;
  if (data[0] == 0x16 && length >= 3 && data[1] == 0x03) {
    if (g_log_bad_input.Allow()) LogWarning("listener ", listener_.name(), ": ", endpoints_.peer_text,
               " started a TLS handshake on a cleartext (h2c) port; closing");
    CountProtocolError("tls_on_cleartext");
    Close("TLS on cleartext port");
    return false;
  }
  if (LooksLikeHttp1(data, length)) {
    if (g_log_bad_input.Allow()) LogWarning("listener ", listener_.name(), ": ", endpoints_.peer_text,
               " sent an HTTP/1.x request; this port speaks HTTP/2 (gRPC) only");
    static constexpr std::string_view kBody =
        "sepal: this port accepts HTTP/2 (gRPC) only; use a gRPC client or prior-knowledge h2c\n";
    CountProtocolError("http1");
    WriteRawAndClose(StrCat("HTTP/1.1 505 HTTP Version Not Supported\r\n"
                                  "Content-Type: text/plain\r\nConnection: close\r\n"
                                  "Content-Length: ",
                                  kBody.size(), "\r\n\r\n", kBody),
                     "HTTP/1.x request on HTTP/2 port");
    return false;
  }
  if (g_log_bad_input.Allow()) LogWarning("listener ", listener_.name(), ": ", endpoints_.peer_text,
             " sent bytes that are not an HTTP/2 connection preface; closing");
  CountProtocolError("bad_preface");
  Close("bad connection preface");
  return false;
}

void DownstreamConnection::CountProtocolError(std::string_view kind) {
  listener_.stats().ProtocolError(kind);
}

void DownstreamConnection::SendCapGoAway() {
  if (cap_goaway_sent_ || closed() || session_ == nullptr) return;
  cap_goaway_sent_ = true;
  static constexpr std::string_view kWhy = "too many connections from this peer (peer_limits)";
  nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE,
                        nghttp2_session_get_last_proc_stream_id(session_), NGHTTP2_NO_ERROR,
                        reinterpret_cast<const uint8_t*>(kWhy.data()), kWhy.size());
  ScheduleFlush();
}

std::string_view DownstreamConnection::AdmitCall(std::chrono::steady_clock::time_point now,
                                                 std::shared_ptr<limits::Peer>* slot,
                                                 std::string* message) {
  std::string_view refused = peer_session_.AdmitCall(now, slot, message);
  if (refused == limits::limit::kPeerConnections) SendCapGoAway();
  return refused;
}

void DownstreamConnection::Glitch(std::string_view kind) {
  listener_.stats().Glitch(kind);
  if (calming_ || closed() || session_ == nullptr) return;
  if (glitches_.Count(routes_->config.limits, std::chrono::steady_clock::now())) return;
  calming_ = true;
  CountProtocolError("glitches");
  if (g_log_glitches.Allow()) {
    LogWarning("listener ", listener_.name(), ": ", endpoints_.peer_text, " sent too many frames or streams "
               "no client needs (", glitches_.total(), " glitches, the last ", kind,
               "); GOAWAY ENHANCE_YOUR_CALM");
  }
  nghttp2_session_terminate_session(session_, NGHTTP2_ENHANCE_YOUR_CALM);
  ScheduleFlush();
}

void DownstreamConnection::OnReceivedBatch() {
  if (admissions_.empty()) return;
  std::vector<int32_t> ready;
  ready.swap(admissions_);
  for (int32_t id : ready) {
    auto it = streams_.find(id);  // gone if the same bytes reset it
    if (it != streams_.end() && !calming_) it->second->ContinueAfterIdentity();
  }
}

void DownstreamConnection::CollectLargeStreams(
    size_t min_bytes, std::vector<std::pair<size_t, ProxyStream*>>* out) {
  if (closed()) return;
  for (auto& [id, stream] : streams_) {
    size_t bytes = stream->buffered_bytes();
    if (bytes >= min_bytes) out->emplace_back(bytes, stream.get());
  }
}

void DownstreamConnection::Tick() {
  if (closed() || session_ == nullptr) return;
  if (peer_session_.over_connection_cap() && streams_.empty() && ++idle_ticks_over_cap_ >= 2) {
    SendCapGoAway();
  }
  if (streams_.empty()) {
    // Idle for longer than Flower's 3 s poll period (a polling node would fault the page back
    // in at its next poll, ~7 µs each time): give the frame buffer's pages back. A release
    // costs ~1 µs (madvise); the worker's per-tick budget keeps thousands of connections going
    // idle together from stalling the tick (the rest go on the next ticks).
    if (++idle_ticks_ >= kIdleTicksBeforeRelease && session_memory().frame_buffer_resident() &&
        worker_.TakeIdleRelease()) {
      ReleaseIdleMemory();
    }
    return;
  }
  idle_ticks_ = 0;
  auto timeout = std::chrono::duration_cast<std::chrono::seconds>(
      routes_->config.limits.request_progress_timeout + std::chrono::milliseconds(999));
  uint64_t now = worker_.ticks();
  std::vector<int32_t> stalled;
  for (auto& [id, stream] : streams_) {
    // Whole ticks: more than `timeout` ticks since the last progress is at least `timeout`.
    if (stream->RequestStalledFor(now) > static_cast<uint64_t>(timeout.count())) {
      stalled.push_back(id);
    }
  }
  for (int32_t id : stalled) {
    auto it = streams_.find(id);
    if (it == streams_.end()) continue;
    if (g_log_stalled.Allow()) {
      LogInfo("listener ", listener_.name(), ": ", endpoints_.peer_text, " stream ", id, ": no request data for ",
              timeout.count(), " s (limits.request_progress_timeout); ending the call");
    }
    listener_.stats().LimitRejection(limits::limit::kRequestProgress);
    it->second->OnRequestStalled(timeout);
    Glitch(limits::glitch::kStalledRequest);
  }
  if (!stalled.empty()) ScheduleFlush();
}

void DownstreamConnection::BeginShutdown(bool final_goaway) {
  if (closed() || session_ == nullptr) return;
  if (final_goaway) {
    nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE,
                          nghttp2_session_get_last_proc_stream_id(session_), NGHTTP2_NO_ERROR,
                          nullptr, 0);
  } else {
    nghttp2_submit_shutdown_notice(session_);
  }
  Flush();
}

void DownstreamConnection::OnClose(std::string_view reason) {
  front_.Cancel();
  LogDebug("listener ", listener_.name(), ": connection from ", endpoints_.peer_text, " closed: ", reason,
           " (", streams_.size(), " streams open)");
  // Streams reset their upstream halves as they go (and record themselves in the peer's
  // activity, so the slot is given back after them).
  for (auto& [id, stream] : streams_) {
    if (session_ != nullptr) nghttp2_session_set_stream_user_data(session_, id, nullptr);
  }
  streams_.clear();
  peer_session_.Release();
  worker_.Unregister(this);
  listener_.ConnectionClosed();
}

void DownstreamConnection::DestroyStream(int32_t stream_id) {
  auto it = streams_.find(stream_id);
  if (it == streams_.end()) return;
  nghttp2_session_set_stream_user_data(session_, stream_id, nullptr);
  streams_.erase(it);
}

int DownstreamConnection::OnBeginHeaders(nghttp2_session* session, const nghttp2_frame* frame,
                                         void* user_data) {
  auto* self = static_cast<DownstreamConnection*>(user_data);
  if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  int32_t id = frame->hd.stream_id;
  // nghttp2 enforces only a higher hard limit (HardMaxConcurrentStreams); streams past the
  // advertised one are refused here, which gRPC clients retry.
  if (self->streams_.size() >= self->routes_->config.limits.max_concurrent_streams) {
    nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, id, NGHTTP2_REFUSED_STREAM);
    self->listener_.stats().LimitRejection(limits::limit::kMaxConcurrentStreams);
    self->Glitch(limits::glitch::kRefusedStream);
    return 0;  // no ProxyStream: the header block is ignored
  }
  // Over the memory budget: no new streams until it is back below the low watermark.
  if (const auto& memory = self->routes_->generation->memory; memory && memory->Overloaded()) {
    nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, id, NGHTTP2_REFUSED_STREAM);
    self->listener_.stats().LimitRejection(limits::limit::kMemory);
    return 0;
  }
  self->EarnWindowUpdates();
  auto stream = std::make_unique<ProxyStream>(*self, id);
  nghttp2_session_set_stream_user_data(session, id, stream.get());
  self->streams_.emplace(id, std::move(stream));
  return 0;
}

int DownstreamConnection::OnHeader(nghttp2_session* session, const nghttp2_frame* frame,
                                   nghttp2_rcbuf* name, nghttp2_rcbuf* value, uint8_t flags,
                                   void*) {
  ProxyStream* stream = StreamOf(session, frame->hd.stream_id);
  if (stream == nullptr || frame->hd.type != NGHTTP2_HEADERS) return 0;
  if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
    stream->OnRequestHeader(name, value, flags);
  } else {
    stream->OnRequestTrailer(name, value, flags);
  }
  return 0;
}

int DownstreamConnection::OnFrameRecv(nghttp2_session* session, const nghttp2_frame* frame,
                                      void* user_data) {
  auto* self = static_cast<DownstreamConnection*>(user_data);
  ProxyStream* stream = nullptr;
  bool end_stream = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
  switch (frame->hd.type) {
    case NGHTTP2_HEADERS:
      stream = StreamOf(session, frame->hd.stream_id);
      if (stream == nullptr) return 0;
      if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
        stream->OnRequestHeadersComplete(frame->hd.flags & NGHTTP2_FLAG_END_STREAM);
      } else if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) {
        stream->OnRequestEnd();
      }
      break;
    case NGHTTP2_DATA:
      if (end_stream) {
        stream = StreamOf(session, frame->hd.stream_id);
        if (stream != nullptr) stream->OnRequestEnd();
      } else if (frame->hd.length == 0) {
        self->Glitch(limits::glitch::kEmptyData);
      } else if (frame->hd.length < 5) {  // not even a gRPC message prefix
        self->Glitch(limits::glitch::kTinyData);
      }
      break;
    // Glitches: frames a client may send but needs only now and then.
    case NGHTTP2_PING:
      if (!(frame->hd.flags & NGHTTP2_FLAG_ACK)) self->Glitch(limits::glitch::kPing);
      break;
    case NGHTTP2_SETTINGS:
      if (!(frame->hd.flags & NGHTTP2_FLAG_ACK)) {
        if (self->seen_settings_) self->Glitch(limits::glitch::kSettings);
        self->seen_settings_ = true;
      }
      break;
    case NGHTTP2_PRIORITY:
      self->Glitch(limits::glitch::kPriority);
      break;
    case NGHTTP2_WINDOW_UPDATE:
      // A client opens windows for each new stream and as sepal's DATA arrives (a stream's
      // and the connection's, in any size): each of those earns it two; more is a flood.
      if (self->window_update_allowance_ > 0) {
        --self->window_update_allowance_;
      } else {
        self->Glitch(limits::glitch::kWindowUpdate);
      }
      break;
    case NGHTTP2_RST_STREAM:
      // A call cancelled before its answer started: the rapid-reset pattern when it is most
      // of what a connection does.
      stream = StreamOf(session, frame->hd.stream_id);
      if (stream != nullptr && !stream->response_started()) {
        self->Glitch(limits::glitch::kEarlyReset);
      }
      break;
    default:
      break;
  }
  return 0;
}

int DownstreamConnection::OnDataChunk(nghttp2_session* session, uint8_t, int32_t stream_id,
                                      const uint8_t* data, size_t length, void*) {
  ProxyStream* stream = StreamOf(session, stream_id);
  if (stream == nullptr) {
    nghttp2_session_consume(session, stream_id, length);
    return 0;
  }
  stream->OnRequestData(data, length);
  return 0;
}

int DownstreamConnection::OnSendData(nghttp2_session* session, nghttp2_frame* frame,
                         const uint8_t* frame_header, size_t length, nghttp2_data_source*,
                         void* user_data) {
  auto* self = static_cast<DownstreamConnection*>(user_data);
  return ProxyStream::SendResponseData(session, *frame, frame_header, length, *self);
}

int DownstreamConnection::OnStreamClose(nghttp2_session*, int32_t stream_id, uint32_t error_code,
                                        void* user_data) {
  auto* self = static_cast<DownstreamConnection*>(user_data);
  if (error_code != NGHTTP2_NO_ERROR) {
    LogDebug("listener ", self->listener_.name(), ": ", self->endpoints_.peer_text, " stream ", stream_id,
             " reset: ", nghttp2_http2_strerror(error_code));
  }
  // The upstream half (if still open) is reset with the client's own code, then the
  // ProxyStream goes away.
  if (ProxyStream* stream = StreamOf(self->session_, stream_id)) {
    stream->OnDownstreamClosed(error_code);
  }
  self->DestroyStream(stream_id);
  return 0;
}

int DownstreamConnection::OnFrameSend(nghttp2_session* session, const nghttp2_frame* frame,
                                      void* user_data) {
  if (frame->hd.type == NGHTTP2_DATA) {
    static_cast<DownstreamConnection*>(user_data)->EarnWindowUpdates();
  }
  if (!(frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) return 0;
  if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) return 0;
  ProxyStream* stream = StreamOf(session, frame->hd.stream_id);
  if (stream != nullptr && stream->reset_after_response()) {
    nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_NO_ERROR);
  }
  return 0;
}

int DownstreamConnection::OnInvalidFrame(nghttp2_session*, const nghttp2_frame* frame,
                                         int lib_error, void* user_data) {
  auto* self = static_cast<DownstreamConnection*>(user_data);
  if (g_log_bad_input.Allow()) LogInfo("listener ", self->listener_.name(), ": ", self->endpoints_.peer_text, " sent an invalid frame (type ",
          static_cast<int>(frame->hd.type), ", stream ", frame->hd.stream_id,
          "): ", nghttp2_strerror(lib_error));
  return 0;
}

}  // namespace sepal
