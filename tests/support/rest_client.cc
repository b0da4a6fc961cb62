// Blocking HTTP/1.1 test client: raw non-blocking sockets waited on with poll(2) (so every
// read and write has a timeout), request heads written by hand, responses parsed by Beast's
// response_parser<buffer_body> into a fixed buffer, counted and hashed as they stream.
#include "tests/support/rest_client.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/buffer.hpp>
#include <boost/asio/error.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <limits>
#include <thread>

#include "tests/support/payload.h"

namespace sepal::test {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

namespace {

using Clock = std::chrono::steady_clock;
using Headers = std::vector<std::pair<std::string, std::string>>;

constexpr size_t kReadChunk = 64 * 1024;
constexpr std::chrono::milliseconds kContinueWait{1000};

std::string Lower(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

bool IEquals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

std::string ErrnoText(std::string_view what, int error) {
  std::string text(what);
  text += ": ";
  text += std::strerror(error);
  return text;
}

int Millis(std::chrono::milliseconds duration) {
  return static_cast<int>(
      std::clamp<int64_t>(duration.count(), 0, std::numeric_limits<int>::max()));
}

std::chrono::milliseconds Since(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
}

// Waits up to timeout for `events` on fd. False with ec = timed_out (or the poll error).
bool WaitFor(int fd, short events, std::chrono::milliseconds timeout, beast::error_code& ec) {
  Clock::time_point deadline = Clock::now() + timeout;
  while (true) {
    pollfd entry{fd, events, 0};
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    int ready = ::poll(&entry, 1, Millis(std::max(left, std::chrono::milliseconds(0))));
    if (ready > 0) return true;  // ready, or POLLERR/POLLHUP: the next call reports it
    if (ready == 0) {
      ec = asio::error::timed_out;
      return false;
    }
    if (errno != EINTR) {
      ec.assign(errno, boost::system::system_category());
      return false;
    }
  }
}

// A connected non-blocking socket as Beast's SyncReadStream, each read_some bounded by the
// timeout. End of stream is reported as asio::error::eof, as Beast expects.
class FdStream {
 public:
  FdStream(int fd, std::chrono::milliseconds timeout) : fd_(fd), timeout_(timeout) {}

  template <typename MutableBufferSequence>
  size_t read_some(const MutableBufferSequence& buffers, beast::error_code& ec) {
    for (auto it = asio::buffer_sequence_begin(buffers); it != asio::buffer_sequence_end(buffers);
         ++it) {
      asio::mutable_buffer buffer(*it);
      if (buffer.size() > 0) return Read(buffer.data(), buffer.size(), ec);
    }
    ec = {};
    return 0;
  }

  template <typename MutableBufferSequence>
  size_t read_some(const MutableBufferSequence& buffers) {
    beast::error_code ec;
    size_t n = read_some(buffers, ec);
    if (ec) throw beast::system_error(ec);
    return n;
  }

  size_t Read(void* data, size_t size, beast::error_code& ec) {
    while (true) {
      ssize_t n = ::recv(fd_, data, size, 0);
      if (n > 0) {
        ec = {};
        return static_cast<size_t>(n);
      }
      if (n == 0) {
        ec = asio::error::eof;
        return 0;
      }
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        ec.assign(errno, boost::system::system_category());
        return 0;
      }
      if (!WaitFor(fd_, POLLIN, timeout_, ec)) return 0;
    }
  }

  bool WriteAll(std::string_view bytes, beast::error_code& ec) {
    while (!bytes.empty()) {
      ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n >= 0) {
        bytes.remove_prefix(static_cast<size_t>(n));
        continue;
      }
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        ec.assign(errno, boost::system::system_category());
        return false;
      }
      if (!WaitFor(fd_, POLLOUT, timeout_, ec)) return false;
    }
    ec = {};
    return true;
  }

 private:
  int fd_;
  std::chrono::milliseconds timeout_;
};

// Sets name: value in a header list: replaces a same-named entry (any case) if `replace`,
// keeps it otherwise; appends if there is none.
void SetHeader(Headers& headers, std::string_view name, std::string_view value, bool replace) {
  for (auto& [existing, existing_value] : headers) {
    if (IEquals(existing, name)) {
      if (replace) existing_value = std::string(value);
      return;
    }
  }
  headers.emplace_back(std::string(name), std::string(value));
}

