// sepal-fleet: a federation's load on a proxy in front of the stand-in SuperLink, for
// bench/federation.sh.
//
// Plays --pollers SuperNodes, each on its own HTTP/2 connection from its own loopback address
// (127.1.x.y: every node is a distinct peer to the proxy), calling Fleet/PullMessages on
// Flower's schedule (every --poll-interval, spread evenly over the interval), and --busy nodes
// (127.2.0.x) moving model arrays in a round: a PushObject (--object-bytes up, a small answer)
// and a PullObject (a small ask, --object-bytes down) in flight per node. The stand-in answers
// PullObject with the size the "x-reply-bytes" metadata asks for.
//
// The client is nghttp2 client sessions over non-blocking sockets, one epoll loop per role on
// its own thread (pollers, busy nodes), so it stays cheap; its own CPU and the lateness of the
// poll timer are printed next to the numbers, to show it was not the bottleneck.
//
// Phases, switched by the main thread, which samples /proc at each boundary:
//   idle    pollers connect (at most 256 connecting at once) and each makes one call; after
//           --settle the proxy's RSS minus its RSS before gives KiB per idle connection
//   warm    polling starts, busy nodes connect (one poll interval; not reported)
//   before  polling only, for --before
//   round   busy nodes flat out, for --round
//   paced   busy nodes at --paced-mib MiB/s (both directions together), for --paced (0: skip)
// Prints one JSON line; exit status 0 ok, 1 failed (no poller connected), 2 usage.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <dirent.h>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <queue>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "tests/proto/fleet.pb.h"

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr int kExitOk = 0;
constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;
constexpr int kMaxConnecting = 256;
constexpr std::size_t kReadBuffer = 256 * 1024;
constexpr std::size_t kOutHighWater = 1024 * 1024;  // nghttp2 output buffered before a write
constexpr std::size_t kReadPerEvent = 4 * 1024 * 1024;
constexpr int32_t kStreamWindow = 8 * 1024 * 1024;
constexpr int32_t kConnectionWindow = 64 * 1024 * 1024;
constexpr auto kSweepInterval = milliseconds(100);
constexpr auto kReconnectDelay = milliseconds(100);
constexpr auto kConnectWait = std::chrono::seconds(180);

// ---- options ------------------------------------------------------------------------------

struct Options {
  std::string target;
  int pollers = 1000;
  double poll_interval_s = 3;
  int busy = 8;
  std::size_t object_bytes = 5 * 1024 * 1024;
  double settle_s = 2;
  double before_s = 10;
  double round_s = 10;
  double paced_s = 10;
  double paced_mib = 100;
  double poll_timeout_s = 20;
  int proxy_pid = 0;
  int backend_pid = 0;
  int upstream_port = 0;
};

void PrintHelp() {
  std::printf(
      "usage: sepal-fleet --target HOST:PORT [options]\n"
      "  --pollers N (1000)        SuperNodes polling Fleet/PullMessages, one connection each\n"
      "  --poll-interval D (3s)    Flower's poll period\n"
      "  --busy N (8)              nodes moving objects in the round (a push and a pull each)\n"
      "  --object-bytes N (5 MiB)  PushObject/PullObject size\n"
      "  --settle D (2s) --before D (10s) --round D (10s) --paced D (10s, 0 = skip)\n"
      "  --paced-mib R (100)       busy nodes' rate in the paced phase, MiB/s both ways\n"
      "  --poll-timeout D (20s)    a poll outstanding this long is cancelled (\"timeouts\")\n"
      "  --proxy-pid PID           proxy process (and its children): CPU, RSS, KiB/idle conn\n"
      "  --backend-pid PID         the stand-in SuperLink: CPU\n"
      "  --upstream-port PORT      counts the proxy's connections to this port (/proc/net/tcp)\n"
      "durations: 10s, 500ms, 1.5s, 2m\n");
}

std::optional<double> ParseSeconds(std::string_view text) {
  double scale = 1;
  if (text.ends_with("ms")) {
    scale = 1e-3;
    text.remove_suffix(2);
  } else if (text.ends_with("s")) {
    text.remove_suffix(1);
  } else if (text.ends_with("m")) {
    scale = 60;
    text.remove_suffix(1);
  }
  const std::string copy(text);
  char* end = nullptr;
  const double value = std::strtod(copy.c_str(), &end);
  if (copy.empty() || end != copy.c_str() + copy.size() || value < 0) return std::nullopt;
  return value * scale;
}

std::optional<long long> ParseCount(const std::string& text, long long max) {
  char* end = nullptr;
  const long long value = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || value < 0 || value > max) return std::nullopt;
  return value;
}

int UsageError(const std::string& what) {
  std::fprintf(stderr, "sepal-fleet: %s (see --help)\n", what.c_str());
  return kExitUsage;
}

// ---- /proc: the proxy's CPU and memory, its upstream connections -------------------------

struct ProcSample {
  double cpu_s = 0;        // utime + stime over the process tree
  long long rss_kib = 0;   // VmRSS over the process tree
  long long peak_kib = 0;  // VmHWM over the process tree
};

