// Blocking HTTP/2 test client: nghttp2 client session fed from a non-blocking socket by poll().
#include "tests/support/h2_test_client.h"

#include <fcntl.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>

namespace sepal::test {
namespace {

using Clock = std::chrono::steady_clock;

// nghttp2 stops handing us frames while this much is waiting for the socket, which bounds
// memory when sending hundreds of MiB.
constexpr std::size_t kOutboundHighWater = 1 << 20;
constexpr std::size_t kReadChunk = 64 * 1024;
constexpr uint32_t kMaxSendHeaderBlock = 64 * 1024 * 1024;  // "huge header list" tests

std::optional<std::string> Find(const H2Headers& headers, std::string_view name) {
  for (const auto& [key, value] : headers) {
    if (key == name) return value;
  }
  return std::nullopt;
}

int ConnectError(std::string* error, std::string message) {
  if (error) *error = std::move(message);
  return -1;
}

// Splits "host:port" / "[v6]:port"; false if there is no port.
bool SplitHostPort(const std::string& address, std::string* host, std::string* port) {
  const auto colon = address.rfind(':');
  if (colon == std::string::npos || colon + 1 == address.size()) return false;
  *host = address.substr(0, colon);
  *port = address.substr(colon + 1);
  if (host->size() >= 2 && host->front() == '[' && host->back() == ']') {
    *host = host->substr(1, host->size() - 2);
  }
  return true;
}

// Non-blocking connect that gives up after `timeout`; returns the socket or -1.
int ConnectSocket(const sockaddr* addr, socklen_t addr_len, std::chrono::milliseconds timeout,
                  const std::string& bind_ip, std::string* error) {
  const int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return ConnectError(error, std::string("socket: ") + std::strerror(errno));
  if (!bind_ip.empty()) {
    sockaddr_storage local{};
    socklen_t local_len = 0;
    if (addr->sa_family == AF_INET) {
      auto* v4 = reinterpret_cast<sockaddr_in*>(&local);
      v4->sin_family = AF_INET;
      local_len = sizeof(*v4);
      if (inet_pton(AF_INET, bind_ip.c_str(), &v4->sin_addr) != 1) local_len = 0;
    } else if (addr->sa_family == AF_INET6) {
      auto* v6 = reinterpret_cast<sockaddr_in6*>(&local);
      v6->sin6_family = AF_INET6;
      local_len = sizeof(*v6);
      if (inet_pton(AF_INET6, bind_ip.c_str(), &v6->sin6_addr) != 1) local_len = 0;
    }
    if (local_len == 0 || bind(fd, reinterpret_cast<sockaddr*>(&local), local_len) != 0) {
      close(fd);
      return ConnectError(error, "bind " + bind_ip + ": " + std::strerror(errno));
    }
  }
  if (connect(fd, addr, addr_len) != 0 && errno != EINPROGRESS) {
    const std::string message = std::string("connect: ") + std::strerror(errno);
    close(fd);
    return ConnectError(error, message);
  }
  pollfd pfd{fd, POLLOUT, 0};
  const int ready = poll(&pfd, 1, static_cast<int>(timeout.count()));
  int so_error = 0;
  socklen_t len = sizeof(so_error);
  if (ready <= 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &len) != 0 || so_error) {
    close(fd);
    return ConnectError(error, ready == 0 ? std::string("connect: timed out")
                                          : std::string("connect: ") + std::strerror(so_error));
  }
  if (addr->sa_family != AF_UNIX) {
    const int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  }
  return fd;
}

int ConnectAddress(const std::string& address, std::chrono::milliseconds timeout,
                   const std::string& bind_ip, std::string* error) {
  if (address.starts_with("unix:")) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    const std::string path = address.substr(5);
    if (path.size() >= sizeof(addr.sun_path)) return ConnectError(error, "unix path too long");
    std::memcpy(addr.sun_path, path.data(), path.size());
    return ConnectSocket(reinterpret_cast<const sockaddr*>(&addr), sizeof(addr), timeout, {},
                         error);
  }
  std::string host;
  std::string port;
  if (!SplitHostPort(address, &host, &port)) return ConnectError(error, "no port in " + address);
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (const int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &found); rc != 0) {
    return ConnectError(error, std::string("resolve: ") + gai_strerror(rc));
  }
  int fd = -1;
  for (addrinfo* ai = found; ai && fd < 0; ai = ai->ai_next) {
    fd = ConnectSocket(ai->ai_addr, ai->ai_addrlen, timeout, bind_ip, error);
  }
  freeaddrinfo(found);
  return fd;
}

