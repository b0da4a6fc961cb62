// sepal-fake-superlink: the stand-in SuperLink as a process, backend of the demo and benchmark.
#include <pthread.h>

#include <csignal>
#include <cstdlib>
#include <iostream>
#include <string>
#include <string_view>

#include "tests/support/fake_superlink.h"

namespace {

int Usage(std::string_view error) {
  if (!error.empty()) std::cerr << "sepal-fake-superlink: " << error << "\n";
  std::cerr << "usage: sepal-fake-superlink --listen ADDR [--listen ADDR ...] [--threads N]\n"
               "  ADDR: 127.0.0.1:19092, [::1]:19092, unix:/path/to.sock (port 0 = any)\n"
               "  serves Fleet, Control, Exec and sepal.test.Echo until SIGTERM or SIGINT\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  sepal::test::FakeSuperLink::Options options;
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
      char* end = nullptr;
      const long threads = std::strtol(argv[++i], &end, 10);
      if (*end != '\0' || threads < 1 || threads > 1024) return Usage("bad --threads value");
      options.threads = static_cast<int>(threads);
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
  for (const auto& address : link->addresses()) std::cout << "listening on " << address << "\n";
  std::cout << std::flush;

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  std::cout << "signal " << signal_number << ", shutting down" << std::endl;
  link->Shutdown();
  return 0;
}