std::vector<int> ProcessTree(int root) {
  std::map<int, std::vector<int>> children;
  if (DIR* dir = opendir("/proc")) {
    while (dirent* entry = readdir(dir)) {
      const int pid = std::atoi(entry->d_name);
      if (pid <= 0) continue;
      std::ifstream stat("/proc/" + std::string(entry->d_name) + "/stat");
      std::string line;
      if (!std::getline(stat, line)) continue;
      const std::size_t close = line.rfind(')');
      if (close == std::string::npos) continue;
      std::istringstream rest(line.substr(close + 2));
      std::string state;
      int ppid = 0;
      rest >> state >> ppid;
      children[ppid].push_back(pid);
    }
    closedir(dir);
  }
  std::vector<int> tree{root};
  for (std::size_t i = 0; i < tree.size(); ++i) {
    for (int child : children[tree[i]]) tree.push_back(child);
  }
  return tree;
}

long long StatusKib(int pid, std::string_view field) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.starts_with(field)) return std::atoll(line.c_str() + field.size());
  }
  return 0;
}

ProcSample SampleProcess(int root) {
  ProcSample sample;
  if (root <= 0) return sample;
  static const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  for (int pid : ProcessTree(root)) {
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (!std::getline(stat, line)) continue;
    std::istringstream rest(line.substr(line.rfind(')') + 2));
    std::string field;
    long long utime = 0;
    long long stime = 0;
    for (int i = 3; i <= 15; ++i) {  // proc(5) field numbers
      rest >> field;
      if (i == 14) utime = std::atoll(field.c_str());
      if (i == 15) stime = std::atoll(field.c_str());
    }
    sample.cpu_s += static_cast<double>(utime + stime) / ticks;
    sample.rss_kib += StatusKib(pid, "VmRSS:");
    sample.peak_kib += StatusKib(pid, "VmHWM:");
  }
  return sample;
}

// Established TCP connections whose remote port is `port` (the proxy's side of its upstream
// connections; the stand-in's side has it as the local port and is not counted).
int CountConnectionsTo(int port) {
  if (port <= 0) return 0;
  int count = 0;
  for (const char* path : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream table(path);
    std::string line;
    std::getline(table, line);  // header
    while (std::getline(table, line)) {
      std::istringstream fields(line);
      std::string slot, local, remote, state;
      fields >> slot >> local >> remote >> state;
      const std::size_t colon = remote.rfind(':');
      if (colon == std::string::npos || state != "01") continue;
      if (std::strtol(remote.c_str() + colon + 1, nullptr, 16) == port) ++count;
    }
  }
  return count;
}

double ThreadCpuSeconds(std::thread& thread) {
  clockid_t clock{};
  timespec now{};
  if (pthread_getcpuclockid(thread.native_handle(), &clock) != 0) return 0;
  if (clock_gettime(clock, &now) != 0) return 0;
  return static_cast<double>(now.tv_sec) + static_cast<double>(now.tv_nsec) * 1e-9;
}

// ---- requests -----------------------------------------------------------------------------

enum class Kind : uint8_t { kPoll, kPush, kPull };

// A gRPC request body: the 5-byte message prefix and a FleetRequest.
std::string GrpcBody(uint64_t node_id, std::size_t payload_bytes) {
  flwr::proto::FleetRequest request;
  request.mutable_node()->set_node_id(node_id);
  if (payload_bytes > 0) request.set_payload(std::string(payload_bytes, 'x'));
  const std::string message = request.SerializeAsString();
  std::string body(1, '\0');
  const auto length = static_cast<uint32_t>(message.size());
  for (int shift = 24; shift >= 0; shift -= 8) body += static_cast<char>(length >> shift);
  return body + message;
}

// Header lists of the three calls; the strings live as long as the Requests.
class Requests {
 public:
  Requests(const Options& options)
      : authority_(options.target), pull_bytes_(std::to_string(options.object_bytes)) {
    Build(Kind::kPoll, "/flwr.proto.Fleet/PullMessages", "");
    Build(Kind::kPush, "/flwr.proto.Fleet/PushObject", zero_);
    Build(Kind::kPull, "/flwr.proto.Fleet/PullObject", pull_bytes_);
    push_body_ = GrpcBody(1, options.object_bytes);
    pull_body_ = GrpcBody(1, 0);
  }
  const std::vector<nghttp2_nv>& headers(Kind kind) const {
    return headers_[static_cast<int>(kind)];
  }
  const std::string& push_body() const { return push_body_; }
  const std::string& pull_body() const { return pull_body_; }

 private:
  void Build(Kind kind, const std::string& path, const std::string& reply_bytes) {
    paths_[static_cast<int>(kind)] = path;
    auto add = [&](const std::string& name, const std::string& value) {
      headers_[static_cast<int>(kind)].push_back(
          {reinterpret_cast<uint8_t*>(const_cast<char*>(name.data())),
           reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())), name.size(),
           value.size(), NGHTTP2_NV_FLAG_NONE});
    };
    add(kMethod[0], kMethod[1]);
    add(kScheme[0], kScheme[1]);
    add(kPath, paths_[static_cast<int>(kind)]);
    add(kAuthority, authority_);
    add(kContentType[0], kContentType[1]);
    add(kTe[0], kTe[1]);
    add(kAgent[0], kAgent[1]);
    if (!reply_bytes.empty()) add(kReplyBytes, reply_bytes);
  }

  inline static const std::string kMethod[2] = {":method", "POST"};
  inline static const std::string kScheme[2] = {":scheme", "http"};
  inline static const std::string kPath = ":path";
  inline static const std::string kAuthority = ":authority";
  inline static const std::string kContentType[2] = {"content-type", "application/grpc"};
  inline static const std::string kTe[2] = {"te", "trailers"};
  inline static const std::string kAgent[2] = {"user-agent", "grpc-python/1.66 sepal-fleet"};
  inline static const std::string kReplyBytes = "x-reply-bytes";
  const std::string zero_ = "0";
  std::string authority_;
  std::string pull_bytes_;
  std::string paths_[3];
  std::vector<nghttp2_nv> headers_[3];
  std::string push_body_;
  std::string pull_body_;
};

