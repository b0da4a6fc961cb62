// sepal-fake-superlink: the stand-in SuperLink as a process, backend of the demo and benchmark.
#include <pthread.h>

#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <utility>

#include "tests/support/fake_superlink.h"

namespace {

int Usage(std::string_view error) {
  if (!error.empty()) std::cerr << "sepal-fake-superlink: " << error << "\n";
  std::cerr << "usage: sepal-fake-superlink --listen ADDR [--listen ADDR ...] [--threads N]\n"
               "                            [--max-concurrent-calls N] [--stats-file PATH]\n"
               "  ADDR: 127.0.0.1:19092, [::1]:19092, unix:/path/to.sock (port 0 = any)\n"
               "  --max-concurrent-calls N: answer RESOURCE_EXHAUSTED while N handlers run, as\n"
               "      Flower's grpcio server does past maximum_concurrent_rpcs (0 = unlimited)\n"
               "  --stats-file PATH: rewrite PATH (tmp file + rename) every 200 ms with one line\n"
               "      {\"calls\":N,\"active\":N,\"peak\":N,\"rejected\":N,\"cancelled\":N}\n"
               "  serves Fleet, GrpcAdapter, Control, Exec and sepal.test.Echo until SIGTERM or SIGINT\n";
  return 2;
}

bool ParseInt(const char* text, long min, long max, int* out) {
  char* end = nullptr;
  const long value = std::strtol(text, &end, 10);
  if (end == text || *end != '\0' || value < min || value > max) return false;
  *out = static_cast<int>(value);
  return true;
}

// Replaces `path` with one line of stats; readers never see a half-written file.
void WriteStats(const sepal::test::FakeSuperLink& link, const std::string& path) {
  const std::string tmp = path + ".tmp";
  std::FILE* file = std::fopen(tmp.c_str(), "w");
  if (file == nullptr) return;
  const std::string line = link.StatsJson() + "\n";
  const bool ok = std::fwrite(line.data(), 1, line.size(), file) == line.size();
  if (std::fclose(file) == 0 && ok) std::rename(tmp.c_str(), path.c_str());
}

// Rewrites the stats file every 200 ms until Stop(), then once more.
class StatsWriter {
 public:
  StatsWriter(const sepal::test::FakeSuperLink& link, std::string path)
      : link_(link), path_(std::move(path)), thread_([this] { Run(); }) {}
  StatsWriter(const StatsWriter&) = delete;
  StatsWriter& operator=(const StatsWriter&) = delete;
  ~StatsWriter() { Stop(); }

  void Stop() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

 private:
  void Run() {
    std::unique_lock lock(mutex_);
    for (;;) {
      WriteStats(link_, path_);
      if (stop_) return;
      wake_.wait_for(lock, std::chrono::milliseconds(200), [this] { return stop_; });
    }
  }

  const sepal::test::FakeSuperLink& link_;
  const std::string path_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stop_ = false;
  std::thread thread_;  // last: starts once the members above exist
};

}  // namespace

int main(int argc, char** argv) {
  sepal::test::FakeSuperLink::Options options;
  std::string stats_file;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      Usage({});
      return 0;
    }
    if (i + 1 >= argc) return Usage("missing value after " + std::string(arg));
    if (arg == "--listen") {
      options.addresses.emplace_back(argv[++i]);
    } else if (arg == "--threads") {
      if (!ParseInt(argv[++i], 1, 1024, &options.threads)) return Usage("bad --threads value");
    } else if (arg == "--max-concurrent-calls") {
      if (!ParseInt(argv[++i], 0, 1000000, &options.max_concurrent_calls)) {
        return Usage("bad --max-concurrent-calls value");
      }
    } else if (arg == "--stats-file") {
      stats_file = argv[++i];
      if (stats_file.empty()) return Usage("empty --stats-file");
    } else {
      return Usage("unknown argument " + std::string(arg));
    }
  }
  if (options.addresses.empty()) return Usage("at least one --listen is required");

  // Block the stop signals before grpc starts its threads (they inherit the mask), so that
  // sigwait below is the only place they are delivered.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  auto link = sepal::test::FakeSuperLink::Start(options);
  if (!link) return 1;
  std::unique_ptr<StatsWriter> stats;
  if (!stats_file.empty()) stats = std::make_unique<StatsWriter>(*link, stats_file);
  for (const auto& address : link->addresses()) std::cout << "listening on " << address << "\n";
  std::cout << std::flush;

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  std::cout << "signal " << signal_number << ", shutting down" << std::endl;
  link->Shutdown();
  if (stats) stats->Stop();  // the last line has the final counts
  return 0;
}
