// Read/write loops shared by downstream and upstream HTTP/2 connections.
//
// Reads (cleartext) land in the worker's one read buffer: nghttp2 copies what it keeps
// (headers) and the streams copy DATA into their chunk buffers before the next read starts.
// Writes are gather lists (WriteQueue): control frames and headers copied from nghttp2, DATA
// payloads sent straight out of the chunk buffers they arrived in. An idle connection holds
// neither a read nor a write buffer.
#include "proxy/http2/http2_connection.h"

#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <iterator>

#include "proxy/common/log.h"
#include "proxy/worker/worker.h"

namespace sepal {

namespace asio = boost::asio;

namespace {

// The queue's segments as an Asio ConstBufferSequence, without copying them into a vector
// (the write operation keeps a copy of this two-pointer view, not of the list).
class SegmentBuffers {
 public:
  using Segment = WriteQueue::Segment;
  class const_iterator {
   public:
    using iterator_category = std::bidirectional_iterator_tag;
    using value_type = asio::const_buffer;
    using difference_type = std::ptrdiff_t;
    using pointer = const asio::const_buffer*;
    using reference = asio::const_buffer;
    const_iterator() = default;
    explicit const_iterator(const Segment* at) : at_(at) {}
    asio::const_buffer operator*() const { return asio::const_buffer(at_->data, at_->size); }
    const_iterator& operator++() {
      ++at_;
      return *this;
    }
    const_iterator operator++(int) {
      const_iterator before = *this;
      ++at_;
      return before;
    }
    const_iterator& operator--() {
      --at_;
      return *this;
    }
    const_iterator operator--(int) {
      const_iterator before = *this;
      --at_;
      return before;
    }
    bool operator==(const const_iterator& other) const = default;

   private:
    const Segment* at_ = nullptr;
  };
  using value_type = asio::const_buffer;

  explicit SegmentBuffers(std::span<const Segment> segments)
      : begin_(segments.data()), end_(segments.data() + segments.size()) {}
  const_iterator begin() const { return const_iterator(begin_); }
  const_iterator end() const { return const_iterator(end_); }

