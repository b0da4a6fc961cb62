// Stand-in REST SuperLink: blocking Beast reads and writes, a thread per connection.
#include "tests/support/fake_rest_superlink.h"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http.hpp>
#include <charconv>
#include <iostream>
#include <limits>
#include <type_traits>

#include "proxy/common/strings.h"
#include "tests/proto/fleet.pb.h"
#include "tests/support/payload.h"

namespace sepal::test {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

namespace {

using flwr::proto::FleetRequest;
using flwr::proto::FleetResponse;

constexpr std::string_view kFleetPrefix = "/api/v0/fleet/";
constexpr size_t kChunk = 64 * 1024;

uint64_t HeaderNumber(const http::request<http::buffer_body>& request, std::string_view name) {
  auto it = request.find(beast::string_view(name.data(), name.size()));
  if (it == request.end()) return 0;
  beast::string_view value = it->value();
  uint64_t n = 0;
  std::from_chars(value.data(), value.data() + value.size(), n);
  return n;
}

std::string Lower(beast::string_view text) {
  std::string out(text.data(), text.size());
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

std::string Varint(uint64_t n) {
  std::string out;
  do {
    uint8_t byte = n & 0x7f;
    n >>= 7;
    out.push_back(static_cast<char>(n ? byte | 0x80 : byte));
  } while (n);
  return out;
}

}  // namespace

struct FakeRestSuperLink::Impl {
  explicit Impl(FakeRestSuperLink& owner) : owner(owner) {}

  FakeRestSuperLink& owner;
  asio::io_context io;
  std::unique_ptr<asio::ip::tcp::acceptor> tcp;
  std::unique_ptr<asio::local::stream_protocol::acceptor> local;
  std::string unix_path;
  std::thread accept_thread;
  std::mutex mutex;
  bool stopping = false;
  std::vector<std::thread> threads;
  std::vector<int> fds;                      // connections, for Shutdown
  std::vector<std::shared_ptr<void>> sockets;  // kept open until Shutdown (no fd reuse)

  template <typename Acceptor>
  void AcceptLoop(Acceptor& acceptor) {
    using Socket = typename Acceptor::protocol_type::socket;
    while (true) {
      auto socket = std::make_shared<Socket>(io);
      beast::error_code ec;
      acceptor.accept(*socket, ec);
      std::lock_guard lock(mutex);
      if (stopping) return;
      if (ec) continue;
      if constexpr (std::is_same_v<Socket, asio::ip::tcp::socket>) {
        socket->set_option(asio::ip::tcp::no_delay(true), ec);
      }
      ++owner.connections_;
      fds.push_back(socket->native_handle());
      sockets.push_back(socket);
      threads.emplace_back([this, socket] { Serve(*socket); });
    }
  }

  template <typename Socket>
  void WriteText(Socket& socket, unsigned status, std::string_view content_type,
                 std::string body, bool keep_alive) {
    http::response<http::string_body> response{static_cast<http::status>(status), 11};
    response.set(http::field::content_type,
                 beast::string_view(content_type.data(), content_type.size()));
    response.body() = std::move(body);
    response.keep_alive(keep_alive);
    response.prepare_payload();
    beast::error_code ec;
    http::write(socket, response, ec);
  }

  template <typename Socket>
  void Serve(Socket& socket) {
    beast::flat_buffer buffer;
    std::vector<char> chunk(kChunk);
    while (true) {
      http::request_parser<http::buffer_body> parser;
      parser.body_limit(std::numeric_limits<uint64_t>::max());
      parser.header_limit(64 * 1024);
      beast::error_code ec;
      http::read_header(socket, buffer, parser, ec);
      if (ec) return;
      ++owner.requests_;
      auto& request = parser.get();
      if (beast::iequals(request[http::field::expect], "100-continue")) {
        asio::write(socket, asio::buffer(std::string_view("HTTP/1.1 100 Continue\r\n\r\n")), ec);
        if (ec) return;
      }
      std::string kept;
      bool kept_all = true;
      uint64_t total = 0;
      Fnv1a fnv;
      while (!parser.is_done()) {
        request.body().data = chunk.data();
        request.body().size = chunk.size();
        http::read(socket, buffer, parser, ec);
        if (ec == http::error::need_buffer) ec = {};
        if (ec) return;
        size_t n = chunk.size() - request.body().size;
        total += n;
        fnv.Update(chunk.data(), n);
        if (kept_all && kept.size() + n <= owner.options_.parse_limit) {
          kept.append(chunk.data(), n);
        } else {
          kept_all = false;
          kept.clear();
        }
      }
      owner.body_bytes_ += total;
      bool keep_alive = request.keep_alive();
      if (uint64_t sleep_ms = HeaderNumber(request, "x-sleep-ms")) {
        std::this_thread::sleep_for(std::chrono::milliseconds(sleep_ms));
      }
      if (!Answer(socket, request, kept_all ? &kept : nullptr, total, fnv, keep_alive) ||
          !keep_alive) {
        ::shutdown(socket.native_handle(), SHUT_WR);
        return;
      }
    }
  }

