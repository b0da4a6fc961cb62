// AdminServer: Boost.Beast HTTP/1.1 sessions on a dedicated io_context and thread.
#include "proxy/admin/admin_server.h"

#include <pthread.h>

#include <array>
#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <exception>
#include <mutex>
#include <optional>
#include <string_view>
#include <thread>
#include <unordered_set>

#include "proxy/admin/config_json.h"
#include "proxy/common/log.h"
#include "proxy/common/strings.h"

namespace sepal::admin {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using boost::system::error_code;

using Request = http::request<http::empty_body>;
using Response = http::response<http::string_body>;

constexpr std::string_view kEndpoints =
    "endpoints: / (status page) /metrics /healthz /ready /config /peers\n";
constexpr std::string_view kMetricsContentType = "text/plain; version=0.0.4; charset=utf-8";
constexpr std::string_view kTextContentType = "text/plain; charset=utf-8";
constexpr std::string_view kJsonContentType = "application/json";
constexpr std::string_view kHtmlContentType = "text/html; charset=utf-8";
// After a final response on a connection we close, how long to keep reading (and discarding)
// what the client still sends: closing with unread input makes the kernel send RST, which can
// destroy the response (a 431, say) before the client has read it.
constexpr std::chrono::seconds kLingerTimeout{2};

std::string AddressText(const config::SocketAddress& address) {
  if (!address.text.empty()) return address.text;
  if (address.host.find(':') != std::string::npos) {
    return StrCat("[", address.host, "]:", address.port);
  }
  return StrCat(address.host, ":", address.port);
}

std::string EndpointText(const tcp::endpoint& endpoint) {
  std::string host = endpoint.address().to_string();
  if (endpoint.address().is_v6()) return StrCat("[", host, "]:", endpoint.port());
  return StrCat(host, ":", endpoint.port());
}

std::string_view View(beast::string_view text) { return {text.data(), text.size()}; }

Response MakeResponse(http::status status, std::string_view content_type, std::string body,
                      unsigned version, bool keep_alive) {
  Response response{status, version};
  response.set(http::field::server, "sepal");
  response.set(http::field::content_type,
               beast::string_view(content_type.data(), content_type.size()));
  // Health and metrics must never be answered from a cache between scraper and proxy.
  response.set(http::field::cache_control, "no-store");
  response.body() = std::move(body);
  response.keep_alive(keep_alive);
  response.prepare_payload();
  return response;
}

}  // namespace

class AdminServer::Impl {
 public:
  Impl(config::SocketAddress address, Handlers handlers, AdminLimits limits)
      : address_(std::move(address)), handlers_(std::move(handlers)), limits_(limits) {}
  ~Impl() { Stop(); }

  absl::Status Start();
  void Stop();
  uint16_t port() const { return port_.load(std::memory_order_acquire); }

  // The rest runs on the admin thread only.
  class Session;
  const AdminLimits& limits() const { return limits_; }
  void Register(Session* session) { sessions_.insert(session); }
  void Unregister(Session* session) { sessions_.erase(session); }
  Response Respond(const Request& request);

 private:
  enum class State { kNew, kRunning, kStopped };

  absl::Status Listen(const tcp::endpoint& endpoint, error_code& ec);
  void Run();
  void Accept();
  void OnAccept(const error_code& ec, tcp::socket socket);
  void Shutdown();
  Response Dispatch(std::string_view path, const Request& request);
  Response Metrics(const Request& request);
  Response Ready(const Request& request);
  Response Config(const Request& request);

  const config::SocketAddress address_;
  const Handlers handlers_;
  const AdminLimits limits_;

  // Declared before the io_context so it outlives any session the io_context's destructor
  // might still release (none do after a clean Stop, whose run() ends with no work left).
  std::unordered_set<Session*> sessions_;
  bool stopping_ = false;
  bool saturation_logged_ = false;

  net::io_context io_context_{1};
  tcp::acceptor acceptor_{io_context_};
  net::steady_timer accept_retry_{io_context_};
  std::atomic<uint16_t> port_{0};

  std::mutex lifecycle_mutex_;  // serializes Start/Stop; guards state_ and thread_
  State state_ = State::kNew;
  std::thread thread_;
};