 private:
  const Segment* begin_;
  const Segment* end_;
};

}  // namespace

Http2Connection::Http2Connection(Worker& worker, Socket socket)
    : worker_(worker), transport_(std::move(socket)) {}

Http2Connection::~Http2Connection() {
  if (session_ != nullptr) nghttp2_session_del(session_);
}

void Http2Connection::StartIo(bool speak_first, std::string_view initial_bytes) {
  quiet_until_first_bytes_ = !speak_first;
  if (!initial_bytes.empty() &&
      !ProcessReceived(reinterpret_cast<const uint8_t*>(initial_bytes.data()),
                       initial_bytes.size())) {
    return;
  }
  if (transport_.tls() != nullptr) {
    DoTlsRead();
  } else {
    boost::system::error_code ec;
    socket().non_blocking(true, ec);
    if (ec) {
      Close("cannot make the socket non-blocking: " + ec.message());
      return;
    }
    // Bytes may already be waiting (and their readiness already reported to the reactor):
    // the first read is attempted, not waited for. From a fresh stack frame, so no callback
    // of the owner runs inside StartIo.
    asio::post(transport_.socket().get_executor(),
               [self = shared_from_this()] { self->ReadAvailable(); });
  }
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

void Http2Connection::ReadAvailable() {
  if (closed_ || closing_) return;
  Worker::FlushBatch batch(worker_);
  uint8_t* buffer = worker_.read_buffer();
  for (size_t i = 0; i < kReadsPerTurn; ++i) {
    boost::system::error_code ec;
    size_t n = socket().read_some(asio::buffer(buffer, Worker::kReadBufferSize), ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) {
      WaitReadable();
      return;
    }
    if (ec) {
      Close(ec == asio::error::eof ? "peer closed the connection" : ec.message());
      return;
    }
    if (!ProcessReceived(buffer, n)) return;
    // Short: the socket is drained. Whatever arrives from now on raises a new readiness
    // event, which the wait below receives (the reactor has not polled since this read).
    if (n < Worker::kReadBufferSize) {
      WaitReadable();
      return;
    }
  }
  // Still more to read: let the other connections of this worker have a turn first.
  asio::post(transport_.socket().get_executor(),
             [self = shared_from_this()] { self->ReadAvailable(); });
}

void Http2Connection::WaitReadable() {
  transport_.socket().async_wait(Socket::wait_read,
                                 [self = shared_from_this()](boost::system::error_code ec) {
                                   if (self->closed_) return;
                                   if (ec) {
                                     self->Close(ec.message());
                                     return;
                                   }
                                   self->ReadAvailable();
                                 });
}

void Http2Connection::DoTlsRead() {
  if (!tls_read_buffer_) tls_read_buffer_.reset(new uint8_t[kTlsReadBufferSize]);
  transport_.AsyncReadSome(
      asio::buffer(tls_read_buffer_.get(), kTlsReadBufferSize),
      [self = shared_from_this()](boost::system::error_code ec, size_t n) {
        if (self->closed_) return;
        if (ec) {
          self->Close(ec == asio::error::eof ? "peer closed the connection" : ec.message());
          return;
        }
        Worker::FlushBatch batch(self->worker_);
        if (self->ProcessReceived(self->tls_read_buffer_.get(), n)) self->DoTlsRead();
      });
}

void Http2Connection::ScheduleFlush() {
  if (flush_scheduled_ || closed_) return;
  flush_scheduled_ = true;
  worker_.MarkForFlush(shared_from_this());
}

void Http2Connection::Flush() {
  if (quiet_until_first_bytes_ && !seen_first_bytes_) return;  // ProcessReceived flushes
  for (size_t round = 0; round < kWritesPerFlush; ++round) {
    if (writing_ || session_ == nullptr) return;
    if (!output_) output_ = worker_.write_queues().Get();
    WriteQueue& out = *output_;
    while (!out.full(kWriteBatch)) {
      const uint8_t* data = nullptr;
      ssize_t n = nghttp2_session_mem_send(session_, &data);
      if (n < 0) {
        ReleaseOutput();
        if (!closed_) Close(std::string("HTTP/2 send error: ") + nghttp2_strerror(static_cast<int>(n)));
        return;
      }
      if (n == 0) break;
      session_memory_.FrameBufferUsed();
      if (settings_patch_pending_) {
        std::vector<uint8_t> first(data, data + n);
        PatchFirstSettings(first.data(), first.size());
        out.Append(first.data(), first.size());
      } else {
        out.Append(data, static_cast<size_t>(n));
      }
    }
    if (out.empty() || closed_) {
      ReleaseOutput();
      if (!closed_ && !nghttp2_session_want_read(session_) &&
          !nghttp2_session_want_write(session_)) {
        Close("HTTP/2 session finished");
      }
      return;
    }
    if (!StartWrite()) return;  // an asynchronous write continues from OnWritten
  }
  // Still more to send after a few writes: the rest after the other connections' turn.
  ScheduleFlush();
}

bool Http2Connection::StartWrite() {
  auto done = [self = shared_from_this()](boost::system::error_code ec, size_t) {
    self->OnWritten(ec);
  };
  if (transport_.tls() != nullptr) {
    // TLS encrypts each buffer of a sequence as records of its own: one buffer it is.
    writing_ = true;
    output_->CopyTo(tls_output_);
    output_->Clear();
    asio::async_write(*transport_.tls(), asio::buffer(tls_output_), std::move(done));
    return false;
  }
  boost::system::error_code ec;
  size_t n = transport_.socket().write_some(SegmentBuffers(output_->segments()), ec);
  if (!ec && n == output_->bytes()) {
    output_->Clear();
    return true;
  }
  if (ec && ec != asio::error::would_block && ec != asio::error::try_again) {
    ReleaseOutput();
    Close("write failed: " + ec.message());
    return false;
  }
  if (!ec) output_->Consume(n);
  writing_ = true;
  asio::async_write(transport_.socket(), SegmentBuffers(output_->segments()), std::move(done));
  return false;
}

void Http2Connection::OnWritten(boost::system::error_code ec) {
  Worker::FlushBatch batch(worker_);
  writing_ = false;
  output_->Clear();
  tls_output_.clear();
  if (closed_) {
    ReleaseOutput();
    return;
  }
  if (ec) {
    ReleaseOutput();
    Close("write failed: " + ec.message());
    return;
  }
  Flush();
  if (closing_ && !writing_) Close(closing_reason_);
}

void Http2Connection::ReleaseIdleMemory() {
  if (closed_ || writing_ || output_ || session_ == nullptr) return;
  if (nghttp2_session_want_write(session_)) return;
  session_memory_.ReleaseFrameBufferPages();
}

void Http2Connection::ReleaseOutput() {
  if (output_) worker_.write_queues().Put(std::move(output_));
  if (tls_output_.capacity() > 0) std::vector<uint8_t>().swap(tls_output_);
}

void Http2Connection::PatchFirstSettings(uint8_t* b, size_t size) {
  // A server's first frame is its SETTINGS (RFC 9113 3.4): 9-byte header, type 0x4, then
  // 6-byte entries (16-bit id, 32-bit value). nghttp2 refuses streams over the value it was
  // given only with a connection error once the client has acknowledged it; sepal gives it a
  // higher hard limit and refuses the streams between the two itself (REFUSED_STREAM), so
  // the client must be told the lower one.
  settings_patch_pending_ = false;
  if (size < 9 || b[3] != NGHTTP2_SETTINGS) {
    LogError(Describe(), ": first frame is not SETTINGS; MAX_CONCURRENT_STREAMS not lowered");
    return;
  }
  size_t length = (size_t{b[0]} << 16) | (size_t{b[1]} << 8) | b[2];
  for (size_t at = 9; at + 6 <= 9 + length && at + 6 <= size; at += 6) {
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