// ---- per-phase results --------------------------------------------------------------------

enum Phase : int { kIdle, kWarm, kBefore, kRound, kPaced, kEnd, kPhaseCount };
constexpr const char* kPhaseNames[kPhaseCount] = {"idle", "warm", "before", "round", "paced", "end"};

struct PhaseStats {
  std::vector<float> poll_ms;  // latency of successful polls
  std::vector<float> late_ms;  // poll timer lateness (due → sent)
  int64_t polls_ok = 0;
  int64_t poll_errors = 0;
  int64_t poll_timeouts = 0;
  int64_t polls_skipped = 0;  // due while the previous poll was still out
  int64_t busy_ok = 0;
  int64_t busy_errors = 0;
  std::map<std::string, int64_t> errors;
};

// ---- one event loop: connections, nghttp2 sessions, calls ---------------------------------

struct Call {
  Kind kind = Kind::kPoll;
  Clock::time_point start;
  const std::string* body = nullptr;
  std::size_t offset = 0;
  int32_t stream_id = -1;
  int http_status = 0;
  int grpc_status = -1;
  bool timed_out = false;
};

class Loop;

struct Conn {
  Loop* loop = nullptr;
  int index = 0;
  uint32_t bind_ip = 0;  // host order
  int fd = -1;
  bool connecting = false;
  bool established = false;
  bool epollout = false;
  nghttp2_session* session = nullptr;
  std::string out;
  std::size_t out_offset = 0;
  std::vector<Call*> calls;  // in flight
  Clock::time_point reconnect_at{};
  int calls_done = 0;
  std::string poll_body;
};

class Loop {
 public:
  enum class Role { kPollers, kBusy };

  Loop(const Options& options, const Requests& requests, Role role, int count,
       const sockaddr_in& target)
      : options_(options), requests_(requests), role_(role), target_(target) {
    for (int i = 0; i < count; ++i) {
      auto conn = std::make_unique<Conn>();
      conn->loop = this;
      conn->index = i;
      // 127.1.x.y for pollers, 127.2.x.y for busy nodes; y in 1..250.
      const uint32_t net = role == Role::kPollers ? 1 : 2;
      conn->bind_ip = (127u << 24) | (net << 16) | (static_cast<uint32_t>(i / 250) << 8) |
                      static_cast<uint32_t>(i % 250 + 1);
      if (role == Role::kPollers) conn->poll_body = GrpcBody(static_cast<uint64_t>(i) + 1, 0);
      conns_.push_back(std::move(conn));
    }
    read_buffer_.resize(kReadBuffer);
  }
  Loop(const Loop&) = delete;
  Loop& operator=(const Loop&) = delete;
  ~Loop() {
    for (auto& conn : conns_) Close(*conn);
    if (epoll_fd_ >= 0) close(epoll_fd_);
  }

  // Controls, set by the main thread.
  std::atomic<int> phase{kIdle};
  std::atomic<bool> polling{false};  // pollers: poll on schedule (else only the first call)
  std::atomic<int> busy_mode{0};     // busy nodes: 0 no new calls, 1 flat out, 2 paced
  std::atomic<bool> stop{false};
  // Read by the main thread while the loop runs.
  std::atomic<int> first_calls{0};  // pollers whose first call completed
  std::atomic<int> established{0};
  std::atomic<int64_t> bytes{0};  // DATA payload sent and received on busy calls

  // Only after the thread ended.
  const PhaseStats& stats(int phase_index) const { return stats_[phase_index]; }

  void Run() {
    epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
    if (epoll_fd_ < 0) return;
    std::vector<epoll_event> events(1024);
    auto last_sweep = Clock::time_point{};
    last_budget_ = Clock::now();
    while (!stop.load(std::memory_order_relaxed)) {
      auto now = Clock::now();
      if (now - last_sweep >= kSweepInterval) {
        last_sweep = now;
        Sweep(now);
      }
      if (role_ == Role::kPollers) SchedulePolls(now);
      if (role_ == Role::kBusy) StartBusyCalls(now);
      auto wait = kSweepInterval - (now - last_sweep);
      if (!due_.empty()) wait = std::min(wait, due_.top().first - now);
      if (role_ == Role::kBusy && busy_mode.load(std::memory_order_relaxed) == 2) {
        wait = std::min<Clock::duration>(wait, milliseconds(5));
      }
      const auto wait_ms = std::chrono::ceil<milliseconds>(wait).count();
      const int n = epoll_wait(epoll_fd_, events.data(), static_cast<int>(events.size()),
                               static_cast<int>(std::clamp<int64_t>(wait_ms, 0, 100)));
      for (int i = 0; i < n; ++i) {
        Conn& conn = *static_cast<Conn*>(events[static_cast<std::size_t>(i)].data.ptr);
        OnEvent(conn, events[static_cast<std::size_t>(i)].events);
      }
    }
  }

 private:
  PhaseStats& Current() { return stats_[phase.load(std::memory_order_relaxed)]; }