// One client connection: read a request under a deadline, answer, repeat while keep-alive.
// Lives exactly while an operation is pending (every handler holds a shared_ptr).
class AdminServer::Impl::Session : public std::enable_shared_from_this<Session> {
 public:
  Session(Impl& server, tcp::socket socket) : server_(server), stream_(std::move(socket)) {
    error_code ec;
    tcp::endpoint peer = stream_.socket().remote_endpoint(ec);
    peer_ = ec ? std::string("unknown peer") : EndpointText(peer);
  }
  ~Session() { server_.Unregister(this); }

  void Begin() {
    server_.Register(this);
    ReadRequest();
  }

  // Safe to call repeatedly and while operations are pending: they complete with an error.
  void Close() {
    error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.close();
  }

 private:
  void ReadRequest() {
    // A fresh parser per request: Beast parsers are single-use.
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(server_.limits().max_header_bytes));
    parser_->body_limit(0);  // no endpoint takes a body
    stream_.expires_after(server_.limits().io_timeout);
    http::async_read(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](const error_code& ec, std::size_t) { self->OnRead(ec); });
  }

  void OnRead(const error_code& ec) {
    if (ec) {
      OnReadError(ec);
      return;
    }
    response_ = server_.Respond(parser_->get());
    Write(response_.keep_alive());
  }

  void OnReadError(const error_code& ec) {
    if (ec == http::error::end_of_stream || ec == http::error::partial_message ||
        ec == net::error::operation_aborted) {
      Close();  // the client went away, or Stop() closed us
    } else if (ec == beast::error::timeout) {
      // An idle keep-alive connection timing out is routine (scrapers reconnect); a request
      // that started and never finished is a stuck or hostile client.
      if (parser_->got_some()) {
        LogWarning("admin: ", peer_, ": request not complete within ",
                   server_.limits().io_timeout.count(), " ms; closing");
      } else {
        LogDebug("admin: ", peer_, ": idle connection timed out");
      }
    } else if (ec == http::error::header_limit || ec == http::error::buffer_overflow) {
      Reject(http::status::request_header_fields_too_large,
             StrCat("request header larger than ", server_.limits().max_header_bytes, " bytes"));
    } else if (ec == http::error::body_limit || ec == http::error::unexpected_body) {
      Reject(http::status::payload_too_large, "request has a body; admin endpoints take none");
    } else if (ec.category() == http::make_error_code(http::error::bad_method).category()) {
      Reject(http::status::bad_request, StrCat("malformed request: ", ec.message()));
    } else {
      LogDebug("admin: ", peer_, ": read failed: ", ec.message());
      Close();
    }
  }

  // Answers a request we could not parse, then closes: the stream position is unknown.
  void Reject(http::status status, const std::string& why) {
    LogWarning("admin: ", peer_, ": ", why);
    response_ = MakeResponse(status, kTextContentType, StrCat(why, "\n"), 11, false);
    Write(false);
  }

  void Write(bool keep_alive) {
    stream_.expires_after(server_.limits().io_timeout);
    http::async_write(stream_, response_,
                      [self = shared_from_this(), keep_alive](const error_code& ec, std::size_t) {
                        self->OnWrite(ec, keep_alive);
                      });
  }

  void OnWrite(const error_code& ec, bool keep_alive) {
    if (ec) {
      if (ec != net::error::operation_aborted) {
        LogDebug("admin: ", peer_, ": write failed: ", ec.message());
      }
      Close();
      return;
    }
    response_ = {};  // a /metrics body can be large; do not hold it while idle
    if (keep_alive) {
      ReadRequest();
      return;
    }
    error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    stream_.expires_after(kLingerTimeout);
    Drain();
  }

  // Reads and discards until the client closes or the linger deadline passes.
  void Drain() {
    stream_.async_read_some(net::buffer(scratch_),
                            [self = shared_from_this()](const error_code& ec, std::size_t) {
                              if (ec) {
                                self->Close();
                              } else {
                                self->Drain();
                              }
                            });
  }

  Impl& server_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::empty_body>> parser_;
  Response response_;
  std::array<char, 4096> scratch_;
  std::string peer_;
};

