// sepal-fake-tailscaled: serves FakeTailscaled on a unix socket until SIGINT/SIGTERM, so
// sepal's tailscale identity provider and certificate source can be tried without a tailnet.
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
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
               "  tagged-node-legacy-v1.90.json). A bare IP matches any port.\n"
               "the node (GET /localapi/v0/status) and its certificate (/localapi/v0/cert/NAME):\n"
               "  --dns-name NAME       MagicDNS name (default superlink.tail1234.ts.net)\n"
               "  --tailscale-ip IP     the node's address, repeatable (default 100.101.102.103\n"
               "                        and fd7a:115c:a1e0::6501:6667)\n"
               "  --backend-state S     Running (default), NeedsLogin, Stopped, ...\n"
               "  --https-disabled      no CertDomains; /cert answers 500 as with HTTPS off\n"
               "  --cert-lifetime SECS  lifetime of issued certificates (default 90 days)\n"
               "  --cert-status CODE    answer every /cert with CODE (429 adds Retry-After: 30)\n"
               "  --cert-delay MS       hold every /cert answer back MS milliseconds\n"
               "  --ca-out FILE         write the CA that signs the issued certificates to FILE\n",
               sepal::test::FakeTailscaled::FixtureDir().c_str());
}

bool ParseNumber(const std::string& text, long* value) {
  char* end = nullptr;
  *value = std::strtol(text.c_str(), &end, 10);
  return !text.empty() && *end == '\0' && *value >= 0;
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
  sepal::test::FakeTailscaled::SelfNode self;
  bool custom_ips = false;
  std::string backend_state;
  bool https_disabled = false;
  long cert_lifetime = 0;
  long cert_status = 0;
  long cert_delay = 0;
  std::string ca_out;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--https-disabled") {
      https_disabled = true;
      continue;
    }
    bool numeric = arg == "--cert-lifetime" || arg == "--cert-status" || arg == "--cert-delay";
    if (numeric && i + 1 < argc) {
      long* target = arg == "--cert-lifetime" ? &cert_lifetime
                     : arg == "--cert-status" ? &cert_status
                                              : &cert_delay;
      if (!ParseNumber(argv[++i], target)) {
        std::fprintf(stderr, "%s wants a number, got %s\n", arg.c_str(), argv[i]);
        return 2;
      }
      continue;
    }
    if ((arg == "--dns-name" || arg == "--tailscale-ip" || arg == "--backend-state" ||
         arg == "--ca-out") &&
        i + 1 < argc) {
      std::string value = argv[++i];
      if (arg == "--dns-name") {
        if (value.back() != '.') value += '.';
        self.dns_name = value;
        self.host_name = value.substr(0, value.find('.'));
        size_t dot = value.find('.');
        self.magic_dns_suffix = value.substr(dot + 1, value.size() - dot - 2);
      } else if (arg == "--tailscale-ip") {
        if (!custom_ips) self.tailscale_ips.clear();
        custom_ips = true;
        self.tailscale_ips.push_back(value);
      } else if (arg == "--backend-state") {
        backend_state = value;
      } else {
        ca_out = value;
      }
      continue;
    }
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
  fake->SetSelf(self);
  if (!backend_state.empty()) fake->SetBackendState(backend_state);
  if (https_disabled) fake->SetHttpsEnabled(false);
  if (cert_lifetime > 0) fake->SetCertLifetime(std::chrono::seconds(cert_lifetime));
  if (cert_delay > 0) fake->SetCertDelay(std::chrono::milliseconds(cert_delay));
  if (cert_status == 429) {
    fake->SetCertFailure(429, "429 Too Many Requests\n", "30");
  } else if (cert_status != 0) {
    fake->SetCertFailure(static_cast<unsigned>(cert_status),
                         "acme: order status: invalid\n");  // a failed Let's Encrypt order
  }
  if (!ca_out.empty()) {
    FILE* out = std::fopen(ca_out.c_str(), "w");
    if (out == nullptr || std::fputs(fake->CaPem().c_str(), out) < 0 || std::fclose(out) != 0) {
      std::fprintf(stderr, "cannot write %s\n", ca_out.c_str());
      return 1;
    }
  }
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
  std::printf("requests: whois %d, status %d, cert %d (%d certificates issued)\n",
              fake->RequestCount(), fake->StatusRequestCount(), fake->CertRequestCount(),
              fake->CertsIssued());
  return 0;
}