  void Error(const std::string& what) { ++Current().errors[what]; }

  // ---- connections ----

  void Sweep(Clock::time_point now) {
    for (auto& owned : conns_) {
      Conn& conn = *owned;
      if (conn.fd < 0 && conn.reconnect_at <= now && connecting_ < kMaxConnecting) Connect(conn);
      if (role_ != Role::kPollers) continue;
      for (Call* call : conn.calls) {
        if (!call->timed_out && now - call->start > std::chrono::duration<double>(
                                                        options_.poll_timeout_s)) {
          call->timed_out = true;
          ++Current().poll_timeouts;
          nghttp2_submit_rst_stream(conn.session, NGHTTP2_FLAG_NONE, call->stream_id,
                                    NGHTTP2_CANCEL);
          Pump(conn);
          break;  // Pump may have closed the connection
        }
      }
    }
  }

  void Connect(Conn& conn) {
    conn.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (conn.fd < 0) {
      Error("socket: " + std::string(std::strerror(errno)));
      conn.reconnect_at = Clock::now() + kReconnectDelay;
      return;
    }
    const int one = 1;
    setsockopt(conn.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    sockaddr_in local{};
    local.sin_family = AF_INET;
    local.sin_addr.s_addr = htonl(conn.bind_ip);
    if (bind(conn.fd, reinterpret_cast<sockaddr*>(&local), sizeof(local)) != 0 ||
        (connect(conn.fd, reinterpret_cast<const sockaddr*>(&target_), sizeof(target_)) != 0 &&
         errno != EINPROGRESS)) {
      Error("connect: " + std::string(std::strerror(errno)));
      close(conn.fd);
      conn.fd = -1;
      conn.reconnect_at = Clock::now() + kReconnectDelay;
      return;
    }
    conn.connecting = true;
    ++connecting_;
    conn.epollout = true;
    epoll_event event{EPOLLIN | EPOLLOUT, {&conn}};
    epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, conn.fd, &event);
  }

