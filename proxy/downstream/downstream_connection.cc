// DownstreamConnection: HTTP/2 server session callbacks → ProxyStream events.
#include "proxy/downstream/downstream_connection.h"

#include <cstring>

#include "proxy/common/log.h"
#include "proxy/common/log_rate_limit.h"
#include "proxy/common/strings.h"
#include "proxy/http2/session_options.h"
#include "proxy/identity/tailscale_provider.h"
#include "proxy/listener/listener.h"
#include "proxy/listener/proxy_protocol.h"
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
LogRateLimit g_log_tls("TLS handshake failures");
LogRateLimit g_log_identity("identity lookups");
LogRateLimit g_log_peer_limits("peer limits");
LogRateLimit g_log_glitches("too many glitches");
LogRateLimit g_log_stalled("stalled requests");

bool LooksLikeHttp1(const uint8_t* data, size_t length) {
  // "GET / HTTP/1.1", "POST ...", "PRI" is HTTP/2's own preface and handled by nghttp2.
  size_t i = 0;
  while (i < length && i < 8 && data[i] >= 'A' && data[i] <= 'Z') ++i;
  return i >= 3 && i < length && data[i] == ' ';
}

}  // namespace

DownstreamConnection::DownstreamConnection(Worker& worker, Listener& listener, Socket socket,
                                           identity::PeerAddress peer,
                                           boost::asio::ip::address local_ip)
    : Http2Connection(worker, std::move(socket)),
      listener_(listener),
      routes_(listener.routes()),
      peer_address_(std::move(peer)),
      peer_(peer_address_.ToString()),
      destination_ip_(local_ip) {}

DownstreamConnection::~DownstreamConnection() = default;

void DownstreamConnection::Start() {
  worker_.Register(this);
  listener_.ConnectionOpened();
  if (routes_->config.proxy_protocol != config::ProxyProtocol::kNone) {
    ReadProxyHeader();
    return;
  }
  StartTransport({});
}

void DownstreamConnection::StartTransport(std::string_view initial_bytes) {
  if (routes_->config.tls) {
    StartTls(initial_bytes);
  } else {
    StartHttp2(initial_bytes);
  }
}

void DownstreamConnection::StartTls(std::string_view initial_bytes) {
  tls_context_ = routes_->tls_slot ? routes_->tls_slot->Current() : nullptr;
  if (!tls_context_) {
    FailTls(tls::reason::kNoCertificate, "no certificate yet (waiting for tailscaled)");
    return;
  }
  // The deadline covers sniffing and the handshake. The timer may fire after this
  // connection is gone: it holds only a weak reference.
  handshake_timer_ = std::make_unique<boost::asio::steady_timer>(
      worker_.io(), routes_->config.tls->handshake_timeout);
  std::weak_ptr<Http2Connection> weak = shared_from_this();
  handshake_timer_->async_wait([weak](boost::system::error_code ec) {
    auto self = std::static_pointer_cast<DownstreamConnection>(weak.lock());
    if (ec || !self || self->closed() || self->handshake_done_) return;
    self->FailTls(tls::reason::kTimeout,
                  StrCat("no TLS handshake within ",
                         self->routes_->config.tls->handshake_timeout.count(), " ms"));
  });
  tls_first_bytes_.assign(initial_bytes);
  SniffTls();
}

void DownstreamConnection::SniffTls() {
  // A TLS record starts 0x16 (handshake) 0x03 (major version); two bytes decide.
  const auto& bytes = tls_first_bytes_;
  if (bytes.size() >= 2 || (bytes.size() == 1 && static_cast<uint8_t>(bytes[0]) != 0x16)) {
    if (static_cast<uint8_t>(bytes[0]) == 0x16 && static_cast<uint8_t>(bytes[1]) == 0x03) {
      Handshake();
    } else {
      RefuseNonTls();
    }
    return;
  }
  auto self = std::static_pointer_cast<DownstreamConnection>(shared_from_this());
  ReadMoreRaw(&DownstreamConnection::tls_first_bytes_, [self](boost::system::error_code ec) {
    if (ec) {
      // Connected and left without a byte (port probes): nothing to count.
      self->Close("closed before the TLS handshake");
      return;
    }
    self->SniffTls();
  });
}

