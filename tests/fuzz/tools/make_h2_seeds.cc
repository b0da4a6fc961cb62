// Writes the seed corpus of the downstream fuzz target: HTTP/2 client frame sequences made
// with nghttp2's client API (and a few hand-framed ones for CONTINUATION and bad input),
// each behind the one setup byte downstream_fuzzer.cc reads.
//
//   build/tests/fuzz_make_h2_seeds tests/fuzz/corpus/downstream
#include <nghttp2/nghttp2.h>

#include <cstdint>
#include <cstdio>
#include <deque>
#include <fstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace {

constexpr std::string_view kPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
// Setup byte: mode in bits 0-1 (0: preface added by the harness, 1: raw, 2: PROXY listener),
// write size in bits 2-4 (index 5: all at once, 0: one byte per write), bit 5: slow reader.
constexpr uint8_t kAllAtOnce = 5 << 2;

// A gRPC message: 1 byte compressed flag, 4 bytes length, payload.
std::string GrpcMessage(std::string_view payload) {
  std::string out(5, '\0');
  for (int i = 0; i < 4; ++i) out[1 + i] = static_cast<char>((payload.size() >> (24 - 8 * i)) & 0xff);
  out.append(payload);
  return out;
}

nghttp2_nv Nv(const std::string& name, const std::string& value) {
  return {reinterpret_cast<uint8_t*>(const_cast<char*>(name.data())),
          reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())), name.size(), value.size(),
          NGHTTP2_NV_FLAG_NONE};
}

using Headers = std::vector<std::pair<std::string, std::string>>;

Headers RequestHeaders(const std::string& path) {
  return {{":method", "POST"}, {":scheme", "http"}, {":authority", "superlink"},
          {":path", path}, {"content-type", "application/grpc"}, {"te", "trailers"}};
}

class ClientFrames {
 public:
  ClientFrames() {
    nghttp2_session_callbacks* callbacks = nullptr;
    nghttp2_session_callbacks_new(&callbacks);
    nghttp2_session_client_new(&session_, callbacks, this);
    nghttp2_session_callbacks_del(callbacks);
    nghttp2_settings_entry settings[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
                                         {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20}};
    nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, settings, 2);
  }
  ~ClientFrames() { nghttp2_session_del(session_); }

  // A request; with `end`, the body (possibly empty) ends the stream.
  int32_t Request(const std::string& path, std::string body = "", bool end = true,
                  Headers extra = {}) {
    Headers headers = RequestHeaders(path);
    headers.insert(headers.end(), extra.begin(), extra.end());
    std::vector<nghttp2_nv> nv;
    for (const auto& [name, value] : headers) nv.push_back(Nv(name, value));
    bodies_.push_back({std::move(body), 0, end});
    nghttp2_data_provider provider;
    provider.source.ptr = &bodies_.back();
    provider.read_callback = &ReadBody;
    int32_t id = nghttp2_submit_request(session_, nullptr, nv.data(), nv.size(), &provider, nullptr);
    Flush();
    return id;
  }
  void Trailers(int32_t id, Headers trailers) {
    std::vector<nghttp2_nv> nv;
    for (const auto& [name, value] : trailers) nv.push_back(Nv(name, value));
    nghttp2_submit_trailer(session_, id, nv.data(), nv.size());
    Flush();
  }
  void Reset(int32_t id, uint32_t code) {
    nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, id, code);
    Flush();
  }
  void Ping() {
    nghttp2_submit_ping(session_, NGHTTP2_FLAG_NONE, nullptr);
    Flush();
  }
  void WindowUpdate(int32_t id, int32_t increment) {
    nghttp2_submit_window_update(session_, NGHTTP2_FLAG_NONE, id, increment);
    Flush();
  }
  void Settings(std::vector<nghttp2_settings_entry> entries) {
    nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, entries.data(), entries.size());
    Flush();
  }
  void Goaway(uint32_t code) {
    nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE, 0, code, nullptr, 0);
    Flush();
  }
  void Raw(std::string_view bytes) { out_.append(bytes); }

  // The bytes, without the preface when the harness adds it (mode 0).
  std::string Take(bool with_preface) const {
    return with_preface ? out_ : out_.substr(kPreface.size());
  }

 private:
  struct Body {
    std::string data;
    size_t sent;
    bool end;
  };

  void Flush() {
    for (;;) {
      const uint8_t* data = nullptr;
      ssize_t n = nghttp2_session_mem_send(session_, &data);
      if (n <= 0) return;
      out_.append(reinterpret_cast<const char*>(data), static_cast<size_t>(n));
    }
  }

  static ssize_t ReadBody(nghttp2_session*, int32_t, uint8_t* buffer, size_t length,
                          uint32_t* flags, nghttp2_data_source* source, void*) {
    auto* body = static_cast<Body*>(source->ptr);
    size_t n = std::min(length, body->data.size() - body->sent);
    body->data.copy(reinterpret_cast<char*>(buffer), n, body->sent);
    body->sent += n;
    if (body->sent == body->data.size()) {
      *flags |= NGHTTP2_DATA_FLAG_EOF;
      if (!body->end) *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
    }
    return static_cast<ssize_t>(n);
  }

  nghttp2_session* session_ = nullptr;
  std::deque<Body> bodies_;
  std::string out_;
};