// nghttp2 copies the fields it is given (NGHTTP2_NV_FLAG_NONE), so the result may point into
// `headers` for the duration of one submit call.
std::vector<nghttp2_nv> ToNameValues(const H2Headers& headers) {
  std::vector<nghttp2_nv> nva;
  nva.reserve(headers.size());
  for (const auto& [name, value] : headers) {
    nva.push_back({reinterpret_cast<uint8_t*>(const_cast<char*>(name.data())),
                   reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())), name.size(),
                   value.size(), NGHTTP2_NV_FLAG_NONE});
  }
  return nva;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// H2Stream

std::optional<std::string> H2Stream::Header(std::string_view name) const {
  return Find(headers, name);
}

std::optional<std::string> H2Stream::Trailer(std::string_view name) const {
  return Find(trailers, name);
}

std::optional<int> H2Stream::GrpcStatus() const {
  auto text = Trailer("grpc-status");
  if (!text) text = Header("grpc-status");
  if (!text) return std::nullopt;
  int code = 0;
  const auto [end, ec] = std::from_chars(text->data(), text->data() + text->size(), code);
  if (ec != std::errc() || end != text->data() + text->size()) return std::nullopt;
  return code;
}

std::string H2Stream::GrpcMessage() const {
  const H2Headers& block = Trailer("grpc-status") ? trailers : headers;
  return Find(block, "grpc-message").value_or("");
}

std::optional<std::vector<std::string>> H2Stream::GrpcMessages() const {
  std::vector<std::string> messages;
  std::size_t pos = 0;
  while (pos < data.size()) {
    if (data.size() - pos < 5) return std::nullopt;
    const auto* p = reinterpret_cast<const unsigned char*>(data.data() + pos);
    const std::size_t length = (std::size_t{p[1]} << 24) | (std::size_t{p[2]} << 16) |
                               (std::size_t{p[3]} << 8) | std::size_t{p[4]};
    if (data.size() - pos - 5 < length) return std::nullopt;
    messages.push_back(data.substr(pos + 5, length));
    pos += 5 + length;
  }
  return messages;
}

// ---------------------------------------------------------------------------------------------
// nghttp2 glue

struct H2TestClient::Outgoing {
  std::string pending;  // queued DATA payload not yet framed
  std::size_t offset = 0;
  std::size_t queued_total = 0;  // bytes ever queued
  std::size_t framed_total = 0;  // bytes nghttp2 put into DATA frames that reached outbound_
  bool end_requested = false;
  bool end_sent = false;
  H2Headers trailers;  // sent after the last DATA, carrying END_STREAM
  bool submitted = false;  // a data provider is attached to the stream
  bool deferred = false;   // the provider ran dry and waits for resume
};

struct H2TestClient::Callbacks {
  static H2TestClient& Self(void* user_data) { return *static_cast<H2TestClient*>(user_data); }

  static ssize_t Send(nghttp2_session*, const uint8_t* data, size_t length, int, void* user_data) {
    H2TestClient& self = Self(user_data);
    if (self.connection_closed_) return NGHTTP2_ERR_CALLBACK_FAILURE;
    if (self.outbound_.size() - self.outbound_offset_ >= kOutboundHighWater) {
      return NGHTTP2_ERR_WOULDBLOCK;
    }
    self.outbound_.append(reinterpret_cast<const char*>(data), length);
    return static_cast<ssize_t>(length);
  }