// An address to connect to, loopback only.
struct Target {
  int family = AF_UNSPEC;
  sockaddr_storage storage{};
  socklen_t length = 0;
};

bool ParseTarget(const std::string& address, Target& target, std::string& error) {
  if (address.starts_with("unix:")) {
    std::string path = address.substr(5);
    sockaddr_un un{};
    if (path.empty() || path.size() >= sizeof un.sun_path) {
      error = "bad unix socket path in '" + address + "'";
      return false;
    }
    un.sun_family = AF_UNIX;
    std::memcpy(un.sun_path, path.data(), path.size());
    target.family = AF_UNIX;
    std::memcpy(&target.storage, &un, sizeof un);
    target.length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + 1);
    return true;
  }
  std::string host;
  std::string port_text;
  if (address.starts_with('[')) {
    size_t close = address.find(']');
    if (close == std::string::npos || address.compare(close + 1, 1, ":") != 0) {
      error = "bad address '" + address + "' (want [::1]:PORT)";
      return false;
    }
    host = address.substr(1, close - 1);
    port_text = address.substr(close + 2);
  } else {
    size_t colon = address.rfind(':');
    if (colon == std::string::npos) {
      error = "bad address '" + address + "' (want HOST:PORT or unix:/path)";
      return false;
    }
    host = address.substr(0, colon);
    port_text = address.substr(colon + 1);
  }
  unsigned port = 0;
  auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec != std::errc() || end != port_text.data() + port_text.size() || port == 0 ||
      port > 65535) {
    error = "bad port in '" + address + "'";
    return false;
  }
  if (host == "localhost") host = "127.0.0.1";
  sockaddr_in v4{};
  sockaddr_in6 v6{};
  if (::inet_pton(AF_INET, host.c_str(), &v4.sin_addr) == 1) {
    if ((ntohl(v4.sin_addr.s_addr) >> 24) != 127) {
      error = "refusing '" + address + "': not a loopback address (127.0.0.0/8, ::1, unix:)";
      return false;
    }
    v4.sin_family = AF_INET;
    v4.sin_port = htons(static_cast<uint16_t>(port));
    target.family = AF_INET;
    std::memcpy(&target.storage, &v4, sizeof v4);
    target.length = sizeof v4;
    return true;
  }
  if (::inet_pton(AF_INET6, host.c_str(), &v6.sin6_addr) == 1) {
    if (!IN6_IS_ADDR_LOOPBACK(&v6.sin6_addr)) {
      error = "refusing '" + address + "': not a loopback address (127.0.0.0/8, ::1, unix:)";
      return false;
    }
    v6.sin6_family = AF_INET6;
    v6.sin6_port = htons(static_cast<uint16_t>(port));
    target.family = AF_INET6;
    std::memcpy(&target.storage, &v6, sizeof v6);
    target.length = sizeof v6;
    return true;
  }
  error = "refusing '" + address + "': not a loopback address (127.0.0.0/8, ::1, unix:)";
  return false;
}

bool BindSource(int fd, int family, const std::string& source, std::string& error) {
  if (family == AF_INET) {
    sockaddr_in v4{};
    v4.sin_family = AF_INET;
    if (::inet_pton(AF_INET, source.c_str(), &v4.sin_addr) != 1) {
      error = "bind_address '" + source + "' is not an IPv4 address (the target is IPv4)";
      return false;
    }
    if (::bind(fd, reinterpret_cast<sockaddr*>(&v4), sizeof v4) != 0) {
      error = ErrnoText("bind " + source, errno);
      return false;
    }
    return true;
  }
  if (family == AF_INET6) {
    sockaddr_in6 v6{};
    v6.sin6_family = AF_INET6;
    if (::inet_pton(AF_INET6, source.c_str(), &v6.sin6_addr) != 1) {
      error = "bind_address '" + source + "' is not an IPv6 address (the target is IPv6)";
      return false;
    }
    if (::bind(fd, reinterpret_cast<sockaddr*>(&v6), sizeof v6) != 0) {
      error = ErrnoText("bind " + source, errno);
      return false;
    }
    return true;
  }
  error = "bind_address needs a TCP address";
  return false;
}

}  // namespace

