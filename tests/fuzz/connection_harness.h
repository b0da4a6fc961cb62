// What the connection fuzz targets (downstream: HTTP/2, rest: HTTP/1.1) share: a worker with
// one generation (the config's upstream pools, one listener's routes) driven by poll() until
// idle, the client end of a socketpair, the write loop that feeds it an input, and the checks
// every input ends with (heap growth, nothing left registered, gauges back to 0).
#pragma once

#include <malloc.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/ip/tcp.hpp>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>

#include "proxy/common/log.h"
#include "proxy/config/config.h"
#include "proxy/http2/transport.h"
#include "proxy/identity/static_provider.h"
#include "proxy/listener/listener.h"
#include "proxy/metrics/metrics.h"
#include "proxy/upstream/upstream_pool.h"
#include "proxy/worker/generation.h"
#include "proxy/worker/worker.h"
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
// header, but its libasan exports the function as clang's does (the asan preset builds the
// targets as replay tests).
extern "C" size_t __sanitizer_get_current_allocated_bytes();
#endif

namespace sepal::fuzz {

// Bytes per write, picked by three bits of an input's first byte.
inline constexpr size_t kWriteSizes[] = {1, 7, 64, 512, 4096, 1 << 20, 9, 1 << 20};
// Poll rounds after one write before the io_context must be idle.
inline constexpr int kMaxPollRounds = 20000;

// An input's first byte: bits 0-1 the target's mode, 2-4 the write size, bit 5 set when the
// client does not read until everything is written.
struct InputFlags {
  explicit InputFlags(uint8_t byte)
      : mode(byte & 3),
        write_size(kWriteSizes[(byte >> 2) & 7]),
        client_reads((byte & 0x20) == 0) {}
  int mode;
  size_t write_size;
  bool client_reads;
};

inline bool DebugEnabled() { return std::getenv("SEPAL_FUZZ_DEBUG") != nullptr; }

inline size_t HeapInUse() {
#ifdef SEPAL_FUZZ_ASAN
  return __sanitizer_get_current_allocated_bytes();
#else
  struct mallinfo2 info = mallinfo2();
  return info.uordblks + info.hblkhd;
#endif
}

// The upstream's socket path, the parsed config and its identity provider: made once per
// process (the first call's arguments count).
struct ListenerSetup {
  std::string upstream_socket;
  sepal::config::ConfigSnapshot config;
  std::shared_ptr<sepal::identity::IdentityProvider> identity;
};

// `config_text(upstream_socket)` is the config; `socket_name` a file name in the scratch dir.
inline const ListenerSetup& SharedListenerSetup(const char* socket_name,
                                                std::string (*config_text)(const std::string&),
                                                const char* file_name) {
  static const ListenerSetup& setup = *[&] {
    // Quiet unless SEPAL_FUZZ_DEBUG is set (then sepal's debug log and a line per input).
    sepal::g_min_log_level =
        DebugEnabled()
            ? sepal::LogLevel::kDebug
            : static_cast<sepal::LogLevel>(static_cast<int>(sepal::LogLevel::kError) + 1);
    auto* s = new ListenerSetup;
    s->upstream_socket = ScratchDir() + "/" + socket_name;
    auto config = sepal::config::ParseConfig(config_text(s->upstream_socket), file_name);
    FUZZ_CHECK(config.ok(), config.status().ToString());
    s->config = std::make_shared<const sepal::config::Config>(*std::move(config));
    s->identity = std::make_shared<sepal::identity::StaticIdentityProvider>(
        s->config->identity.static_identities);
    return s;
  }();
  return setup;
}

// The client end of the socketpair: writes the input, reads what sepal sends (keeping its
// first bytes).
class SocketClient {
 public:
  explicit SocketClient(int fd) : fd_(fd) {}
  ~SocketClient() { Close(); }
  SocketClient(const SocketClient&) = delete;
  SocketClient& operator=(const SocketClient&) = delete;
  void Close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  // Reads what is there; returns the byte count (0 when nothing or closed).
  size_t Drain() {
    size_t total = 0;
    char buffer[16384];
    for (;;) {
      ssize_t n = ::recv(fd_, buffer, sizeof(buffer), MSG_DONTWAIT);
      if (n <= 0) break;
      size_t got = static_cast<size_t>(n);
      if (start_.size() < kStartBytes) {
        start_.append(buffer, std::min(got, kStartBytes - start_.size()));
      }
      total += got;
    }
    received_ += total;
    return total;
  }
  // Writes what the socket takes now; returns how many bytes (0 once sepal closed).
  size_t Write(const char* data, size_t length) {
    ssize_t n = ::send(fd_, data, length, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK) broken_ = true;
      return 0;
    }
    return static_cast<size_t>(n);
  }
  bool broken() const { return broken_; }
  size_t received() const { return received_; }
  // The first bytes sepal sent.
  const std::string& start() const { return start_; }

 private:
  static constexpr size_t kStartBytes = 16;
  int fd_;
  size_t received_ = 0;
  std::string start_;
  bool broken_ = false;
};