  static ssize_t ReadData(nghttp2_session*, int32_t stream_id, uint8_t* buf, size_t length,
                          uint32_t* data_flags, nghttp2_data_source*, void* user_data) {
    H2TestClient& self = Self(user_data);
    auto it = self.outgoing_.find(stream_id);
    if (it == self.outgoing_.end()) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    Outgoing& out = *it->second;
    const std::size_t n = std::min(length, out.pending.size() - out.offset);
    std::memcpy(buf, out.pending.data() + out.offset, n);
    out.offset += n;
    if (out.offset == out.pending.size()) {
      out.pending.clear();
      out.offset = 0;
      if (out.end_requested) {
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
        if (!out.trailers.empty()) {
          std::vector<nghttp2_nv> nva = ToNameValues(out.trailers);
          if (nghttp2_submit_trailer(self.session_, stream_id, nva.data(), nva.size()) == 0) {
            *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
          }
        }
      } else if (n == 0) {
        out.deferred = true;
        return NGHTTP2_ERR_DEFERRED;
      }
    }
    return static_cast<ssize_t>(n);
  }

  static int OnHeader(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name,
                      size_t name_len, const uint8_t* value, size_t value_len, uint8_t,
                      void* user_data) {
    H2Stream* stream = Self(user_data).FindStream(frame->hd.stream_id);
    if (!stream || frame->hd.type != NGHTTP2_HEADERS) return 0;
    H2Headers& block =
        frame->headers.cat == NGHTTP2_HCAT_RESPONSE ? stream->headers : stream->trailers;
    block.emplace_back(std::string(reinterpret_cast<const char*>(name), name_len),
                       std::string(reinterpret_cast<const char*>(value), value_len));
    return 0;
  }

  static int OnDataChunk(nghttp2_session*, uint8_t, int32_t stream_id, const uint8_t* data,
                         size_t length, void* user_data) {
    if (H2Stream* stream = Self(user_data).FindStream(stream_id)) {
      stream->data.append(reinterpret_cast<const char*>(data), length);
    }
    return 0;
  }

  static int OnFrameRecv(nghttp2_session*, const nghttp2_frame* frame, void* user_data) {
    H2TestClient& self = Self(user_data);
    H2Stream* stream = self.FindStream(frame->hd.stream_id);
    const bool end_stream = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
    switch (frame->hd.type) {
      case NGHTTP2_HEADERS:
        if (!stream) break;
        ++stream->headers_frames;
        if (frame->headers.cat == NGHTTP2_HCAT_RESPONSE) {
          stream->headers_received = true;
          stream->trailers_only = end_stream;
        }
        stream->end_stream_received |= end_stream;
        break;
      case NGHTTP2_DATA:
        if (!stream) break;
        ++stream->data_frames;
        stream->end_stream_received |= end_stream;
        break;
      case NGHTTP2_RST_STREAM:
        if (stream) stream->rst_error_code = frame->rst_stream.error_code;
        break;
      case NGHTTP2_GOAWAY:
        self.goaways_.push_back(
            {frame->goaway.error_code, frame->goaway.last_stream_id,
             std::string(reinterpret_cast<const char*>(frame->goaway.opaque_data),
                         frame->goaway.opaque_data_len)});
        break;
      case NGHTTP2_SETTINGS:
        if (frame->hd.flags & NGHTTP2_FLAG_ACK) break;
        for (size_t i = 0; i < frame->settings.niv; ++i) {
          self.server_settings_[frame->settings.iv[i].settings_id] = frame->settings.iv[i].value;
          if (frame->settings.iv[i].settings_id == NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS &&
              self.advertised_max_streams_) {
            self.server_settings_[NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS] =
                *self.advertised_max_streams_;
          }
        }
        self.settings_received_ = true;
        break;
      case NGHTTP2_PING:
        if (frame->hd.flags & NGHTTP2_FLAG_ACK) ++self.pings_acked_;
        break;
      default:
        break;
    }
    return 0;
  }

