// Http1Connection: HTTP/1.1 (Fleet REST) requests, routed, authorized and streamed through.
#include "proxy/http1/http1_connection.h"

#include <boost/beast/core/error.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/field.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "filters/access_log/access_log.h"
#include "filters/authz/authz_filter.h"
#include "filters/identity_headers/identity_headers.h"
#include "proxy/common/log.h"
#include "proxy/common/log_rate_limit.h"
#include "proxy/common/strings.h"
#include "proxy/http1/rest_request.h"
#include "proxy/listener/listener.h"
#include "proxy/memory/memory_budget.h"
#include "proxy/router/router.h"
#include "proxy/stats/proxy_metrics.h"
#include "proxy/upstream/upstream_pool.h"
#include "proxy/upstream_http1/http1_upstream_pool.h"
#include "proxy/worker/worker.h"

namespace sepal {

namespace beast = boost::beast;
namespace http = boost::beast::http;

namespace {

LogRateLimit g_log_bad_request("bad HTTP/1.1 requests");
LogRateLimit g_log_denials("authz denials");
LogRateLimit g_log_upstream("REST upstream failures");

// Reasons (static literals: logs, /peers, the access log).
constexpr std::string_view kNoRoute = "no_route";
constexpr std::string_view kBadRequest = "bad_request";
constexpr std::string_view kUpstreamFailed = "upstream_failed";

constexpr std::chrono::seconds kLingerTime{2};
constexpr size_t kLingerBytes = 1 << 20;
constexpr size_t kResponseHeaderLimit = 64 * 1024;

// Hop-by-hop fields (RFC 9110 7.6.1) and what sepal frames itself: never forwarded.
bool IsHopByHop(http::field name) {
  switch (name) {
    case http::field::connection:
    case http::field::keep_alive:
    case http::field::proxy_connection:
    case http::field::te:
    case http::field::trailer:
    case http::field::transfer_encoding:
    case http::field::upgrade:
    case http::field::content_length:
    case http::field::expect:
      return true;
    default:
      return false;
  }
}

// Names a Connection header lists are hop-by-hop too.
bool ListedInConnection(std::string_view connection, std::string_view name) {
  for (size_t start = 0; start < connection.size();) {
    size_t end = connection.find(',', start);
    if (end == std::string_view::npos) end = connection.size();
    std::string_view token = connection.substr(start, end - start);
    while (!token.empty() && (token.front() == ' ' || token.front() == '\t')) token.remove_prefix(1);
    while (!token.empty() && (token.back() == ' ' || token.back() == '\t')) token.remove_suffix(1);
    if (beast::iequals(token, name)) return true;
    start = end + 1;
  }
  return false;
}

// Copies the end-to-end fields of `from` to `to`.
template <typename From, typename To>
void CopyEndToEnd(const From& from, To* to) {
  std::string_view connection;
  if (auto it = from.find(http::field::connection); it != from.end()) connection = it->value();
  for (const auto& field : from) {
    if (IsHopByHop(field.name())) continue;
    std::string_view name = field.name_string();
    if (!connection.empty() && ListedInConnection(connection, name)) continue;
    // Identity metadata is sepal's to set (filters/identity_headers); HTTP/1.1 names are
    // case-insensitive, so "Tailscale-User-Login" is as reserved as the lowercase one.
    if (name.size() >= 10 && beast::iequals(name.substr(0, 10), "tailscale-")) continue;
    to->insert(name, field.value());
  }
}

bool IsNeedBuffer(const boost::system::error_code& ec) { return ec == http::error::need_buffer; }

}  // namespace

Http1Connection::Request::Request() = default;

Http1Connection::Http1Connection(Worker& worker, Listener& listener, Socket socket,
                                 identity::PeerAddress peer, boost::asio::ip::address local_ip)
    : worker_(worker),
      listener_(listener),
      routes_(listener.routes()),
      transport_(std::move(socket)),
      endpoints_{peer, peer.ToString(), local_ip},
      front_(*this, worker, listener, *routes_, transport_, &endpoints_),
      peer_session_(listener, *routes_, this),
      client_stream_(transport_),
      buffer_(routes_->config.http1.max_header_bytes + kChunkBytes),
      timer_(worker.io()) {}

Http1Connection::~Http1Connection() = default;

void Http1Connection::Start() {
  worker_.Register(this);
  listener_.ConnectionOpened();
  front_.Start();
}

void Http1Connection::OnFrontDone(std::string_view initial_bytes) {
  if (!initial_bytes.empty()) {
    auto space = buffer_.prepare(initial_bytes.size());
    std::memcpy(space.data(), initial_bytes.data(), initial_bytes.size());
    buffer_.commit(initial_bytes.size());
  }
  std::weak_ptr<void> weak = shared_from_this();
  peer_session_.Begin(worker_, endpoints_.peer, endpoints_.peer_text, endpoints_.destination,
                      weak, [this] {
                        if (!closed_) OnIdentity();
                      });
  // Accepted before a drain (or the listener's retirement) and speaking only now: what it
  // already sent is answered with Connection: close.
  if (front_.started_late() && (worker_.draining() || listener_.retired())) {
    shutting_down_ = true;
  }
  WaitForRequest();
}

void Http1Connection::WriteRawAndCloseConnection(std::string bytes, std::string reason) {
  WriteAndLinger(std::move(bytes), std::move(reason));
}

// --- Timer -------------------------------------------------------------------------------

void Http1Connection::Arm(Phase phase, std::chrono::milliseconds timeout) {
  phase_ = phase;
  timed_out_ = Phase::kNone;
  uint64_t epoch = ++timer_epoch_;
  timer_.expires_after(timeout);
  std::weak_ptr<Http1Connection> weak = shared_from_this();
  timer_.async_wait([weak, epoch](boost::system::error_code ec) {
    auto self = weak.lock();
    if (ec || !self || self->closed_ || epoch != self->timer_epoch_ ||
        self->phase_ == Phase::kNone) {
      return;
    }
    self->OnTimeout();
  });
}

void Http1Connection::OnTimeout() {
  timed_out_ = phase_;
  boost::system::error_code ignored;
  if (phase_ == Phase::kUpstream && request_ && request_->upstream) {
    request_->upstream->transport().socket().cancel(ignored);
  } else if (phase_ == Phase::kLinger) {
    Close("closed after its answer");
  } else {
    transport_.socket().cancel(ignored);
  }
}

// --- Requests ----------------------------------------------------------------------------

void Http1Connection::WaitForRequest() {
  if (closed_) return;
  if (shutting_down_ && buffer_.size() == 0) {
    Close("shutting down (drain or listener removed)");
    return;
  }
  if (buffer_.size() > 0) {  // pipelined, or sent with the PROXY header / TLS handshake
    ReadHeader();
    return;
  }
  // Idle: an idle connection keeps no body buffers.
  request_chunk_.reset();
  response_chunk_.reset();
  buffer_.shrink_to_fit();
  Arm(Phase::kIdle, routes_->config.http1.idle_timeout);
  auto self = shared_from_this();
  transport_.AsyncReadSome(buffer_.prepare(4096), [self](boost::system::error_code ec, size_t n) {
    if (self->closed_) return;
    self->Disarm();
    self->buffer_.commit(n);
    if (ec || n == 0) {
      self->Close(self->TimedOut(Phase::kIdle) ? "idle (keep-alive timeout)"
                                               : "the client closed the connection");
      return;
    }
    self->ReadHeader();
  });
}

void Http1Connection::ReadHeader() {
  const config::Http1Limits& limits = routes_->config.http1;
  request_.emplace();
  in_request_ = true;
  request_->started = std::chrono::steady_clock::now();
  request_->routes = listener_.routes();
  request_->parser.emplace();
  request_->parser->header_limit(limits.max_header_bytes);
  request_->parser->body_limit(limits.max_body_bytes);
  Arm(Phase::kHeader, limits.header_timeout);
  auto self = shared_from_this();
  http::async_read_header(client_stream_, buffer_, *request_->parser,
                          [self](boost::system::error_code ec, size_t) {
                            if (self->closed_) return;
                            self->Disarm();
                            self->OnHeader(ec);
                          });
}

void Http1Connection::OnHeader(boost::system::error_code ec) {
  const config::Http1Limits& limits = routes_->config.http1;
  if (ec) {
    if (TimedOut(Phase::kHeader)) {
      Count(limits::limit::kHttp1HeaderTimeout);
      Refuse(408, limits::limit::kHttp1HeaderTimeout,
             StrCat("sepal: the request header did not arrive within ",
                    limits.header_timeout.count(), " ms (listeners[].http1.header_timeout)"));
      return;
    }
    if (ec == http::error::end_of_stream || ec == boost::asio::error::eof ||
        ec == boost::asio::error::connection_reset || ec == boost::asio::error::operation_aborted) {
      Close("the client closed the connection");
      return;
    }
    if (ec == http::error::header_limit) {
      Count(limits::limit::kHttp1HeaderBytes);
      Refuse(431, limits::limit::kHttp1HeaderBytes,
             StrCat("sepal: the request header is larger than ", limits.max_header_bytes,
                    " bytes (listeners[].http1.max_header_bytes)"));
      return;
    }
    if (ec == http::error::body_limit) {
      Count(limits::limit::kHttp1BodyBytes);
      Refuse(413, limits::limit::kHttp1BodyBytes,
             StrCat("sepal: the request body is larger than ", limits.max_body_bytes,
                    " bytes (listeners[].http1.max_body_bytes)"));
      return;
    }
    bool framing = ec == http::error::bad_content_length ||
                   ec == http::error::multiple_content_length ||
                   ec == http::error::bad_transfer_encoding;
    CountProtocolError(framing ? "http1_framing" : "http1_parse");
    if (g_log_bad_request.Allow()) {
      LogInfo("listener ", listener_.name(), ": ", endpoints_.peer_text,
              " sent a malformed HTTP/1.1 request: ", ec.message());
    }
    Refuse(400, kBadRequest,
           framing ? StrCat("sepal: conflicting or invalid Content-Length / Transfer-Encoding (",
                            ec.message(), ")")
                   : StrCat("sepal: malformed HTTP/1.1 request (", ec.message(), ")"));
    return;
  }
  const auto& header = request_->parser->get();
  if (header.version() != 11 && header.version() != 10) {
    CountProtocolError("http1_version");
    Refuse(505, kBadRequest, "sepal: HTTP/1.0 and HTTP/1.1 only");
    return;
  }
  size_t request_line = header.method_string().size() + header.target().size() + 11;
  if (request_line > limits.max_request_line_bytes) {
    Count(limits::limit::kHttp1RequestLine);
    Refuse(414, limits::limit::kHttp1RequestLine,
           StrCat("sepal: the request line is longer than ", limits.max_request_line_bytes,
                  " bytes (listeners[].http1.max_request_line_bytes)"));
    return;
  }
  size_t fields = static_cast<size_t>(std::distance(header.begin(), header.end()));
  if (fields > limits.max_headers) {
    Count(limits::limit::kHttp1Headers);
    Refuse(431, limits::limit::kHttp1Headers,
           StrCat("sepal: the request has ", fields, " header fields, more than ",
                  limits.max_headers, " (listeners[].http1.max_headers)"));
    return;
  }
  if (header.find(http::field::transfer_encoding) != header.end() &&
      !request_->parser->chunked()) {
    CountProtocolError("http1_framing");
    Refuse(400, kBadRequest, "sepal: a Transfer-Encoding other than chunked");
    return;
  }
  if (header.method() == http::verb::connect) {
    Refuse(405, kBadRequest, "sepal: CONNECT is not served here");
    return;
  }
  std::string error;
  if (!http1::NormalizeTarget(header.target(), &request_->path, &request_->query, &error)) {
    CountProtocolError("http1_target");
    Refuse(400, kBadRequest, StrCat("sepal: ", error));
    return;
  }
  if (auto expect = header.find(http::field::expect); expect != header.end()) {
    if (!beast::iequals(expect->value(), "100-continue")) {
      Refuse(417, kBadRequest, "sepal: the only expectation served is 100-continue");
      return;
    }
    request_->expect_continue = true;
  }
  request_->keep_alive = request_->parser->keep_alive();
  request_->body_done = request_->parser->is_done();
  listener_.stats().StreamOpened();
  request_->counted_open = true;
  if (peer_session_.pending()) {
    awaiting_identity_ = true;  // OnIdentity goes on
    return;
  }
  Authorize();
}

void Http1Connection::OnIdentity() {
  if (!awaiting_identity_) return;
  awaiting_identity_ = false;
  if (request_) Authorize();
}

void Http1Connection::Authorize() {
  Request& request = *request_;
  request.route = request.routes->router.Match(request.path);
  if (request.route == nullptr) {
    Refuse(404, kNoRoute,
           StrCat("sepal: no route for ", request.path, " on listener ", listener_.name()));
    return;
  }
  filters::AuthzDecision decision = filters::Authorize(
      *request.route->config, peer_session_.lookup(), request.path, endpoints_.peer_text);
  request.decision = decision.label();
  request.reason = decision.reason;
  listener_.stats().AuthzDecision(request.decision, decision.reason);
  if (!decision.allowed) {
    if (g_log_denials.Allow()) {
      LogInfo("authz: deny ", request.path, " for ", endpoints_.peer_text, " on ",
              listener_.name(), " (", decision.reason, ")");
    }
    Refuse(http1::HttpStatusForCode(decision.code), decision.reason, decision.message);
    return;
  }
  if (decision.audited) {
    LogInfo("authz: audit_deny ", request.path, " for ", endpoints_.peer_text, " on ",
            listener_.name(), " (", decision.reason, "): forwarded, the route is in audit mode");
  }
  if (!Admit()) return;
  ContinueIfExpected();
}

bool Http1Connection::Admit() {
  Request& request = *request_;
  if (const auto& memory = request.routes->generation->memory; memory && memory->Overloaded()) {
    Count(limits::limit::kMemory);
    Refuse(503, limits::limit::kMemory, "sepal: over its memory budget; retry later");
    return false;
  }
  std::string message;
  auto now = std::chrono::steady_clock::now();
  std::string_view refused = peer_session_.AdmitCall(now, &request.peer_call, &message);
  if (refused == limits::limit::kPeerConnections) request.keep_alive = false;  // "use one"
  if (refused.empty()) {
    size_t index = request.route->upstream_index;
    if (limits::UpstreamBreaker* breaker = request.routes->breaker(index)) {
      const auto& caps = request.routes->generation->config->upstreams[index].circuit_breaker;
      refused = breaker->TryStartCall(caps, now);
      if (refused.empty()) {
        request.breaker_call = breaker;
        return true;
      }
      Count(refused);
      message = StrCat("sepal: upstream ", request.routes->pool(index).name(), " is at its ",
                       refused, " cap (upstreams[].circuit_breaker); retry later");
    } else {
      return true;
    }
  }
  Refuse(503, refused, message);
  return false;
}

void Http1Connection::ContinueIfExpected() {
  if (!request_->expect_continue || request_->body_done) {
    ReadFirstBodyChunk();
    return;
  }
  static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
  Arm(Phase::kClientWrite, routes_->config.http1.body_timeout);
  auto self = shared_from_this();
  transport_.AsyncWrite(boost::asio::buffer(kContinue.data(), kContinue.size()),
                        [self](boost::system::error_code ec, size_t) {
                          if (self->closed_) return;
                          self->Disarm();
                          if (ec) {
                            self->Close("the client left before 100 Continue");
                            return;
                          }
                          self->ReadFirstBodyChunk();
                        });
}

void Http1Connection::ReadFirstBodyChunk() {
  Request& request = *request_;
  if (!request_chunk_) request_chunk_.reset(new char[kChunkBytes]);
  if (request.body_done) {
    request.replayable = true;
    AcquireUpstream();
    return;
  }
  // Beast reads what the buffer has room for: without this a body moves 512 bytes per read.
  buffer_.reserve(kChunkBytes);
  auto& body = request.parser->get().body();
  body.data = request_chunk_.get() + request.first_chunk;
  body.size = kChunkBytes - request.first_chunk;
  Arm(Phase::kBody, routes_->config.http1.body_timeout);
  auto self = shared_from_this();
  http::async_read_some(client_stream_, buffer_, *request.parser,
                        [self](boost::system::error_code ec, size_t) {
                          if (self->closed_) return;
                          self->Disarm();
                          Request& r = *self->request_;
                          size_t n = kChunkBytes - r.first_chunk - r.parser->get().body().size;
                          r.first_chunk += n;
                          r.request_bytes += n;
                          if (ec && !IsNeedBuffer(ec)) {
                            self->OnRequestBodyError(ec);
                            return;
                          }
                          r.body_done = r.parser->is_done();
                          if (!r.body_done && r.first_chunk < kChunkBytes) {
                            self->ReadFirstBodyChunk();  // a chunk header, or a short read
                            return;
                          }
                          r.replayable = r.body_done;
                          self->AcquireUpstream();
                        });
}

void Http1Connection::OnRequestBodyError(boost::system::error_code ec) {
  const config::Http1Limits& limits = routes_->config.http1;
  request_->keep_alive = false;
  if (TimedOut(Phase::kBody)) {
    Count(limits::limit::kHttp1BodyTimeout);
    Refuse(408, limits::limit::kHttp1BodyTimeout,
           StrCat("sepal: no request body byte for ", limits.body_timeout.count(),
                  " ms (listeners[].http1.body_timeout)"));
    return;
  }
  if (ec == http::error::body_limit) {
    Count(limits::limit::kHttp1BodyBytes);
    Refuse(413, limits::limit::kHttp1BodyBytes,
           StrCat("sepal: the request body is larger than ", limits.max_body_bytes,
                  " bytes (listeners[].http1.max_body_bytes)"));
    return;
  }
  if (ec == http::error::partial_message || ec == http::error::end_of_stream ||
      ec == boost::asio::error::eof || ec == boost::asio::error::connection_reset ||
      ec == boost::asio::error::operation_aborted) {
    Close("the client closed the connection during the request body");
    return;
  }
  CountProtocolError("http1_parse");
  Refuse(400, kBadRequest, StrCat("sepal: malformed request body (", ec.message(), ")"));
}

void Http1Connection::AcquireUpstream() {
  Request& request = *request_;
  ++request.attempts;
  UpstreamPool& pool = request.routes->pool(request.route->upstream_index);
  // Holds the connection: nothing else does while the upstream connects.
  auto self = shared_from_this();
  pool.http1()->Acquire([self, pool_ptr = pool.http1()](std::shared_ptr<Http1Upstream> upstream,
                                                        std::string error) {
    if (self->closed_ || !self->request_) {
      if (upstream) pool_ptr->Release(std::move(upstream));  // untouched: back to the pool
      return;
    }
    self->OnUpstream(std::move(upstream), std::move(error));
  });
}

void Http1Connection::OnUpstream(std::shared_ptr<Http1Upstream> upstream, std::string error) {
  Request& request = *request_;
  if (!upstream) {
    if (g_log_upstream.Allow()) LogWarning("listener ", listener_.name(), ": ", error);
    Refuse(502, kUpstreamFailed, StrCat("sepal: ", error));
    return;
  }
  upstream->CountRequest();
  request.upstream = std::move(upstream);
  if (!request.upstream_request) BuildUpstreamRequest();
  request.upstream_serializer.emplace(*request.upstream_request);
  WriteRequestChunk(request.first_chunk, request.body_done);
}

void Http1Connection::BuildUpstreamRequest() {
  Request& request = *request_;
  const auto& from = request.parser->get();
  request.upstream_request.emplace();
  UpstreamRequest& to = *request.upstream_request;
  to.version(11);
  to.method_string(from.method_string());
  to.target(request.query.empty() ? request.path : StrCat(request.path, "?", request.query));
  CopyEndToEnd(from, &to);
  if (const filters::IdentityHeaders* identity = peer_session_.identity_headers()) {
    for (const auto& [name, value] : identity->fields()) to.insert(name, value);
  }
  if (request.parser->chunked()) {
    to.chunked(true);
  } else if (auto length = request.parser->content_length()) {
    to.content_length(*length);
  }
}

void Http1Connection::WriteRequestChunk(size_t n, bool last) {
  Request& request = *request_;
  auto& body = request.upstream_request->body();
  body.data = n > 0 ? request_chunk_.get() : nullptr;
  body.size = n;
  body.more = !last;
  Arm(Phase::kUpstream, routes_->config.http1.upstream_timeout);
  auto self = shared_from_this();
  http::async_write(request.upstream->stream(), *request.upstream_serializer,
                    [self, last](boost::system::error_code ec, size_t) {
                      if (self->closed_) return;
                      self->Disarm();
                      if (ec && !IsNeedBuffer(ec)) {
                        self->UpstreamFailed(StrCat("writing the request: ", ec.message()));
                        return;
                      }
                      if (last) {
                        self->ReadResponseHeader();
                      } else {
                        self->ReadRequestBody();
                      }
                    });
}

void Http1Connection::ReadRequestBody() {
  Request& request = *request_;
  request.replayable = false;
  buffer_.reserve(kChunkBytes);
  auto& body = request.parser->get().body();
  body.data = request_chunk_.get();
  body.size = kChunkBytes;
  Arm(Phase::kBody, routes_->config.http1.body_timeout);
  auto self = shared_from_this();
  http::async_read_some(client_stream_, buffer_, *request.parser,
                        [self](boost::system::error_code ec, size_t) {
                          if (self->closed_) return;
                          self->Disarm();
                          Request& r = *self->request_;
                          size_t n = kChunkBytes - r.parser->get().body().size;
                          r.request_bytes += n;
                          if (ec && !IsNeedBuffer(ec)) {
                            self->OnRequestBodyError(ec);
                            return;
                          }
                          r.body_done = r.parser->is_done();
                          if (n == 0 && !r.body_done) {
                            self->ReadRequestBody();
                            return;
                          }
                          self->WriteRequestChunk(n, r.body_done);
                        });
}

void Http1Connection::UpstreamFailed(std::string_view why) {
  Request& request = *request_;
  bool reused = request.upstream && request.upstream->reused();
  if (request.upstream) {
    request.upstream->Close();
    request.upstream.reset();
  }
  if (TimedOut(Phase::kUpstream)) {
    Count(limits::limit::kHttp1UpstreamTimeout);
    Refuse(504, limits::limit::kHttp1UpstreamTimeout,
           StrCat("sepal: upstream ", request.routes->pool(request.route->upstream_index).name(),
                  " did not answer within ", routes_->config.http1.upstream_timeout.count(),
                  " ms (listeners[].http1.upstream_timeout)"));
    return;
  }
  // A kept-alive connection the upstream had closed: the request never reached it. Sent
  // again on a new connection when it still can be (the whole body is in the first chunk).
  if (reused && request.replayable && request.attempts < 2 && !request.response_started) {
    LogDebug("listener ", listener_.name(), ": upstream keep-alive connection lost (", why,
             "); retrying on a new one");
    request.response_parser.reset();
    AcquireUpstream();
    return;
  }
  std::string name = request.routes->pool(request.route->upstream_index).name();
  if (g_log_upstream.Allow()) {
    LogWarning("listener ", listener_.name(), ": upstream ", name, " failed: ", why);
  }
  if (request.response_started) {
    Close("the upstream failed during the response");
    return;
  }
  Refuse(502, kUpstreamFailed, StrCat("sepal: upstream ", name, " failed: ", why));
}

void Http1Connection::ReadResponseHeader() {
  Request& request = *request_;
  request.upstream->buffer().reserve(kChunkBytes);  // else the body moves 512 bytes per read
  request.response_parser.emplace();
  request.response_parser->header_limit(kResponseHeaderLimit);
  request.response_parser->body_limit(boost::none);
  if (request.parser->get().method() == http::verb::head) request.response_parser->skip(true);
  Arm(Phase::kUpstream, routes_->config.http1.upstream_timeout);
  WatchForClientLeaving();
  auto self = shared_from_this();
  http::async_read_header(request.upstream->stream(), request.upstream->buffer(),
                          *request.response_parser, [self](boost::system::error_code ec, size_t) {
                            if (self->closed_) return;
                            self->Disarm();
                            self->OnResponseHeader(ec);
                          });
}

void Http1Connection::WatchForClientLeaving() {
  client_watch_active_ = true;
  if (watching_client_) return;
  watching_client_ = true;
  auto self = shared_from_this();
  transport_.socket().async_wait(Socket::wait_read, [self](boost::system::error_code ec) {
    self->watching_client_ = false;
    if (ec || self->closed_ || !self->client_watch_active_) return;
    self->OnClientReadable();
  });
}

void Http1Connection::OnClientReadable() {
  constexpr std::string_view kLeft = "the client left before its answer";
  auto transient = [](int error) {
    return error == EAGAIN || error == EWOULDBLOCK || error == EINTR;
  };
  int fd = transport_.socket().native_handle();
  if (transport_.tls() != nullptr) {
    // TLS records cannot be taken out of the stream here: only a close or a reset is seen;
    // bytes (a pipelined request, a close_notify) end the watch.
    char byte;
    ssize_t n = ::recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0 || (n < 0 && !transient(errno))) Close(kLeft);
    return;
  }
  // Cleartext: what the client sends meanwhile (a pipelined request) goes where the next
  // request is looked for, up to the read buffer's bound (then TCP back-pressure, and the
  // watch ends); the watch goes on.
  size_t room = buffer_.max_size() - buffer_.size();
  if (room == 0) return;
  auto space = buffer_.prepare(room);
  ssize_t n = ::recv(fd, space.data(), space.size(), MSG_DONTWAIT);
  if (n > 0) {
    buffer_.commit(static_cast<size_t>(n));
    WatchForClientLeaving();
  } else if (n < 0 && transient(errno)) {
    WatchForClientLeaving();
  } else {
    Close(kLeft);
  }
}