std::string Frame(uint8_t type, uint8_t flags, uint32_t stream, std::string_view payload) {
  std::string out;
  out.push_back(static_cast<char>(payload.size() >> 16));
  out.push_back(static_cast<char>(payload.size() >> 8));
  out.push_back(static_cast<char>(payload.size()));
  out.push_back(static_cast<char>(type));
  out.push_back(static_cast<char>(flags));
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>(stream >> shift));
  out.append(payload);
  return out;
}

std::string HeaderBlock(const Headers& headers) {
  nghttp2_hd_deflater* deflater = nullptr;
  nghttp2_hd_deflate_new(&deflater, 4096);
  std::vector<nghttp2_nv> nv;
  for (const auto& [name, value] : headers) nv.push_back(Nv(name, value));
  std::string block(nghttp2_hd_deflate_bound(deflater, nv.data(), nv.size()), '\0');
  ssize_t n = nghttp2_hd_deflate_hd(deflater, reinterpret_cast<uint8_t*>(block.data()),
                                    block.size(), nv.data(), nv.size());
  nghttp2_hd_deflate_del(deflater);
  block.resize(n < 0 ? 0 : static_cast<size_t>(n));
  return block;
}

// HEADERS + CONTINUATION frames for one request, the block cut in `pieces` parts.
std::string Continuations(const std::string& path, size_t pieces, bool end_stream) {
  std::string block = HeaderBlock(RequestHeaders(path));
  std::string out = std::string(kPreface) + Frame(NGHTTP2_SETTINGS, 0, 0, "");
  size_t step = block.size() / pieces + 1;
  for (size_t i = 0, offset = 0; offset < block.size(); ++i, offset += step) {
    bool last = offset + step >= block.size();
    uint8_t flags = last ? NGHTTP2_FLAG_END_HEADERS : 0;
    if (i == 0 && end_stream) flags |= NGHTTP2_FLAG_END_STREAM;
    out += Frame(i == 0 ? NGHTTP2_HEADERS : NGHTTP2_CONTINUATION, flags, 1,
                 std::string_view(block).substr(offset, step));
  }
  if (!end_stream) out += Frame(NGHTTP2_DATA, NGHTTP2_FLAG_END_STREAM, 1, GrpcMessage("hi"));
  return out;
}