std::string RestResponse::Header(std::string_view name) const {
  auto it = headers.find(Lower(name));
  return it == headers.end() ? std::string() : it->second;
}

struct RestClient::Impl {
  explicit Impl(Options options_in) : options(std::move(options_in)), chunk(kReadChunk) {}
  ~Impl() { CloseFd(); }

  Options options;
  std::string address;
  int fd = -1;
  // The last exchange left the connection unusable (closed, Connection: close, broken).
  bool reconnect = false;
  int connects = 0;
  std::string last_error;
  beast::flat_buffer buffer;  // bytes read past the last parsed response
  std::vector<char> chunk;    // response body window

  void CloseFd() {
    if (fd >= 0) ::close(fd);
    fd = -1;
    reconnect = false;
    buffer.clear();
  }

  bool Fail(std::string error) {
    last_error = std::move(error);
    return false;
  }

  bool Open() {
    CloseFd();
    Target target;
    std::string error;
    if (!ParseTarget(address, target, error)) return Fail(error);
    int socket_fd = ::socket(target.family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (socket_fd < 0) return Fail(ErrnoText("socket", errno));
    auto fail = [&](std::string text) {
      ::close(socket_fd);
      return Fail(std::move(text));
    };
    if (target.family != AF_UNIX) {
      int one = 1;  // as urllib3's default socket options
      ::setsockopt(socket_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    if (!options.bind_address.empty() &&
        !BindSource(socket_fd, target.family, options.bind_address, error)) {
      return fail(error);
    }
    Clock::time_point deadline = Clock::now() + options.timeout;
    while (::connect(socket_fd, reinterpret_cast<sockaddr*>(&target.storage), target.length) != 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN && target.family == AF_UNIX && Clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));  // listen backlog full
        continue;
      }
      if (errno != EINPROGRESS) return fail(ErrnoText("connect " + address, errno));
      beast::error_code ec;
      if (!WaitFor(socket_fd, POLLOUT, options.timeout, ec)) {
        return fail("connect " + address + ": " + ec.message());
      }
      int so_error = 0;
      socklen_t length = sizeof so_error;
      ::getsockopt(socket_fd, SOL_SOCKET, SO_ERROR, &so_error, &length);
      if (so_error != 0) return fail(ErrnoText("connect " + address, so_error));
      break;
    }
    fd = socket_fd;
    ++connects;
    if (!options.preamble.empty() && !Write(options.preamble, "writing the preamble")) {
      CloseFd();
      return false;
    }
    last_error.clear();
    return true;
  }

  bool Write(std::string_view bytes, std::string_view what) {
    if (fd < 0) return Fail(std::string(what) + ": not connected");
    beast::error_code ec;
    if (FdStream(fd, options.timeout).WriteAll(bytes, ec)) return true;
    reconnect = true;
    return Fail(std::string(what) + ": " + ec.message());
  }

  // As urllib3's is_connection_dropped: an idle pooled connection that is readable (EOF,
  // an error, or unexpected bytes) is not reused.
  bool Dropped() {
    if (fd < 0) return true;
    if (buffer.size() > 0) return true;
    pollfd entry{fd, POLLIN, 0};
    return ::poll(&entry, 1, 0) != 0;
  }

  // The peer has already closed (EOF or error pending, nothing else buffered).
  bool PeerClosed() {
    pollfd entry{fd, POLLIN, 0};
    if (::poll(&entry, 1, 0) <= 0) return false;
    if (entry.revents & (POLLERR | POLLHUP)) return true;
    char byte;
    ssize_t n = ::recv(fd, &byte, 1, MSG_PEEK);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
  }

  RestResponse Broken(RestResponse out, std::string error) {
    out.error = std::move(error);
    out.connection_closed = true;
    reconnect = true;
    last_error = out.error;
    return out;
  }