void Http1Connection::OnResponseHeader(boost::system::error_code ec) {
  Request& request = *request_;
  if (ec) {
    UpstreamFailed(StrCat("reading the response: ", ec.message()));
    return;
  }
  const auto& from = request.response_parser->get();
  int status = static_cast<int>(from.result_int());
  if (status >= 100 && status < 200) {
    if (status == 101) {
      UpstreamFailed("it switched protocols (101), which sepal does not forward");
      return;
    }
    ReadResponseHeader();  // an interim answer: the real one follows
    return;
  }
  request.upstream_keep_alive = request.response_parser->keep_alive();
  bool keep_alive = request.keep_alive && !shutting_down_;
  request.response.emplace();
  ClientResponse& to = *request.response;
  to.version(11);
  to.result(from.result_int());
  to.reason(from.reason());
  CopyEndToEnd(from, &to);
  if (auto length = request.response_parser->content_length()) {
    to.content_length(*length);
  } else if (status != 204 && status != 304 && !request.response_parser->is_done()) {
    if (request.parser->get().version() == 11) {
      to.chunked(true);
    } else {
      keep_alive = false;  // HTTP/1.0: the body ends with the connection
    }
  }
  to.keep_alive(keep_alive);
  request.keep_alive = keep_alive;
  request.status = status;
  request.response_started = true;
  request.response_serializer.emplace(to);
  if (!response_chunk_) response_chunk_.reset(new char[kChunkBytes]);
  if (request.response_parser->is_done()) {
    WriteResponseChunk(0, true);
  } else {
    ReadResponseBody();
  }
}

