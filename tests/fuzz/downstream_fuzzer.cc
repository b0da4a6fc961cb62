// Fuzz target: arbitrary client bytes into a real DownstreamConnection (HTTP/2 server
// session, ProxyStream, router, authz, upstream pool and client session) with an in-process
// nghttp2 upstream behind it (fake_h2_upstream.h), everything on one io_context driven here.
//
// Input: byte 0 is the setup, the rest is what the client sends.
//   bits 0-1  0, 3: the h2c listener, the HTTP/2 client preface sent before the input
//             1: the h2c listener, the input as it is (preface, HTTP/1.x, TLS sniffing)
//             2: the PROXY listener (proxy_protocol: any), the input as it is
//   bits 2-4  how many bytes each write of the input carries (1 ... all at once)
//   bit 5     the client does not read what sepal sends until the input has been written
// The peer is 100.64.0.7:40000, a tailnet address the static identity provider knows
// (tag:supernode): /flwr.proto.Fleet/ is allowed, /flwr.proto.Control/ denied, /test.Echo/
// open to any peer, anything else unrouted. The method picks the upstream's behaviour.
//
// Invariants, besides ASan/UBSan/LSan: the io_context goes idle after each write (no busy
// loop); the heap grows by a bounded amount whatever the client does (flow control: a stream
// buffers at most one window per direction); once the client has gone, the connection is
// closed and destroyed (no reference cycle), the listener, the worker and the metrics count
// no connection and no stream, the upstream pool closes its connections when shut down, and
// the chunk pool keeps no more than its cap.
#include <boost/asio/ip/address.hpp>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "proxy/downstream/downstream_connection.h"
#include "tests/fuzz/connection_harness.h"
#include "tests/fuzz/fake_h2_upstream.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

namespace asio = boost::asio;
using sepal::fuzz::FakeH2Upstream;

using sepal::fuzz::ListenerHarness;
using sepal::fuzz::ListenerSetup;
using sepal::fuzz::SocketClient;

constexpr std::string_view kClientPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
// Heap growth allowed during one input: 8 streams x 2 windows of 64 KiB, the upstream's own
// buffers (a 256 KiB "Big" answer per stream), nghttp2 and Asio state; generous.
constexpr size_t kMaxHeapGrowth = 48u << 20;

std::string ConfigText(const std::string& upstream_socket) {
  std::string routes = R"(    routes:
      - match: /flwr.proto.Fleet/
        upstream: up
        allow: {tags: [tag:supernode]}
      - match: /flwr.proto.Control/
        upstream: up
        allow: {tags: [tag:admin]}
      - match: /test.Echo/
        upstream: up
    limits:
      max_concurrent_streams: 8
      max_header_list_bytes: 8192
      stream_window_bytes: 65535
      connection_window_bytes: 262144
      stream_reset_burst: 50
      stream_reset_rate: 10
      max_continuations: 4
)";
  return R"(identity:
  provider: static
  static:
    - match: 100.64.0.0/10
      node: supernode-a
      user: tagged-devices
      tags: [tag:supernode]
      capabilities:
        example.com/cap/flower: [{methods: ["/flwr.proto.Fleet/*"]}]
listeners:
  - name: fuzz-h2c
    address: 127.0.0.1:1
)" + routes + R"(  - name: fuzz-proxy
    address: 127.0.0.1:2
    proxy_protocol: any
)" + routes + R"(upstreams:
  - name: up
    address: unix:)" + upstream_socket + R"(
    connect_timeout: 1s
)";
}

const ListenerSetup& GetSetup() {
  return sepal::fuzz::SharedListenerSetup("upstream.sock", ConfigText, "downstream-fuzz.yaml");
}

class Harness {
 public:
  Harness(const ListenerSetup& setup, const sepal::config::ListenerConfig& listener_config)
      : base_(setup, listener_config, kMaxHeapGrowth),
        upstream_(base_.io(), setup.upstream_socket) {
    base_.Open();
  }

  // Starts a DownstreamConnection on one end of a socketpair; returns the other end's fd.
  int Connect() {
    int client_fd = -1;
    auto socket = base_.SocketPair(&client_fd);
    sepal::identity::PeerAddress peer{asio::ip::make_address("100.64.0.7"), 40000};
    auto connection = std::make_shared<sepal::DownstreamConnection>(
        base_.worker(), base_.listener(), std::move(socket), peer);
    connection_ = connection;
    connection->Start();
    return client_fd;
  }

  ListenerHarness& base() { return base_; }

  // After the client has gone: everything closes and is released.
  void CheckClosed() {
    FUZZ_CHECK(connection_.expired(), "the downstream connection is destroyed once closed");
    base_.CheckNothingOpen();
    FUZZ_CHECK(base_.worker().chunk_pool().free_count() <= 512, "the chunk pool keeps its cap");
    base_.pool().Shutdown();
    base_.Pump(nullptr);
    FUZZ_CHECK(base_.pool().connection_count() == 0, "the upstream pool closed its connections");
    upstream_.Stop();
    base_.Pump(nullptr);
    FUZZ_CHECK(upstream_.open_connections() == 0, "no upstream connection left");
  }

 private:
  ListenerHarness base_;  // first: destroyed last (the worker's io_context)
  FakeH2Upstream upstream_;
  std::weak_ptr<sepal::Http2Connection> connection_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const ListenerSetup& setup = GetSetup();
  sepal::fuzz::InputFlags flags(data[0]);
  int mode = flags.mode;
  std::string input;
  if (mode == 0 || mode == 3) input.assign(kClientPreface);
  input.append(reinterpret_cast<const char*>(data + 1), size - 1);
  const auto& listener_config = setup.config->listeners[mode == 2 ? 1 : 0];

  {
    Harness harness(setup, listener_config);
    SocketClient client(harness.Connect());
    harness.base().Feed(client, input, flags.write_size, flags.client_reads);
    client.Close();
    harness.base().Pump(nullptr);
    harness.CheckClosed();
  }
  sepal::fuzz::CheckGaugesEvery64th({"fuzz-h2c", "fuzz-proxy"});
  return 0;
}