  bool Establish(Conn& conn) {
    nghttp2_session_callbacks* callbacks = nullptr;
    nghttp2_session_callbacks_new(&callbacks);
    nghttp2_session_callbacks_set_on_header_callback(callbacks, &Loop::OnHeader);
    nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, &Loop::OnStreamClose);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, &Loop::OnData);
    nghttp2_session_callbacks_set_on_frame_send_callback(callbacks, &Loop::OnFrameSend);
    const int rc = nghttp2_session_client_new(&conn.session, callbacks, &conn);
    nghttp2_session_callbacks_del(callbacks);
    if (rc != 0) return false;
    const nghttp2_settings_entry settings[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
                                               {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE,
                                                static_cast<uint32_t>(kStreamWindow)}};
    nghttp2_submit_settings(conn.session, NGHTTP2_FLAG_NONE, settings, std::size(settings));
    nghttp2_session_set_local_window_size(conn.session, NGHTTP2_FLAG_NONE, 0, kConnectionWindow);
    conn.established = true;
    established.fetch_add(1, std::memory_order_relaxed);
    if (role_ == Role::kPollers && conn.calls_done == 0) Submit(conn, Kind::kPoll, Clock::now());
    return true;
  }

  // Connection gone (error, EOF, GOAWAY drained): its calls fail, it reconnects.
  void Lost(Conn& conn, const std::string& why) {
    for (Call* call : conn.calls) {
      if (!call->timed_out) Fail(*call, why);
      delete call;
    }
    conn.calls.clear();
    Close(conn);
    conn.reconnect_at = Clock::now() + kReconnectDelay;
  }

  void Close(Conn& conn) {
    if (conn.session != nullptr) {
      // nghttp2_session_del calls no stream-close callbacks (Lost fails the calls first).
      nghttp2_session_del(conn.session);
      conn.session = nullptr;
    }
    if (conn.fd >= 0) {
      epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, conn.fd, nullptr);
      close(conn.fd);
      conn.fd = -1;
    }
    if (conn.connecting) --connecting_;
    if (conn.established) established.fetch_sub(1, std::memory_order_relaxed);
    conn.connecting = false;
    conn.established = false;
    conn.epollout = false;
    conn.out.clear();
    conn.out_offset = 0;
  }

  void OnEvent(Conn& conn, uint32_t events) {
    if (conn.fd < 0) return;
    if (conn.connecting) {
      int error = 0;
      socklen_t length = sizeof(error);
      getsockopt(conn.fd, SOL_SOCKET, SO_ERROR, &error, &length);
      if (error != 0 || (events & (EPOLLERR | EPOLLHUP))) {
        Error("connect: " + std::string(std::strerror(error != 0 ? error : ECONNRESET)));
        Lost(conn, "connect failed");
        return;
      }
      if (!(events & EPOLLOUT)) return;
      conn.connecting = false;
      --connecting_;
      if (!Establish(conn)) {
        Lost(conn, "nghttp2 session");
        return;
      }
    }
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
      if (!ReadAll(conn)) return;
    }
    Pump(conn);
  }

  bool ReadAll(Conn& conn) {
    std::size_t total = 0;
    while (total < kReadPerEvent) {
      const ssize_t n = read(conn.fd, read_buffer_.data(), read_buffer_.size());
      if (n > 0) {
        total += static_cast<std::size_t>(n);
        const ssize_t used = nghttp2_session_mem_recv(
            conn.session, reinterpret_cast<const uint8_t*>(read_buffer_.data()),
            static_cast<std::size_t>(n));
        if (used < 0) {
          Error(std::string("nghttp2: ") + nghttp2_strerror(static_cast<int>(used)));
          Lost(conn, "protocol error");
          return false;
        }
        if (conn.fd < 0) return false;
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
      Lost(conn, n == 0 ? "closed by the proxy" : std::string("read: ") + std::strerror(errno));
      return false;
    }
    return true;
  }

  // nghttp2's output to the socket, until it has nothing more or the socket is full.
  void Pump(Conn& conn) {
    if (conn.session == nullptr) return;
    for (;;) {
      while (conn.out.size() - conn.out_offset < kOutHighWater) {
        const uint8_t* data = nullptr;
        const ssize_t n = nghttp2_session_mem_send(conn.session, &data);
        if (n < 0) {
          Lost(conn, std::string("nghttp2: ") + nghttp2_strerror(static_cast<int>(n)));
          return;
        }
        if (n == 0) break;
        conn.out.append(reinterpret_cast<const char*>(data), static_cast<std::size_t>(n));
      }
      if (conn.out.size() == conn.out_offset) break;
      const ssize_t n = send(conn.fd, conn.out.data() + conn.out_offset,
                             conn.out.size() - conn.out_offset, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        WantOut(conn, true);
        return;
      }
      if (n < 0) {
        Lost(conn, std::string("write: ") + std::strerror(errno));
        return;
      }
      conn.out_offset += static_cast<std::size_t>(n);
      if (conn.out_offset == conn.out.size()) {
        conn.out.clear();
        conn.out_offset = 0;
      }
    }
    WantOut(conn, false);
    if (!nghttp2_session_want_read(conn.session) && !nghttp2_session_want_write(conn.session)) {
      Lost(conn, "GOAWAY");  // the proxy ended the connection; calls still out are lost
    }
  }

  void WantOut(Conn& conn, bool want) {
    if (conn.epollout == want || conn.fd < 0) return;
    conn.epollout = want;
    epoll_event event{EPOLLIN | (want ? EPOLLOUT : 0u), {&conn}};
    epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, conn.fd, &event);
  }

  // ---- calls ----

  bool Submit(Conn& conn, Kind kind, Clock::time_point due) {
    auto call = std::make_unique<Call>();
    call->kind = kind;
    call->body = kind == Kind::kPoll   ? &conn.poll_body
                 : kind == Kind::kPush ? &requests_.push_body()
                                       : &requests_.pull_body();
    nghttp2_data_provider provider{};
    provider.source.ptr = call.get();
    provider.read_callback = &Loop::ReadBody;
    const auto& headers = requests_.headers(kind);
    const int32_t id = nghttp2_submit_request(conn.session, nullptr, headers.data(),
                                              headers.size(), &provider, call.get());
    if (id < 0) {
      Error(std::string("submit: ") + nghttp2_strerror(id));
      return false;
    }
    call->start = Clock::now();
    if (kind == Kind::kPoll && polling.load(std::memory_order_relaxed)) {
      Current().late_ms.push_back(
          std::chrono::duration<float, std::milli>(call->start - due).count());
    }
    call->stream_id = id;
    conn.calls.push_back(call.release());
    return true;
  }

  void Fail(Call& call, const std::string& why) {
    Error(why);
    if (call.kind == Kind::kPoll) {
      ++Current().poll_errors;
    } else {
      ++Current().busy_errors;
    }
  }

  void Finish(Conn& conn, Call* call, uint32_t error_code) {
    std::erase(conn.calls, call);
    PhaseStats& stats = Current();
    const bool ok = error_code == 0 && call->http_status == 200 && call->grpc_status == 0;
    if (call->timed_out) {
      // counted when it was cancelled
    } else if (!ok) {
      std::string why = error_code != 0 ? std::string("RST_STREAM ") +
                                              nghttp2_http2_strerror(error_code)
                        : call->http_status != 200 ? "HTTP " + std::to_string(call->http_status)
                                                   : "grpc-status " +
                                                         std::to_string(call->grpc_status);
      Fail(*call, why);
    } else if (call->kind == Kind::kPoll) {
      ++stats.polls_ok;
      stats.poll_ms.push_back(
          std::chrono::duration<float, std::milli>(Clock::now() - call->start).count());
    } else {
      ++stats.busy_ok;
    }
    if (call->kind == Kind::kPoll && conn.calls_done++ == 0) {
      first_calls.fetch_add(1, std::memory_order_relaxed);
    }
    delete call;
  }

  // Pollers: every poller is due once per interval, spread evenly over it.
  void SchedulePolls(Clock::time_point now) {
    if (!polling.load(std::memory_order_relaxed)) return;
    const auto interval = std::chrono::duration_cast<Clock::duration>(
        std::chrono::duration<double>(options_.poll_interval_s));
    if (!scheduled_) {
      scheduled_ = true;
      const auto n = static_cast<int64_t>(conns_.size());
      for (auto& conn : conns_) {
        due_.emplace(now + interval * conn->index / std::max<int64_t>(n, 1), conn->index);
      }
    }
    while (!due_.empty() && due_.top().first <= now) {
      const auto [due, index] = due_.top();
      due_.pop();
      due_.emplace(due + interval, index);
      Conn& conn = *conns_[static_cast<std::size_t>(index)];
      if (!conn.established) {
        Error("not connected when due");
        continue;
      }
      if (!conn.calls.empty()) {
        ++Current().polls_skipped;
        continue;
      }
      if (Submit(conn, Kind::kPoll, due)) Pump(conn);
      now = Clock::now();
    }
  }

  // Busy nodes: a push and a pull in flight per node (flat out), or as the byte budget allows
  // (paced).
  void StartBusyCalls(Clock::time_point now) {
    const int mode = busy_mode.load(std::memory_order_relaxed);
    if (mode == 2) {
      const double rate = options_.paced_mib * 1024 * 1024;
      budget_ += rate * std::chrono::duration<double>(now - last_budget_).count();
      budget_ = std::min(budget_, static_cast<double>(options_.object_bytes) * 2);
    } else {
      budget_ = 0;
    }
    last_budget_ = now;
    if (mode == 0) return;
    for (auto& owned : conns_) {
      Conn& conn = *owned;
      if (!conn.established) continue;
      for (Kind kind : {Kind::kPush, Kind::kPull}) {
        const bool out = std::any_of(conn.calls.begin(), conn.calls.end(),
                                     [&](const Call* c) { return c->kind == kind; });
        if (out) continue;
        if (mode == 2) {
          if (budget_ < static_cast<double>(options_.object_bytes)) return;
          budget_ -= static_cast<double>(options_.object_bytes);
        }
        if (Submit(conn, kind, now)) Pump(conn);
        if (conn.fd < 0) break;
      }
    }
  }

  // ---- nghttp2 callbacks ----

  static Conn& Of(void* user) { return *static_cast<Conn*>(user); }

  static ssize_t ReadBody(nghttp2_session*, int32_t, uint8_t* buf, size_t length,
                          uint32_t* flags, nghttp2_data_source* source, void*) {
    auto* call = static_cast<Call*>(source->ptr);
    const std::size_t n = std::min(length, call->body->size() - call->offset);
    std::memcpy(buf, call->body->data() + call->offset, n);
    call->offset += n;
    if (call->offset == call->body->size()) *flags |= NGHTTP2_DATA_FLAG_EOF;
    return static_cast<ssize_t>(n);
  }

  static int OnHeader(nghttp2_session* session, const nghttp2_frame* frame, const uint8_t* name,
                      size_t name_len, const uint8_t* value, size_t value_len, uint8_t, void*) {
    if (frame->hd.type != NGHTTP2_HEADERS) return 0;
    auto* call = static_cast<Call*>(nghttp2_session_get_stream_user_data(session, frame->hd.stream_id));
    if (call == nullptr) return 0;
    const std::string_view key(reinterpret_cast<const char*>(name), name_len);
    const std::string text(reinterpret_cast<const char*>(value), value_len);
    if (key == ":status") call->http_status = std::atoi(text.c_str());
    if (key == "grpc-status") call->grpc_status = std::atoi(text.c_str());
    return 0;
  }

  static int OnData(nghttp2_session*, uint8_t, int32_t, const uint8_t*, size_t len, void* user) {
    Loop& loop = *Of(user).loop;
    if (loop.role_ == Role::kBusy) loop.bytes.fetch_add(static_cast<int64_t>(len), std::memory_order_relaxed);
    return 0;
  }

  static int OnFrameSend(nghttp2_session*, const nghttp2_frame* frame, void* user) {
    Loop& loop = *Of(user).loop;
    if (frame->hd.type == NGHTTP2_DATA && loop.role_ == Role::kBusy) {
      loop.bytes.fetch_add(static_cast<int64_t>(frame->hd.length), std::memory_order_relaxed);
    }
    return 0;
  }

  static int OnStreamClose(nghttp2_session* session, int32_t stream_id, uint32_t error_code,
                           void* user) {
    Conn& conn = Of(user);
    auto* call = static_cast<Call*>(nghttp2_session_get_stream_user_data(session, stream_id));
    if (call != nullptr) conn.loop->Finish(conn, call, error_code);
    return 0;
  }

  const Options& options_;
  const Requests& requests_;
  const Role role_;
  const sockaddr_in target_;
  int epoll_fd_ = -1;
  int connecting_ = 0;
  std::vector<std::unique_ptr<Conn>> conns_;
  std::vector<char> read_buffer_;
  using Due = std::pair<Clock::time_point, int>;
  std::priority_queue<Due, std::vector<Due>, std::greater<Due>> due_;
  bool scheduled_ = false;
  double budget_ = 0;
  Clock::time_point last_budget_{};
  PhaseStats stats_[kPhaseCount];
};