  static int OnFrameSend(nghttp2_session*, const nghttp2_frame* frame, void* user_data) {
    H2TestClient& self = Self(user_data);
    auto it = self.outgoing_.find(frame->hd.stream_id);
    if (it == self.outgoing_.end()) return 0;
    if (frame->hd.type == NGHTTP2_DATA) it->second->framed_total += frame->hd.length;
    if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) it->second->end_sent = true;
    return 0;
  }

  static int OnFrameNotSend(nghttp2_session*, const nghttp2_frame* frame, int error_code,
                            void* user_data) {
    Self(user_data).session_error_ = "frame type " + std::to_string(frame->hd.type) +
                                     " on stream " + std::to_string(frame->hd.stream_id) +
                                     " not sent: " + nghttp2_strerror(error_code);
    return 0;
  }

  static int OnStreamClose(nghttp2_session*, int32_t stream_id, uint32_t error_code,
                           void* user_data) {
    if (H2Stream* stream = Self(user_data).FindStream(stream_id)) {
      stream->closed = true;
      stream->close_error_code = error_code;
    }
    return 0;
  }
};

// ---------------------------------------------------------------------------------------------
// H2TestClient

std::unique_ptr<H2TestClient> H2TestClient::Connect(const std::string& address, Options options,
                                                    std::string* error) {
  const int fd = ConnectAddress(address, options.connect_timeout, options.bind_ip, error);
  if (fd < 0) return nullptr;
  std::unique_ptr<H2TestClient> client(new H2TestClient(fd, std::move(options)));
  if (!client->StartSession()) {
    if (error) *error = "cannot create the nghttp2 session";
    return nullptr;
  }
  return client;
}

std::unique_ptr<H2TestClient> H2TestClient::Connect(const std::string& address,
                                                    std::string* error) {
  return Connect(address, Options{}, error);
}

H2TestClient::H2TestClient(int fd, Options options) : fd_(fd), options_(std::move(options)) {}

H2TestClient::~H2TestClient() {
  if (session_) nghttp2_session_del(session_);
  if (fd_ >= 0) close(fd_);
}

bool H2TestClient::StartSession() {
  nghttp2_session_callbacks* callbacks = nullptr;
  if (nghttp2_session_callbacks_new(&callbacks) != 0) return false;
  nghttp2_session_callbacks_set_send_callback(callbacks, &Callbacks::Send);
  nghttp2_session_callbacks_set_on_header_callback(callbacks, &Callbacks::OnHeader);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, &Callbacks::OnDataChunk);
  nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, &Callbacks::OnFrameRecv);
  nghttp2_session_callbacks_set_on_frame_send_callback(callbacks, &Callbacks::OnFrameSend);
  nghttp2_session_callbacks_set_on_frame_not_send_callback(callbacks, &Callbacks::OnFrameNotSend);
  nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, &Callbacks::OnStreamClose);

  nghttp2_option* option = nullptr;
  if (nghttp2_option_new(&option) != 0) {
    nghttp2_session_callbacks_del(callbacks);
    return false;
  }
  // Tests send malformed requests on purpose and must see responses exactly as sent.
  nghttp2_option_set_no_http_messaging(option, 1);
  nghttp2_option_set_max_send_header_block_length(option, kMaxSendHeaderBlock);

  const int rc = nghttp2_session_client_new2(&session_, callbacks, this, option);
  nghttp2_option_del(option);
  nghttp2_session_callbacks_del(callbacks);
  if (rc != 0) return false;
  if (options_.send_preface) {
    EnsureStarted();
    Flush(options_.connect_timeout);
  }
  return true;
}

void H2TestClient::EnsureStarted() {
  if (started_) return;
  started_ = true;
  std::vector<nghttp2_settings_entry> settings = {
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, options_.initial_window_size},
  };
  for (const auto& [id, value] : options_.settings) settings.push_back({id, value});
  nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, settings.data(), settings.size());
  // The connection window only grows through WINDOW_UPDATE, not SETTINGS.
  nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0,
                                        static_cast<int32_t>(options_.initial_window_size));
}

