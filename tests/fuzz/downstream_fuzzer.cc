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
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>

#include <malloc.h>

#include "proxy/common/log.h"
#include "proxy/config/config.h"
#include "proxy/downstream/downstream_connection.h"
#include "proxy/identity/static_provider.h"
#include "proxy/listener/listener.h"
#include "proxy/metrics/metrics.h"
#include "proxy/upstream/upstream_pool.h"
#include "proxy/worker/generation.h"
#include "proxy/worker/worker.h"
#include "tests/fuzz/fake_h2_upstream.h"
#include "tests/fuzz/fuzz_check.h"
#include "tests/fuzz/scratch_dir.h"

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SEPAL_FUZZ_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define SEPAL_FUZZ_ASAN 1
#endif
#ifdef SEPAL_FUZZ_ASAN
// Declared here rather than from <sanitizer/allocator_interface.h>: g++ 12 does not ship that
// header, but its libasan exports the function as clang's does (the asan preset builds this
// file as a replay test).
extern "C" size_t __sanitizer_get_current_allocated_bytes();
#endif

namespace {

namespace asio = boost::asio;
using sepal::fuzz::FakeH2Upstream;

constexpr std::string_view kClientPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
constexpr size_t kWriteSizes[] = {1, 7, 64, 512, 4096, 1 << 20, 9, 1 << 20};
// Poll rounds after one write before the io_context must be idle.
constexpr int kMaxRounds = 20000;
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

struct Setup {
  std::string upstream_socket;
  sepal::config::ConfigSnapshot config;
  std::shared_ptr<sepal::identity::IdentityProvider> identity;
};

const Setup& GetSetup() {
  static const Setup& setup = *[] {
    // Quiet unless SEPAL_FUZZ_DEBUG is set (then sepal's debug log and a line per input).
    sepal::g_min_log_level = std::getenv("SEPAL_FUZZ_DEBUG") != nullptr
                                 ? sepal::LogLevel::kDebug
                                 : static_cast<sepal::LogLevel>(static_cast<int>(sepal::LogLevel::kError) + 1);
    auto* s = new Setup;
    s->upstream_socket = sepal::fuzz::ScratchDir() + "/upstream.sock";
    auto config = sepal::config::ParseConfig(ConfigText(s->upstream_socket), "downstream-fuzz.yaml");
    FUZZ_CHECK(config.ok(), config.status().ToString());
    s->config = std::make_shared<const sepal::config::Config>(*std::move(config));
    s->identity = std::make_shared<sepal::identity::StaticIdentityProvider>(
        s->config->identity.static_identities);
    return s;
  }();
  return setup;
}

size_t HeapInUse() {
#ifdef SEPAL_FUZZ_ASAN
  return __sanitizer_get_current_allocated_bytes();
#else
  struct mallinfo2 info = mallinfo2();
  return info.uordblks + info.hblkhd;
#endif
}

// The client end of the socketpair: writes the input, reads (and drops) what sepal sends.
class Client {
 public:
  explicit Client(int fd) : fd_(fd) {}
  ~Client() { Close(); }
  void Close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  // Reads what is there; returns the byte count (0 when nothing or closed).
  size_t Drain() {
    size_t total = 0;
    struct Counted {
      size_t& received;
      size_t& total;
      ~Counted() { received += total; }
    } counted{received_, total};
    char buffer[16384];
    for (;;) {
      ssize_t n = ::recv(fd_, buffer, sizeof(buffer), MSG_DONTWAIT);
      if (n <= 0) return total;
      total += static_cast<size_t>(n);
    }
  }
  // Writes what the socket takes now; returns how many bytes (0 once sepal closed).
  size_t Write(const uint8_t* data, size_t length) {
    ssize_t n = ::send(fd_, data, length, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK) broken_ = true;
      return 0;
    }
    return static_cast<size_t>(n);
  }
  bool broken() const { return broken_; }
  size_t received() const { return received_; }

 private:
  int fd_;
  size_t received_ = 0;
  bool broken_ = false;
};

class Harness {
 public:
  Harness(const Setup& setup, const sepal::config::ListenerConfig& listener_config)
      : worker_(0), upstream_(worker_.io(), setup.upstream_socket) {
    auto generation = std::make_shared<sepal::Generation>();
    generation->number = 1;
    generation->config = setup.config;
    generation->identity = setup.identity;
    for (const auto& upstream : setup.config->upstreams) {
      auto pool = std::make_shared<sepal::UpstreamPool>(worker_, upstream);
      absl::Status status = pool->Init();
      FUZZ_CHECK(status.ok(), status.ToString());
      generation->pools.push_back(std::move(pool));
    }
    pool_ = generation->pools.front();
    auto routes = std::make_shared<const sepal::ListenerRoutes>(generation, listener_config);
    listener_ = std::make_unique<sepal::Listener>(worker_, listener_config.name,
                                                  asio::ip::tcp::acceptor(worker_.io()), routes);
  }

  ~Harness() {
    listener_.reset();
    pool_.reset();
  }