// ---- the report --------------------------------------------------------------------------

double Percentile(std::vector<float> values, double q) {
  if (values.empty()) return 0;
  const auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(values.size())));
  const std::size_t at = std::min(values.size() - 1, rank == 0 ? 0 : rank - 1);
  std::nth_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(at), values.end());
  return values[at];
}

double Max(const std::vector<float>& values) {
  return values.empty() ? 0 : *std::max_element(values.begin(), values.end());
}

// What the main thread reads at a phase boundary.
struct Mark {
  Clock::time_point at;
  ProcSample proxy;
  ProcSample backend;
  double poll_thread_cpu_s = 0;
  double busy_thread_cpu_s = 0;
  int64_t bytes = 0;
};

std::string Escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) >= 0x20) out += c;
  }
  return out;
}

// One phase's numbers as a JSON object.
std::string PhaseJson(const PhaseStats& polls, const PhaseStats& busy, const Mark& from,
                      const Mark& to) {
  const double seconds = std::chrono::duration<double>(to.at - from.at).count();
  const double proxy_cpu = to.proxy.cpu_s - from.proxy.cpu_s;
  const double gib = static_cast<double>(to.bytes - from.bytes) / (1024.0 * 1024 * 1024);
  std::map<std::string, int64_t> errors = polls.errors;
  for (const auto& [what, n] : busy.errors) errors[what] += n;
  std::string first_error;
  int64_t most = 0;
  for (const auto& [what, n] : errors) {
    if (n > most) {
      most = n;
      first_error = what;
    }
  }
  char text[2048];
  std::snprintf(
      text, sizeof(text),
      "{\"seconds\":%.2f,\"polls\":%lld,\"polls_per_s\":%.1f,\"poll_p50_ms\":%.2f,"
      "\"poll_p99_ms\":%.2f,\"poll_max_ms\":%.1f,\"poll_errors\":%lld,\"poll_timeouts\":%lld,"
      "\"polls_skipped\":%lld,\"timer_late_p99_ms\":%.2f,\"timer_late_max_ms\":%.1f,"
      "\"busy_calls\":%lld,\"busy_errors\":%lld,\"mib_per_s\":%.1f,\"proxy_cpu_pct\":%.1f,"
      "\"proxy_cpu_s_per_gib\":%.3f,\"backend_cpu_pct\":%.1f,\"client_poll_cpu_pct\":%.1f,"
      "\"client_busy_cpu_pct\":%.1f,\"top_error\":\"%s\",\"top_error_count\":%lld}",
      seconds, static_cast<long long>(polls.polls_ok), static_cast<double>(polls.polls_ok) / seconds,
      Percentile(polls.poll_ms, 0.5), Percentile(polls.poll_ms, 0.99), Max(polls.poll_ms),
      static_cast<long long>(polls.poll_errors), static_cast<long long>(polls.poll_timeouts),
      static_cast<long long>(polls.polls_skipped), Percentile(polls.late_ms, 0.99),
      Max(polls.late_ms), static_cast<long long>(busy.busy_ok),
      static_cast<long long>(busy.busy_errors), gib * 1024 / seconds, 100 * proxy_cpu / seconds,
      gib > 0.01 ? proxy_cpu / gib : 0.0,
      100 * (to.backend.cpu_s - from.backend.cpu_s) / seconds,
      100 * (to.poll_thread_cpu_s - from.poll_thread_cpu_s) / seconds,
      100 * (to.busy_thread_cpu_s - from.busy_thread_cpu_s) / seconds,
      Escape(first_error).c_str(), static_cast<long long>(most));
  return text;
}