H2Headers H2TestClient::GrpcRequestHeaders(std::string_view path, std::string_view authority) {
  return {{":method", "POST"},
          {":scheme", "http"},
          {":path", std::string(path)},
          {":authority", std::string(authority)},
          {"content-type", "application/grpc"},
          {"te", "trailers"}};
}

std::string H2TestClient::GrpcFrame(std::string_view message, bool compressed) {
  std::string frame(5, '\0');
  const auto length = static_cast<uint32_t>(message.size());
  frame[0] = compressed ? 1 : 0;
  frame[1] = static_cast<char>(length >> 24);
  frame[2] = static_cast<char>(length >> 16);
  frame[3] = static_cast<char>(length >> 8);
  frame[4] = static_cast<char>(length);
  frame.append(message);
  return frame;
}

int32_t H2TestClient::SubmitRequest(const H2Headers& headers, bool end_stream) {
  EnsureStarted();
  const std::vector<nghttp2_nv> nva = ToNameValues(headers);
  const int32_t id =
      nghttp2_submit_headers(session_, end_stream ? NGHTTP2_FLAG_END_STREAM : NGHTTP2_FLAG_NONE, -1,
                             nullptr, nva.data(), nva.size(), nullptr);
  if (id < 0) return id;
  streams_.try_emplace(id);
  auto& out = outgoing_[id];
  out = std::make_unique<Outgoing>();
  out->end_requested = end_stream;
  Flush(kDefaultTimeout);
  return id;
}

bool H2TestClient::SendData(int32_t stream_id, std::string_view bytes, bool end_stream,
                            std::chrono::milliseconds timeout) {
  auto it = outgoing_.find(stream_id);
  if (it == outgoing_.end() || it->second->end_requested || connection_closed_) return false;
  Outgoing& out = *it->second;
  out.pending.append(bytes);
  out.queued_total += bytes.size();
  out.end_requested = end_stream;
  if (!out.submitted) {
    nghttp2_data_provider provider{};
    provider.read_callback = &Callbacks::ReadData;
    // END_STREAM here only arms the flag: it goes out on the frame where ReadData says EOF.
    if (nghttp2_submit_data(session_, NGHTTP2_FLAG_END_STREAM, stream_id, &provider) != 0) {
      return false;
    }
    out.submitted = true;
  } else if (out.deferred) {
    out.deferred = false;
    nghttp2_session_resume_data(session_, stream_id);
  }
  return Pump(Clock::now() + timeout, [&] {
    return out.framed_total == out.queued_total && (!end_stream || out.end_sent) &&
           outbound_offset_ == outbound_.size();
  });
}

bool H2TestClient::SendTrailers(int32_t stream_id, const H2Headers& trailers,
                                std::chrono::milliseconds timeout) {
  auto it = outgoing_.find(stream_id);
  if (it == outgoing_.end() || it->second->end_requested) return false;
  it->second->trailers = trailers;
  return SendData(stream_id, {}, true, timeout);
}

bool H2TestClient::EndStream(int32_t stream_id, std::chrono::milliseconds timeout) {
  return SendData(stream_id, {}, true, timeout);
}

bool H2TestClient::ResetStream(int32_t stream_id, uint32_t error_code) {
  EnsureStarted();
  if (nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, stream_id, error_code) != 0) {
    return false;
  }
  return Flush(kDefaultTimeout);
}

bool H2TestClient::SendPing() {
  EnsureStarted();
  return nghttp2_submit_ping(session_, NGHTTP2_FLAG_NONE, nullptr) == 0 && Flush(kDefaultTimeout);
}

bool H2TestClient::SendSettings(const std::vector<std::pair<int32_t, uint32_t>>& settings) {
  EnsureStarted();
  std::vector<nghttp2_settings_entry> entries;
  for (const auto& [id, value] : settings) entries.push_back({id, value});
  return nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, entries.data(), entries.size()) ==
             0 &&
         Flush(kDefaultTimeout);
}

