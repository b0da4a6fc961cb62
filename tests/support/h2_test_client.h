// Blocking HTTP/2 test client on libnghttp2 for what grpc++ cannot send: any header, any reset.
#pragma once

#include <nghttp2/nghttp2.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sepal::test {

// Header fields in the order sent or received; names as given (nothing is lowercased).
using H2Headers = std::vector<std::pair<std::string, std::string>>;

// What the client saw on one stream.
struct H2Stream {
  H2Headers headers;       // the response HEADERS block
  H2Headers trailers;      // a later HEADERS block; empty for trailers-only responses
  std::string data;        // DATA payload, concatenated
  int headers_frames = 0;  // HEADERS blocks received (CONTINUATIONs not counted apart)
  int data_frames = 0;
  bool headers_received = false;
  bool trailers_only = false;              // the response HEADERS carried END_STREAM
  bool end_stream_received = false;        // the server ended its side
  std::optional<uint32_t> rst_error_code;  // RST_STREAM sent by the server
  bool closed = false;                     // closed for any reason (either side)
  uint32_t close_error_code = 0;

  // First value of `name` in the response headers / trailers.
  std::optional<std::string> Header(std::string_view name) const;
  std::optional<std::string> Trailer(std::string_view name) const;
  // grpc-status from the trailers, else from the headers (trailers-only responses).
  std::optional<int> GrpcStatus() const;
  // grpc-message as sent (still percent-encoded), from wherever grpc-status came from.
  std::string GrpcMessage() const;
  // The gRPC messages in `data` without their 5-byte prefixes; nullopt if `data` does not
  // split into whole length-prefixed messages.
  std::optional<std::vector<std::string>> GrpcMessages() const;
};

struct H2GoAway {
  uint32_t error_code = 0;
  int32_t last_stream_id = 0;
  std::string debug_data;
};

// One HTTP/2 connection over TCP or a unix socket, driven only from the calling thread:
// every Send* writes and every Wait* reads (and answers SETTINGS, PING and WINDOW_UPDATE)
// until its condition holds, the connection is gone, or its timeout passes. Nothing blocks
// without a timeout. Not thread-safe.
//
// HTTP messaging checks are off, so the client sends any header list (uppercase names,
// connection-specific headers, duplicate pseudo-headers) and reports responses as received.
class H2TestClient {
 public:
  static constexpr std::chrono::milliseconds kDefaultTimeout{10000};

  struct Options {
    std::chrono::milliseconds connect_timeout{5000};
    // false: connect without sending the client preface; only SendRaw bytes go out until the
    // first HTTP/2 call, and what the server sends before then lands in unparsed_received().
    bool send_preface = true;
    // Receive window per stream and for the connection (SETTINGS_INITIAL_WINDOW_SIZE).
    uint32_t initial_window_size = 16 * 1024 * 1024;
    // Source address to bind before connecting ("127.0.0.2": another loopback peer); empty =
    // the kernel's choice.
    std::string bind_ip;
    // Open streams past the server's SETTINGS_MAX_CONCURRENT_STREAMS (as a misbehaving client
    // would): the value is hidden from this client's nghttp2, and server_settings() reports
    // what the server sent.
    bool ignore_server_stream_limit = false;
    // Extra SETTINGS sent with the preface, e.g. {NGHTTP2_SETTINGS_MAX_FRAME_SIZE, 1 << 20}.
    std::vector<std::pair<int32_t, uint32_t>> settings;
  };

  // "127.0.0.1:8080", "[::1]:8080", "localhost:8080" or "unix:/path/sock". Returns nullptr
  // and fills `error` if the connection cannot be made within connect_timeout.
  static std::unique_ptr<H2TestClient> Connect(const std::string& address, Options options,
                                               std::string* error = nullptr);
  static std::unique_ptr<H2TestClient> Connect(const std::string& address,
                                               std::string* error = nullptr);

  H2TestClient(const H2TestClient&) = delete;
  H2TestClient& operator=(const H2TestClient&) = delete;
  ~H2TestClient();

  // The request headers grpc++ would send for `path` ("/sepal.test.Echo/Unary").
  static H2Headers GrpcRequestHeaders(std::string_view path,
                                      std::string_view authority = "localhost");
  // `message` with the gRPC length prefix (compressed flag, 4-byte big-endian length).
  static std::string GrpcFrame(std::string_view message, bool compressed = false);

