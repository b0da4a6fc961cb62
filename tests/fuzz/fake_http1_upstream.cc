// FakeHttp1Upstream: a Beast request parser and one answer at a time per accepted connection,
// on the caller's io_context.
#include "tests/fuzz/fake_http1_upstream.h"

#include <unistd.h>

#include <algorithm>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http.hpp>
#include <optional>
#include <sstream>
#include <string_view>

#include "tests/fuzz/fuzz_check.h"

namespace sepal::fuzz {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using local = asio::local::stream_protocol;

namespace {

constexpr size_t kBigResponseBytes = 256 * 1024;
// Above the fuzz listener's header limit plus sepal's identity fields.
constexpr uint32_t kHeaderLimit = 64 * 1024;
constexpr uint64_t kBodyLimit = 4u << 20;

std::string_view LastSegment(std::string_view path) {
  size_t slash = path.rfind('/');
  return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

// How sepal may end what it sends: closing mid-request (its client went away) is fine, a
// message Beast cannot parse is not.
bool IsCleanEnd(const boost::system::error_code& ec) {
  return ec == http::error::end_of_stream || ec == http::error::partial_message ||
         ec == asio::error::eof || ec == asio::error::connection_reset ||
         ec == asio::error::operation_aborted || ec == asio::error::bad_descriptor ||
         ec == asio::error::broken_pipe;
}

}  // namespace

class FakeHttp1Upstream::Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(FakeHttp1Upstream& owner, local::socket socket)
      : owner_(owner), socket_(std::move(socket)) {}

  void Start() { ReadRequest(); }
  void Close() {
    boost::system::error_code ignored;
    socket_.close(ignored);
  }
  bool open() const { return socket_.is_open(); }

 private:
  void ReadRequest() {
    parser_.emplace();
    parser_->header_limit(kHeaderLimit);
    parser_->body_limit(kBodyLimit);
    auto self = shared_from_this();
    http::async_read_header(socket_, buffer_, *parser_,
                            [self](boost::system::error_code ec, size_t) {
                              if (ec) return self->End(ec, "request header");
                              self->OnHeader();
                            });
  }

  void OnHeader() {
    ++owner_.requests_;
    const auto& request = parser_->get();
    std::string path(request.target().substr(0, request.target().find('?')));
    Check(request, path);
    std::string_view method = LastSegment(path);
    if (method == "hang") return Hold();
    if (method == "close") return Close();
    if (method == "early") {
      return Write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok", true);
    }
    auto self = shared_from_this();
    http::async_read(socket_, buffer_, *parser_,
                     [self, m = std::string(method)](boost::system::error_code ec, size_t) {
                       if (ec) return self->End(ec, "request body");
                       self->Answer(m);
                     });
  }

  void Check(const http::request<http::string_body>& request, const std::string& path) {
    FUZZ_CHECK(path.starts_with("/api/v0/fleet/") || path.starts_with("/open/"),
               "sepal forwarded an unrouted path: " + path);
    FUZZ_CHECK(path.find("//") == std::string::npos, "runs of '/' are merged: " + path);
    FUZZ_CHECK(path != owner_.expectations_.denied_path, "a denied path was forwarded");
    int logins = 0;
    for (const auto& field : request) {
      std::string_view name = field.name_string();
      if (name.size() < 10 || !beast::iequals(name.substr(0, 10), "tailscale-")) continue;
      bool sepals = name == "tailscale-user-login" || name == "tailscale-node-name" ||
                    name == "tailscale-node-tags" || name == "tailscale-app-capabilities";
      FUZZ_CHECK(sepals, "a client's tailscale-* field reached the upstream: " + std::string(name));
      FUZZ_CHECK(request.count(name) == 1, "identity field sent once: " + std::string(name));
      if (name == "tailscale-user-login") {
        ++logins;
        FUZZ_CHECK(field.value() == owner_.expectations_.identity_login,
                   "tailscale-user-login is the peer's: " + std::string(field.value()));
      }
    }
    if (path.starts_with("/api/v0/fleet/")) {
      FUZZ_CHECK(logins == 1, "a Fleet request carries the peer's identity");
    }
  }

  void Answer(const std::string& method) {
    const auto& request = parser_->get();
    bool keep_alive = request.keep_alive();
    if (method == "garbage") return Write("HTTP/1.1 2OO nope\r\n\r\n\x01\x02", true);
    http::response<http::string_body> response;
    response.version(11);
    response.keep_alive(keep_alive);
    if (method == "missing") {
      response.result(http::status::not_found);
      response.set(http::field::content_type, "text/plain");
      response.body() = "no such method\n";
    } else {
      response.result(http::status::ok);
      response.set(http::field::content_type, "application/protobuf");
      response.body() = method == "big" ? std::string(kBigResponseBytes, 'b') : request.body();
    }
    if (method == "chunked") {
      response.chunked(true);
    } else {
      response.prepare_payload();
    }
    std::ostringstream out;
    out << response;
    Write(out.str(), !keep_alive);
  }

  void Write(std::string bytes, bool close_after) {
    auto self = shared_from_this();
    auto owned = std::make_shared<std::string>(std::move(bytes));
    asio::async_write(socket_, asio::buffer(*owned),
                      [self, owned, close_after](boost::system::error_code ec, size_t) {
                        if (ec || close_after) return self->Close();
                        self->ReadRequest();
                      });
  }

  // Reads (and drops) what else arrives, so sepal closing is seen.
  void Hold() {
    auto self = shared_from_this();
    socket_.async_read_some(asio::buffer(drop_), [self](boost::system::error_code ec, size_t) {
      if (ec) return self->Close();
      self->Hold();
    });
  }

  void End(const boost::system::error_code& ec, std::string_view where) {
    FUZZ_CHECK(IsCleanEnd(ec),
               std::string("sepal sent a malformed ") + std::string(where) + ": " + ec.message());
    Close();
  }

  FakeHttp1Upstream& owner_;
  local::socket socket_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  char drop_[4096];
};

FakeHttp1Upstream::FakeHttp1Upstream(asio::io_context& io, const std::string& socket_path,
                                     Expectations expectations)
    : acceptor_(io), expectations_(std::move(expectations)) {
  ::unlink(socket_path.c_str());
  acceptor_.open();
  acceptor_.bind(local::endpoint(socket_path));
  acceptor_.listen();
  Accept();
}

FakeHttp1Upstream::~FakeHttp1Upstream() { Stop(); }

void FakeHttp1Upstream::Accept() {
  acceptor_.async_accept([this](boost::system::error_code ec, local::socket socket) {
    if (ec) return;
    auto connection = std::make_shared<Connection>(*this, std::move(socket));
    std::erase_if(connections_, [](const auto& weak) { return weak.expired(); });
    connections_.push_back(connection);
    connection->Start();
    Accept();
  });
}

void FakeHttp1Upstream::Stop() {
  boost::system::error_code ignored;
  acceptor_.close(ignored);
  for (auto& weak : connections_) {
    if (auto connection = weak.lock()) connection->Close();
  }
}

size_t FakeHttp1Upstream::open_connections() const {
  return static_cast<size_t>(
      std::count_if(connections_.begin(), connections_.end(), [](const auto& weak) {
        auto connection = weak.lock();
        return connection && connection->open();
      }));
}

}  // namespace sepal::fuzz