void Http1Connection::ReadResponseBody() {
  Request& request = *request_;
  auto& body = request.response_parser->get().body();
  body.data = response_chunk_.get();
  body.size = kChunkBytes;
  Arm(Phase::kUpstream, routes_->config.http1.upstream_timeout);
  auto self = shared_from_this();
  http::async_read_some(request.upstream->stream(), request.upstream->buffer(),
                        *request.response_parser, [self](boost::system::error_code ec, size_t) {
                          if (self->closed_) return;
                          self->Disarm();
                          Request& r = *self->request_;
                          size_t n = kChunkBytes - r.response_parser->get().body().size;
                          if (ec && !IsNeedBuffer(ec)) {
                            self->UpstreamFailed(StrCat("reading the response body: ",
                                                        ec.message()));
                            return;
                          }
                          bool done = r.response_parser->is_done();
                          if (n == 0 && !done) {
                            self->ReadResponseBody();
                            return;
                          }
                          self->WriteResponseChunk(n, done);
                        });
}

void Http1Connection::WriteResponseChunk(size_t n, bool last) {
  Request& request = *request_;
  auto& body = request.response->body();
  body.data = n > 0 ? response_chunk_.get() : nullptr;
  body.size = n;
  body.more = !last;
  Arm(Phase::kClientWrite, routes_->config.http1.body_timeout);
  auto self = shared_from_this();
  http::async_write(client_stream_, *request.response_serializer,
                    [self, n, last](boost::system::error_code ec, size_t) {
                      if (self->closed_) return;
                      self->Disarm();
                      if (ec && !IsNeedBuffer(ec)) {
                        self->Close(self->TimedOut(Phase::kClientWrite)
                                        ? "the client stopped reading the response"
                                        : "the client left during the response");
                        return;
                      }
                      self->request_->response_bytes += n;
                      if (last) {
                        self->FinishRequest();
                      } else {
                        self->ReadResponseBody();
                      }
                    });
}