void Write(const std::string& dir, const std::string& name, uint8_t setup, const std::string& bytes) {
  std::ofstream out(dir + "/" + name, std::ios::binary);
  out.put(static_cast<char>(setup));
  out << bytes;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUTPUT_DIR\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  const std::string hello = GrpcMessage("hello sepal");

  auto one = [&](const std::string& name, const std::string& path, uint8_t setup = kAllAtOnce,
                 Headers extra = {}) {
    ClientFrames c;
    c.Request(path, hello, true, std::move(extra));
    Write(dir, name, setup, c.Take(false));
  };
  one("echo-unary", "/test.Echo/Unary");
  one("echo-unary-bytewise", "/test.Echo/Unary", 0);
  one("echo-unary-slow-reader", "/test.Echo/Unary", 2 << 2 | 0x20);
  one("fleet-allowed", "/flwr.proto.Fleet/PullMessages");
  one("control-denied", "/flwr.proto.Control/ListRuns");
  one("unrouted", "/nope.Service/Method");
  one("upstream-reset", "/test.Echo/Reset");
  one("upstream-refuse", "/test.Echo/Refuse");
  one("upstream-goaway", "/test.Echo/Goaway");
  one("upstream-goaway-refuse", "/test.Echo/GoawayRefuse");
  one("upstream-close", "/test.Echo/Close");
  one("upstream-trailers-only", "/test.Echo/TrailersOnly");
  one("deadline", "/test.Echo/Hang", kAllAtOnce, {{"grpc-timeout", "1n"}});
  one("identity-headers-spoofed", "/flwr.proto.Fleet/Pull", kAllAtOnce,
      {{"tailscale-user-login", "evil@example.com"}, {"tailscale-node-tags", "tag:admin"},
       {"x-meta-bin", "AAEC"}});
  {
    ClientFrames c;  // a big response, the client opening its windows
    int32_t id = c.Request("/test.Echo/Big");
    c.WindowUpdate(0, 1 << 20);
    c.WindowUpdate(id, 1 << 20);
    Write(dir, "big-response-window-updates", kAllAtOnce, c.Take(false));
  }
  {
    ClientFrames c;  // streaming: the body in pieces, then client trailers
    int32_t id = c.Request("/test.Echo/Early", hello + hello, false);
    c.Trailers(id, {{"grpc-status", "0"}});
    Write(dir, "early-answer-client-trailers", 3 << 2, c.Take(false));
  }
  {
    ClientFrames c;  // client cancels
    int32_t id = c.Request("/test.Echo/Hang", hello, false);
    c.Reset(id, NGHTTP2_CANCEL);
    Write(dir, "client-cancel", kAllAtOnce, c.Take(false));
  }
  {
    ClientFrames c;  // more streams than max_concurrent_streams, then resets
    std::vector<int32_t> ids;
    for (int i = 0; i < 10; ++i) ids.push_back(c.Request("/test.Echo/Hang", "", false));
    for (int32_t id : ids) c.Reset(id, NGHTTP2_CANCEL);
    Write(dir, "many-streams-reset", kAllAtOnce, c.Take(false));
  }
  {
    ClientFrames c;  // control frames
    c.Ping();
    c.Settings({{NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, 0}, {NGHTTP2_SETTINGS_MAX_FRAME_SIZE, 16384}});
    c.Request("/test.Echo/Unary", hello);
    c.Ping();
    c.Goaway(NGHTTP2_NO_ERROR);
    Write(dir, "ping-settings-goaway", kAllAtOnce, c.Take(false));
  }
  Write(dir, "continuations", 1 | kAllAtOnce, Continuations("/test.Echo/Unary", 3, false));
  Write(dir, "continuations-end-stream", 1 | (4 << 2),
        Continuations("/flwr.proto.Fleet/Ping", 6, true));
  Write(dir, "http1-request", 1 | kAllAtOnce,
        "GET / HTTP/1.1\r\nHost: superlink\r\n\r\n");
  Write(dir, "tls-client-hello", 1 | kAllAtOnce, std::string("\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00", 10));
  {
    ClientFrames c;
    c.Request("/test.Echo/Unary", hello);
    Write(dir, "proxy-v1-tailnet-peer", 2 | kAllAtOnce,
          "PROXY TCP4 100.64.0.9 100.64.0.1 41000 9092\r\n" + c.Take(true));
    const std::string v2 = std::string("\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c", 16) +
                           std::string("\xc0\xa8\x01\x02\x7f\x00\x00\x01\x9c\x40\x23\x84", 12);
    Write(dir, "proxy-v2-outside-tailnet", 2 | kAllAtOnce, v2 + c.Take(true));
  }
  return 0;
}
