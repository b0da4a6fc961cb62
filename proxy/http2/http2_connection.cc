// Read/write loops shared by downstream and upstream HTTP/2 connections.
#include "proxy/http2/http2_connection.h"

#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>

#include "proxy/common/log.h"

namespace sepal {

namespace asio = boost::asio;

Http2Connection::Http2Connection(Worker& worker, Socket socket)
    : worker_(worker),
      transport_(std::move(socket)),
      read_buffer_(new uint8_t[kReadBufferSize]) {
  write_buffer_.reserve(kWriteBatch + 16 * 1024 + 64);
}

Http2Connection::~Http2Connection() {
  if (session_ != nullptr) nghttp2_session_del(session_);
}

void Http2Connection::StartIo(bool speak_first, std::string_view initial_bytes) {
  if (!initial_bytes.empty() &&
      !ProcessReceived(reinterpret_cast<const uint8_t*>(initial_bytes.data()),
                       initial_bytes.size())) {
    return;
  }
  DoRead();
  if (speak_first) Flush();
}

bool Http2Connection::ProcessReceived(const uint8_t* data, size_t n) {
  if (!seen_first_bytes_) {
    seen_first_bytes_ = true;
    if (!OnFirstBytes(data, n)) return false;
  }
  ssize_t rv = nghttp2_session_mem_recv(session_, data, n);
  if (rv < 0) {
    // Let nghttp2 send the GOAWAY it queued for protocol errors, then close.
    CountProtocolError(rv == NGHTTP2_ERR_BAD_CLIENT_MAGIC ? "bad_preface" : "http2_error");
    CloseAfterWrite(std::string("HTTP/2 error: ") + nghttp2_strerror(static_cast<int>(rv)));
    return false;
  }
  OnReceivedBatch();
  Flush();
  return !closed_ && !closing_;
}

void Http2Connection::DoRead() {
  transport_.AsyncReadSome(
      asio::buffer(read_buffer_.get(), kReadBufferSize),
      [self = shared_from_this()](boost::system::error_code ec, size_t n) {
        if (self->closed_) return;
        if (ec) {
          self->Close(ec == asio::error::eof ? "peer closed the connection" : ec.message());
          return;
        }
        if (self->ProcessReceived(self->read_buffer_.get(), n)) self->DoRead();
      });
}

void Http2Connection::ScheduleFlush() {
  if (flush_scheduled_ || closed_) return;
  flush_scheduled_ = true;
  asio::post(transport_.socket().get_executor(), [self = shared_from_this()] {
    self->flush_scheduled_ = false;
    self->Flush();
  });
}

void Http2Connection::Flush() {
  if (writing_ || session_ == nullptr) return;
  write_buffer_.clear();
  while (write_buffer_.size() < kWriteBatch) {
    const uint8_t* data = nullptr;
    ssize_t n = nghttp2_session_mem_send(session_, &data);
    if (n < 0) {
      if (!closed_) Close(std::string("HTTP/2 send error: ") + nghttp2_strerror(static_cast<int>(n)));
      return;
    }
    if (n == 0) break;
    write_buffer_.insert(write_buffer_.end(), data, data + n);
  }
  if (write_buffer_.empty()) {
    if (!closed_ && !nghttp2_session_want_read(session_) && !nghttp2_session_want_write(session_)) {
      Close("HTTP/2 session finished");
    }
    return;
  }
  if (closed_) return;
  if (settings_patch_pending_) PatchFirstSettings();
  writing_ = true;
  transport_.AsyncWrite(asio::buffer(write_buffer_),
                        [self = shared_from_this()](boost::system::error_code ec, size_t) {
                          self->writing_ = false;
                          if (self->closed_) return;
                          if (ec) {
                            self->Close("write failed: " + ec.message());
                            return;
                          }
                          self->Flush();
                          if (self->closing_ && !self->writing_) {
                            self->Close(self->closing_reason_);
                          }
                        });
}

void Http2Connection::PatchFirstSettings() {
  // A server's first frame is its SETTINGS (RFC 9113 3.4): 9-byte header, type 0x4, then
  // 6-byte entries (16-bit id, 32-bit value). nghttp2 refuses streams over the value it was
  // given only with a connection error once the client has acknowledged it; sepal gives it a
  // higher hard limit and refuses the streams between the two itself (REFUSED_STREAM), so
  // the client must be told the lower one.
  settings_patch_pending_ = false;
  std::vector<uint8_t>& b = write_buffer_;
  if (b.size() < 9 || b[3] != NGHTTP2_SETTINGS) {
    LogError(Describe(), ": first frame is not SETTINGS; MAX_CONCURRENT_STREAMS not lowered");
    return;
  }
  size_t length = (size_t{b[0]} << 16) | (size_t{b[1]} << 8) | b[2];
  for (size_t at = 9; at + 6 <= 9 + length && at + 6 <= b.size(); at += 6) {
    if (((b[at] << 8) | b[at + 1]) != NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS) continue;
    uint32_t v = advertised_max_streams_;
    b[at + 2] = static_cast<uint8_t>(v >> 24);
    b[at + 3] = static_cast<uint8_t>(v >> 16);
    b[at + 4] = static_cast<uint8_t>(v >> 8);
    b[at + 5] = static_cast<uint8_t>(v);
    return;
  }
  LogError(Describe(), ": SETTINGS without MAX_CONCURRENT_STREAMS; not lowered");
}

void Http2Connection::CloseAfterWrite(std::string reason) {
  if (closed_ || closing_) return;
  closing_ = true;
  closing_reason_ = std::move(reason);
  Flush();
  if (!writing_) Close(closing_reason_);
}

void Http2Connection::WriteRawAndClose(std::string bytes, std::string reason) {
  auto payload = std::make_shared<std::string>(std::move(bytes));
  writing_ = true;
  // Before a TLS handshake (a cleartext client on a TLS port) this is plaintext; after
  // one, it is encrypted like everything else.
  transport_.AsyncWrite(asio::buffer(*payload),
                    [self = shared_from_this(), payload, reason = std::move(reason)](
                        boost::system::error_code, size_t) { self->Close(reason); });
}

void Http2Connection::Close(std::string_view reason) {
  if (closed_) return;
  closed_ = true;
  transport_.Close();
  OnClose(reason);
}

}  // namespace sepal