  // Reads one response, skipping 1xx (except 101) if asked.
  RestResponse ReadOne(bool skip_interim) {
    RestResponse out;
    if (fd < 0) return Broken(std::move(out), "reading a response: not connected");
    FdStream stream(fd, options.timeout);
    while (true) {
      http::response_parser<http::buffer_body> parser;
      parser.header_limit(64 * 1024);
      parser.body_limit(std::numeric_limits<uint64_t>::max());
      beast::error_code ec;
      http::read_header(stream, buffer, parser, ec);
      if (ec) return Broken(std::move(out), "reading the response head: " + ec.message());
      auto& message = parser.get();
      int status = static_cast<int>(message.result_int());
      if (skip_interim && status / 100 == 1 && status != 101) continue;
      out.status = status;
      for (const auto& field : message) {
        std::string name =
            Lower(std::string_view(field.name_string().data(), field.name_string().size()));
        std::string value(field.value().data(), field.value().size());
        auto [it, inserted] = out.headers.emplace(std::move(name), value);
        if (!inserted) it->second += ", " + value;
      }
      Fnv1a hash;
      while (!parser.is_done()) {
        message.body().data = chunk.data();
        message.body().size = chunk.size();
        http::read(stream, buffer, parser, ec);
        if (ec == http::error::need_buffer) ec = {};
        size_t n = chunk.size() - message.body().size;
        hash.Update(chunk.data(), n);
        out.body_bytes += n;
        if (out.body.size() < options.keep_body) {
          out.body.append(chunk.data(), std::min(n, options.keep_body - out.body.size()));
        }
        if (ec) {
          out.body_fnv1a = hash.Hex();
          return Broken(std::move(out), "reading the response body: " + ec.message());
        }
      }
      out.body_fnv1a = hash.Hex();
      out.connection_closed = !message.keep_alive() || parser.need_eof() || status == 101 ||
                              (buffer.size() == 0 && PeerClosed());
      if (out.connection_closed) reconnect = true;
      return out;
    }
  }

  // Writes the request body as PostOptions asks. False (last_error) on a write error.
  bool WriteBody(const PostOptions& post) {
    bool generated = post.generated_body_bytes > 0;
    uint64_t length = generated ? post.generated_body_bytes : post.body.size();
    size_t piece = std::max<size_t>(post.chunk_bytes, 1);
    std::string frame;
    std::vector<char> scratch(generated ? static_cast<size_t>(std::min<uint64_t>(piece, length))
                                        : 0);
    for (uint64_t sent = 0; sent < length;) {
      if (sent > 0 && post.pause_between_chunks.count() > 0) {
        std::this_thread::sleep_for(post.pause_between_chunks);
      }
      size_t n = static_cast<size_t>(std::min<uint64_t>(piece, length - sent));
      std::string_view data;
      if (generated) {
        FillPayload(scratch.data(), n, sent);
        data = std::string_view(scratch.data(), n);
      } else {
        data = std::string_view(post.body).substr(static_cast<size_t>(sent), n);
      }
      if (post.chunked) {
        char size_line[24];
        int size_length = std::snprintf(size_line, sizeof size_line, "%zx\r\n", n);
        frame.assign(size_line, static_cast<size_t>(size_length));
        frame.append(data);
        frame.append("\r\n");
        if (!Write(frame, "writing the request body")) return false;
      } else if (!Write(data, "writing the request body")) {
        return false;
      }
      sent += n;
    }
    return !post.chunked || Write("0\r\n\r\n", "writing the request body");
  }
};

RestClient::RestClient() : RestClient(Options{}) {}
RestClient::RestClient(Options options) : impl_(std::make_unique<Impl>(std::move(options))) {}
RestClient::~RestClient() = default;
RestClient::RestClient(RestClient&&) noexcept = default;
RestClient& RestClient::operator=(RestClient&&) noexcept = default;

bool RestClient::Connect(const std::string& address) {
  impl_->address = address;
  return impl_->Open();
}