void Sleep(double seconds) {
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
}

int RaiseFdLimit() {
  rlimit limit{};
  getrlimit(RLIMIT_NOFILE, &limit);
  limit.rlim_cur = limit.rlim_max;
  setrlimit(RLIMIT_NOFILE, &limit);
  getrlimit(RLIMIT_NOFILE, &limit);
  return static_cast<int>(std::min<rlim_t>(limit.rlim_cur, 1 << 30));
}

int Run(const Options& options, const sockaddr_in& target) {
  const int fd_limit = RaiseFdLimit();
  if (options.pollers + options.busy + 64 > fd_limit) {
    std::fprintf(stderr, "sepal-fleet: %d connections need more than RLIMIT_NOFILE (%d)\n",
                 options.pollers + options.busy, fd_limit);
    return kExitUsage;
  }
  const Requests requests(options);
  Loop pollers(options, requests, Loop::Role::kPollers, options.pollers, target);
  Loop busy(options, requests, Loop::Role::kBusy, options.busy, target);
  std::thread busy_thread;
  auto mark = [&](std::thread& poll_thread) {
    Mark m;
    m.at = Clock::now();
    m.proxy = SampleProcess(options.proxy_pid);
    m.backend = SampleProcess(options.backend_pid);
    m.poll_thread_cpu_s = ThreadCpuSeconds(poll_thread);
    m.busy_thread_cpu_s = busy_thread.joinable() ? ThreadCpuSeconds(busy_thread) : 0;
    m.bytes = busy.bytes.load();
    return m;
  };
  auto set_phase = [&](int phase) {
    pollers.phase.store(phase);
    busy.phase.store(phase);
  };

  // idle: every poller connects and makes one call.
  const ProcSample before_connect = SampleProcess(options.proxy_pid);
  const auto connect_start = Clock::now();
  std::thread poll_thread([&] { pollers.Run(); });
  while (pollers.first_calls.load() < options.pollers && Clock::now() - connect_start < kConnectWait) {
    Sleep(0.05);
  }
  const double connect_s = std::chrono::duration<double>(Clock::now() - connect_start).count();
  const int connected = pollers.established.load();
  const int first_calls = pollers.first_calls.load();
  Sleep(options.settle_s);
  const ProcSample idle = SampleProcess(options.proxy_pid);
  const int upstream_idle = CountConnectionsTo(options.upstream_port);

  // warm: polling on schedule, busy nodes connect.
  set_phase(kWarm);
  pollers.polling.store(true);
  busy_thread = std::thread([&] { busy.Run(); });
  Sleep(std::max(options.poll_interval_s, 1.0));

  std::vector<std::pair<int, Mark>> marks;
  set_phase(kBefore);
  marks.emplace_back(kBefore, mark(poll_thread));
  Sleep(options.before_s);

  int upstream_round = 0;
  set_phase(kRound);
  busy.busy_mode.store(1);
  marks.emplace_back(kRound, mark(poll_thread));
  for (double left = options.round_s; left > 0; left -= 1) {
    Sleep(std::min(left, 1.0));
    upstream_round = std::max(upstream_round, CountConnectionsTo(options.upstream_port));
  }
  if (options.paced_s > 0) {
    set_phase(kPaced);
    busy.busy_mode.store(2);
    marks.emplace_back(kPaced, mark(poll_thread));
    Sleep(options.paced_s);
  }
  set_phase(kEnd);
  busy.busy_mode.store(0);
  marks.emplace_back(kEnd, mark(poll_thread));
  const ProcSample last = SampleProcess(options.proxy_pid);
  pollers.stop.store(true);
  busy.stop.store(true);
  poll_thread.join();
  busy_thread.join();

  std::string phases;
  for (std::size_t i = 0; i + 1 < marks.size(); ++i) {
    const int phase = marks[i].first;
    if (!phases.empty()) phases += ',';
    phases += std::string("\"") + kPhaseNames[phase] + "\":" +
              PhaseJson(pollers.stats(phase), busy.stats(phase), marks[i].second,
                        marks[i + 1].second);
  }
  const double idle_kib =
      first_calls > 0 ? static_cast<double>(idle.rss_kib - before_connect.rss_kib) / first_calls : 0;
  std::printf(
      "{\"pollers\":%d,\"connected\":%d,\"first_calls\":%d,\"connect_s\":%.1f,\"busy\":%d,"
      "\"object_bytes\":%zu,\"poll_interval_s\":%.2f,\"idle_kib_per_conn\":%.2f,"
      "\"rss_before_kib\":%lld,\"rss_idle_kib\":%lld,\"peak_rss_kib\":%lld,"
      "\"upstream_conns_idle\":%d,\"upstream_conns_round\":%d,\"idle_errors\":%lld,"
      "\"phases\":{%s}}\n",
      options.pollers, connected, first_calls, connect_s, options.busy, options.object_bytes,
      options.poll_interval_s, idle_kib, before_connect.rss_kib, idle.rss_kib, last.peak_kib,
      upstream_idle, upstream_round,
      static_cast<long long>(pollers.stats(kIdle).poll_errors), phases.c_str());
  std::fflush(stdout);
  return first_calls > 0 ? kExitOk : kExitFailed;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      PrintHelp();
      return kExitOk;
    }
    if (i + 1 >= argc) return UsageError(arg + " needs a value");
    const std::string value = argv[++i];
    auto seconds = [&](double* out) {
      const auto parsed = ParseSeconds(value);
      if (parsed) *out = *parsed;
      return parsed.has_value();
    };
    auto count = [&](auto* out, long long max) {
      const auto parsed = ParseCount(value, max);
      if (parsed) *out = static_cast<std::remove_reference_t<decltype(*out)>>(*parsed);
      return parsed.has_value();
    };
    bool ok = true;
    if (arg == "--target") {
      options.target = value;
    } else if (arg == "--pollers") {
      ok = count(&options.pollers, 60000);
    } else if (arg == "--busy") {
      ok = count(&options.busy, 250);
    } else if (arg == "--object-bytes") {
      ok = count(&options.object_bytes, 512LL << 20);
    } else if (arg == "--poll-interval") {
      ok = seconds(&options.poll_interval_s) && options.poll_interval_s > 0;
    } else if (arg == "--settle") {
      ok = seconds(&options.settle_s);
    } else if (arg == "--before") {
      ok = seconds(&options.before_s) && options.before_s > 0;
    } else if (arg == "--round") {
      ok = seconds(&options.round_s) && options.round_s > 0;
    } else if (arg == "--paced") {
      ok = seconds(&options.paced_s);
    } else if (arg == "--paced-mib") {
      char* end = nullptr;
      options.paced_mib = std::strtod(value.c_str(), &end);
      ok = *end == '\0' && options.paced_mib > 0;
    } else if (arg == "--poll-timeout") {
      ok = seconds(&options.poll_timeout_s) && options.poll_timeout_s > 0;
    } else if (arg == "--proxy-pid") {
      ok = count(&options.proxy_pid, 1 << 30);
    } else if (arg == "--backend-pid") {
      ok = count(&options.backend_pid, 1 << 30);
    } else if (arg == "--upstream-port") {
      ok = count(&options.upstream_port, 65535);
    } else {
      return UsageError("unknown option " + arg);
    }
    if (!ok) return UsageError("bad value for " + arg + ": " + value);
  }
  if (options.target.empty()) return UsageError("--target is required");
  const std::size_t colon = options.target.rfind(':');
  sockaddr_in target{};
  target.sin_family = AF_INET;
  const auto port = colon == std::string::npos
                        ? std::nullopt
                        : ParseCount(options.target.substr(colon + 1), 65535);
  if (!port || *port == 0 ||
      inet_pton(AF_INET, options.target.substr(0, colon).c_str(), &target.sin_addr) != 1) {
    return UsageError("--target must be IPv4:PORT, not " + options.target);
  }
  target.sin_port = htons(static_cast<uint16_t>(*port));
  return Run(options, target);
}
