// FakeH2Upstream: nghttp2 server session per accepted connection, one read loop and one
// write loop on the caller's io_context.
#include "tests/fuzz/fake_h2_upstream.h"

#include <nghttp2/nghttp2.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <boost/asio/write.hpp>
#include <map>
#include <string_view>

namespace sepal::fuzz {

namespace asio = boost::asio;
using local = asio::local::stream_protocol;

namespace {

constexpr size_t kMaxEchoBytes = 64 * 1024;
constexpr size_t kBigResponseBytes = 256 * 1024;

struct Stream {
  std::string method;  // last segment of :path
  std::string trailers;  // request trailers as "name=value\n" lines
  std::string body;    // request body (echo), then the response body
  size_t sent = 0;
  bool answered = false;
};

std::string_view View(nghttp2_rcbuf* buffer) {
  nghttp2_vec vec = nghttp2_rcbuf_get_buf(buffer);
  return {reinterpret_cast<const char*>(vec.base), vec.len};
}

nghttp2_nv Header(std::string_view name, std::string_view value) {
  return {reinterpret_cast<uint8_t*>(const_cast<char*>(name.data())),
          reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())), name.size(), value.size(),
          NGHTTP2_NV_FLAG_NONE};
}

}  // namespace

class FakeH2Upstream::Connection : public std::enable_shared_from_this<Connection> {
 public:
  explicit Connection(local::socket socket) : socket_(std::move(socket)) {}
  ~Connection() {
    if (session_ != nullptr) nghttp2_session_del(session_);
  }

