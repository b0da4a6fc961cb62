// sepal-loadgen: drives sepal.test.Echo through a proxy and prints one JSON line of results.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "tests/proto/echo.grpc.pb.h"

namespace {

using sepal::test::Echo;
using sepal::test::EchoRequest;
using sepal::test::EchoResponse;
using Clock = std::chrono::steady_clock;
using Nanos = std::chrono::nanoseconds;

constexpr int kMaxMessageBytes = 600 * 1024 * 1024;
constexpr std::size_t kMiB = 1024 * 1024;
constexpr int kExitOk = 0;
constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;
constexpr int kExitTimeout = 3;

struct Options {
  std::string mode = "unary";
  std::string target;
  int connections = 4;
  int concurrency = 64;
  int threads = 1;
  std::size_t payload = 100;
  Nanos duration = std::chrono::seconds(10);
  Nanos warmup = std::chrono::seconds(2);
  std::optional<Nanos> timeout;  // default depends on the mode
  std::size_t total_mib = 256;
  std::size_t message_mib = 4;
  bool tls = false;
  std::string ca_file;      // PEM roots for --tls
  std::string ca_pem;       // its contents
  std::string server_name;  // name checked against the certificate instead of the target's
};

void PrintHelp() {
  std::printf(
      "usage: sepal-loadgen --mode unary|stream|probe|handshakes --target HOST:PORT [options]\n"
      "  unary:  --connections N (4) --concurrency N (64, calls in flight in total)\n"
      "          --payload BYTES (100) --duration D (10s) --warmup D (2s) --threads N (1)\n"
      "          prints calls, errors, rps and latency percentiles of the measured window\n"
      "  stream: --total-mib N (256) --message-mib N (4): one Bidi call sending N/M messages\n"
      "          that the backend echoes; M == N sends one Unary message instead.\n"
      "          MiB/s counts the bytes sent (the same number comes back)\n"
      "  probe:  one Unary call, retried on fresh channels until it succeeds\n"
      "  handshakes: --connections N (4) loops, each making a new connection (TCP, and TLS\n"
      "          with --tls) for every Unary call: --duration, --warmup, --payload as unary;\n"
      "          prints handshakes (= connections = calls) per second and latency percentiles\n"
      "  --tls --ca FILE [--server-name NAME]   TLS to the target, trusting the PEM roots in\n"
      "          FILE and checking NAME (default: the target's host) in its certificate\n"
      "  --timeout D   whole run (stream, probe: 60s; unary: warmup+duration+30s); on expiry\n"
      "                prints {\"error\":\"timeout\"} and exits 3\n"
      "durations: 10s, 500ms, 1.5s, 2m; exit status 0 ok, 1 failed, 2 usage, 3 timeout\n");
}

int UsageError(const std::string& what) {
  std::fprintf(stderr, "sepal-loadgen: %s (see --help)\n", what.c_str());
  return kExitUsage;
}

std::optional<Nanos> ParseDuration(const std::string& text) {
  char* unit = nullptr;
  const double value = std::strtod(text.c_str(), &unit);
  if (unit == text.c_str() || !std::isfinite(value) || value < 0) return std::nullopt;
  const std::string_view suffix(unit);
  double seconds = value;
  if (suffix == "ms") {
    seconds = value / 1e3;
  } else if (suffix == "m") {
    seconds = value * 60;
  } else if (suffix != "s" && !suffix.empty()) {
    return std::nullopt;
  }
  if (seconds > 86400) return std::nullopt;
  return std::chrono::duration_cast<Nanos>(std::chrono::duration<double>(seconds));
}

std::optional<long> ParseCount(const std::string& text, long max) {
  char* end = nullptr;
  const long value = std::strtol(text.c_str(), &end, 10);
  if (end == text.c_str() || *end != '\0' || value < 1 || value > max) return std::nullopt;
  return value;
}

// Fills `options` from --name value / --name=value pairs; returns an exit code on failure.
std::optional<int> ParseArgs(int argc, char** argv, Options& options) {
  for (int i = 1; i < argc; ++i) {
    std::string name = argv[i];
    if (name == "--help" || name == "-h") {
      PrintHelp();
      return kExitOk;
    }
    if (name == "--tls") {
      options.tls = true;
      continue;
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
    auto set_count = [&](auto& field, long max) {
      const auto parsed = ParseCount(value, max);
      if (parsed) field = static_cast<std::remove_reference_t<decltype(field)>>(*parsed);
      return parsed.has_value();
    };
    auto set_duration = [&](auto& field) {
      const auto parsed = ParseDuration(value);
      if (parsed) field = *parsed;
      return parsed.has_value();
    };
    bool ok = true;
    if (name == "--mode") {
      options.mode = value;
      ok = value == "unary" || value == "stream" || value == "probe" || value == "handshakes";
    } else if (name == "--target") {
      options.target = value;
    } else if (name == "--ca") {
      options.ca_file = value;
    } else if (name == "--server-name") {
      options.server_name = value;
    } else if (name == "--connections") {
      ok = set_count(options.connections, 1024);
    } else if (name == "--concurrency") {
      ok = set_count(options.concurrency, 100000);
    } else if (name == "--threads") {
      ok = set_count(options.threads, 64);
    } else if (name == "--payload") {
      ok = set_count(options.payload, kMaxMessageBytes - 64);
    } else if (name == "--total-mib") {
      ok = set_count(options.total_mib, 512);
    } else if (name == "--message-mib") {
      ok = set_count(options.message_mib, 512);
    } else if (name == "--duration") {
      ok = set_duration(options.duration);
    } else if (name == "--warmup") {
      ok = set_duration(options.warmup);
    } else if (name == "--timeout") {
      ok = set_duration(options.timeout.emplace());
    } else {
      return UsageError("unknown option " + name);
    }
    if (!ok) return UsageError("bad value for " + name + ": " + value);
  }
  if (options.target.empty()) return UsageError("--target is required");
  if (options.tls != !options.ca_file.empty()) return UsageError("--tls and --ca go together");
  if (!options.server_name.empty() && !options.tls) return UsageError("--server-name needs --tls");
  if (options.tls) {
    std::ifstream in(options.ca_file, std::ios::binary);
    options.ca_pem.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    if (!in || options.ca_pem.empty()) return UsageError("cannot read --ca " + options.ca_file);
  }
  if (options.duration <= Nanos::zero()) return UsageError("--duration must be positive");
  if (options.mode == "stream" && options.total_mib % options.message_mib != 0) {
    return UsageError("--total-mib must be a multiple of --message-mib");
  }
  options.threads = std::min({options.threads, options.connections, options.concurrency});
  if (!options.timeout) {
    *options.timeout = options.mode == "unary" || options.mode == "handshakes"
                           ? options.warmup + options.duration + std::chrono::seconds(30)
                           : Nanos(std::chrono::seconds(60));
  }
  return std::nullopt;
}

// One JSON object on one line; whoever prints first (result or watchdog) wins, so a late
// timeout never follows a result.
class Report {
 public:
  explicit Report(std::string mode) { Add("mode", mode); }

  void Add(std::string_view key, std::string_view text) {
    std::string quoted = "\"";
    for (char c : text) {
      if (c == '"' || c == '\\') {
        quoted += '\\';
        quoted += c;
      } else if (static_cast<unsigned char>(c) < 0x20) {
        quoted += ' ';
      } else {
        quoted += c;
      }
    }
    AddRaw(key, quoted + "\"");
  }
  void Add(std::string_view key, double number) {
    char buffer[64];
    std::snprintf(buffer, sizeof(buffer), "%.3f", number);
    std::string text = buffer;
    // Trim "12.000" to "12" and "1.500" to "1.5".
    text.erase(text.find_last_not_of('0') + 1);
    if (text.back() == '.') text.pop_back();
    AddRaw(key, text);
  }
  void Add(std::string_view key, std::int64_t number) { AddRaw(key, std::to_string(number)); }
  void Add(std::string_view key, int number) { Add(key, static_cast<std::int64_t>(number)); }
  void Add(std::string_view key, std::size_t number) { AddRaw(key, std::to_string(number)); }

  // Prints the object unless something was printed already; true if this call printed.
  bool Print() const {
    static std::mutex mutex;
    static bool printed = false;
    const std::lock_guard lock(mutex);
    if (printed) return false;
    printed = true;
    std::printf("{%s}\n", body_.c_str());
    std::fflush(stdout);
    return true;
  }

 private:
  void AddRaw(std::string_view key, const std::string& value) {
    if (!body_.empty()) body_ += ',';
    body_ += '"';
    body_ += key;
    body_ += "\":";
    body_ += value;
  }

  std::string body_;
};

std::string Describe(const grpc::Status& status) {
  return std::to_string(static_cast<int>(status.error_code())) + " " + status.error_message();
}

// Ends the process with {"error":"timeout"} if the run is not over by then: a stalled proxy
// must not hang the benchmark script.
void StartWatchdog(const Options& options) {
  std::thread([mode = options.mode, timeout = *options.timeout] {
    std::this_thread::sleep_for(timeout);
    Report report(mode);
    report.Add("error", "timeout");
    report.Add("timeout_s", std::chrono::duration<double>(timeout).count());
    if (report.Print()) std::_Exit(kExitTimeout);
  }).detach();
}

// Cleartext (h2c), or TLS with --tls; set once in main.
const Options* g_options = nullptr;

// Each channel gets its own TCP connection: a local subchannel pool, plus an argument that
// differs per channel so no two channels ever compare equal.
std::shared_ptr<grpc::Channel> MakeChannel(const std::string& target, int index) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetInt("sepal.loadgen.connection", index);
  args.SetMaxSendMessageSize(kMaxMessageBytes);
  args.SetMaxReceiveMessageSize(kMaxMessageBytes);
  if (g_options == nullptr || !g_options->tls) {
    return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
  }
  if (!g_options->server_name.empty()) args.SetSslTargetNameOverride(g_options->server_name);
  grpc::SslCredentialsOptions tls;
  tls.pem_root_certs = g_options->ca_pem;
  return grpc::CreateCustomChannel(target, grpc::SslCredentials(tls), args);
}

bool ConnectAll(const std::vector<std::shared_ptr<grpc::Channel>>& channels, Nanos timeout) {
  const auto deadline = std::chrono::system_clock::now() + timeout;
  for (const auto& channel : channels) {
    if (!channel->WaitForConnected(deadline)) return false;
  }
  return true;
}

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// ---- unary mode -------------------------------------------------------------------------

// One call in flight; its address is the completion-queue tag.
struct UnaryCall {
  Echo::Stub* stub = nullptr;
  Clock::time_point start;
  grpc::ClientContext context;
  EchoResponse response;
  grpc::Status status;
  std::unique_ptr<grpc::ClientAsyncResponseReader<EchoResponse>> reader;
};

// Tallies of the calls that finished inside the measured window; `all_calls` also counts
// warmup and drain, to divide the proxy's CPU time by.
struct WindowStats {
  std::int64_t all_calls = 0;
  std::vector<std::int64_t> latencies_ns;
  std::int64_t errors = 0;
  std::string first_error;
};

// Adds one thread's tallies to `total` (latencies unsorted).
void Merge(WindowStats& total, const WindowStats& part) {
  total.latencies_ns.insert(total.latencies_ns.end(), part.latencies_ns.begin(),
                            part.latencies_ns.end());
  total.errors += part.errors;
  total.all_calls += part.all_calls;
  if (total.first_error.empty()) total.first_error = part.first_error;
}

// Runs one completion queue: keeps `in_flight` calls going over `stubs` until `stop`, and
// records the calls that complete inside [window_start, window_end).
class UnaryDriver {
 public:
  UnaryDriver(std::vector<Echo::Stub*> stubs, int in_flight, const EchoRequest& request)
      : stubs_(std::move(stubs)), in_flight_(in_flight), request_(request) {}