  // False if the connection is unusable after the answer.
  template <typename Socket>
  bool Answer(Socket& socket, const http::request<http::buffer_body>& request,
              const std::string* body, uint64_t total, const Fnv1a& fnv, bool keep_alive) {
    std::string path(request.target().data(), request.target().size());
    const auto& methods = Methods();
    bool known = path.starts_with(kFleetPrefix) &&
                 std::find(methods.begin(), methods.end(), path.substr(kFleetPrefix.size())) !=
                     methods.end();
    if (!known) {
      WriteText(socket, 404, "text/plain; charset=utf-8", "Not Found", keep_alive);
      return true;
    }
    if (request.method() != http::verb::post) {
      WriteText(socket, 405, "text/plain; charset=utf-8", "Method Not Allowed", keep_alive);
      return true;
    }
    if (uint64_t status = HeaderNumber(request, "x-reply-status")) {
      WriteText(socket, static_cast<unsigned>(status), "text/plain; charset=utf-8",
                "requested status", keep_alive);
      return true;
    }
    for (auto [field, name] : {std::pair{http::field::content_type, "Content-Type"},
                               std::pair{http::field::accept, "Accept"}}) {
      auto it = request.find(field);
      if (it == request.end() || it->value() != "application/protobuf") {
        std::string detail = it == request.end() ? StrCat("Missing header `", name, "`")
                                                 : StrCat("Unsupported `", name, "`");
        WriteText(socket, 400, "application/json", StrCat("{\"detail\":\"", detail, "\"}"),
                  keep_alive);
        return true;
      }
    }
    owner.Record(path);
    FleetResponse response;
    FleetRequest parsed;
    if (body != nullptr && parsed.ParseFromString(*body)) {
      *response.mutable_node() = parsed.node();
    }
    for (const auto& field : request) {
      response.add_seen_metadata(StrCat(Lower(field.name_string()), "=",
                                        std::string_view(field.value().data(),
                                                         field.value().size())));
    }
    response.add_seen_metadata(StrCat("body-bytes=", total));
    response.add_seen_metadata(StrCat("body-fnv1a=", fnv.Hex()));
    uint64_t reply_bytes = HeaderNumber(request, "x-reply-bytes");
    std::string head = response.SerializeAsString();
    // The payload (field 2) goes last so that a large one streams from a generator; protobuf
    // takes fields in any order.
    if (reply_bytes == 0 && body != nullptr) {
      response.Clear();
      response.set_payload(parsed.payload());
      head += response.SerializeAsString();
    } else if (reply_bytes > 0) {
      head += "\x12" + Varint(reply_bytes);
    }
    std::string header = StrCat("HTTP/1.1 200 OK\r\nContent-Type: application/protobuf\r\n",
                                "Content-Length: ", head.size() + reply_bytes, "\r\n",
                                keep_alive ? "" : "Connection: close\r\n", "\r\n");
    beast::error_code ec;
    asio::write(socket, asio::buffer(header + head), ec);
    std::string piece(kChunk, '\0');
    for (uint64_t sent = 0; !ec && sent < reply_bytes;) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(kChunk, reply_bytes - sent));
      FillPayload(piece.data(), n, sent);
      asio::write(socket, asio::buffer(piece.data(), n), ec);
      sent += n;
    }
    return !ec;
  }
};