void Http1Connection::FinishRequest() {
  Request& request = *request_;
  if (request.upstream) {
    UpstreamPool& pool = request.routes->pool(request.route->upstream_index);
    if (request.upstream_keep_alive && request.body_done) {
      pool.http1()->Release(std::move(request.upstream));
    } else {
      request.upstream->Close();
    }
    request.upstream.reset();
  }
  bool keep_alive = request.keep_alive;
  RecordRequest();
  ResetRequest();
  if (!keep_alive || shutting_down_) {
    Close("Connection: close");
    return;
  }
  WaitForRequest();
}

// --- Local answers and closing -----------------------------------------------------------

void Http1Connection::Refuse(int status, std::string_view reason, std::string message) {
  Request& request = *request_;
  if (request.response_started) {
    Close(message);
    return;
  }
  if (request.upstream) {  // it has part of a request: not reusable
    request.upstream->Close();
    request.upstream.reset();
  }
  // A small body still on the wire is read and dropped first, so the connection stays open
  // (a refused SuperNode's next call needs no new connection). Not with 100-continue: that
  // client has not sent its body and will not.
  if (!request.body_done && !request.drained && !request.expect_continue &&
      request.keep_alive && !shutting_down_ && request.parser &&
      request.parser->is_header_done() && !request.parser->chunked()) {
    auto remaining = request.parser->content_length_remaining();
    if (remaining && *remaining <= kChunkBytes) {
      DrainThenRefuse(status, reason, std::move(message));
      return;
    }
  }
  request.status = status;
  request.reason = reason;
  // The connection stays open only when nothing of this request is left on the wire.
  bool close = !request.body_done || !request.keep_alive || shutting_down_ ||
               !request.parser || !request.parser->is_header_done();
  std::string bytes = http1::LocalResponse(status, message, close);
  RecordRequest();
  ResetRequest();
  if (close) {
    WriteAndLinger(std::move(bytes), std::move(message));
    return;
  }
  Arm(Phase::kClientWrite, routes_->config.http1.body_timeout);
  auto self = shared_from_this();
  auto shared = std::make_shared<std::string>(std::move(bytes));
  transport_.AsyncWrite(boost::asio::buffer(*shared),
                        [self, shared](boost::system::error_code ec, size_t) {
                          if (self->closed_) return;
                          self->Disarm();
                          if (ec) {
                            self->Close("the client left before its answer");
                            return;
                          }
                          self->WaitForRequest();
                        });
}