  // --- sending ---
  // Opens a stream with exactly `headers`; returns its id, or a negative nghttp2 error code.
  int32_t SubmitRequest(const H2Headers& headers, bool end_stream = false);
  // Queues DATA and pumps until it is all on the wire (false on timeout, when flow control
  // keeps it back, or if the stream already ended).
  bool SendData(int32_t stream_id, std::string_view bytes, bool end_stream,
                std::chrono::milliseconds timeout = kDefaultTimeout);
  // Ends our side with a trailer HEADERS block (after any DATA still queued).
  bool SendTrailers(int32_t stream_id, const H2Headers& trailers,
                    std::chrono::milliseconds timeout = kDefaultTimeout);
  // Half-closes our side with an empty END_STREAM DATA frame.
  bool EndStream(int32_t stream_id, std::chrono::milliseconds timeout = kDefaultTimeout);
  bool ResetStream(int32_t stream_id, uint32_t error_code = NGHTTP2_CANCEL);
  bool SendPing();
  bool SendSettings(const std::vector<std::pair<int32_t, uint32_t>>& settings);
  bool SendGoAway(uint32_t error_code = NGHTTP2_NO_ERROR);
  // Writes bytes on the socket as they are, after anything already queued.
  bool SendRaw(std::string_view bytes, std::chrono::milliseconds timeout = kDefaultTimeout);
  // Rapid reset: opens `count` streams with `headers`, each reset right after its HEADERS
  // went out, with as few socket writes as possible. Returns the ids used.
  std::vector<int32_t> OpenAndResetStreams(const H2Headers& headers, int count,
                                           uint32_t error_code = NGHTTP2_CANCEL);
  // Closes the socket without a GOAWAY (RST to the peer if `abort`).
  void Disconnect(bool abort = false);

  // --- waiting: true once the condition holds; false on timeout or if it can no longer ---
  bool WaitForHeaders(int32_t stream_id, std::chrono::milliseconds timeout = kDefaultTimeout);
  bool WaitForData(int32_t stream_id, std::size_t bytes,
                   std::chrono::milliseconds timeout = kDefaultTimeout);
  bool WaitForStreamClose(int32_t stream_id, std::chrono::milliseconds timeout = kDefaultTimeout);
  bool WaitForGoAway(std::chrono::milliseconds timeout = kDefaultTimeout);
  bool WaitForConnectionClose(std::chrono::milliseconds timeout = kDefaultTimeout);
  bool WaitForSettings(std::chrono::milliseconds timeout = kDefaultTimeout);
  bool WaitFor(const std::function<bool()>& condition, std::chrono::milliseconds timeout);
  // Keeps the connection serviced for `duration`, e.g. to show that nothing arrives.
  void PumpFor(std::chrono::milliseconds duration);

  // --- what was seen ---
  // The stream's state; an empty H2Stream for ids never opened.
  const H2Stream& stream(int32_t stream_id) const;
  const std::vector<H2GoAway>& goaways() const { return goaways_; }
  // The peer closed or reset the connection (or Disconnect was called).
  bool connection_closed() const { return connection_closed_; }
  // SETTINGS values the server announced, by identifier.
  const std::map<int32_t, uint32_t>& server_settings() const { return server_settings_; }
  int pings_acked() const { return pings_acked_; }
  // Bytes the HTTP/2 parser did not see: all before the session started (send_preface off)
  // and all after a parse error, e.g. an HTTP/1.1 reply.
  const std::string& unparsed_received() const { return unparsed_received_; }
  // nghttp2's complaint about the server's bytes or a frame it could not send; empty if none.
  const std::string& session_error() const { return session_error_; }

 private:
  struct Outgoing;   // DATA queued for one stream
  struct Callbacks;  // nghttp2 callbacks, with access to the members below

  H2TestClient(int fd, Options options);
  bool StartSession();
  // Makes the session speak first if it has not yet: preface and SETTINGS.
  void EnsureStarted();
  // One round of I/O without waiting; then polls at most until `deadline`.
  bool Pump(std::chrono::steady_clock::time_point deadline, const std::function<bool()>& condition);
  void ReadAvailable();
  void LiftStreamLimit(uint8_t* bytes, std::size_t n);
  void ProduceFrames();
  void WriteAvailable();
  bool Flush(std::chrono::milliseconds timeout);
  void MarkClosed();
  H2Stream* FindStream(int32_t stream_id);

  int fd_ = -1;
  Options options_;
  nghttp2_session* session_ = nullptr;
  bool started_ = false;
  bool parse_failed_ = false;
  bool connection_closed_ = false;
  std::string outbound_;  // bytes waiting for the socket; whole frames only
  std::size_t outbound_offset_ = 0;
  std::map<int32_t, H2Stream> streams_;
  std::map<int32_t, std::unique_ptr<Outgoing>> outgoing_;
  std::vector<H2GoAway> goaways_;
  std::map<int32_t, uint32_t> server_settings_;
  bool settings_received_ = false;
  bool first_settings_seen_ = false;
  std::optional<uint32_t> advertised_max_streams_;
  int pings_acked_ = 0;
  std::string unparsed_received_;
  std::string session_error_;
};

}  // namespace sepal::test