  void Run(Clock::time_point window_start, Clock::time_point window_end) {
    for (int i = 0; i < in_flight_; ++i) Start(stubs_[i % stubs_.size()]);
    int outstanding = in_flight_;
    void* tag = nullptr;
    bool ok = false;
    while (outstanding > 0 && queue_.Next(&tag, &ok)) {
      std::unique_ptr<UnaryCall> call(static_cast<UnaryCall*>(tag));
      const auto now = Clock::now();
      ++stats_.all_calls;
      if (now >= window_start && now < window_end) Record(*call, now);
      if (now < window_end) {
        Start(call->stub);
      } else {
        --outstanding;
      }
    }
    queue_.Shutdown();
    while (queue_.Next(&tag, &ok)) delete static_cast<UnaryCall*>(tag);
  }

  WindowStats& stats() { return stats_; }

 private:
  void Start(Echo::Stub* stub) {
    auto call = std::make_unique<UnaryCall>();
    call->stub = stub;
    call->start = Clock::now();
    call->reader = stub->PrepareAsyncUnary(&call->context, request_, &queue_);
    call->reader->StartCall();
    UnaryCall* raw = call.release();  // owned by the queue until Next returns it
    raw->reader->Finish(&raw->response, &raw->status, raw);
  }

  void Record(const UnaryCall& call, Clock::time_point now) {
    if (call.status.ok() && call.response.payload().size() == request_.payload().size()) {
      stats_.latencies_ns.push_back(std::chrono::duration_cast<Nanos>(now - call.start).count());
      return;
    }
    if (stats_.errors++ == 0) {
      stats_.first_error = call.status.ok() ? "short echo" : Describe(call.status);
    }
  }