void Http1Connection::DrainThenRefuse(int status, std::string_view reason, std::string message) {
  Request& request = *request_;
  request.drained = true;
  if (!request_chunk_) request_chunk_.reset(new char[kChunkBytes]);
  auto& body = request.parser->get().body();
  body.data = request_chunk_.get();
  body.size = kChunkBytes;
  Arm(Phase::kBody, routes_->config.http1.body_timeout);
  auto self = shared_from_this();
  http::async_read(client_stream_, buffer_, *request.parser,
                   [self, status, reason, message = std::move(message)](
                       boost::system::error_code ec, size_t) mutable {
                     if (self->closed_) return;
                     self->Disarm();
                     Request& r = *self->request_;
                     r.request_bytes += kChunkBytes - r.parser->get().body().size;
                     r.body_done = !ec || IsNeedBuffer(ec) ? r.parser->is_done() : false;
                     self->Refuse(status, reason, std::move(message));
                   });
}

void Http1Connection::WriteAndLinger(std::string bytes, std::string reason) {
  if (closed_) return;
  lingering_ = true;
  auto shared = std::make_shared<std::string>(std::move(bytes));
  auto self = shared_from_this();
  Arm(Phase::kClientWrite, routes_->config.http1.body_timeout);
  transport_.AsyncWrite(boost::asio::buffer(*shared), [self, shared,
                                                       reason = std::move(reason)](
                                                          boost::system::error_code ec, size_t) {
    if (self->closed_) return;
    if (ec) {
      self->Close(reason);
      return;
    }
    boost::system::error_code ignored;
    self->transport_.socket().shutdown(Socket::shutdown_send, ignored);
    self->Arm(Phase::kLinger, kLingerTime);
    self->Linger(0);
  });
}

