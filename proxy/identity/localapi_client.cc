// LocalAPI client: one short-lived exchange object per request (Beast, error codes only).
#include "proxy/identity/localapi_client.h"

#include <algorithm>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <cstring>
#include <exception>
#include <limits>
#include <optional>
#include <utility>
#include <vector>

#include "proxy/common/strings.h"

namespace sepal::identity {
namespace {

namespace net = boost::asio;
namespace http = boost::beast::http;
using boost::system::error_code;
using Failure = LocalApiResponse::Failure;

// What a failed exchange reports, for detail strings.
std::string Describe(const error_code& ec) { return ec.message(); }

// Connects, sends one GET and keeps a deadline that closes the socket when it expires.
// Subclasses read the response.
class Exchange : public std::enable_shared_from_this<Exchange> {
 public:
  virtual ~Exchange() = default;

  void Begin(std::chrono::milliseconds timeout) {
    ArmDeadline(timeout);
    std::optional<net::local::stream_protocol::endpoint> endpoint;
    try {
      // The only throwing step: a path longer than sun_path.
      endpoint.emplace(socket_path_);
    } catch (const std::exception& e) {
      // Reported from the event loop so the callback never runs inside the caller.
      net::post(socket_.get_executor(), [self = shared_from_this(), what = std::string(e.what())] {
        self->OnFailure(Failure::kConnect, what);
      });
      return;
    }
    socket_.async_connect(
        *endpoint, [self = shared_from_this()](const error_code& ec) { self->OnConnected(ec); });
  }

 protected:
  Exchange(net::any_io_executor executor, std::string socket_path, std::string target)
      : socket_(executor), deadline_(executor), socket_path_(std::move(socket_path)) {
    request_.method(http::verb::get);
    request_.target(target);
    request_.version(11);
    request_.set(http::field::host, LocalApiClient::kHost);
    request_.set(http::field::user_agent, "sepal");
    request_.set(http::field::connection, "close");
  }

  virtual void StartReading() = 0;
  virtual void OnFailure(Failure failure, std::string error) = 0;

  // A failed step: reports a timeout as such, since closing the socket is how it shows.
  void Fail(Failure failure, const error_code& ec) {
    if (timed_out_) {
      OnFailure(Failure::kTimeout, "timed out");
    } else {
      OnFailure(failure, Describe(ec));
    }
  }

  void DisarmDeadline() {
    deadline_armed_ = false;
    deadline_.cancel();
  }

  void Close() {
    DisarmDeadline();
    error_code ignored;
    socket_.close(ignored);
  }

  net::local::stream_protocol::socket socket_;
  boost::beast::flat_buffer buffer_;

 private:
  void ArmDeadline(std::chrono::milliseconds timeout) {
    deadline_armed_ = true;
    deadline_.expires_after(timeout);
    deadline_.async_wait([self = shared_from_this()](const error_code& ec) {
      // A deadline that fired just before it was disarmed still lands here with success.
      if (ec || !self->deadline_armed_) return;
      self->timed_out_ = true;
      error_code ignored;
      self->socket_.close(ignored);
    });
  }

  void OnConnected(const error_code& ec) {
    if (ec) return Fail(Failure::kConnect, ec);
    http::async_write(socket_, request_,
                      [self = shared_from_this()](const error_code& write_ec, size_t) {
                        if (write_ec) return self->Fail(Failure::kIo, write_ec);
                        self->StartReading();
                      });
  }

  net::steady_timer deadline_;
  bool deadline_armed_ = false;
  bool timed_out_ = false;
  std::string socket_path_;
  http::request<http::empty_body> request_;
};

// One request, one whole response (status, body up to a limit, Retry-After).
class RequestExchange final : public Exchange {
 public:
  RequestExchange(net::any_io_executor executor, std::string socket_path, std::string target,
                  size_t max_body, LocalApiClient::ResponseCallback done)
      : Exchange(std::move(executor), std::move(socket_path), std::move(target)),
        done_(std::move(done)) {
    parser_.body_limit(max_body);
  }