  std::vector<Echo::Stub*> stubs_;
  const int in_flight_;
  const EchoRequest& request_;
  grpc::CompletionQueue queue_;
  WindowStats stats_;
};

// Nearest-rank percentile in microseconds; `sorted` is ascending.
double PercentileMicros(const std::vector<std::int64_t>& sorted, double fraction) {
  if (sorted.empty()) return 0;
  auto rank = static_cast<std::size_t>(std::ceil(fraction * static_cast<double>(sorted.size())));
  rank = std::clamp<std::size_t>(rank, 1, sorted.size());
  return static_cast<double>(sorted[rank - 1]) / 1e3;
}

// Adds the measured window to the report (the rate of successful calls under `rate_key`,
// latency percentiles), prints it, and returns the exit code: ok if calls all succeeded.
int FinishWindow(Report& report, WindowStats& total, double seconds, std::string_view rate_key) {
  std::sort(total.latencies_ns.begin(), total.latencies_ns.end());
  const auto calls = static_cast<std::int64_t>(total.latencies_ns.size());
  report.Add("calls", calls);
  report.Add("all_calls", total.all_calls);
  report.Add("errors", total.errors);
  report.Add("seconds", seconds);
  report.Add(rate_key, static_cast<double>(calls) / seconds);
  report.Add("p50_us", PercentileMicros(total.latencies_ns, 0.50));
  report.Add("p90_us", PercentileMicros(total.latencies_ns, 0.90));
  report.Add("p99_us", PercentileMicros(total.latencies_ns, 0.99));
  report.Add("max_us", PercentileMicros(total.latencies_ns, 1.0));
  if (total.errors > 0) report.Add("first_error", total.first_error);
  report.Print();
  return calls > 0 && total.errors == 0 ? kExitOk : kExitFailed;
}

int RunUnary(const Options& options) {
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  std::vector<std::unique_ptr<Echo::Stub>> stubs;
  for (int i = 0; i < options.connections; ++i) {
    channels.push_back(MakeChannel(options.target, i));
    stubs.push_back(Echo::NewStub(channels.back()));
  }
  Report report("unary");
  if (!ConnectAll(channels, std::chrono::seconds(10))) {
    report.Add("error", "connect");
    report.Print();
    return kExitFailed;
  }
  EchoRequest request;
  request.set_payload(std::string(options.payload, 'x'));

  // Driver t gets connections t, t+threads, ... and an even share of the calls in flight.
  std::vector<std::unique_ptr<UnaryDriver>> drivers;
  for (int t = 0; t < options.threads; ++t) {
    std::vector<Echo::Stub*> own;
    for (int c = t; c < options.connections; c += options.threads) own.push_back(stubs[c].get());
    const int share =
        options.concurrency / options.threads + (t < options.concurrency % options.threads);
    drivers.push_back(std::make_unique<UnaryDriver>(std::move(own), share, request));
  }
  const auto window_start = Clock::now() + options.warmup;
  const auto window_end = window_start + options.duration;
  std::vector<std::thread> threads;
  for (auto& driver : drivers) {
    threads.emplace_back(
        [&driver, window_start, window_end] { driver->Run(window_start, window_end); });
  }
  for (auto& thread : threads) thread.join();

  WindowStats total;
  for (auto& driver : drivers) Merge(total, driver->stats());
  report.Add("target", options.target);
  report.Add("connections", options.connections);
  report.Add("concurrency", options.concurrency);
  report.Add("payload", options.payload);
  return FinishWindow(report, total, Seconds(window_end - window_start), "rps");
}

// ---- handshakes mode --------------------------------------------------------------------

// `connections` loops, each dialing a new channel (its own TCP connection and, with --tls, a
// full handshake) for every call; the measured window counts finished calls.
int RunHandshakes(const Options& options) {
  Report report("handshakes");
  EchoRequest request;
  request.set_payload(std::string(options.payload, 'x'));
  const auto window_start = Clock::now() + options.warmup;
  const auto window_end = window_start + options.duration;
  std::vector<WindowStats> stats(static_cast<std::size_t>(options.connections));
  std::atomic<int> next_index{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < options.connections; ++t) {
    threads.emplace_back([&, t] {
      WindowStats& own = stats[static_cast<std::size_t>(t)];
      while (Clock::now() < window_end) {
        const auto start = Clock::now();
        grpc::Status status;
        EchoResponse response;
        {
          auto channel = MakeChannel(options.target, next_index.fetch_add(1));
          auto stub = Echo::NewStub(channel);
          grpc::ClientContext context;
          context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
          context.set_wait_for_ready(false);
          status = stub->Unary(&context, request, &response);
        }  // the channel, and with it the connection, goes here
        const auto now = Clock::now();
        ++own.all_calls;
        if (now < window_start || now >= window_end) continue;
        if (status.ok() && response.payload().size() == request.payload().size()) {
          own.latencies_ns.push_back(std::chrono::duration_cast<Nanos>(now - start).count());
        } else if (own.errors++ == 0) {
          own.first_error = status.ok() ? "short echo" : Describe(status);
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  WindowStats total;
  for (const WindowStats& part : stats) Merge(total, part);
  report.Add("target", options.target);
  report.Add("tls", options.tls ? "yes" : "no");
  report.Add("connections", options.connections);
  return FinishWindow(report, total, Seconds(window_end - window_start), "handshakes_per_s");
}

// ---- stream mode ------------------------------------------------------------------------

struct Transfer {
  grpc::Status status;
  std::size_t sent_bytes = 0;
  std::size_t received_bytes = 0;
};

// One Unary call carrying the whole payload each way.
Transfer SendOneMessage(Echo::Stub& stub, const EchoRequest& request,
                        std::chrono::system_clock::time_point deadline) {
  grpc::ClientContext context;
  context.set_deadline(deadline);
  EchoResponse response;
  Transfer transfer;
  transfer.status = stub.Unary(&context, request, &response);
  if (transfer.status.ok()) {
    transfer.sent_bytes = request.payload().size();
    transfer.received_bytes = response.payload().size();
  }
  return transfer;
}

// One Bidi call: a writer thread sends `count` copies of `request` while this thread reads
// the echoes, so both directions are busy at once as they are in a proxied model upload.
Transfer SendStream(Echo::Stub& stub, const EchoRequest& request, std::size_t count,
                    std::chrono::system_clock::time_point deadline) {
  grpc::ClientContext context;
  context.set_deadline(deadline);
  auto stream = stub.Bidi(&context);
  Transfer transfer;
  std::thread writer([&] {
    for (std::size_t i = 0; i < count; ++i) {
      if (!stream->Write(request)) return;  // the call failed; Finish says why
      transfer.sent_bytes += request.payload().size();
    }
    stream->WritesDone();
  });
  EchoResponse response;
  while (stream->Read(&response)) transfer.received_bytes += response.payload().size();
  writer.join();
  transfer.status = stream->Finish();
  return transfer;
}

int RunStream(const Options& options) {
  const std::size_t count = options.total_mib / options.message_mib;
  Report report("stream");
  report.Add("rpc", count == 1 ? "Unary" : "Bidi");
  report.Add("messages", count);
  report.Add("message_bytes", options.message_mib * kMiB);
  auto channel = MakeChannel(options.target, 0);
  if (!ConnectAll({channel}, std::chrono::seconds(10))) {
    report.Add("error", "connect");
    report.Print();
    return kExitFailed;
  }
  auto stub = Echo::NewStub(channel);
  EchoRequest request;
  request.set_payload(std::string(options.message_mib * kMiB, 'x'));

  const auto start = Clock::now();
  // The watchdog fires at the timeout; the deadline only frees grpc if it somehow does not.
  const auto deadline =
      std::chrono::system_clock::now() + *options.timeout + std::chrono::seconds(5);
  const Transfer transfer = count == 1 ? SendOneMessage(*stub, request, deadline)
                                       : SendStream(*stub, request, count, deadline);
  const double seconds = Seconds(Clock::now() - start);
  report.Add("sent_bytes", transfer.sent_bytes);
  report.Add("received_bytes", transfer.received_bytes);
  report.Add("seconds", seconds);
  if (!transfer.status.ok()) {
    report.Add("error", "failed");
    report.Add("status", Describe(transfer.status));
    report.Print();
    return kExitFailed;
  }
  if (transfer.received_bytes != transfer.sent_bytes) {
    report.Add("error", "short echo");
    report.Print();
    return kExitFailed;
  }
  report.Add("counted", "bytes sent (each echoed back)");
  report.Add("mib_per_s", static_cast<double>(transfer.sent_bytes) / kMiB / seconds);
  report.Print();
  return kExitOk;
}

// ---- probe mode -------------------------------------------------------------------------

// Retries on a fresh channel each time, so grpc's reconnect backoff never delays readiness.
int RunProbe(const Options& options) {
  const auto start = Clock::now();
  EchoRequest request;
  request.set_payload("probe");
  std::string last_error = "no attempt";
  for (int attempt = 0;; ++attempt) {
    auto stub = Echo::NewStub(MakeChannel(options.target, attempt));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(1));
    EchoResponse response;
    const grpc::Status status = stub->Unary(&context, request, &response);
    if (status.ok()) {
      Report report("probe");
      report.Add("attempts", attempt + 1);
      report.Add("seconds", Seconds(Clock::now() - start));
      report.Print();
      return kExitOk;
    }
    last_error = Describe(status);
    std::fprintf(stderr, "sepal-loadgen: probe attempt %d: %s\n", attempt + 1, last_error.c_str());
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  if (auto exit_code = ParseArgs(argc, argv, options)) return *exit_code;
  g_options = &options;
  StartWatchdog(options);
  if (options.mode == "unary") return RunUnary(options);
  if (options.mode == "handshakes") return RunHandshakes(options);
  if (options.mode == "stream") return RunStream(options);
  return RunProbe(options);
}
