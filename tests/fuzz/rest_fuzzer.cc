// Fuzz target: arbitrary client bytes into a real Http1Connection (a `protocol: http1`
// listener: Flower's Fleet REST transport) — PROXY header, Beast request parser, smuggling
// checks, router, authz, keep-alive upstream pool, bodies streamed both ways — with an
// in-process HTTP/1.1 upstream behind it (fake_http1_upstream.h), all on one io_context
// driven here.
//
// Input: byte 0 is the setup, the rest is what the client sends.
//   bits 0-1  0: the plain listener, the input as it is
//             1: the PROXY listener (proxy_protocol: any), the input as it is
//             2, 3: the plain listener, the input after "POST /api/v0/fleet/" (so mutations
//                start inside a Fleet request)
//   bits 2-4  how many bytes each write of the input carries (1 ... all at once)
//   bit 5     the client does not read what sepal sends until the input has been written
// The peer is 100.64.0.7:40000, a tailnet node the static identity provider knows
// (tag:supernode): /api/v0/fleet/ is allowed but /api/v0/fleet/unregister-node (tag:admin),
// /open/ is open to any peer, anything else is unrouted. The path's last segment picks the
// upstream's behaviour.
//
// Invariants, besides ASan/UBSan/LSan: what sepal sends the client starts as an HTTP/1.1
// response; what it sends the upstream parses as HTTP/1.1, on routed paths only, never the
// denied one, with the peer's identity fields exactly once and no client-sent tailscale-*
// field (checked in the upstream); the io_context goes idle after each write (no busy loop);
// the heap grows by a bounded amount (bodies move through one 64 KiB buffer per direction);
// once the client has gone, the connection is destroyed, the listener, the worker and the
// gauges count nothing, and the upstream pool and the upstream close their connections.
#include <algorithm>
#include <boost/asio/ip/address.hpp>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>

#include "proxy/http1/http1_connection.h"
#include "proxy/upstream_http1/http1_upstream_pool.h"
#include "tests/fuzz/connection_harness.h"
#include "tests/fuzz/fake_http1_upstream.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

namespace asio = boost::asio;
using sepal::fuzz::FakeHttp1Upstream;
using sepal::fuzz::ListenerHarness;
using sepal::fuzz::ListenerSetup;
using sepal::fuzz::SocketClient;

constexpr std::string_view kFleetPrefix = "POST /api/v0/fleet/";
constexpr std::string_view kUserLogin = "tagged-devices";
constexpr std::string_view kDeniedPath = "/api/v0/fleet/unregister-node";
// Heap growth allowed during one input: the two 64 KiB body buffers, the read buffer (header
// limit + 64 KiB), the upstream's answer (a 256 KiB "big" body, a 4 MiB echo at most),
// Beast and Asio state; generous.
constexpr size_t kMaxHeapGrowth = 24u << 20;

std::string ConfigText(const std::string& upstream_socket) {
  std::string listener_body = R"(    protocol: http1
    http1:
      max_request_line_bytes: 1024
      max_header_bytes: 4096
      max_headers: 16
      max_body_bytes: 1048576
    routes:
      - match: /api/v0/fleet/unregister-node
        upstream: up
        allow: {tags: [tag:admin]}
      - match: /api/v0/fleet/
        upstream: up
        allow: {tags: [tag:supernode]}
      - match: /open/
        upstream: up
)";
  return R"(identity:
  provider: static
  static:
    - match: 100.64.0.0/10
      node: supernode-a
      user: )" +
         std::string(kUserLogin) + R"(
      tags: [tag:supernode]
      capabilities:
        example.com/cap/flower: [{methods: ["/api/v0/fleet/pull-*"]}]
listeners:
  - name: fuzz-rest
    address: 127.0.0.1:1
)" + listener_body +
         R"(  - name: fuzz-rest-proxy
    address: 127.0.0.1:2
    proxy_protocol: any
)" + listener_body +
         R"(upstreams:
  - name: up
    address: unix:)" +
         upstream_socket + R"(
    protocol: http1
    connect_timeout: 1s
)";
}

const ListenerSetup& GetSetup() {
  return sepal::fuzz::SharedListenerSetup("rest-upstream.sock", ConfigText, "rest-fuzz.yaml");
}

class Harness {
 public:
  Harness(const ListenerSetup& setup, const sepal::config::ListenerConfig& listener_config)
      : base_(setup, listener_config, kMaxHeapGrowth),
        upstream_(base_.io(), setup.upstream_socket,
                  {std::string(kUserLogin), std::string(kDeniedPath)}) {
    base_.Open();
    FUZZ_CHECK(base_.pool().http1() != nullptr, "the upstream is an HTTP/1.1 pool");
  }

  // Starts an Http1Connection on one end of a socketpair; returns the other end's fd.
  int Connect() {
    int client_fd = -1;
    auto socket = base_.SocketPair(&client_fd);
    sepal::identity::PeerAddress peer{asio::ip::make_address("100.64.0.7"), 40000};
    auto connection = std::make_shared<sepal::Http1Connection>(
        base_.worker(), base_.listener(), std::move(socket), peer,
        asio::ip::make_address("100.64.0.1"));
    connection_ = connection;
    connection->Start();
    return client_fd;
  }

  ListenerHarness& base() { return base_; }
  size_t upstream_requests() const { return upstream_.requests(); }

  // After the client has gone: everything closes and is released.
  void CheckClosed() {
    FUZZ_CHECK(connection_.expired(), "the client connection is destroyed once closed");
    base_.CheckNothingOpen();
    base_.pool().Shutdown();
    base_.Pump(nullptr);
    FUZZ_CHECK(base_.pool().http1()->idle_count() == 0, "the HTTP/1.1 pool closed its connections");
    FUZZ_CHECK(upstream_.open_connections() == 0, "sepal closed every upstream connection");
    upstream_.Stop();
    base_.Pump(nullptr);
  }

 private:
  ListenerHarness base_;  // first: destroyed last (the worker's io_context)
  FakeHttp1Upstream upstream_;
  std::weak_ptr<sepal::Http1Connection> connection_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const ListenerSetup& setup = GetSetup();
  sepal::fuzz::InputFlags flags(data[0]);
  int mode = flags.mode;
  std::string input;
  if (mode >= 2) input.assign(kFleetPrefix);
  input.append(reinterpret_cast<const char*>(data + 1), size - 1);
  const auto& listener_config = setup.config->listeners[mode == 1 ? 1 : 0];

  {
    Harness harness(setup, listener_config);
    SocketClient client(harness.Connect());
    harness.base().Feed(client, input, flags.write_size, flags.client_reads);
    if (sepal::fuzz::DebugEnabled()) {
      std::fprintf(stderr, "the upstream saw %zu requests\n", harness.upstream_requests());
    }
    if (client.received() > 0) {
      std::string_view start = client.start();
      size_t n = std::min<size_t>(start.size(), 9);
      FUZZ_CHECK(start.substr(0, n) == std::string_view("HTTP/1.1 ").substr(0, n),
                 "sepal answers in HTTP/1.1: " + std::string(start));
    }
    client.Close();
    harness.base().Pump(nullptr);
    harness.CheckClosed();
  }
  sepal::fuzz::CheckGaugesEvery64th({"fuzz-rest", "fuzz-rest-proxy"});
  return 0;
}