bool H2TestClient::SendGoAway(uint32_t error_code) {
  EnsureStarted();
  const int32_t last = nghttp2_session_get_last_proc_stream_id(session_);
  return nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE, last, error_code, nullptr, 0) == 0 &&
         Flush(kDefaultTimeout);
}

bool H2TestClient::SendRaw(std::string_view bytes, std::chrono::milliseconds timeout) {
  if (started_) ProduceFrames();  // frames submitted earlier go first
  outbound_.append(bytes);
  return Flush(timeout);
}

std::vector<int32_t> H2TestClient::OpenAndResetStreams(const H2Headers& headers, int count,
                                                       uint32_t error_code) {
  EnsureStarted();
  const std::vector<nghttp2_nv> nva = ToNameValues(headers);
  std::vector<int32_t> ids;
  for (int i = 0; i < count && !connection_closed_; ++i) {
    // nghttp2 drops a reset whose HEADERS are still queued, so each HEADERS must have reached
    // outbound_ before its RST_STREAM is submitted; make room first if needed.
    if (outbound_.size() - outbound_offset_ >= kOutboundHighWater / 2) {
      Flush(kDefaultTimeout);
    }
    const int32_t id = nghttp2_submit_headers(session_, NGHTTP2_FLAG_NONE, -1, nullptr, nva.data(),
                                              nva.size(), nullptr);
    if (id < 0) break;
    streams_.try_emplace(id);
    ids.push_back(id);
    ProduceFrames();
    nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, id, error_code);
    ProduceFrames();
  }
  Flush(kDefaultTimeout);
  return ids;
}

void H2TestClient::Disconnect(bool abort) {
  if (fd_ < 0) return;
  if (abort) {
    const linger reset{1, 0};  // close() then sends RST instead of FIN
    setsockopt(fd_, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset));
  }
  close(fd_);
  fd_ = -1;
  MarkClosed();
}

bool H2TestClient::WaitForHeaders(int32_t stream_id, std::chrono::milliseconds timeout) {
  return WaitFor([&] { return stream(stream_id).headers_received; }, timeout);
}

bool H2TestClient::WaitForData(int32_t stream_id, std::size_t bytes,
                               std::chrono::milliseconds timeout) {
  return WaitFor([&] { return stream(stream_id).data.size() >= bytes; }, timeout);
}

bool H2TestClient::WaitForStreamClose(int32_t stream_id, std::chrono::milliseconds timeout) {
  return WaitFor([&] { return stream(stream_id).closed; }, timeout);
}

bool H2TestClient::WaitForGoAway(std::chrono::milliseconds timeout) {
  return WaitFor([&] { return !goaways_.empty(); }, timeout);
}

bool H2TestClient::WaitForConnectionClose(std::chrono::milliseconds timeout) {
  return WaitFor([&] { return connection_closed_; }, timeout);
}

bool H2TestClient::WaitForSettings(std::chrono::milliseconds timeout) {
  return WaitFor([&] { return settings_received_; }, timeout);
}

bool H2TestClient::WaitFor(const std::function<bool()>& condition,
                           std::chrono::milliseconds timeout) {
  return Pump(Clock::now() + timeout, condition);
}

void H2TestClient::PumpFor(std::chrono::milliseconds duration) {
  Pump(Clock::now() + duration, [] { return false; });
}

const H2Stream& H2TestClient::stream(int32_t stream_id) const {
  static const H2Stream kUnknown;
  auto it = streams_.find(stream_id);
  return it == streams_.end() ? kUnknown : it->second;
}

H2Stream* H2TestClient::FindStream(int32_t stream_id) {
  auto it = streams_.find(stream_id);
  return it == streams_.end() ? nullptr : &it->second;
}

bool H2TestClient::Flush(std::chrono::milliseconds timeout) {
  return Pump(Clock::now() + timeout, [&] {
    return outbound_offset_ == outbound_.size() &&
           (!started_ || parse_failed_ || !nghttp2_session_want_write(session_));
  });
}

