// Connection half shared by both sides: a Transport (socket, or TLS over it) driven by one
// nghttp2 session, with one read loop and one batched write loop on the worker's io_context.
#pragma once

#include <nghttp2/nghttp2.h>

#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/io_context.hpp>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/buffer/write_queue.h"
#include "proxy/http2/transport.h"
#include "proxy/http2/session_memory.h"

namespace sepal {

class Worker;

class Http2Connection : public std::enable_shared_from_this<Http2Connection> {
 public:
  using Socket = Transport::Socket;

  virtual ~Http2Connection();
  Http2Connection(const Http2Connection&) = delete;
  Http2Connection& operator=(const Http2Connection&) = delete;

  // Sends whatever nghttp2 has queued, soon, from a fresh stack frame. Safe to call from
  // inside the *other* side's nghttp2 callbacks.
  void ScheduleFlush();
  // The worker's flush of a connection marked by ScheduleFlush.
  void FlushMarked() {
    flush_scheduled_ = false;
    Flush();
  }
  nghttp2_session* session() const { return session_; }
  bool closed() const { return closed_; }
  Worker& worker() const { return worker_; }
  // What the write being assembled holds: nghttp2's send_data_callback (NO_COPY DATA) adds
  // frame headers and body references here. Only valid inside nghttp2_session_mem_send.
  WriteQueue& output() { return *output_; }
  // No room for another DATA frame in the write being assembled (the callback then answers
  // NGHTTP2_ERR_WOULDBLOCK and the frame goes out with the next write).
  bool output_full() const { return output_->full(kWriteBatch); }

 protected:
  Http2Connection(Worker& worker, Socket socket);

  // Starts the read loop. With `speak_first` the initial frames (preface, SETTINGS) go out
  // now; otherwise with the first reply, after OnFirstBytes vetted the peer's first bytes.
  // `initial_bytes` were already read from the socket (e.g. after a PROXY header).
  void StartIo(bool speak_first, std::string_view initial_bytes = {});
  void Flush();
  // Idempotent: closes the socket, then calls OnClose() once. Never call from inside this
  // connection's own nghttp2 callbacks (return NGHTTP2_ERR_CALLBACK_FAILURE there instead).
  void Close(std::string_view reason);
  virtual void OnClose(std::string_view reason) = 0;
  // Inspects the first bytes received before nghttp2 sees them; false closes the
  // connection (the override has already answered/logged).
  virtual bool OnFirstBytes(const uint8_t* /*data*/, size_t /*length*/) { return true; }
  // Sends what nghttp2 has queued (e.g. a GOAWAY), then closes; reads stop now.
  void CloseAfterWrite(std::string reason);
  // Writes raw bytes (e.g. an HTTP/1.1 error) then closes.
  void WriteRawAndClose(std::string bytes, std::string reason);
  // Counts a connection ended by bad input ("http2_error", ...), for metrics.
  virtual void CountProtocolError(std::string_view /*kind*/) {}
  // After nghttp2 has taken one read's worth of bytes (all their callbacks have run).
  virtual void OnReceivedBatch() {}
  // The server's first SETTINGS frame goes out with SETTINGS_MAX_CONCURRENT_STREAMS = `n`,
  // whatever value was submitted to nghttp2 (see DownstreamConnection::StartHttp2).
  void AdvertiseMaxConcurrentStreams(uint32_t n) {
    advertised_max_streams_ = n;
    settings_patch_pending_ = true;
  }
  // Human-readable description of the peer for logs.
  virtual std::string Describe() const = 0;

  Socket& socket() { return transport_.socket(); }
  // The allocator the derived class creates its nghttp2 session with.
  SessionMemory& session_memory() { return session_memory_; }
  // While nothing is queued or being written: gives the pages of nghttp2's frame buffer
  // back to the kernel (an idle connection keeps its session, not its last frames).
  void ReleaseIdleMemory();

  Worker& worker_;
  Transport transport_;
  SessionMemory session_memory_;  // outlives session_ (deleted by the derived class)
  nghttp2_session* session_ = nullptr;

 private:
  // Cleartext reads: wait until the socket is readable, then read into the worker's shared
  // buffer until a read comes back short (the socket is drained; no read that is known to
  // fail with EAGAIN), at most kReadsPerTurn reads before letting other connections run.
  void ReadAvailable();
  void WaitReadable();
  // TLS reads: the TLS stream decrypts into a buffer of this connection's own.
  void DoTlsRead();
  // Feeds received bytes to nghttp2 and flushes; false once the connection is ending.
  bool ProcessReceived(const uint8_t* data, size_t n);
  // Sends the assembled output: at once (non-blocking) when it fits in the socket buffer, so
  // no completion handler and no pass through the event loop is needed; what does not fit
  // goes out by an asynchronous write. True when everything went out now.
  bool StartWrite();
  void OnWritten(boost::system::error_code ec);
  // Gives the (empty) output queue back to the worker: an idle connection holds none.
  void ReleaseOutput();
  void PatchFirstSettings(uint8_t* frames, size_t size);

  static constexpr size_t kReadsPerTurn = 4;
  // Synchronous writes one Flush() makes before it lets other connections run.
  static constexpr size_t kWritesPerFlush = 4;
  static constexpr size_t kTlsReadBufferSize = 32 * 1024;
  // Bytes one write aims for: enough DATA frames of a large body to amortise the syscall and
  // the loopback/TCP wake-up, small enough to interleave other connections.
  static constexpr size_t kWriteBatch = 256 * 1024;
  std::unique_ptr<WriteQueue> output_;
  std::vector<uint8_t> tls_output_;  // TLS: the queue copied out (encrypted per buffer)
  std::unique_ptr<uint8_t[]> tls_read_buffer_;
  bool writing_ = false;
  bool flush_scheduled_ = false;
  bool closed_ = false;
  bool seen_first_bytes_ = false;
  // Set by StartIo(speak_first=false): nothing is sent before the peer's first bytes were
  // vetted, whatever else (an identity answer, a timer) asks for a flush.
  bool quiet_until_first_bytes_ = false;
  bool closing_ = false;
  std::string closing_reason_;
  uint32_t advertised_max_streams_ = 0;
  bool settings_patch_pending_ = false;
};

}  // namespace sepal