void DownstreamConnection::RefuseNonTls() {
  const auto* data = reinterpret_cast<const uint8_t*>(tls_first_bytes_.data());
  size_t length = tls_first_bytes_.size();
  if (LooksLikeHttp1(data, length)) {
    static constexpr std::string_view kBody =
        "sepal: this port accepts TLS (HTTP/2, gRPC) only; use https / a TLS gRPC channel\n";
    if (g_log_bad_input.Allow()) LogWarning("listener ", listener_.name(), ": ", peer_,
               " sent a cleartext HTTP/1.x request on a TLS port; closing");
    listener_.stats().TlsHandshakeError(tls::reason::kNotTls);
    WriteRawAndClose(StrCat("HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n"
                            "Connection: close\r\nContent-Length: ",
                            kBody.size(), "\r\n\r\n", kBody),
                     "HTTP/1.x request on a TLS port");
    return;
  }
  size_t n = std::min(length, kClientPreface.size());
  FailTls(tls::reason::kNotTls,
          std::memcmp(data, kClientPreface.data(), n) == 0
              ? "cleartext HTTP/2 (h2c) on a TLS port"
              : "the first bytes are not a TLS ClientHello");
}

void DownstreamConnection::Handshake() {
  Transport::TlsStream& stream = transport_.StartTls(tls_context_->context);
  tls::AttachHandshakeNotes(stream.native_handle(), &handshake_notes_);
  auto self = std::static_pointer_cast<DownstreamConnection>(shared_from_this());
  // The bytes already read are the start of the ClientHello; the handshake consumes them
  // (tls_first_bytes_ stays untouched until it completes).
  stream.async_handshake(boost::asio::ssl::stream_base::server,
                         boost::asio::buffer(tls_first_bytes_),
                         [self](boost::system::error_code ec, size_t) {
                           if (self->closed()) return;
                           self->OnHandshake(ec);
                         });
}

void DownstreamConnection::OnHandshake(const boost::system::error_code& ec) {
  SSL* ssl = transport_.tls()->native_handle();
  if (ec) {
    FailTls(tls::ClassifyHandshakeError(ec, handshake_notes_), tls::DescribeTlsError(ec, ssl));
    return;
  }
  if (!tls::NegotiatedH2(ssl)) {  // the ALPN callbacks refuse this already; belt and braces
    FailTls(tls::reason::kNoAlpnH2, "the client did not negotiate h2");
    return;
  }
  handshake_done_ = true;
  handshake_timer_->cancel();
  tls_first_bytes_.clear();
  tls_first_bytes_.shrink_to_fit();
  LogDebug("listener ", listener_.name(), ": ", peer_, ": TLS ", SSL_get_version(ssl), " ",
           SSL_get_cipher_name(ssl));
  StartHttp2({});
}

void DownstreamConnection::FailTls(std::string_view reason, std::string_view detail) {
  if (g_log_tls.Allow()) LogWarning("listener ", listener_.name(), ": ", peer_, ": TLS handshake failed (", reason,
             "): ", detail, "; closing");
  listener_.stats().TlsHandshakeError(reason);
  Close(StrCat("TLS handshake failed: ", detail));
}

template <typename Then>
void DownstreamConnection::ReadMoreRaw(std::string DownstreamConnection::*buffer, Then then) {
  auto self = std::static_pointer_cast<DownstreamConnection>(shared_from_this());
  std::string& bytes = this->*buffer;
  size_t old_size = bytes.size();
  bytes.resize(old_size + 512);
  socket().async_read_some(boost::asio::buffer(bytes.data() + old_size, 512),
                           [self, buffer, old_size, then = std::move(then)](
                               boost::system::error_code ec, size_t n) mutable {
                             if (self->closed()) return;
                             ((*self).*buffer).resize(old_size + n);
                             then(ec);
                           });
}