 private:
  void StartReading() override {
    http::async_read(socket_, buffer_, parser_,
                     [self = std::static_pointer_cast<RequestExchange>(shared_from_this())](
                         const error_code& ec, size_t) { self->OnRead(ec); });
  }

  void OnRead(const error_code& ec) {
    if (ec) return Fail(Failure::kIo, ec);
    LocalApiResponse response;
    response.status = parser_.get().result_int();
    if (auto retry_after = parser_.get().find(http::field::retry_after);
        retry_after != parser_.get().end()) {
      response.retry_after = std::string(retry_after->value());
    }
    response.body = std::move(parser_.get().body());
    Finish(std::move(response));
  }

  void OnFailure(Failure failure, std::string error) override {
    LocalApiResponse response;
    response.failure = failure;
    response.error = std::move(error);
    Finish(std::move(response));
  }

  void Finish(LocalApiResponse response) {
    if (!done_) return;
    Close();
    LocalApiClient::ResponseCallback done = std::move(done_);
    done_ = nullptr;
    done(std::move(response));
  }

  http::response_parser<http::string_body> parser_;
  LocalApiClient::ResponseCallback done_;
};

class WatchExchange final : public Exchange, public LocalApiClient::Watch {
 public:
  WatchExchange(net::any_io_executor executor, std::string socket_path, std::string target,
                LocalApiClient::LineCallback on_line,
                LocalApiClient::DisconnectCallback on_disconnect)
      : Exchange(std::move(executor), std::move(socket_path), std::move(target)),
        on_line_(std::move(on_line)),
        on_disconnect_(std::move(on_disconnect)),
        chunk_(64 * 1024) {
    parser_.body_limit(std::numeric_limits<std::uint64_t>::max());
  }

  // Callbacks stay in place: Cancel may be called from inside on_line.
  void Cancel() override {
    ended_ = true;
    Close();
  }

 private:
  std::shared_ptr<WatchExchange> self() {
    return std::static_pointer_cast<WatchExchange>(shared_from_this());
  }

  void StartReading() override {
    http::async_read_header(socket_, buffer_, parser_,
                            [self = self()](const error_code& ec, size_t) {
                              if (self->ended_) return;
                              if (ec) return self->Fail(Failure::kIo, ec);
                              // Established: the stream may now be quiet for hours.
                              self->DisarmDeadline();
                              self->status_ = self->parser_.get().result_int();
                              self->ReadBody();
                            });
  }

  void ReadBody() {
    // A response without a body (304, 204, Content-Length: 0) is complete after its header;
    // reading on from a finished parser is an error (Beast asserts in debug builds).
    if (parser_.is_done()) return End("stream ended");
    parser_.get().body().data = chunk_.data();
    parser_.get().body().size = chunk_.size();
    http::async_read_some(socket_, buffer_, parser_,
                          [self = self()](error_code ec, size_t) { self->OnBody(ec); });
  }

  void OnBody(error_code ec) {
    if (ended_) return;
    // need_buffer only says the chunk buffer is full, which is how buffer_body reads.
    if (ec == http::error::need_buffer) ec = {};
    Consume(chunk_.data(), chunk_.size() - parser_.get().body().size);
    if (ended_) return;
    if (ec) return Fail(Failure::kIo, ec);
    if (parser_.is_done()) return End("stream ended");
    ReadBody();
  }

  void Consume(const char* data, size_t size) {
    if (status_ != 200) {
      // An error answer: keep the start of its text for the disconnect reason.
      error_text_.append(
          data, std::min(size, kMaxErrorText - std::min(kMaxErrorText, error_text_.size())));
      return;
    }
    while (size > 0) {
      const char* newline = static_cast<const char*>(std::memchr(data, '\n', size));
      size_t take = newline ? static_cast<size_t>(newline - data) : size;
      size_t room = LocalApiClient::kMaxNotificationBytes - line_.size();
      line_.append(data, std::min(take, room));
      if (newline == nullptr) return;
      data += take + 1;
      size -= take + 1;
      std::string line = std::move(line_);
      line_.clear();
      if (!line.empty()) on_line_(line);
      if (ended_) return;
    }
  }