void Http1Connection::Linger(size_t dropped) {
  if (dropped >= kLingerBytes) {
    Close("closed after its answer");
    return;
  }
  auto self = shared_from_this();
  buffer_.clear();
  // Raw socket reads: after a TLS answer the client's records are dropped unread.
  transport_.socket().async_read_some(
      buffer_.prepare(16 * 1024), [self, dropped](boost::system::error_code ec, size_t n) {
        if (self->closed_) return;
        if (ec) {
          self->Close("closed after its answer");
          return;
        }
        self->Linger(dropped + n);
      });
}

void Http1Connection::BeginShutdown(bool /*final_goaway*/) {
  shutting_down_ = true;
  if (!in_request_ && !lingering_) Close("shutting down (drain or listener removed)");
}

void Http1Connection::Close(std::string_view reason) {
  if (closed_) return;
  closed_ = true;
  ++timer_epoch_;
  phase_ = Phase::kNone;
  timer_.cancel();
  front_.Cancel();
  LogDebug("listener ", listener_.name(), ": connection from ", endpoints_.peer_text,
           " closed: ", reason);
  if (request_) {
    if (request_->upstream) request_->upstream->Close();
    if (request_->status == 0) request_->status = 499;  // the client left first
    RecordRequest();
    // The request's objects stay until the connection is destroyed: an operation still
    // pending on them (an upstream read while the client left, a forced close) completes
    // with operation_aborted into its parser and buffers, and its handler holds this
    // connection.
    EndRequestCalls();
  }
  transport_.Close();
  peer_session_.Release();
  worker_.Unregister(this);
  listener_.ConnectionClosed();
}