absl::Status AdminServer::Impl::Start() {
  std::lock_guard lock(lifecycle_mutex_);
  if (state_ != State::kNew) {
    return absl::FailedPreconditionError("admin server: Start() called twice or after Stop()");
  }
  const std::string where = AddressText(address_);
  if (address_.kind != config::SocketAddress::Kind::kTcp) {
    return absl::InvalidArgumentError(StrCat("admin server: ", where, " is not a TCP address"));
  }
  error_code ec;
  tcp::resolver resolver(io_context_);
  // Passive: an empty or wildcard host binds every interface; numeric service avoids
  // /etc/services lookups for a port we already have as a number.
  tcp::resolver::results_type endpoints =
      resolver.resolve(address_.host, std::to_string(address_.port),
                       tcp::resolver::passive | tcp::resolver::numeric_service, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        StrCat("admin server: cannot resolve ", where, ": ", ec.message()));
  }
  error_code bind_error = net::error::host_not_found;
  for (const auto& entry : endpoints) {
    if (Listen(entry.endpoint(), bind_error).ok()) break;
  }
  if (!acceptor_.is_open()) {
    return absl::UnavailableError(
        StrCat("admin server: cannot listen on ", where, ": ", bind_error.message()));
  }
  tcp::endpoint local = acceptor_.local_endpoint(ec);
  port_.store(ec ? 0 : local.port(), std::memory_order_release);
  Accept();
  try {
    thread_ = std::thread([this] { Run(); });
  } catch (const std::exception& e) {
    acceptor_.close(ec);
    return absl::InternalError(StrCat("admin server: cannot start its thread: ", e.what()));
  }
  state_ = State::kRunning;
  LogInfo("admin server listening on ", EndpointText(local));
  return absl::OkStatus();
}

absl::Status AdminServer::Impl::Listen(const tcp::endpoint& endpoint, error_code& ec) {
  error_code ignored;
  acceptor_.open(endpoint.protocol(), ec);
  // Restarting sepal must not fail on connections of the previous process in TIME_WAIT.
  if (!ec) acceptor_.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor_.bind(endpoint, ec);
  if (!ec) acceptor_.listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    acceptor_.close(ignored);
    return absl::UnavailableError(ec.message());
  }
  return absl::OkStatus();
}

void AdminServer::Impl::Run() {
  pthread_setname_np(pthread_self(), "sepal-admin");
  // run() returns once Stop() has closed the acceptor and every session; an exception from
  // a handler would otherwise end the thread and silently take the admin port with it.
  for (;;) {
    try {
      io_context_.run();
      return;
    } catch (const std::exception& e) {
      LogError("admin server: unexpected exception: ", e.what());
    }
  }
}

void AdminServer::Impl::Stop() {
  std::lock_guard lock(lifecycle_mutex_);
  State previous = std::exchange(state_, State::kStopped);
  if (previous != State::kRunning) return;
  net::post(io_context_, [this] { Shutdown(); });
  thread_.join();
}

void AdminServer::Impl::Shutdown() {
  stopping_ = true;
  error_code ignored;
  acceptor_.close(ignored);
  accept_retry_.cancel();
  // Closing only cancels; sessions unregister themselves as their handlers finish.
  for (Session* session : sessions_) session->Close();
}

void AdminServer::Impl::Accept() {
  acceptor_.async_accept(io_context_, [this](const error_code& ec, tcp::socket socket) {
    OnAccept(ec, std::move(socket));
  });
}

void AdminServer::Impl::OnAccept(const error_code& ec, tcp::socket socket) {
  if (stopping_ || ec == net::error::operation_aborted) return;
  if (ec) {
    // Typically EMFILE: back off briefly rather than spin on the failing accept.
    LogWarning("admin server: accept failed: ", ec.message());
    accept_retry_.expires_after(std::chrono::milliseconds(100));
    accept_retry_.async_wait([this](const error_code& wait_ec) {
      if (!wait_ec && !stopping_) Accept();
    });
    return;
  }
  if (sessions_.size() >= limits_.max_connections) {
    // Logged once per saturation episode: a flood must not become a log flood too.
    if (!saturation_logged_) {
      LogWarning("admin server: ", limits_.max_connections,
                 " connections open; closing new ones until some finish");
      saturation_logged_ = true;
    }
    error_code ignored;
    socket.close(ignored);
  } else {
    saturation_logged_ = false;
    // Responses go out in one write each; Nagle would hold a pipelined second response
    // until the client's delayed ACK of the first (~40 ms).
    error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    std::make_shared<Session>(*this, std::move(socket))->Begin();
  }
  Accept();
}