  void Start() {
    nghttp2_session_callbacks* callbacks = nullptr;
    nghttp2_session_callbacks_new(&callbacks);
    nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks, &OnBeginHeaders);
    nghttp2_session_callbacks_set_on_header_callback2(callbacks, &OnHeader);
    nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, &OnFrameRecv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, &OnData);
    nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, &OnStreamClose);
    nghttp2_session_server_new(&session_, callbacks, this);
    nghttp2_session_callbacks_del(callbacks);
    nghttp2_settings_entry settings[] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 100}};
    nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, settings, 1);
    Read();
    Flush();
  }

  void Close() {
    if (closed_) return;
    closed_ = true;
    boost::system::error_code ignored;
    socket_.close(ignored);
  }

  bool open() const { return !closed_; }

 private:
  void Read() {
    socket_.async_read_some(asio::buffer(read_buffer_),
                            [self = shared_from_this()](boost::system::error_code ec, size_t n) {
                              if (self->closed_) return;
                              if (ec) return self->Close();
                              ssize_t rv = nghttp2_session_mem_recv(
                                  self->session_, self->read_buffer_.data(), n);
                              if (rv < 0 || self->close_requested_) return self->Close();
                              self->Flush();
                              self->Read();
                            });
  }

  void Flush() {
    if (writing_ || closed_) return;
    write_buffer_.clear();
    for (;;) {
      const uint8_t* data = nullptr;
      ssize_t n = nghttp2_session_mem_send(session_, &data);
      if (n < 0) return Close();
      if (n == 0) break;
      write_buffer_.append(reinterpret_cast<const char*>(data), static_cast<size_t>(n));
    }
    if (write_buffer_.empty()) {
      if (!nghttp2_session_want_read(session_) && !nghttp2_session_want_write(session_)) Close();
      return;
    }
    writing_ = true;
    asio::async_write(socket_, asio::buffer(write_buffer_),
                      [self = shared_from_this()](boost::system::error_code ec, size_t) {
                        self->writing_ = false;
                        if (ec) return self->Close();
                        self->Flush();
                      });
  }

  void Respond(int32_t id, Stream& stream, bool trailers_only) {
    if (stream.answered) return;
    stream.answered = true;
    if (trailers_only) {
      nghttp2_nv headers[] = {Header(":status", "200"), Header("content-type", "application/grpc"),
                              Header("grpc-status", "5"), Header("grpc-message", "not found")};
      nghttp2_submit_headers(session_, NGHTTP2_FLAG_END_STREAM, id, nullptr, headers, 4, nullptr);
      return;
    }
    if (stream.method == "Big") stream.body.assign(kBigResponseBytes, 'b');
    if (stream.method == "Early") stream.body.clear();
    if (stream.method == "Trailers") stream.body = stream.trailers;
    nghttp2_nv headers[] = {Header(":status", "200"), Header("content-type", "application/grpc")};
    nghttp2_data_provider body;
    body.source.ptr = &stream;
    body.read_callback = &ReadBody;
    nghttp2_submit_response(session_, id, headers, 2, &body);
  }

  static ssize_t ReadBody(nghttp2_session* session, int32_t id, uint8_t* buffer, size_t length,
                          uint32_t* flags, nghttp2_data_source* source, void*) {
    auto* stream = static_cast<Stream*>(source->ptr);
    size_t n = std::min(length, stream->body.size() - stream->sent);
    std::copy_n(stream->body.data() + stream->sent, n, buffer);
    stream->sent += n;
    if (stream->sent == stream->body.size()) {
      *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
      nghttp2_nv trailers[] = {Header("grpc-status", "0")};
      nghttp2_submit_trailer(session, id, trailers, 1);
    }
    return static_cast<ssize_t>(n);
  }

  // Acts on a request whose headers are complete; `ended`: the request is complete too.
  void OnRequest(int32_t id, Stream& stream, bool ended) {
    const std::string& method = stream.method;
    if (method == "Reset" || method == "Refuse") {
      nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, id,
                                method == "Reset" ? NGHTTP2_CANCEL : NGHTTP2_REFUSED_STREAM);
      stream.answered = true;
    } else if (method == "Goaway" || method == "GoawayRefuse") {
      bool refuse = method == "GoawayRefuse";
      nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE, refuse ? 0 : id, NGHTTP2_NO_ERROR,
                            nullptr, 0);
      if (refuse) stream.answered = true;
    } else if (method == "Close") {
      close_requested_ = true;
    } else if (method == "Hang") {
      stream.answered = true;
    } else if (method == "TrailersOnly") {
      Respond(id, stream, /*trailers_only=*/true);
    } else if (method == "Early") {
      Respond(id, stream, false);
    }
    if (ended) Respond(id, stream, false);
  }

  static Connection& Of(void* user_data) { return *static_cast<Connection*>(user_data); }

  static int OnBeginHeaders(nghttp2_session*, const nghttp2_frame* frame, void* user_data) {
    if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
      Of(user_data).streams_.emplace(frame->hd.stream_id, Stream{});
    }
    return 0;
  }

  static int OnHeader(nghttp2_session*, const nghttp2_frame* frame, nghttp2_rcbuf* name,
                      nghttp2_rcbuf* value, uint8_t, void* user_data) {
    auto it = Of(user_data).streams_.find(frame->hd.stream_id);
    if (it == Of(user_data).streams_.end()) return 0;
    if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_HEADERS) {
      it->second.trailers.append(View(name)).append("=").append(View(value)).append("\n");
      return 0;
    }
    if (View(name) != ":path") return 0;
    std::string_view path = View(value);
    it->second.method = std::string(path.substr(path.rfind('/') + 1));
    return 0;
  }

  static int OnFrameRecv(nghttp2_session*, const nghttp2_frame* frame, void* user_data) {
    Connection& self = Of(user_data);
    auto it = self.streams_.find(frame->hd.stream_id);
    if (it == self.streams_.end()) return 0;
    bool ended = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
      self.OnRequest(frame->hd.stream_id, it->second, ended);
    } else if ((frame->hd.type == NGHTTP2_DATA || frame->hd.type == NGHTTP2_HEADERS) && ended) {
      self.Respond(frame->hd.stream_id, it->second, false);
    }
    return 0;
  }

  static int OnData(nghttp2_session*, uint8_t, int32_t id, const uint8_t* data, size_t length,
                    void* user_data) {
    auto it = Of(user_data).streams_.find(id);
    if (it == Of(user_data).streams_.end() || it->second.answered) return 0;
    std::string& body = it->second.body;
    body.append(reinterpret_cast<const char*>(data), std::min(length, kMaxEchoBytes - std::min(kMaxEchoBytes, body.size())));
    return 0;
  }

  static int OnStreamClose(nghttp2_session*, int32_t id, uint32_t, void* user_data) {
    Of(user_data).streams_.erase(id);
    return 0;
  }

  local::socket socket_;
  nghttp2_session* session_ = nullptr;
  std::map<int32_t, Stream> streams_;
  std::array<uint8_t, 16 * 1024> read_buffer_;
  std::string write_buffer_;
  bool writing_ = false;
  bool closed_ = false;
  bool close_requested_ = false;
};

FakeH2Upstream::FakeH2Upstream(asio::io_context& io, const std::string& socket_path)
    : acceptor_(io) {
  ::unlink(socket_path.c_str());
  acceptor_.open();
  acceptor_.bind(local::endpoint(socket_path));
  acceptor_.listen();
  Accept();
}

FakeH2Upstream::~FakeH2Upstream() { Stop(); }

void FakeH2Upstream::Accept() {
  acceptor_.async_accept([this](boost::system::error_code ec, local::socket socket) {
    if (ec) return;  // stopped
    auto connection = std::make_shared<Connection>(std::move(socket));
    std::erase_if(connections_, [](const auto& weak) { return weak.expired(); });
    connections_.push_back(connection);
    connection->Start();
    Accept();
  });
}

void FakeH2Upstream::Stop() {
  boost::system::error_code ignored;
  acceptor_.close(ignored);
  for (const auto& weak : connections_) {
    if (auto connection = weak.lock()) connection->Close();
  }
}

size_t FakeH2Upstream::open_connections() const {
  return static_cast<size_t>(std::count_if(connections_.begin(), connections_.end(), [](const auto& weak) {
    auto connection = weak.lock();
    return connection && connection->open();
  }));
}

}  // namespace sepal::fuzz