RestResponse RestClient::Post(const std::string& target, const PostOptions& post) {
  Clock::time_point start = Clock::now();
  Impl& d = *impl_;
  auto finish = [&](RestResponse response) {
    response.elapsed = Since(start);
    return response;
  };
  if (d.address.empty()) {
    return finish(d.Broken({}, "Post: no address (call Connect first)"));
  }
  if (d.fd < 0 || d.reconnect || d.Dropped()) {
    if (!d.Open()) return finish(d.Broken({}, d.last_error));
  }

  bool generated = post.generated_body_bytes > 0;
  uint64_t length = generated ? post.generated_body_bytes : post.body.size();
  bool unix_socket = d.address.starts_with("unix:");
  // As requests' defaults (and http.client's Host), then Flower's headers, then the caller's.
  Headers headers = {{"Host", unix_socket ? "localhost" : d.address},
                     {"User-Agent", "python-requests/2.28.1"},
                     {"Accept-Encoding", "gzip, deflate"},
                     {"Accept", post.protobuf_headers ? "application/protobuf" : "*/*"},
                     {"Connection", "keep-alive"}};
  if (post.protobuf_headers) SetHeader(headers, "Content-Type", "application/protobuf", true);
  for (const auto& [name, value] : post.headers) SetHeader(headers, name, value, true);
  if (post.chunked) {
    SetHeader(headers, "Transfer-Encoding", "chunked", false);
  } else {
    SetHeader(headers, "Content-Length", std::to_string(length), false);
  }
  if (post.expect_continue) SetHeader(headers, "Expect", "100-continue", false);

  std::string head = "POST " + target + " HTTP/1.1\r\n";
  for (const auto& [name, value] : headers) head += name + ": " + value + "\r\n";
  head += "\r\n";
  // A small body goes out with the head in one write, as http.client does.
  bool inline_body = !post.expect_continue && !post.chunked && !generated &&
                     post.pause_between_chunks.count() == 0 &&
                     post.body.size() <= std::max<size_t>(post.chunk_bytes, 1);
  if (inline_body) head += post.body;
  if (!d.Write(head, "writing the request head")) return finish(d.Broken({}, d.last_error));

  if (post.expect_continue) {
    beast::error_code ec;
    if (d.buffer.size() > 0 || WaitFor(d.fd, POLLIN, kContinueWait, ec)) {
      RestResponse answer = d.ReadOne(false);
      while (answer.status / 100 == 1 && answer.status != 100 && answer.status != 101) {
        answer = d.ReadOne(false);
      }
      if (answer.status != 100) {
        // A final answer (or an error) before the body: the body was never sent, so the
        // connection's framing is unknown from here.
        d.reconnect = true;
        answer.connection_closed = true;
        return finish(std::move(answer));
      }
    }
    // No answer within the wait: send the body anyway (as curl does).
  }
  if (!inline_body && !d.WriteBody(post)) {
    // The server may have answered early (413, 400) and closed: report its answer if any.
    std::string write_error = d.last_error;
    RestResponse early = d.ReadOne(true);
    early.connection_closed = true;
    d.reconnect = true;
    if (early.status == 0) {
      early.error = write_error + " (and no response: " + early.error + ")";
      d.last_error = early.error;
    }
    return finish(std::move(early));
  }
  return finish(d.ReadOne(true));
}

bool RestClient::WriteRaw(std::string_view bytes) {
  Impl& d = *impl_;
  if (d.fd < 0 && !d.address.empty() && !d.Open()) return false;
  return d.Write(bytes, "WriteRaw");
}

RestResponse RestClient::ReadResponse(bool skip_interim) {
  Clock::time_point start = Clock::now();
  RestResponse response = impl_->ReadOne(skip_interim);
  response.elapsed = Since(start);
  return response;
}

bool RestClient::WaitForClose(std::chrono::milliseconds wait) {
  Impl& d = *impl_;
  if (d.fd < 0) return true;
  d.buffer.clear();
  Clock::time_point deadline = Clock::now() + wait;
  std::vector<char> discard(kReadChunk);
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    beast::error_code ec;
    if (left.count() < 0 || !WaitFor(d.fd, POLLIN, left, ec)) return false;
    ssize_t n = ::recv(d.fd, discard.data(), discard.size(), 0);
    if (n > 0) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) continue;
    d.reconnect = true;  // EOF, or reset
    return true;
  }
}

int RestClient::connects() const { return impl_->connects; }
const std::string& RestClient::last_error() const { return impl_->last_error; }
bool RestClient::connected() const { return impl_->fd >= 0 && !impl_->reconnect; }
void RestClient::Close() { impl_->CloseFd(); }

}  // namespace sepal::test
