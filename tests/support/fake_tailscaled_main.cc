// sepal-fake-tailscaled: serves FakeTailscaled on a unix socket until SIGINT/SIGTERM, so
// sepal's tailscale identity provider can be tried without a tailnet.
#include <signal.h>

#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "tests/support/fake_tailscaled.h"

namespace {

void Usage() {
  std::fprintf(stderr,
               "usage: sepal-fake-tailscaled --socket PATH [--peer IP[:PORT]=FILE.json ...]\n"
               "  FILE.json is a path, or the name of a fixture in %s\n"
               "  (tagged-node.json, tagged-node-no-caps.json, user-node.json,\n"
               "  tagged-node-legacy-v1.90.json). A bare IP matches any port.\n",
               sepal::test::FakeTailscaled::FixtureDir().c_str());
}

// A path if it can be read, else a fixture name.
std::string ReadPeerBody(const std::string& file) {
  std::string body = sepal::test::FakeTailscaled::LoadBody(file);
  return body.empty() ? sepal::test::FakeTailscaled::LoadFixture(file) : body;
}

}  // namespace

int main(int argc, char** argv) {
  std::string socket_path;
  std::vector<std::pair<std::string, std::string>> peers;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if ((arg == "--socket" || arg == "--peer") && i + 1 < argc) {
      std::string value = argv[++i];
      if (arg == "--socket") {
        socket_path = value;
        continue;
      }
      size_t eq = value.find('=');
      if (eq == std::string::npos) {
        std::fprintf(stderr, "--peer wants IP=FILE.json, got %s\n", value.c_str());
        return 2;
      }
      peers.emplace_back(value.substr(0, eq), value.substr(eq + 1));
    } else {
      Usage();
      return arg == "--help" || arg == "-h" ? 0 : 2;
    }
  }
  if (socket_path.empty()) {
    Usage();
    return 2;
  }

  // Blocked before any thread starts, so only sigwait below sees them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto fake = sepal::test::FakeTailscaled::Start(socket_path);
  if (fake == nullptr) return 1;
  for (const auto& [address, file] : peers) {
    std::string body = ReadPeerBody(file);
    if (body.empty()) {
      std::fprintf(stderr, "cannot read %s (neither a file nor a fixture)\n", file.c_str());
      return 1;
    }
    if (!fake->AddPeer(address, std::move(body))) {
      std::fprintf(stderr, "not an IP or IP:PORT: %s\n", address.c_str());
      return 1;
    }
    std::printf("whois %s -> %s\n", address.c_str(), file.c_str());
  }
  std::printf("fake tailscaled %s listening on %s\n",
              std::string(sepal::test::FakeTailscaled::kVersion).c_str(), socket_path.c_str());
  std::fflush(stdout);

  int signal_number = 0;
  sigwait(&signals, &signal_number);
  fake->Stop();
  return 0;
}