void DownstreamConnection::ReadProxyHeader() {
  auto self = std::static_pointer_cast<DownstreamConnection>(shared_from_this());
  if (!proxy_header_timer_) {
    proxy_header_timer_ = std::make_unique<boost::asio::steady_timer>(
        worker_.io(), std::chrono::seconds(5));
    proxy_header_timer_->async_wait([self](boost::system::error_code ec) {
      if (ec || self->closed() || self->session_ != nullptr) return;
      if (g_log_bad_input.Allow()) LogWarning("listener ", self->listener_.name(), ": ", self->peer_,
                 ": no complete PROXY protocol header within 5 s; closing");
      self->CountProtocolError("proxy_header");
      self->Close("PROXY header timeout");
    });
  }
  ReadMoreRaw(&DownstreamConnection::proxy_header_buffer_,
      [self](boost::system::error_code ec) {
        if (ec) {
          self->Close("closed before the PROXY header");
          return;
        }
        const auto* data = reinterpret_cast<const uint8_t*>(self->proxy_header_buffer_.data());
        ProxyParseResult parsed = ParseProxyHeader(data, self->proxy_header_buffer_.size(),
                                                   self->routes_->config.proxy_protocol);
        switch (parsed.status) {
          case ProxyParseStatus::kNeedMore:
            self->ReadProxyHeader();
            return;
          case ProxyParseStatus::kError:
            if (g_log_bad_input.Allow()) LogWarning("listener ", self->listener_.name(), ": ", self->peer_,
                       ": bad PROXY protocol header: ", parsed.error, "; closing");
            self->CountProtocolError("proxy_header");
            self->Close("bad PROXY header");
            return;
          case ProxyParseStatus::kDone:
            break;
        }
        self->proxy_header_timer_->cancel();
        if (!parsed.header.local) {
          self->peer_address_ = {parsed.header.source_ip, parsed.header.source_port};
          self->peer_ = self->peer_address_.ToString();
          self->destination_ip_ = parsed.header.destination_ip;
        }
        std::string rest = self->proxy_header_buffer_.substr(parsed.header.header_length);
        self->proxy_header_buffer_.clear();
        self->proxy_header_buffer_.shrink_to_fit();
        self->StartTransport(rest);
      });
}

void DownstreamConnection::StartHttp2(std::string_view initial_bytes) {
  BeginIdentityLookup();
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
  bool started_late = routes_->config.tls ||
                      routes_->config.proxy_protocol != config::ProxyProtocol::kNone;
  if (started_late && !closed() && (worker_.draining() || listener_.retired())) {
    BeginShutdown(/*final_goaway=*/true);
  }
}

void DownstreamConnection::BeginIdentityLookup() {
  identity::IdentityProvider* provider = routes_->generation->identity.get();
  if (provider == nullptr) {
    TakePeerSlot();  // the peer is its address
    return;
  }
  identity_state_ = IdentityState::kPending;
  lookup_started_ = std::chrono::steady_clock::now();
  // The CapMap toward what the peer reached: the listener's Tailscale Service, else the
  // tailnet address it dialled (several addresses, or a Service's own address, grant
  // differently). Loopback and other addresses are not sent: tailscaled's default applies.
  identity::LookupDestination destination;
  destination.service = routes_->config.tailscale_service;
  boost::asio::ip::address dialled = destination_ip_;
  if (dialled.is_v6() && dialled.to_v6().is_v4_mapped()) {  // a [::] listener's IPv4 peer
    dialled = boost::asio::ip::make_address_v4(boost::asio::ip::v4_mapped, dialled.to_v6());
  }
  if (destination.service.empty() &&
      identity::TailscaleIdentityProvider::IsTailscaleAddress(dialled)) {
    destination.ip = dialled;
  }
  std::weak_ptr<Http2Connection> weak = shared_from_this();
  provider->LookupToward(peer_address_, destination, worker_.io().get_executor(),
                   [weak](identity::LookupResult result) {
                     auto self = std::static_pointer_cast<DownstreamConnection>(weak.lock());
                     if (self && !self->closed()) self->OnIdentity(std::move(result));
                   });
}

