// UpstreamConnection: connects, runs an HTTP/2 client session, and maps its callbacks to
// the ProxyStreams it carries.
#include "proxy/upstream/upstream_connection.h"

#include "proxy/common/log.h"
#include "proxy/common/strings.h"
#include "proxy/http2/session_options.h"
#include "proxy/stream/proxy_stream.h"
#include "proxy/tls/tls_context.h"
#include "proxy/upstream/upstream_pool.h"
#include "proxy/worker/worker.h"

namespace sepal {

namespace {

ProxyStream* StreamOf(nghttp2_session* session, int32_t stream_id) {
  return static_cast<ProxyStream*>(nghttp2_session_get_stream_user_data(session, stream_id));
}

config::Http2Limits UpstreamLimits() {
  config::Http2Limits limits;
  limits.max_header_list_bytes = 64 * 1024;
  return limits;
}

}  // namespace

UpstreamConnection::UpstreamConnection(Worker& worker, UpstreamPool& pool, Socket socket)
    : Http2Connection(worker, std::move(socket)), pool_(pool), connect_timer_(worker.io()) {}

UpstreamConnection::~UpstreamConnection() = default;

std::string UpstreamConnection::Describe() const {
  return StrCat("upstream ", pool_.name(), " (", pool_.address_text(), ")");
}

size_t UpstreamConnection::max_streams() const {
  if (session_ == nullptr) return 100;
  return nghttp2_session_get_remote_settings(session_, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
}

void UpstreamConnection::Connect(const boost::asio::generic::stream_protocol::endpoint& endpoint,
                                 std::chrono::milliseconds timeout) {
  auto self = std::static_pointer_cast<UpstreamConnection>(shared_from_this());
  connect_timer_.expires_after(timeout);
  connect_timer_.async_wait([self](boost::system::error_code ec) {
    if (ec || self->ready_ || self->closed()) return;
    self->pool_.CountConnectFailure();
    self->FailAll("upstream connect timed out", /*refused=*/false);
    self->Close("connect timeout");
  });
  socket().async_connect(endpoint, [self](boost::system::error_code ec) {
    if (self->closed()) return;
    // With TLS the connect timeout keeps running through the handshake.
    if (ec || !self->pool_.tls_context()) self->connect_timer_.cancel();
    if (ec) {
      LogWarning("upstream ", self->pool_.name(), ": connect to ", self->pool_.address_text(),
                 " failed: ", ec.message());
      self->pool_.CountConnectFailure();
      self->FailAll(StrCat("upstream ", self->pool_.name(), " unavailable: connect to ",
                                 self->pool_.address_text(), ": ", ec.message()),
                    /*refused=*/false);
      self->Close("connect failed");
      return;
    }
    if (self->pool_.tls_context()) {
      self->Handshake();
    } else {
      self->OnConnected();
    }
  });
}

void UpstreamConnection::Handshake() {
  Transport::TlsStream& stream = transport_.StartTls(pool_.tls_context());
  if (absl::Status status = tls::PrepareClientSession(stream.native_handle(), pool_.server_name());
      !status.ok()) {
    FailHandshake(std::string(status.message()));
    return;
  }
  auto self = std::static_pointer_cast<UpstreamConnection>(shared_from_this());
  stream.async_handshake(boost::asio::ssl::stream_base::client,
                         [self](boost::system::error_code ec) {
                           if (self->closed()) return;  // e.g. the connect timeout fired
                           SSL* ssl = self->transport_.tls()->native_handle();
                           if (ec) {
                             self->FailHandshake(tls::DescribeTlsError(ec, ssl));
                             return;
                           }
                           if (!tls::NegotiatedH2(ssl)) {
                             self->FailHandshake("the server did not select h2 (ALPN)");
                             return;
                           }
                           self->connect_timer_.cancel();
                           self->OnConnected();
                         });
}

void UpstreamConnection::FailHandshake(std::string_view why) {
  LogWarning("upstream ", pool_.name(), ": TLS handshake with ", pool_.address_text(), " (",
             pool_.server_name(), ") failed: ", why);
  pool_.CountConnectFailure();
  FailAll(StrCat("upstream ", pool_.name(), " TLS handshake failed: ", why), /*refused=*/false);
  Close("TLS handshake failed");
}

void UpstreamConnection::OnConnected() {
  if (socket().local_endpoint().protocol().family() != AF_UNIX) {
    // Small unary calls must not wait for Nagle.
    int one = 1;
    setsockopt(socket().native_handle(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  }
  nghttp2_session_callbacks* callbacks = nullptr;
  nghttp2_session_callbacks_new(&callbacks);
  nghttp2_session_callbacks_set_on_header_callback2(callbacks, &OnHeader);
  nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, &OnFrameRecv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, &OnDataChunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, &OnStreamClose);
  nghttp2_session_callbacks_set_send_data_callback(callbacks, &OnSendData);
  nghttp2_session_callbacks_set_on_frame_not_send_callback(callbacks, &OnFrameNotSend);
  NgOption options = MakeClientOptions();
  int rv = nghttp2_session_client_new2(&session_, callbacks, this, options.get());
  nghttp2_session_callbacks_del(callbacks);
  if (rv == 0) rv = SubmitInitialSettings(session_, UpstreamLimits(), /*is_server=*/false);
  if (rv != 0) {
    FailAll(StrCat("upstream session setup failed: ", nghttp2_strerror(rv)), false);
    Close("session setup failed");
    return;
  }
  ready_ = true;
  LogDebug(Describe(), ": connected");
  std::vector<ProxyStream*> pending;
  pending.swap(pending_);
  for (ProxyStream* stream : pending) stream->AttachUpstream(*this);
  StartIo(/*speak_first=*/true);
}

void UpstreamConnection::Add(ProxyStream* stream) {
  if (ready_) {
    stream->AttachUpstream(*this);
    ScheduleFlush();
  } else {
    pending_.push_back(stream);
    stream->OnQueued(*this);
  }
}

int32_t UpstreamConnection::Submit(ProxyStream* stream, const std::vector<nghttp2_nv>& headers,
                                   bool has_body) {
  nghttp2_data_provider provider{};
  provider.source.ptr = stream;
  provider.read_callback = &ProxyStream::ReadRequestBody;
  int32_t id = nghttp2_submit_request(session_, nullptr, headers.data(), headers.size(),
                                      has_body ? &provider : nullptr, stream);
  if (id > 0) active_.insert(stream);
  ScheduleFlush();
  return id;
}

void UpstreamConnection::Detach(ProxyStream* stream, int32_t stream_id, uint32_t reset_code) {
  active_.erase(stream);
  std::erase(pending_, stream);
  if (session_ != nullptr && stream_id > 0 && !closed()) {
    nghttp2_session_set_stream_user_data(session_, stream_id, nullptr);
    if (nghttp2_session_find_stream(session_, stream_id) != nullptr) {
      nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, stream_id, reset_code);
    }
    ScheduleFlush();
  }
  MaybeRetire();
}

void UpstreamConnection::FailAll(std::string_view why, bool refused) {
  std::vector<ProxyStream*> victims(pending_.begin(), pending_.end());
  victims.insert(victims.end(), active_.begin(), active_.end());
  pending_.clear();
  active_.clear();
  for (ProxyStream* stream : victims) stream->OnUpstreamFailed(why, refused);
}

void UpstreamConnection::Shutdown() {
  if (closed()) return;
  draining_ = true;
  MaybeRetire();
}

void UpstreamConnection::MaybeRetire() {
  if (draining_ && active_.empty() && pending_.empty() && !closed()) {
    if (session_ != nullptr) {
      nghttp2_session_terminate_session(session_, NGHTTP2_NO_ERROR);
      ScheduleFlush();
    } else {
      Close("drained");
    }
  }
}

void UpstreamConnection::OnClose(std::string_view reason) {
  connect_timer_.cancel();
  if (!active_.empty() || !pending_.empty()) {
    LogWarning(Describe(), ": connection lost (", reason, ") with ", active_.size(),
               " active streams");
  } else {
    LogDebug(Describe(), ": closed (", reason, ")");
  }
  FailAll(StrCat("upstream ", pool_.name(), " connection lost: ", reason),
          /*refused=*/false);
  pool_.OnConnectionClosed(this);
}

int UpstreamConnection::OnHeader(nghttp2_session* session, const nghttp2_frame* frame,
                                 nghttp2_rcbuf* name, nghttp2_rcbuf* value, uint8_t flags,
                                 void*) {
  if (frame->hd.type != NGHTTP2_HEADERS) return 0;
  ProxyStream* stream = StreamOf(session, frame->hd.stream_id);
  if (stream == nullptr) return 0;
  stream->OnResponseHeader(name, value, flags, frame->headers.cat == NGHTTP2_HCAT_HEADERS);
  return 0;
}

int UpstreamConnection::OnFrameRecv(nghttp2_session* session, const nghttp2_frame* frame,
                                    void* user_data) {
  auto* self = static_cast<UpstreamConnection*>(user_data);
  switch (frame->hd.type) {
    case NGHTTP2_HEADERS: {
      ProxyStream* stream = StreamOf(session, frame->hd.stream_id);
      if (stream == nullptr) return 0;
      bool end = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
      stream->OnResponseHeadersComplete(end, frame->headers.cat == NGHTTP2_HCAT_HEADERS);
      break;
    }
    case NGHTTP2_DATA:
      if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) {
        if (ProxyStream* stream = StreamOf(session, frame->hd.stream_id)) stream->OnResponseEnd();
      }
      break;
    case NGHTTP2_GOAWAY:
      // Streams above last_stream_id are closed by nghttp2 with REFUSED_STREAM and retried
      // elsewhere; the rest finish here. No new streams go to this connection.
      LogInfo(self->Describe(), ": GOAWAY (", nghttp2_http2_strerror(frame->goaway.error_code),
              ", last stream ", frame->goaway.last_stream_id, ")");
      self->draining_ = true;
      self->MaybeRetire();
      break;
    default:
      break;
  }
  return 0;
}

int UpstreamConnection::OnDataChunk(nghttp2_session* session, uint8_t, int32_t stream_id,
                                    const uint8_t* data, size_t length, void*) {
  ProxyStream* stream = StreamOf(session, stream_id);
  if (stream == nullptr) {
    nghttp2_session_consume(session, stream_id, length);
    return 0;
  }
  stream->OnResponseData(data, length);
  return 0;
}

int UpstreamConnection::OnSendData(nghttp2_session* session, nghttp2_frame* frame,
                         const uint8_t* frame_header, size_t length, nghttp2_data_source*,
                         void* user_data) {
  auto* self = static_cast<UpstreamConnection*>(user_data);
  return ProxyStream::SendRequestData(session, *frame, frame_header, length, *self);
}

int UpstreamConnection::OnStreamClose(nghttp2_session* session, int32_t stream_id,
                                      uint32_t error_code, void* user_data) {
  auto* self = static_cast<UpstreamConnection*>(user_data);
  ProxyStream* stream = StreamOf(session, stream_id);
  if (stream != nullptr) {
    self->active_.erase(stream);
    nghttp2_session_set_stream_user_data(session, stream_id, nullptr);
    stream->OnUpstreamStreamClosed(error_code);
  }
  self->MaybeRetire();
  return 0;
}

int UpstreamConnection::OnFrameNotSend(nghttp2_session* session, const nghttp2_frame* frame,
                                       int lib_error, void* user_data) {
  auto* self = static_cast<UpstreamConnection*>(user_data);
  if (frame->hd.type != NGHTTP2_HEADERS) return 0;
  ProxyStream* stream = StreamOf(session, frame->hd.stream_id);
  if (stream == nullptr) return 0;
  // The request never left: e.g. GOAWAY arrived first. Safe to try another connection.
  self->active_.erase(stream);
  nghttp2_session_set_stream_user_data(session, frame->hd.stream_id, nullptr);
  stream->OnUpstreamFailed(StrCat("request not sent upstream: ", nghttp2_strerror(lib_error)),
                           /*refused=*/true);
  return 0;
}

}  // namespace sepal