Response AdminServer::Impl::Respond(const Request& request) {
  std::string_view target = View(request.target());
  std::string_view path = target.substr(0, target.find('?'));
  bool head = request.method() == http::verb::head;
  if (request.method() != http::verb::get && !head) {
    Response response = MakeResponse(http::status::method_not_allowed, kTextContentType,
                                     StrCat("method not allowed; use GET or HEAD\n", kEndpoints),
                                     request.version(), request.keep_alive());
    response.set(http::field::allow, "GET, HEAD");
    return response;
  }
  Response response;
  // A throwing handler (or allocation failure) answers 500 instead of unwinding the loop.
  try {
    response = Dispatch(path, request);
  } catch (const std::exception& e) {
    LogWarning("admin: ", path, " failed: ", e.what());
    response = MakeResponse(http::status::internal_server_error, kTextContentType,
                            "internal error\n", request.version(), request.keep_alive());
  }
  if (head) {
    // Same headers as GET, Content-Length included, without the body.
    std::size_t length = response.body().size();
    response.body().clear();
    response.content_length(length);
  }
  return response;
}

Response AdminServer::Impl::Dispatch(std::string_view path, const Request& request) {
  if (path == "/metrics") return Metrics(request);
  if (path == "/healthz") {
    return MakeResponse(http::status::ok, kTextContentType, "ok\n", request.version(),
                        request.keep_alive());
  }
  if (path == "/ready") return Ready(request);
  if (path == "/config") return Config(request);
  if (path == "/peers") {
    if (!handlers_.peers) {
      return MakeResponse(http::status::service_unavailable, kTextContentType,
                          "peers not available\n", request.version(), request.keep_alive());
    }
    return MakeResponse(http::status::ok, kJsonContentType,
                        PeersToJson(handlers_.peers(), std::chrono::system_clock::now()),
                        request.version(), request.keep_alive());
  }
  if (path == "/" || path == "/status") {
    if (!handlers_.status) {
      return MakeResponse(http::status::service_unavailable, kTextContentType,
                          "status page not available\n", request.version(), request.keep_alive());
    }
    Response response = MakeResponse(http::status::ok, kHtmlContentType,
                                     StatusPageHtml(handlers_.status()), request.version(),
                                     request.keep_alive());
    // A page of peer names and addresses: no caching, no framing by other sites.
    response.set(http::field::cache_control, "no-store");
    response.set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'");
    response.set("X-Frame-Options", "DENY");
    return response;
  }
  return MakeResponse(http::status::not_found, kTextContentType, StrCat("not found\n", kEndpoints),
                      request.version(), request.keep_alive());
}

Response AdminServer::Impl::Metrics(const Request& request) {
  if (!handlers_.metrics) {
    return MakeResponse(http::status::service_unavailable, kTextContentType,
                        "metrics not available\n", request.version(), request.keep_alive());
  }
  return MakeResponse(http::status::ok, kMetricsContentType, handlers_.metrics(), request.version(),
                      request.keep_alive());
}

Response AdminServer::Impl::Ready(const Request& request) {
  Readiness readiness = handlers_.ready ? handlers_.ready() : Readiness{};
  // Ready: "ready\n", then any degradations a ready process reports (one upstream of several
  // down). Not ready: one line per problem, so the body alone says what to fix.
  std::string body;
  if (readiness.ready) {
    body = "ready\n";
  } else if (readiness.problems.empty()) {
    body = "not ready\n";
  }
  for (const auto& [component, problem] : readiness.problems) {
    body += StrCat(component, ": ", problem, "\n");
  }
  return MakeResponse(readiness.ready ? http::status::ok : http::status::service_unavailable,
                      kTextContentType, std::move(body), request.version(), request.keep_alive());
}

Response AdminServer::Impl::Config(const Request& request) {
  ConfigInfo info;
  if (handlers_.config) info = handlers_.config();
  if (!info.config) {
    return MakeResponse(http::status::service_unavailable, kTextContentType,
                        "no configuration loaded\n", request.version(), request.keep_alive());
  }
  return MakeResponse(http::status::ok, kJsonContentType,
                      ConfigToJson(*info.config, info.generation, info.loaded_at),
                      request.version(), request.keep_alive());
}

AdminServer::AdminServer(config::SocketAddress address, Handlers handlers, AdminLimits limits)
    : impl_(std::make_unique<Impl>(std::move(address), std::move(handlers), limits)) {}

AdminServer::~AdminServer() = default;

absl::Status AdminServer::Start() { return impl_->Start(); }

void AdminServer::Stop() { impl_->Stop(); }

uint16_t AdminServer::port() const { return impl_->port(); }

}  // namespace sepal::admin