void Http1Connection::EndRequestCalls() {
  client_watch_active_ = false;  // the client is read again (or closed) from here on
  if (request_->peer_call) request_->peer_call->EndCall();
  request_->peer_call.reset();
  if (request_->breaker_call != nullptr) request_->breaker_call->EndCall();
  request_->breaker_call = nullptr;
  in_request_ = false;
  awaiting_identity_ = false;
}

void Http1Connection::ResetRequest() {
  if (!request_) return;
  EndRequestCalls();
  request_.reset();
}

void Http1Connection::RecordRequest() {
  Request& request = *request_;
  if (request.recorded) return;
  request.recorded = true;
  stats::ListenerStats& stats = listener_.stats();
  if (request.counted_open) stats.StreamClosed();
  if (request.path.empty()) return;  // never became a request (unparseable header)
  int code = static_cast<int>(http1::CodeForHttpStatus(request.status));
  double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - request.started).count();
  stats::MethodStats& method = stats.ForPath(http1::MetricsPath(request.path), request.route != nullptr);
  method.by_code[code].Increment(stats.shard());
  method.duration.Observe(stats.shard(), seconds);
  if (request.request_bytes > 0) method.request_bytes.Increment(stats.shard(), request.request_bytes);
  if (request.response_bytes > 0) {
    method.response_bytes.Increment(stats.shard(), request.response_bytes);
  }
  const identity::PeerIdentity* peer = peer_session_.identity();
  const Generation& generation = *request.routes->generation;
  if (peer != nullptr && generation.config->metrics.peer_node_label) {
    stats.PeerBytes(peer->node_name.empty() ? peer->node_fqdn : peer->node_name,
                    request.request_bytes, request.response_bytes);
  }
  peer_session_.RecordCall(request.path, code, request.request_bytes, request.response_bytes,
                           request.status >= 400 ? request.reason : std::string_view());
  if (filters::AccessLog* access_log = generation.access_log.get()) {
    filters::AccessLogEntry entry;
    entry.time = std::chrono::system_clock::now();
    entry.listener = listener_.name();
    entry.peer = endpoints_.peer_text;
    entry.identity = peer;
    entry.method = request.path;
    entry.grpc_status = code;
    entry.http_status = request.status;
    entry.decision = request.decision;
    entry.reason = request.reason;
    entry.duration_seconds = seconds;
    entry.request_bytes = request.request_bytes;
    entry.response_bytes = request.response_bytes;
    if (request.route != nullptr && request.decision != "deny") {
      entry.upstream = request.routes->pool(request.route->upstream_index).name();
    }
    access_log->Append(stats.shard(), entry);
  }
}

void Http1Connection::Count(std::string_view limit) { listener_.stats().LimitRejection(limit); }

void Http1Connection::CountProtocolError(std::string_view kind) {
  listener_.stats().ProtocolError(kind);
}

}  // namespace sepal