void DownstreamConnection::OnIdentity(identity::LookupResult result) {
  lookup_ = std::move(result);
  identity_state_ = IdentityState::kReady;
  const stats::Families& families = stats::GetFamilies();
  families.identity_lookups->WithLabels({std::string(identity::LookupResultName(lookup_.kind))})
      .Increment(worker_.index());
  families.identity_lookup_duration->WithLabels({}).Observe(
      worker_.index(),
      std::chrono::duration<double>(std::chrono::steady_clock::now() - lookup_started_).count());
  switch (lookup_.kind) {
    case identity::LookupResult::Kind::kFound:
      identity_headers_ = std::make_unique<filters::IdentityHeaders>(*lookup_.identity);
      LogDebug("listener ", listener_.name(), ": ", peer_, " is ", lookup_.identity->Describe());
      break;
    case identity::LookupResult::Kind::kNotInTailnet:
      if (g_log_identity.Allow()) LogInfo("listener ", listener_.name(), ": ", peer_, " is not a tailnet peer: ",
              lookup_.detail);
      break;
    case identity::LookupResult::Kind::kFailed:
      if (g_log_identity.Allow()) LogWarning("listener ", listener_.name(), ": identity lookup for ", peer_,
                 " failed: ", lookup_.detail);
      break;
  }
  TakePeerSlot();
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
    if (g_log_bad_input.Allow()) LogWarning("listener ", listener_.name(), ": ", peer_,
               " started a TLS handshake on a cleartext (h2c) port; closing");
    CountProtocolError("tls_on_cleartext");
    Close("TLS on cleartext port");
    return false;
  }
  if (LooksLikeHttp1(data, length)) {
    if (g_log_bad_input.Allow()) LogWarning("listener ", listener_.name(), ": ", peer_,
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
  if (g_log_bad_input.Allow()) LogWarning("listener ", listener_.name(), ": ", peer_,
             " sent bytes that are not an HTTP/2 connection preface; closing");
  CountProtocolError("bad_preface");
  Close("bad connection preface");
  return false;
}

void DownstreamConnection::CountProtocolError(std::string_view kind) {
  listener_.stats().ProtocolError(kind);
}

void DownstreamConnection::RecordCall(std::string_view path, int grpc_status,
                                      uint64_t request_bytes, uint64_t response_bytes,
                                      std::string_view reason) {
  path = path.substr(0, kMaxRecordedPath);
  auto now = std::chrono::system_clock::now();
  if (holds_connection_slot_) {
    peer_entry_->activity().CallFinished(path, grpc_status, request_bytes, response_bytes,
                                         reason, now);
  } else if (identity_pending() && calls_before_identity_.size() < kMaxCallsBeforeIdentity) {
    calls_before_identity_.push_back({std::string(path), grpc_status, request_bytes,
                                      response_bytes, std::string(reason), now});
  }
}

void DownstreamConnection::TakePeerSlot() {
  if (!routes_->peers) {
    calls_before_identity_.clear();
    return;
  }
  const identity::PeerIdentity* who =
      identity_state_ == IdentityState::kReady && lookup_.identity ? lookup_.identity.get()
                                                                   : nullptr;
  peer_caps_ = &limits::LimitsFor(routes_->config.peer_limits, who);
  peer_entry_ = routes_->peers->Get(limits::PeerKey(who, peer_address_));
  if (peer_entry_->TryOpenConnection(peer_caps_->connections)) {
    holds_connection_slot_ = true;
    peers::PeerActivity& activity = peer_entry_->activity();
    activity.ConnectionOpened(this, peer_, lookup(), std::chrono::system_clock::now());
    for (const FinishedCall& call : calls_before_identity_) {
      activity.CallFinished(call.path, call.grpc_status, call.request_bytes, call.response_bytes,
                            call.reason, call.time);
    }
    calls_before_identity_.clear();
    return;
  }
  calls_before_identity_.clear();
  over_connection_cap_ = true;
  listener_.stats().LimitRejection(limits::limit::kPeerConnections);
  if (g_log_peer_limits.Allow()) {
    LogWarning("listener ", listener_.name(), ": ", peer_, " (", peer_entry_->key(),
               ") is over its cap of ", peer_caps_->connections,
               " connections (peer_limits.connections); its calls are refused");
  }
  // Its calls are answered UNAVAILABLE with the reason (AdmitCall), then it is sent GOAWAY;
  // one that sends no call is sent GOAWAY after a couple of seconds (Tick).
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
  if (!peer_entry_) return {};
  const config::PeerLimitValues& caps = *peer_caps_;
  std::string_view refused;
  if (over_connection_cap_) {
    refused = limits::limit::kPeerConnections;
    *message = StrCat("sepal: ", peer_entry_->name(), " has ", caps.connections,
                      " connections open to listener ", listener_.name(),
                      " (peer_limits.connections); use one");
    SendCapGoAway();
    return refused;  // counted once, when the connection was refused
  }
  if (!peer_entry_->TryStartCall(caps.concurrent_calls)) {
    refused = limits::limit::kPeerConcurrentCalls;
    *message = StrCat("sepal: ", peer_entry_->name(), " has ", caps.concurrent_calls,
                      " calls in flight on listener ", listener_.name(),
                      " (peer_limits.concurrent_calls)");
  } else if (!peer_entry_->TryTakeCallToken(now, caps.calls_per_second, caps.calls_burst)) {
    peer_entry_->EndCall();
    refused = limits::limit::kPeerCallRate;
    *message = StrCat("sepal: ", peer_entry_->name(), " is over ",
                      caps.calls_per_second, " calls per second on listener ",
                      listener_.name(), " (peer_limits.calls_per_second)");
  } else {
    *slot = peer_entry_;
    return {};
  }
  listener_.stats().LimitRejection(refused);
  if (g_log_peer_limits.Allow()) {
    LogInfo("listener ", listener_.name(), ": refused a call from ", peer_, ": ", *message);
  }
  return refused;
}

void DownstreamConnection::Glitch(std::string_view kind) {
  listener_.stats().Glitch(kind);
  if (calming_ || closed() || session_ == nullptr) return;
  if (glitches_.Count(routes_->config.limits, std::chrono::steady_clock::now())) return;
  calming_ = true;
  CountProtocolError("glitches");
  if (g_log_glitches.Allow()) {
    LogWarning("listener ", listener_.name(), ": ", peer_, " sent too many frames or streams "
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
  if (over_connection_cap_ && streams_.empty() && ++idle_ticks_over_cap_ >= 2) SendCapGoAway();
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
      LogInfo("listener ", listener_.name(), ": ", peer_, " stream ", id, ": no request data for ",
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
  if (handshake_timer_) handshake_timer_->cancel();
  // Its handler holds this connection: without the cancel a connection closed during its
  // PROXY header (bad header, client gone) and its buffers stayed alive for the full 5 s.
  if (proxy_header_timer_) proxy_header_timer_->cancel();
  LogDebug("listener ", listener_.name(), ": connection from ", peer_, " closed: ", reason,
           " (", streams_.size(), " streams open)");
  // Streams reset their upstream halves as they go (and record themselves in the peer's
  // activity, so the slot is given back after them).
  for (auto& [id, stream] : streams_) {
    if (session_ != nullptr) nghttp2_session_set_stream_user_data(session_, id, nullptr);
  }
  streams_.clear();
  if (holds_connection_slot_) {
    holds_connection_slot_ = false;
    peer_entry_->activity().ConnectionClosed(this);
    peer_entry_->CloseConnection();
  }
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
    LogDebug("listener ", self->listener_.name(), ": ", self->peer_, " stream ", stream_id,
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
  if (g_log_bad_input.Allow()) LogInfo("listener ", self->listener_.name(), ": ", self->peer_, " sent an invalid frame (type ",
          static_cast<int>(frame->hd.type), ", stream ", frame->hd.stream_id,
          "): ", nghttp2_strerror(lib_error));
  return 0;
}

}  // namespace sepal
