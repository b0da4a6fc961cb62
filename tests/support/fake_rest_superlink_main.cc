// sepal-fake-rest-superlink: the stand-in REST SuperLink (Flower's Fleet REST transport,
// HTTP/1.1) as a process, backend of bench/rest.sh and of by-hand checks.
#include <pthread.h>

#include <csignal>
#include <cstdlib>
#include <iostream>
#include <string>
#include <string_view>

#include "tests/support/fake_rest_superlink.h"

namespace {

int Usage(std::string_view error) {
  if (!error.empty()) std::cerr << "sepal-fake-rest-superlink: " << error << "\n";
  std::cerr
      << "usage: sepal-fake-rest-superlink --listen ADDR [--parse-limit BYTES]\n"
         "  ADDR: 127.0.0.1:19093, unix:/path/to.sock (port 0 = any)\n"
         "  --parse-limit BYTES: request bodies up to BYTES are parsed as a FleetRequest and\n"
         "      their payload echoed; larger ones are only counted (default 16 MiB)\n"
         "  serves POST /api/v0/fleet/<method> (register-node, pull-messages, push-object, ...)\n"
         "  with Content-Type and Accept application/protobuf; the request headers\n"
         "  x-reply-bytes: N, x-sleep-ms: N and x-reply-status: N steer the answer.\n"
         "  One thread per connection. Runs until SIGTERM or SIGINT.\n";
  return 2;
}

bool ParseSize(const char* text, size_t* out) {
  char* end = nullptr;
  const unsigned long long value = std::strtoull(text, &end, 10);
  if (end == text || *end != '\0' || text[0] == '-') return false;
  *out = static_cast<size_t>(value);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  sepal::test::FakeRestSuperLink::Options options;
  bool listen_given = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      Usage({});
      return 0;
    }
    if (i + 1 >= argc) return Usage("missing value after " + std::string(arg));
    if (arg == "--listen") {
      if (listen_given) return Usage("only one --listen");
      options.address = argv[++i];
      listen_given = true;
    } else if (arg == "--parse-limit") {
      if (!ParseSize(argv[++i], &options.parse_limit)) return Usage("bad --parse-limit value");
    } else {
      return Usage("unknown argument " + std::string(arg));
    }
  }
  if (!listen_given) return Usage("--listen is required");
  if (!options.address.starts_with("unix:")) {
    // FakeRestSuperLink::Start takes the port as given: check it here.
    const size_t colon = options.address.rfind(':');
    size_t port = 0;
    if (colon == std::string::npos || colon == 0 ||
        !ParseSize(options.address.c_str() + colon + 1, &port) || port > 65535) {
      return Usage("--listen needs HOST:PORT or unix:/path");
    }
  }

  // Block the stop signals before the connection threads start (they inherit the mask), so
  // that sigwait below is the only place they are delivered.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  auto link = sepal::test::FakeRestSuperLink::Start(options);
  if (!link) return 1;
  std::cout << "listening on " << link->address() << std::endl;

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  std::cout << "signal " << signal_number << ", shutting down: " << link->RequestCount()
            << " requests on " << link->ConnectionCount() << " connections, " << link->BodyBytes()
            << " body bytes" << std::endl;
  link->Shutdown();
  return 0;
}