// A worker, one generation (every upstream of the config, as pools) and one listener, no
// socket: connections are made by the target on a socketpair.
class ListenerHarness {
 public:
  ListenerHarness(const ListenerSetup& setup, const sepal::config::ListenerConfig& listener_config,
                  size_t max_heap_growth)
      : max_heap_growth_(max_heap_growth), worker_(0) {
    generation_ = std::make_shared<sepal::Generation>();
    generation_->number = 1;
    generation_->config = setup.config;
    generation_->identity = setup.identity;
    config_ = &listener_config;
  }
  ~ListenerHarness() {
    listener_.reset();
    pool_.reset();
  }
  ListenerHarness(const ListenerHarness&) = delete;
  ListenerHarness& operator=(const ListenerHarness&) = delete;

  // After the upstream is listening (it runs on io()): the pools and the listener.
  void Open() {
    for (const auto& upstream : generation_->config->upstreams) {
      auto pool = std::make_shared<sepal::UpstreamPool>(worker_, upstream);
      absl::Status status = pool->Init();
      FUZZ_CHECK(status.ok(), status.ToString());
      generation_->pools.push_back(std::move(pool));
    }
    pool_ = generation_->pools.front();
    routes_ = std::make_shared<const sepal::ListenerRoutes>(generation_, *config_);
    listener_ = std::make_unique<sepal::Listener>(
        worker_, config_->name, boost::asio::ip::tcp::acceptor(worker_.io()), routes_);
  }

  boost::asio::io_context& io() { return worker_.io(); }
  sepal::Worker& worker() { return worker_; }
  sepal::Listener& listener() { return *listener_; }
  sepal::UpstreamPool& pool() { return *pool_; }

  // A socketpair: sepal's end as the Socket its connections take, the client's end as an fd.
  sepal::Transport::Socket SocketPair(int* client_fd) {
    int fds[2];
    FUZZ_CHECK(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0, "socketpair");
    *client_fd = fds[1];
    return sepal::Transport::Socket(worker_.io(), boost::asio::generic::stream_protocol(AF_UNIX, 0),
                                    fds[0]);
  }

  // Runs ready handlers until nothing is left to do; `client` is drained unless null.
  void Pump(SocketClient* client) {
    for (int round = 0; round < kMaxPollRounds; ++round) {
      size_t handlers = worker_.io().poll();
      size_t drained = client != nullptr ? client->Drain() : 0;
      CheckHeap();
      if (handlers == 0 && drained == 0) return;
    }
    FUZZ_CHECK(false, "the io_context never goes idle (busy loop)");
  }

  void CheckHeap() {
    size_t now = HeapInUse();
    FUZZ_CHECK(now < baseline_ || now - baseline_ <= max_heap_growth_,
               "heap grew by " + std::to_string((now - baseline_) >> 10) + " KiB");
  }

  // Writes `input` `write_size` bytes at a time, pumping after each write (draining the
  // client only if `client_reads`, or when sepal stops taking bytes), then once more.
  void Feed(SocketClient& client, std::string_view input, size_t write_size, bool client_reads) {
    Pump(&client);
    size_t written = 0;
    int stalls = 0;
    while (written < input.size() && !client.broken() && stalls < 64) {
      size_t n = client.Write(input.data() + written, std::min(write_size, input.size() - written));
      written += n;
      stalls = n == 0 ? stalls + 1 : 0;
      Pump(client_reads || stalls > 0 ? &client : nullptr);
    }
    Pump(&client);
    if (DebugEnabled()) {
      std::fprintf(stderr, "client wrote %zu of %zu bytes, received %zu\n", written, input.size(),
                   client.received());
    }
  }

  // After the client has gone: the listener and the worker count no connection.
  void CheckNothingOpen() {
    FUZZ_CHECK(listener_->open_connections() == 0, "the listener counts no open connection");
    FUZZ_CHECK(worker_.connection_count() == 0, "the worker has no connection registered");
  }

 private:
  size_t baseline_ = HeapInUse();
  size_t max_heap_growth_;
  sepal::Worker worker_;  // first: destroyed last (the io_context)
  std::shared_ptr<sepal::Generation> generation_;
  const sepal::config::ListenerConfig* config_ = nullptr;
  sepal::ListenerRoutesPtr routes_;
  std::shared_ptr<sepal::UpstreamPool> pool_;
  std::unique_ptr<sepal::Listener> listener_;
};

// Sum of a gauge's series whose labels include `label` (Prometheus text).
inline double GaugeSum(const std::string& text, std::string_view name, std::string_view label) {
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

// Every 64th call (and the first, so every replay checks): the listeners' call and
// connection gauges are back to 0.
inline void CheckGaugesEvery64th(std::initializer_list<std::string_view> listeners) {
  static unsigned count = 0;
  if (count++ % 64 != 0) return;
  std::string text = sepal::metrics::DefaultRegistry().Serialize();
  for (std::string_view name : listeners) {
    std::string label = "listener=\"" + std::string(name) + "\"";
    FUZZ_CHECK(GaugeSum(text, "sepal_grpc_streams_active", label) == 0,
               "sepal_grpc_streams_active returns to 0");
    FUZZ_CHECK(GaugeSum(text, "sepal_downstream_connections_active", label) == 0,
               "sepal_downstream_connections_active returns to 0");
  }
}

}  // namespace sepal::fuzz
