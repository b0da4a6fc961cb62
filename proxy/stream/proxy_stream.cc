// ProxyStream: forwards one call between the downstream and upstream HTTP/2 sessions.
//
// Flow control: neither side's receive window is opened by nghttp2 on its own
// (no_auto_window_update). Bytes received on one side are appended to a ChunkBuffer and
// acknowledged (nghttp2_session_consume) only when the other side's session has taken them
// to send. A slow reader therefore closes the writer's window instead of growing memory:
// per stream at most one receive window of each direction is buffered.
#include "proxy/stream/proxy_stream.h"

#include <algorithm>

#include "filters/access_log/access_log.h"
#include "filters/authz/authz_filter.h"
#include "filters/grpc_adapter/adapter_inspector.h"
#include "filters/identity_headers/identity_headers.h"
#include "proxy/common/log.h"
#include "proxy/common/log_rate_limit.h"
#include "proxy/common/strings.h"
#include "proxy/downstream/downstream_connection.h"
#include "proxy/listener/listener.h"
#include "proxy/router/router.h"
#include "proxy/stats/proxy_metrics.h"
#include "proxy/upstream/upstream_connection.h"
#include "proxy/upstream/upstream_pool.h"
#include "proxy/worker/worker.h"

namespace sepal {

namespace {
// A request refused by the upstream (GOAWAY race, REFUSED_STREAM) is replayed on another
// connection if no more than this much body was sent and no response started.
constexpr size_t kRetryBufferLimit = 64 * 1024;
constexpr int kMaxAttempts = 3;
}  // namespace

ProxyStream::ProxyStream(DownstreamConnection& downstream, int32_t stream_id)
    : downstream_(downstream),
      downstream_id_(stream_id),
      routes_(downstream.listener().routes()),
      request_body_(&downstream.worker().chunk_pool()),
      response_body_(&downstream.worker().chunk_pool()),
      progress_tick_(downstream.worker().ticks()),
      started_(std::chrono::steady_clock::now()) {
  request_body_.EnableRetention(kRetryBufferLimit);
  downstream_.listener().stats().StreamOpened();
}

ProxyStream::~ProxyStream() {
  DetachUpstream(NGHTTP2_CANCEL);
  if (peer_call_) peer_call_->EndCall();
  if (breaker_call_ != nullptr) breaker_call_->EndCall();
  DropResponseBody();
  // Request bytes received but never forwarded: the stream is gone, so only the
  // downstream connection's window needs them back.
  if (request_received_ > request_consumed_) {
    nghttp2_session_consume_connection(downstream_.session(),
                                       request_received_ - request_consumed_);
  }
  RecordStats();
}

void ProxyStream::AckResponseBytes(size_t n) {
  if (n == 0) return;
  if (upstream_ != nullptr && upstream_id_ > 0) {
    nghttp2_session_consume(upstream_->session(), upstream_id_, n);
    upstream_->ScheduleFlush();
    return;
  }
  std::shared_ptr<Http2Connection> source = response_source_.lock();
  if (source && !source->closed() && source->session() != nullptr) {
    nghttp2_session_consume_connection(source->session(), n);
    source->ScheduleFlush();
  }
}

void ProxyStream::DropResponseBody() {
  AckResponseBytes(response_body_.size());
  response_body_.Clear();
}

void ProxyStream::RecordStats() {
  stats::ListenerStats& stats = downstream_.listener().stats();
  stats.StreamClosed();
  std::string_view path = method_path();
  if (path.empty()) return;  // never became a call (e.g. header list too large)
  stats::MethodStats& method = stats.ForPath(path, route_ != nullptr);
  int code = final_code_ < 0 ? static_cast<int>(grpc::StatusCode::kUnknown) : final_code_;
  method.by_code[code].Increment(stats.shard());
  method.duration.Observe(
      stats.shard(),
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count());
  if (request_bytes_ > 0) method.request_bytes.Increment(stats.shard(), request_bytes_);
  if (response_bytes_ > 0) method.response_bytes.Increment(stats.shard(), response_bytes_);
  const identity::LookupResult* lookup = downstream_.lookup();
  const identity::PeerIdentity* peer =
      lookup != nullptr && lookup->identity ? lookup->identity.get() : nullptr;
  if (peer != nullptr && routes_->generation->config->metrics.peer_node_label) {
    stats.PeerBytes(peer->node_name.empty() ? peer->node_fqdn : peer->node_name, request_bytes_,
                    response_bytes_);
  }
  downstream_.RecordCall(path, code, request_bytes_, response_bytes_, local_reason_);
  if (filters::AccessLog* access_log = routes_->generation->access_log.get()) {
    filters::AccessLogEntry entry;
    entry.time = std::chrono::system_clock::now();
    entry.listener = downstream_.listener().name();
    entry.peer = downstream_.peer();
    entry.identity = peer;
    entry.method = path;
    entry.grpc_status = final_code_;
    entry.decision = decision_;
    entry.reason = !local_reason_.empty() ? local_reason_ : authz_reason_;
    entry.duration_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
    entry.request_bytes = request_bytes_;
    entry.response_bytes = response_bytes_;
    if (route_ != nullptr && decision_ != "deny") {
      entry.upstream = routes_->pool(route_->upstream_index).name();
    }
    access_log->Append(stats.shard(), entry);
  }
}

void ProxyStream::SetPending(bool pending) {
  if (pending == pending_) return;
  pending_ = pending;
  limits::UpstreamBreaker* breaker = route_ != nullptr ? routes_->breaker(route_->upstream_index)
                                                       : nullptr;
  if (breaker == nullptr) return;
  if (pending) {
    breaker->AddPending();
  } else {
    breaker->RemovePending();
  }
}

void ProxyStream::DetachUpstream(uint32_t reset_code) {
  SetPending(false);
  // Also covers a stream still queued on a connecting connection (upstream_id_ == -1).
  if (upstream_ != nullptr) {
    upstream_->Detach(this, upstream_id_, reset_code);
    upstream_ = nullptr;
  }
  upstream_id_ = -1;
}

void ProxyStream::OnQueued(UpstreamConnection& upstream) {
  upstream_ = &upstream;
  upstream_id_ = -1;
  SetPending(true);
}

// ---------------------------------------------------------------- downstream events

void ProxyStream::OnRequestHeader(nghttp2_rcbuf* name, nghttp2_rcbuf* value, uint8_t flags) {
  if (request_headers_too_large_) return;
  nghttp2_vec n = nghttp2_rcbuf_get_buf(name);
  nghttp2_vec v = nghttp2_rcbuf_get_buf(value);
  // Identity metadata is sepal's to set: a client's own copies never reach the upstream.
  if (filters::IsReservedIdentityHeader(RcbufView(name))) return;
  // RFC 7541 size accounting, as SETTINGS_MAX_HEADER_LIST_SIZE defines it.
  request_header_bytes_ += n.len + v.len + 32;
  if (request_header_bytes_ > routes_->config.limits.max_header_list_bytes) {
    request_headers_too_large_ = true;
    request_headers_.Clear();
    return;
  }
  request_headers_.Add(name, value, flags);
}

void ProxyStream::OnRequestHeadersComplete(bool end_stream) {
  if (end_stream) request_ended_ = true;
  if (request_headers_too_large_) {
    downstream_.listener().stats().LimitRejection(limits::limit::kHeaderList);
    LocalReply(grpc::StatusCode::kResourceExhausted,
               "request header list larger than max_header_list_bytes", "header_list_too_large");
    return;
  }
  std::string_view path = request_headers_.Get(":path");
  route_ = routes_->router.Match(path);
  if (route_ == nullptr) {
    LocalReply(grpc::StatusCode::kUnimplemented,
               StrCat("sepal: no route for ", path, " on listener ",
                            downstream_.listener().name()),
               "no_route");
    return;
  }
  if (route_->config->inspect == config::RouteConfig::Inspect::kGrpcAdapter) {
    inspect_ = Inspect::kPending;
    if (request_ended_) {
      TryInspect();  // END_STREAM on the headers: no message at all
      return;
    }
  }
  std::string_view timeout = request_headers_.Get("grpc-timeout");
  if (!timeout.empty()) {
    if (auto parsed = grpc::ParseGrpcTimeout(timeout)) StartDeadline(*parsed);
  }
  if (downstream_.identity_pending()) {
    downstream_.WaitForIdentity(downstream_id_);
    return;
  }
  downstream_.QueueAdmission(downstream_id_);
}

std::string_view ProxyStream::method_path() const {
  return wrapped_method_.empty() ? request_headers_.Get(":path") : wrapped_method_;
}

void ProxyStream::ContinueAfterIdentity() {
  if (response_finished_) return;  // e.g. the deadline passed while waiting
  if (inspect_ == Inspect::kPending) {
    // A peer that is no tailnet node, or whose lookup failed, is refused whatever it calls:
    // at once, without waiting for its message. Otherwise TryInspect authorizes the call
    // once the wrapped method is known.
    filters::AuthzDecision identity_check = filters::Authorize(
        *route_->config, downstream_.lookup(), request_headers_.Get(":path"), downstream_.peer());
    if (identity_check.allowed || identity_check.code == grpc::StatusCode::kPermissionDenied) {
      identity_ready_ = true;
      return;
    }
  }
  AuthorizeAndDispatch();
}

void ProxyStream::TryInspect() {
  namespace adapter = filters::grpc_adapter;
  if (response_finished_) return;  // already answered (e.g. refused for its identity)
  uint8_t prefix[adapter::kMaxInspectedBytes];
  size_t n = request_body_.Peek(prefix, sizeof prefix);
  adapter::Inspection inspection = adapter::Inspect({prefix, n}, request_ended_);
  message_end_ = inspection.message_end;
  if (inspection.outcome == adapter::Inspection::Outcome::kNeedMore) return;
  stats::ListenerStats& stats = downstream_.listener().stats();
  if (inspection.outcome == adapter::Inspection::Outcome::kRefused) {
    inspect_ = Inspect::kDone;
    stats.AdapterInspection(inspection.result);
    static LogRateLimit log_refusals("grpc_adapter refusals");
    if (log_refusals.Allow()) {
      LogInfo("grpc_adapter: refused a call from ", downstream_.peer(), " on ",
              downstream_.listener().name(), " (", inspection.result, "): ", inspection.message);
    }
    LocalReply(grpc::StatusCode::kInvalidArgument, inspection.message, inspection.result);
    return;
  }
  inspect_ = Inspect::kDone;
  wrapped_method_ = std::move(inspection.method);
  if (RefusedExtraMessage()) return;
  stats.AdapterInspection(adapter::result::kOk);
  if (identity_ready_) AuthorizeAndDispatch();
}

bool ProxyStream::RefusedExtraMessage() {
  // The wrapped method was read from, and authorized for, the first message only.
  if (request_bytes_ <= message_end_) return false;
  downstream_.listener().stats().AdapterInspection(filters::grpc_adapter::result::kExtraMessage);
  LocalReply(grpc::StatusCode::kInvalidArgument,
             "sepal: grpc_adapter: SendReceive is unary; the request carries a second message",
             filters::grpc_adapter::result::kExtraMessage);
  return true;
}

void ProxyStream::AuthorizeAndDispatch() {
  std::string_view path = method_path();
  filters::AuthzDecision decision =
      filters::Authorize(*route_->config, downstream_.lookup(), path, downstream_.peer());
  decision_ = decision.label();
  downstream_.listener().stats().AuthzDecision(decision_, decision.reason);
  authz_reason_ = decision.reason;
  if (!decision.allowed) {
    static LogRateLimit log_denials("authz denials");
    if (log_denials.Allow()) LogInfo("authz: deny ", path, " for ", downstream_.peer(), " on ",
            downstream_.listener().name(), " (", decision.reason, ")");
    LocalReply(decision.code, decision.message, decision.reason);
    return;
  }
  if (decision.audited) {
    static LogRateLimit log_audits("authz audit denials");
    if (log_audits.Allow()) LogInfo("authz: audit_deny ", path, " for ", downstream_.peer(), " on ",
            downstream_.listener().name(), " (", decision.reason, "): forwarded, the route is in audit mode");
  } else {
    LogDebug("authz: allow ", path, " for ", downstream_.peer(), " (", decision.reason, ")");
  }
  if (!Admit()) return;
  Dispatch();
}

const config::CircuitBreakerConfig& ProxyStream::BreakerCaps() const {
  return routes_->generation->config->upstreams[route_->upstream_index].circuit_breaker;
}

bool ProxyStream::Admit() {
  std::string message;
  auto now = std::chrono::steady_clock::now();
  std::string_view refused = downstream_.AdmitCall(now, &peer_call_, &message);
  if (refused.empty()) {
    limits::UpstreamBreaker* breaker = routes_->breaker(route_->upstream_index);
    if (breaker == nullptr) return true;
    refused = breaker->TryStartCall(BreakerCaps(), now);
    if (refused.empty()) {
      breaker_call_ = breaker;
      return true;
    }
    downstream_.listener().stats().LimitRejection(refused);
    message = StrCat("sepal: upstream ", routes_->pool(route_->upstream_index).name(),
                     " is at its ", refused, " cap (upstreams[].circuit_breaker); retry later");
  }
  // UNAVAILABLE: the one code a Flower SuperNode retries (with backoff); the call never
  // reached the upstream, so retrying is safe.
  LocalReply(grpc::StatusCode::kUnavailable, message, refused);
  return false;
}

void ProxyStream::OnRequestTrailer(nghttp2_rcbuf* name, nghttp2_rcbuf* value, uint8_t flags) {
  // As for headers: identity metadata is sepal's to set, in trailers too.
  if (filters::IsReservedIdentityHeader(RcbufView(name))) return;
  request_trailers_.Add(name, value, flags);
}

void ProxyStream::Dispatch() {
  ++attempts_;
  UpstreamPool& pool = routes_->pool(route_->upstream_index);
  limits::UpstreamBreaker* breaker = routes_->breaker(route_->upstream_index);
  if (breaker != nullptr && !pool.HasReadyCapacity() && breaker->PendingFull(BreakerCaps())) {
    downstream_.listener().stats().LimitRejection(limits::limit::kUpstreamPending);
    LocalReply(grpc::StatusCode::kUnavailable,
               StrCat("sepal: upstream ", pool.name(),
                      " is not connected and too many calls wait for it "
                      "(upstreams[].circuit_breaker.max_pending_streams); retry later"),
               limits::limit::kUpstreamPending);
    return;
  }
  pool.Dispatch(this);
}

uint64_t ProxyStream::RequestStalledFor(uint64_t now_ticks) {
  // An inspecting call waits on the client until its wrapped method arrives, whatever it
  // has buffered.
  bool waiting_on_client = route_ != nullptr && !request_ended_ && !response_started_ &&
                           !response_finished_ &&
                           (request_body_.empty() || inspect_ == Inspect::kPending);
  if (!waiting_on_client) {
    progress_tick_ = now_ticks;
    return 0;
  }
  return now_ticks - progress_tick_;
}

void ProxyStream::Shed() {
  downstream_.listener().stats().LimitRejection(limits::limit::kMemory);
  LocalReply(grpc::StatusCode::kUnavailable,
             "sepal: over its memory budget (memory.high_watermark_bytes); retry later",
             limits::limit::kMemory);
  reset_after_response_ = true;
}

void ProxyStream::OnRequestStalled(std::chrono::seconds timeout) {
  LocalReply(grpc::StatusCode::kUnavailable,
             StrCat("sepal: the request made no progress for ", timeout.count(),
                    " s (limits.request_progress_timeout)"),
             limits::limit::kRequestProgress);
  // Once the answer is out, the client is asked to stop sending (RFC 9113 8.1) so the
  // stream does not linger half-open (DownstreamConnection::OnFrameSend).
  reset_after_response_ = true;
}

void ProxyStream::OnRequestData(const uint8_t* data, size_t length) {
  request_bytes_ += length;
  progress_tick_ = downstream_.worker().ticks();
  request_received_ += length;
  if (upstream_ended_ || response_finished_ || route_ == nullptr) {
    // Nobody will read this body any more: acknowledge it so the connection window stays
    // open for the client's other streams.
    ConsumeDownstream(length);
    request_consumed_ += length;
    return;
  }
  request_body_.Append(data, length);
  if (inspect_ == Inspect::kPending) {
    TryInspect();
    return;
  }
  if (inspect_ == Inspect::kDone && RefusedExtraMessage()) return;
  ResumeUpstreamSend();
}

void ProxyStream::OnRequestEnd() {
  request_ended_ = true;
  if (inspect_ == Inspect::kPending) {
    TryInspect();
    return;
  }
  ResumeUpstreamSend();
}

void ProxyStream::OnDownstreamClosed(uint32_t error_code) {
  if (error_code != NGHTTP2_NO_ERROR) SetFinalCode(stats::CodeForReset(error_code));
  DetachUpstream(error_code == NGHTTP2_NO_ERROR ? uint32_t{NGHTTP2_CANCEL} : error_code);
}

void ProxyStream::ResumeUpstreamSend() {
  if (upstream_ == nullptr || !upstream_send_deferred_) return;
  upstream_send_deferred_ = false;
  nghttp2_session_resume_data(upstream_->session(), upstream_id_);
  upstream_->ScheduleFlush();
}

void ProxyStream::ConsumeDownstream(size_t n) {
  if (n == 0) return;
  nghttp2_session_consume(downstream_.session(), downstream_id_, n);
  downstream_.ScheduleFlush();
}

void ProxyStream::DropRequestBody() {
  // Acknowledge what the client sent but nobody will forward.
  if (request_received_ > request_consumed_) {
    ConsumeDownstream(request_received_ - request_consumed_);
    request_consumed_ = request_received_;
  }
  request_body_.Clear();
}

// ---------------------------------------------------------------- upstream events

void ProxyStream::AttachUpstream(UpstreamConnection& upstream) {
  upstream_ = nullptr;
  SetPending(false);
  if (response_finished_) return;
  bool has_body = !request_ended_ || !request_body_.empty();
  const filters::IdentityHeaders* identity = downstream_.identity_headers();
  std::vector<nghttp2_nv> nv =
      identity != nullptr ? request_headers_.ToNv(identity->fields()) : request_headers_.ToNv();
  int32_t id = upstream.Submit(this, nv, has_body);
  if (id < 0) {
    LocalReply(grpc::StatusCode::kUnavailable,
               StrCat("sepal: upstream rejected request: ", nghttp2_strerror(id)),
               "upstream_submit_failed");
    return;
  }
  upstream_ = &upstream;
  upstream_id_ = id;
  upstream_send_deferred_ = false;
  response_source_ = upstream.shared_from_this();
}

void ProxyStream::OnResponseHeader(nghttp2_rcbuf* name, nghttp2_rcbuf* value, uint8_t flags,
                                   bool is_trailer) {
  (is_trailer ? response_trailers_ : response_headers_).Add(name, value, flags);
  if (RcbufView(name) == "grpc-status") {
    std::string_view v = RcbufView(value);
    int code = 0;
    for (char c : v) code = (c >= '0' && c <= '9' && code < 100) ? code * 10 + (c - '0') : 999;
    SetFinalCode(!v.empty() && code <= 16 ? static_cast<grpc::StatusCode>(code)
                                          : grpc::StatusCode::kUnknown);
  }
}

void ProxyStream::OnResponseHeadersComplete(bool end_stream, bool is_trailer) {
  if (response_finished_) return;
  if (!is_trailer) {
    std::string_view status = response_headers_.Get(":status");
    if (status.size() == 3 && status[0] == '1') {
      response_headers_.Clear();  // interim response: nothing to forward for gRPC
      return;
    }
    // The upstream has seen the request: a replay is no longer possible or needed.
    request_body_.DisableRetention();
    response_started_ = true;
    std::vector<nghttp2_nv> nv = response_headers_.ToNv();
    nghttp2_data_provider provider{};
    provider.source.ptr = this;
    provider.read_callback = &ProxyStream::ReadResponseBody;
    if (end_stream) {
      upstream_ended_ = true;
      response_finished_ = true;
    }
    int rv = nghttp2_submit_response(downstream_.session(), downstream_id_, nv.data(), nv.size(),
                                     end_stream ? nullptr : &provider);
    response_headers_.Clear();
    if (rv != 0) {
      LogWarning("stream ", downstream_id_, ": cannot forward response headers: ",
                 nghttp2_strerror(rv));
      nghttp2_submit_rst_stream(downstream_.session(), NGHTTP2_FLAG_NONE, downstream_id_,
                                NGHTTP2_INTERNAL_ERROR);
    }
    downstream_.ScheduleFlush();
    return;
  }
  // Trailers: sent once the buffered body is drained (see ReadResponseBody).
  upstream_ended_ = true;
  ResumeDownstreamSend();
}

void ProxyStream::OnResponseData(const uint8_t* data, size_t length) {
  response_bytes_ += length;
  if (response_finished_ || local_trailers_pending_) {
    AckResponseBytes(length);
    return;
  }
  response_body_.Append(data, length);
  ResumeDownstreamSend();
}

void ProxyStream::OnResponseEnd() {
  upstream_ended_ = true;
  ResumeDownstreamSend();
}

void ProxyStream::ResumeDownstreamSend() {
  if (!response_started_ || !downstream_send_deferred_) return;
  downstream_send_deferred_ = false;
  nghttp2_session_resume_data(downstream_.session(), downstream_id_);
  downstream_.ScheduleFlush();
}

void ProxyStream::OnUpstreamStreamClosed(uint32_t error_code) {
  upstream_ = nullptr;
  upstream_id_ = -1;
  if (upstream_ended_ && error_code == NGHTTP2_NO_ERROR) {
    // Normal end. A request body still in flight has no reader any more.
    if (!request_ended_ || !request_body_.empty()) DropRequestBody();
    return;
  }
  if (error_code == NGHTTP2_REFUSED_STREAM && !response_started_) {
    OnUpstreamFailed("upstream refused the stream", /*refused=*/true);
    return;
  }
  DropRequestBody();
  if (!response_started_) {
    LocalReply(grpc::StatusCode::kUnavailable,
               StrCat("sepal: upstream reset the stream (", nghttp2_http2_strerror(error_code),
                            ")"),
               "upstream_reset");
    return;
  }
  // Mid-response: pass the reset on with the same code, as the client would have seen it.
  SetFinalCode(stats::CodeForReset(error_code));
  response_finished_ = true;
  DropResponseBody();
  nghttp2_submit_rst_stream(downstream_.session(), NGHTTP2_FLAG_NONE, downstream_id_,
                            error_code == NGHTTP2_NO_ERROR ? uint32_t{NGHTTP2_INTERNAL_ERROR} : error_code);
  downstream_.ScheduleFlush();
}

void ProxyStream::OnUpstreamFailed(std::string_view why, bool refused) {
  upstream_ = nullptr;
  SetPending(false);
  upstream_id_ = -1;
  if (response_finished_) return;
  if (refused && !response_started_ && request_body_.retaining() && attempts_ < kMaxAttempts &&
      !downstream_.worker().draining()) {
    // Replay the request from the first byte on a fresh attempt.
    size_t before = request_body_.size();
    request_body_.Rewind();
    request_read_position_ -= request_body_.size() - before;
    upstream_send_deferred_ = false;
    LogDebug("stream ", downstream_id_, ": ", why, "; retrying (attempt ", attempts_ + 1, ")");
    Dispatch();
    return;
  }
  DropRequestBody();
  if (!response_started_) {
    LocalReply(grpc::StatusCode::kUnavailable, StrCat("sepal: ", why), "upstream_failed");
    return;
  }
  SetFinalCode(grpc::StatusCode::kUnavailable);
  response_finished_ = true;
  DropResponseBody();
  nghttp2_submit_rst_stream(downstream_.session(), NGHTTP2_FLAG_NONE, downstream_id_,
                            NGHTTP2_INTERNAL_ERROR);
  downstream_.ScheduleFlush();
}

// ---------------------------------------------------------------- local replies

void ProxyStream::LocalReply(grpc::StatusCode code, std::string_view message,
                             std::string_view details) {
  if (response_finished_) return;
  local_reason_ = details;
  LogDebug("stream ", downstream_id_, " from ", downstream_.peer(), ": local reply ",
           grpc::StatusCodeName(code), " (", details, "): ", message);
  DetachUpstream(NGHTTP2_CANCEL);
  DropRequestBody();
  SetFinalCode(code);
  local_code_ = code;
  local_message_ = grpc::EncodeGrpcMessage(message);
  std::string code_text = std::to_string(static_cast<int>(code));
  if (!response_started_) {
    response_started_ = true;
    response_finished_ = true;
    nghttp2_nv nv[] = {HeaderList::MakeNv(":status", "200"),
                       HeaderList::MakeNv("content-type", "application/grpc"),
                       HeaderList::MakeNv("grpc-status", code_text),
                       HeaderList::MakeNv("grpc-message", local_message_)};
    nghttp2_submit_response(downstream_.session(), downstream_id_, nv, 4, nullptr);
  } else {
    // Response under way: finish it with our trailers once the provider is called again.
    local_trailers_pending_ = true;
    upstream_ended_ = true;
    DropResponseBody();
    downstream_send_deferred_ = true;  // force a resume
    ResumeDownstreamSend();
  }
  downstream_.ScheduleFlush();
}

void ProxyStream::StartDeadline(std::chrono::nanoseconds timeout) {
  deadline_ = std::make_unique<boost::asio::steady_timer>(downstream_.worker().io(), timeout);
  // The stream can end (and be destroyed) after the timer fired but before this handler
  // runs; then ec is success and only the liveness token tells.
  deadline_->async_wait([this, alive = liveness_.Watch()](boost::system::error_code ec) {
    if (ec || alive.expired()) return;
    LocalReply(grpc::StatusCode::kDeadlineExceeded, "sepal: deadline exceeded (grpc-timeout)",
               "deadline_exceeded");
  });
}

// ---------------------------------------------------------------- data providers

namespace {

// Ends a data provider's body: EOF, and the trailers (if any) carry END_STREAM instead.
void EndBody(nghttp2_session* session, int32_t stream_id, const nghttp2_nv* trailers,
             size_t count, uint32_t* data_flags) {
  *data_flags |= NGHTTP2_DATA_FLAG_EOF;
  if (count > 0 && nghttp2_submit_trailer(session, stream_id, trailers, count) == 0) {
    *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
  }
}

}  // namespace

// The read callbacks only size the next DATA frame (NGHTTP2_DATA_FLAG_NO_COPY): nghttp2 then
// calls Send*Data, in the same nghttp2_session_mem_send, to put it in the connection's write,
// and the payload goes to the socket from the chunks it arrived in.
ssize_t ProxyStream::ReadRequestBody(nghttp2_session* session, int32_t stream_id, uint8_t*,
                                     size_t length, uint32_t* data_flags, nghttp2_data_source*,
                                     void*) {
  auto* self = static_cast<ProxyStream*>(nghttp2_session_get_stream_user_data(session, stream_id));
  if (self == nullptr) return NGHTTP2_ERR_DEFERRED;  // detached; a RST_STREAM is queued
  size_t available = self->request_body_.size();
  size_t n = std::min(length, available);
  if (n > 0) *data_flags |= NGHTTP2_DATA_FLAG_NO_COPY;
  if (n == available) {
    if (self->request_ended_) {
      std::vector<nghttp2_nv> nv = self->request_trailers_.ToNv();
      EndBody(session, stream_id, nv.data(), nv.size(), data_flags);
      return static_cast<ssize_t>(n);
    }
    if (n == 0) {
      self->upstream_send_deferred_ = true;
      return NGHTTP2_ERR_DEFERRED;
    }
  }
  return static_cast<ssize_t>(n);
}

ssize_t ProxyStream::ReadResponseBody(nghttp2_session* session, int32_t stream_id, uint8_t*,
                                      size_t length, uint32_t* data_flags, nghttp2_data_source*,
                                      void*) {
  auto* self = static_cast<ProxyStream*>(nghttp2_session_get_stream_user_data(session, stream_id));
  if (self == nullptr) return NGHTTP2_ERR_DEFERRED;
  size_t available = self->response_body_.size();
  size_t n = std::min(length, available);
  if (n > 0) *data_flags |= NGHTTP2_DATA_FLAG_NO_COPY;
  if (n == available) {
    if (self->local_trailers_pending_) {
      self->local_trailers_pending_ = false;
      self->response_finished_ = true;
      std::string code_text = std::to_string(static_cast<int>(self->local_code_));
      nghttp2_nv nv[] = {HeaderList::MakeNv("grpc-status", code_text),
                         HeaderList::MakeNv("grpc-message", self->local_message_)};
      EndBody(session, stream_id, nv, 2, data_flags);
      return static_cast<ssize_t>(n);
    }
    if (self->upstream_ended_) {
      self->response_finished_ = true;
      std::vector<nghttp2_nv> nv = self->response_trailers_.ToNv();
      EndBody(session, stream_id, nv.data(), nv.size(), data_flags);
      return static_cast<ssize_t>(n);
    }
    if (n == 0) {
      self->downstream_send_deferred_ = true;
      return NGHTTP2_ERR_DEFERRED;
    }
  }
  return static_cast<ssize_t>(n);
}

int ProxyStream::SendBodyFrame(const nghttp2_frame& frame, const uint8_t* frame_header,
                               size_t length, ChunkBuffer& body, Http2Connection& connection) {
  // The write is full: nghttp2 keeps the frame and offers it again with the next one.
  if (connection.output_full()) return NGHTTP2_ERR_WOULDBLOCK;
  // Sized by the read callback a moment ago; only a body dropped since (the call is being
  // ended) can be shorter, and then the stream is reset.
  if (body.size() < length) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  WriteQueue& out = connection.output();
  out.Append(frame_header, 9);
  size_t padding = frame.data.padlen;  // sepal sets no padding callback: 0 in practice
  if (padding > 0) {
    uint8_t pad_length = static_cast<uint8_t>(padding - 1);
    out.Append(&pad_length, 1);
  }
  body.Splice(length, out);
  if (padding > 1) {
    static constexpr uint8_t kZeros[256] = {};
    out.Append(kZeros, padding - 1);
  }
  return 0;
}

int ProxyStream::SendRequestData(nghttp2_session* session, const nghttp2_frame& frame,
                                 const uint8_t* frame_header, size_t length,
                                 Http2Connection& upstream) {
  auto* self = static_cast<ProxyStream*>(
      nghttp2_session_get_stream_user_data(session, frame.hd.stream_id));
  if (self == nullptr) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  int rv = SendBodyFrame(frame, frame_header, length, self->request_body_, upstream);
  if (rv != 0) return rv;
  self->request_read_position_ += length;
  if (self->request_read_position_ > self->request_consumed_) {
    self->ConsumeDownstream(self->request_read_position_ - self->request_consumed_);
    self->request_consumed_ = self->request_read_position_;
  }
  return 0;
}

int ProxyStream::SendResponseData(nghttp2_session* session, const nghttp2_frame& frame,
                                  const uint8_t* frame_header, size_t length,
                                  Http2Connection& downstream) {
  auto* self = static_cast<ProxyStream*>(
      nghttp2_session_get_stream_user_data(session, frame.hd.stream_id));
  if (self == nullptr) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  int rv = SendBodyFrame(frame, frame_header, length, self->response_body_, downstream);
  if (rv != 0) return rv;
  self->AckResponseBytes(length);
  return 0;
}

}  // namespace sepal