  void OnFailure(Failure failure, std::string error) override {
    (void)failure;
    End(std::move(error));
  }

  void End(std::string reason) {
    if (ended_) return;
    ended_ = true;
    Close();
    if (status_ != 0 && status_ != 200) {
      while (!error_text_.empty() && (error_text_.back() == '\n' || error_text_.back() == '\r')) {
        error_text_.pop_back();
      }
      reason = StrCat("watch-ipn-bus returned ", status_, ": ", error_text_);
    }
    on_disconnect_(reason);
  }

  static constexpr size_t kMaxErrorText = 1024;

  LocalApiClient::LineCallback on_line_;
  LocalApiClient::DisconnectCallback on_disconnect_;
  http::response_parser<http::buffer_body> parser_;
  std::vector<char> chunk_;
  std::string line_;
  std::string error_text_;
  unsigned status_ = 0;
  bool ended_ = false;
};

// RFC 3986 query component encoding: unreserved characters stay, the rest is %XX.
std::string PercentEncode(std::string_view text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(text.size() * 3);
  for (char c : text) {
    unsigned char byte = static_cast<unsigned char>(c);
    bool unreserved = (byte >= 'a' && byte <= 'z') || (byte >= 'A' && byte <= 'Z') ||
                      (byte >= '0' && byte <= '9') || byte == '-' || byte == '.' || byte == '_' ||
                      byte == '~';
    if (unreserved) {
      out.push_back(c);
    } else {
      out.push_back('%');
      out.push_back(kHex[byte >> 4]);
      out.push_back(kHex[byte & 0xF]);
    }
  }
  return out;
}

}  // namespace

LocalApiClient::LocalApiClient(boost::asio::any_io_executor executor, std::string socket_path)
    : executor_(std::move(executor)), socket_path_(std::move(socket_path)) {}

std::string LocalApiClient::WhoIsTarget(std::string_view addr,
                                        const LookupDestination& destination) {
  // proto=tcp: without it a miss can block tailscaled for ~360 ms probing other protocols.
  std::string target = StrCat("/localapi/v0/whois?addr=", PercentEncode(addr), "&proto=tcp");
  if (destination.ip) StrAppend(&target, "&dst_ip=", PercentEncode(destination.ip->to_string()));
  if (!destination.service.empty()) {
    StrAppend(&target, "&svc_name=", PercentEncode(destination.service));
  }
  return target;
}

void LocalApiClient::WhoIs(std::string_view addr, const LookupDestination& destination,
                           std::chrono::milliseconds timeout, ResponseCallback done) {
  Get(WhoIsTarget(addr, destination), timeout, kMaxWhoIsBodyBytes, std::move(done));
}

void LocalApiClient::Get(std::string_view target, std::chrono::milliseconds timeout,
                         size_t max_body, ResponseCallback done) {
  auto exchange = std::make_shared<RequestExchange>(executor_, socket_path_, std::string(target),
                                                    max_body, std::move(done));
  exchange->Begin(timeout);
}

std::shared_ptr<LocalApiClient::Watch> LocalApiClient::WatchIpnBus(
    uint64_t mask, LineCallback on_line, DisconnectCallback on_disconnect,
    std::chrono::milliseconds header_timeout) {
  auto exchange = std::make_shared<WatchExchange>(executor_, socket_path_,
                                                  StrCat("/localapi/v0/watch-ipn-bus?mask=", mask),
                                                  std::move(on_line), std::move(on_disconnect));
  exchange->Begin(header_timeout);
  return exchange;
}

}  // namespace sepal::identity