bool H2TestClient::Pump(Clock::time_point deadline, const std::function<bool()>& condition) {
  for (;;) {
    ReadAvailable();
    ProduceFrames();
    WriteAvailable();
    if (condition()) return true;
    if (connection_closed_) return false;
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return false;
    pollfd pfd{fd_, POLLIN, 0};
    if (outbound_offset_ < outbound_.size()) pfd.events |= POLLOUT;
    // Wake at least every 50 ms so conditions that depend on other threads are rechecked.
    const int wait_ms = static_cast<int>(std::min<int64_t>(left.count(), 50));
    if (poll(&pfd, 1, wait_ms) < 0 && errno != EINTR) {
      MarkClosed();
      return condition();
    }
  }
}

void H2TestClient::ReadAvailable() {
  if (fd_ < 0) return;
  char buffer[kReadChunk];
  for (;;) {
    const ssize_t n = read(fd_, buffer, sizeof(buffer));
    if (n == 0) {
      MarkClosed();
      return;
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) MarkClosed();
      return;
    }
    if (!started_ || parse_failed_) {
      unparsed_received_.append(buffer, static_cast<std::size_t>(n));
      continue;
    }
    if (options_.ignore_server_stream_limit && !first_settings_seen_) {
      LiftStreamLimit(reinterpret_cast<uint8_t*>(buffer), static_cast<std::size_t>(n));
    }
    const ssize_t used = nghttp2_session_mem_recv(
        session_, reinterpret_cast<const uint8_t*>(buffer), static_cast<std::size_t>(n));
    if (used < 0) {
      parse_failed_ = true;
      session_error_ =
          std::string("nghttp2_session_mem_recv: ") + nghttp2_strerror(static_cast<int>(used));
      unparsed_received_.append(buffer, static_cast<std::size_t>(n));
    }
  }
}

void H2TestClient::LiftStreamLimit(uint8_t* bytes, std::size_t n) {
  // The server's first frame is its SETTINGS: 9-byte header (type 4), 6-byte entries.
  first_settings_seen_ = true;
  if (n < 9 || bytes[3] != NGHTTP2_SETTINGS) return;
  const std::size_t length = (std::size_t{bytes[0]} << 16) | (std::size_t{bytes[1]} << 8) | bytes[2];
  for (std::size_t at = 9; at + 6 <= 9 + length && at + 6 <= n; at += 6) {
    if (((bytes[at] << 8) | bytes[at + 1]) != NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS) continue;
    advertised_max_streams_ = (uint32_t{bytes[at + 2]} << 24) | (uint32_t{bytes[at + 3]} << 16) |
                              (uint32_t{bytes[at + 4]} << 8) | bytes[at + 5];
    bytes[at + 2] = 0x7f;
    bytes[at + 3] = bytes[at + 4] = bytes[at + 5] = 0xff;
  }
}

void H2TestClient::ProduceFrames() {
  if (!started_ || parse_failed_ || connection_closed_) return;
  const int rc = nghttp2_session_send(session_);
  if (rc != 0 && session_error_.empty()) {
    session_error_ = std::string("nghttp2_session_send: ") + nghttp2_strerror(rc);
  }
}

void H2TestClient::WriteAvailable() {
  while (fd_ >= 0) {
    if (outbound_offset_ == outbound_.size()) {
      outbound_.clear();
      outbound_offset_ = 0;
      ProduceFrames();  // the buffer has room again for frames that met the high-water mark
      if (outbound_.empty()) return;
    }
    const ssize_t n = send(fd_, outbound_.data() + outbound_offset_,
                           outbound_.size() - outbound_offset_, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) MarkClosed();
      if (outbound_offset_ > kOutboundHighWater) {
        outbound_.erase(0, outbound_offset_);
        outbound_offset_ = 0;
      }
      return;
    }
    outbound_offset_ += static_cast<std::size_t>(n);
  }
}

void H2TestClient::MarkClosed() {
  connection_closed_ = true;
  outbound_.clear();
  outbound_offset_ = 0;
}

}  // namespace sepal::test