  // Starts a DownstreamConnection on one end of a socketpair; returns the other end's fd.
  int Connect() {
    int fds[2];
    FUZZ_CHECK(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0, "socketpair");
    sepal::Http2Connection::Socket socket(worker_.io(), asio::generic::stream_protocol(AF_UNIX, 0),
                                          fds[0]);
    sepal::identity::PeerAddress peer{asio::ip::make_address("100.64.0.7"), 40000};
    auto connection = std::make_shared<sepal::DownstreamConnection>(worker_, *listener_,
                                                                    std::move(socket), peer);
    connection_ = connection;
    connection->Start();
    return fds[1];
  }

  // Runs ready handlers until nothing is left to do; `client` is drained unless null.
  void Pump(Client* client) {
    for (int round = 0; round < kMaxRounds; ++round) {
      size_t handlers = worker_.io().poll();
      size_t drained = client != nullptr ? client->Drain() : 0;
      CheckHeap();
      if (handlers == 0 && drained == 0) return;
    }
    FUZZ_CHECK(false, "the io_context never goes idle (busy loop)");
  }

  void CheckHeap() {
    size_t now = HeapInUse();
    FUZZ_CHECK(now < baseline_ || now - baseline_ <= kMaxHeapGrowth,
               "heap grew by " + std::to_string((now - baseline_) >> 10) + " KiB");
  }

  // After the client has gone: everything closes and is released.
  void CheckClosed() {
    FUZZ_CHECK(connection_.expired(), "the downstream connection is destroyed once closed");
    FUZZ_CHECK(listener_->open_connections() == 0, "the listener counts no open connection");
    FUZZ_CHECK(worker_.connection_count() == 0, "the worker has no connection registered");
    FUZZ_CHECK(worker_.chunk_pool().free_count() <= 512, "the chunk pool keeps its cap");
    pool_->Shutdown();
    Pump(nullptr);
    FUZZ_CHECK(pool_->connection_count() == 0, "the upstream pool closed its connections");
    upstream_.Stop();
    Pump(nullptr);
    FUZZ_CHECK(upstream_.open_connections() == 0, "no upstream connection left");
  }

 private:
  size_t baseline_ = HeapInUse();
  sepal::Worker worker_;  // first: destroyed last (the io_context)
  FakeH2Upstream upstream_;
  std::shared_ptr<sepal::UpstreamPool> pool_;
  std::unique_ptr<sepal::Listener> listener_;
  std::weak_ptr<sepal::Http2Connection> connection_;
};

// Sum of a gauge's series whose labels include `label` (Prometheus text), or -1 if absent.
double GaugeSum(const std::string& text, std::string_view name, std::string_view label) {
  double sum = 0;
  size_t pos = 0;
  std::string prefix = std::string(name) + "{";
  while ((pos = text.find(prefix, pos)) != std::string::npos) {
    size_t end = text.find('\n', pos);
    std::string_view line(text.data() + pos, (end == std::string::npos ? text.size() : end) - pos);
    pos += prefix.size();
    if (line.find(label) == std::string_view::npos) continue;
    sum += std::stod(std::string(line.substr(line.rfind(' ') + 1)));
  }
  return sum;
}

void CheckMetrics() {
  std::string text = sepal::metrics::DefaultRegistry().Serialize();
  for (std::string_view listener : {"listener=\"fuzz-h2c\"", "listener=\"fuzz-proxy\""}) {
    FUZZ_CHECK(GaugeSum(text, "sepal_grpc_streams_active", listener) == 0,
               "sepal_grpc_streams_active returns to 0");
    FUZZ_CHECK(GaugeSum(text, "sepal_downstream_connections_active", listener) == 0,
               "sepal_downstream_connections_active returns to 0");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const Setup& setup = GetSetup();
  uint8_t flags = data[0];
  int mode = flags & 3;
  size_t write_size = kWriteSizes[(flags >> 2) & 7];
  bool client_reads = (flags & 0x20) == 0;
  std::string input;
  if (mode == 0 || mode == 3) input.assign(kClientPreface);
  input.append(reinterpret_cast<const char*>(data + 1), size - 1);
  const auto& listener_config = setup.config->listeners[mode == 2 ? 1 : 0];

  {
    Harness harness(setup, listener_config);
    Client client(harness.Connect());
    harness.Pump(&client);
    size_t written = 0;
    int stalls = 0;
    while (written < input.size() && !client.broken() && stalls < 64) {
      size_t n = client.Write(reinterpret_cast<const uint8_t*>(input.data()) + written,
                              std::min(write_size, input.size() - written));
      written += n;
      stalls = n == 0 ? stalls + 1 : 0;
      harness.Pump(client_reads || stalls > 0 ? &client : nullptr);
    }
    harness.Pump(&client);
    if (std::getenv("SEPAL_FUZZ_DEBUG") != nullptr) {
      std::fprintf(stderr, "client wrote %zu of %zu bytes, received %zu\n", written, input.size(),
                   client.received());
    }
    client.Close();
    harness.Pump(nullptr);
    harness.CheckClosed();
  }
  // Every 64th input (and every replayed one, which the count starts with): the gauges.
  static unsigned count = 0;
  if (count++ % 64 == 0) CheckMetrics();
  return 0;
}