const std::vector<std::string>& FakeRestSuperLink::Methods() {
  static const std::vector<std::string> methods = {
      "register-node",  "activate-node", "deactivate-node",     "unregister-node",
      "create-node",    "delete-node",   "ping",                "send-node-heartbeat",
      "pull-messages",  "push-messages", "pull-object",         "push-object",
      "get-run",        "get-fab",       "confirm-message-received"};
  return methods;
}

FakeRestSuperLink::FakeRestSuperLink(Options options)
    : options_(std::move(options)), impl_(std::make_unique<Impl>(*this)) {}

std::unique_ptr<FakeRestSuperLink> FakeRestSuperLink::Start(const std::string& address) {
  Options options;
  options.address = address;
  return Start(std::move(options));
}

std::unique_ptr<FakeRestSuperLink> FakeRestSuperLink::Start(Options options) {
  std::unique_ptr<FakeRestSuperLink> link(new FakeRestSuperLink(options));
  Impl& impl = *link->impl_;
  beast::error_code ec;
  const std::string& address = options.address;
  if (address.starts_with("unix:")) {
    impl.unix_path = address.substr(5);
    ::unlink(impl.unix_path.c_str());
    impl.local = std::make_unique<asio::local::stream_protocol::acceptor>(impl.io);
    asio::local::stream_protocol::endpoint endpoint(impl.unix_path);
    impl.local->open(endpoint.protocol(), ec);
    if (!ec) impl.local->bind(endpoint, ec);
    if (!ec) impl.local->listen(asio::socket_base::max_listen_connections, ec);
    link->address_ = address;
    if (!ec) impl.accept_thread = std::thread([&impl] { impl.AcceptLoop(*impl.local); });
  } else {
    size_t colon = address.rfind(':');
    std::string host = address.substr(0, colon);
    uint16_t port = static_cast<uint16_t>(std::stoi(address.substr(colon + 1)));
    asio::ip::tcp::endpoint endpoint(asio::ip::make_address(host, ec), port);
    impl.tcp = std::make_unique<asio::ip::tcp::acceptor>(impl.io);
    if (!ec) impl.tcp->open(endpoint.protocol(), ec);
    if (!ec) impl.tcp->set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) impl.tcp->bind(endpoint, ec);
    if (!ec) impl.tcp->listen(asio::socket_base::max_listen_connections, ec);
    if (!ec) {
      link->port_ = impl.tcp->local_endpoint().port();
      link->address_ = StrCat(host, ":", link->port_);
      impl.accept_thread = std::thread([&impl] { impl.AcceptLoop(*impl.tcp); });
    }
  }
  if (ec) {
    std::cerr << "FakeRestSuperLink: cannot listen on " << address << ": " << ec.message()
              << "\n";
    return nullptr;
  }
  return link;
}

FakeRestSuperLink::~FakeRestSuperLink() { Shutdown(); }

void FakeRestSuperLink::Shutdown() {
  Impl& impl = *impl_;
  {
    std::lock_guard lock(impl.mutex);
    if (impl.stopping) return;
    impl.stopping = true;
  }
  // shutdown(2) on the listening socket wakes the blocked accept (EINVAL on Linux).
  if (impl.tcp) ::shutdown(impl.tcp->native_handle(), SHUT_RDWR);
  if (impl.local) ::shutdown(impl.local->native_handle(), SHUT_RDWR);
  if (impl.accept_thread.joinable()) impl.accept_thread.join();
  {
    std::lock_guard lock(impl.mutex);
    for (int fd : impl.fds) ::shutdown(fd, SHUT_RDWR);
  }
  for (std::thread& thread : impl.threads) thread.join();
  impl.threads.clear();
  impl.sockets.clear();
  beast::error_code ec;
  if (impl.tcp) impl.tcp->close(ec);
  if (impl.local) impl.local->close(ec);
  if (!impl.unix_path.empty()) ::unlink(impl.unix_path.c_str());
}

int FakeRestSuperLink::CallCount(const std::string& path) const {
  std::lock_guard lock(mutex_);
  auto it = calls_.find(path);
  return it == calls_.end() ? 0 : it->second;
}

void FakeRestSuperLink::Record(const std::string& path) {
  std::lock_guard lock(mutex_);
  ++calls_[path];
}

}  // namespace sepal::test
