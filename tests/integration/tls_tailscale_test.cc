// `tls: {source: tailscale}`: sepal serves the node's certificate fetched from (the fake)
// tailscaled — real grpc++ TLS clients trusting the fake's CA and dialing the MagicDNS
// name, HTTPS disabled in the tailnet then enabled, and /ready naming what is missing.
#include <grpcpp/security/credentials.h>
#include <unistd.h>

#include <filesystem>
#include <thread>

#include "proxy/admin/admin_server.h"
#include "proxy/metrics/metrics.h"
#include "tests/integration/loopback.h"
#include "tests/integration/proxy_fixture.h"
#include "tests/support/fake_tailscaled.h"

namespace sepal::test {
namespace {

constexpr char kMagicDnsName[] = "superlink.tail1234.ts.net";

std::string TailscaleTlsConfig(const std::string& socket, const std::string& upstream) {
  return "workers: 1\nidentity:\n  provider: tailscale\n  tailscale:\n    socket: " + socket +
         "\nlisteners:\n  - name: fleet\n    address: 127.0.0.1:0\n"
         "    tls: {source: tailscale}\n"
         "    routes:\n      - match: /flwr.proto.Fleet/\n        upstream: superlink\n"
         "        allow: {tags: [tag:supernode]}\n"
         "upstreams:\n  - name: superlink\n    address: " +
         upstream + "\n";
}

class TailscaleTlsTest : public ProxyTest {
 protected:
  void SetUp() override {
    ProxyTest::SetUp();
    dir_ = std::filesystem::temp_directory_path() /
           ("sepal-tstls-" + std::to_string(getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
    tailscaled_ = FakeTailscaled::Start((dir_ / "tailscaled.sock").string());
    ASSERT_NE(tailscaled_, nullptr);
    ASSERT_TRUE(tailscaled_->AddPeer("127.0.0.1", FakeTailscaled::LoadFixture("tagged-node.json")));
  }
  void TearDown() override {
    ProxyTest::TearDown();
    tailscaled_.reset();
    std::filesystem::remove_all(dir_);
  }

  // A TLS channel that trusts only the fake tailscaled's CA and checks the MagicDNS name.
  std::shared_ptr<grpc::Channel> TlsChannel(int channel_id) const {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = tailscaled_->CaPem();
    grpc::ChannelArguments args;
    args.SetSslTargetNameOverride(kMagicDnsName);
    args.SetInt("sepal.test.channel_id", channel_id);
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    return grpc::CreateCustomChannel(SepalAddress(), grpc::SslCredentials(ssl), args);
  }

  grpc::Status CallFleet(int channel_id) const {
    grpc::ClientContext context;
    context.set_deadline(In(std::chrono::seconds(3)));
    FleetRequest request;
    FleetResponse response;
    return Fleet::NewStub(TlsChannel(channel_id))->CreateNode(&context, request, &response);
  }

  // Polls with fresh connections until a call succeeds or `timeout` passes.
  bool WaitForSuccessfulCall(std::chrono::seconds timeout, int* channel_id) const {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if (CallFleet(++*channel_id).ok()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }

  static std::string TlsProblem(const admin::Readiness& readiness) {
    for (const auto& [component, what] : readiness.problems) {
      if (component == "tls fleet") return what;
    }
    return "";
  }

  std::filesystem::path dir_;
  std::unique_ptr<FakeTailscaled> tailscaled_;
};

TEST_F(TailscaleTlsTest, ServesTheNodesCertificateFromTailscaled) {
  StartSepal(TailscaleTlsConfig(tailscaled_->socket_path(), backend_->address()));
  int channel_id = 0;
  ASSERT_TRUE(WaitForSuccessfulCall(std::chrono::seconds(10), &channel_id));
  EXPECT_EQ(backend_->CallCount("/flwr.proto.Fleet/CreateNode"), 1);
  EXPECT_GE(tailscaled_->StatusRequestCount(), 1);
  EXPECT_EQ(tailscaled_->CertsIssued(), 1);
  admin::Readiness readiness = server_->CheckReadiness();
  EXPECT_EQ(TlsProblem(readiness), "");
  EXPECT_TRUE(readiness.ready);
  // The certificate names the MagicDNS name only: a client checking "localhost" refuses it.
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = tailscaled_->CaPem();
  grpc::ChannelArguments args;
  args.SetSslTargetNameOverride("localhost");
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  auto wrong_name = grpc::CreateCustomChannel(SepalAddress(), grpc::SslCredentials(ssl), args);
  grpc::ClientContext context;
  context.set_deadline(In(std::chrono::seconds(3)));
  FleetRequest request;
  FleetResponse response;
  EXPECT_EQ(Fleet::NewStub(wrong_name)->CreateNode(&context, request, &response).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(backend_->CallCount("/flwr.proto.Fleet/CreateNode"), 1);
}

TEST_F(TailscaleTlsTest, HttpsDisabledRefusesHandshakesSaysWhyAndRecoversWhenEnabled) {
  tailscaled_->SetHttpsEnabled(false);
  double refused_before =
      SeriesValue(metrics::DefaultRegistry().Serialize(),
                  "sepal_tls_handshake_errors_total{listener=\"fleet\",reason=\"no_certificate\"}");
  if (refused_before < 0) refused_before = 0;  // series absent yet
  StartSepal(TailscaleTlsConfig(tailscaled_->socket_path(), backend_->address()));
  ASSERT_TRUE(tailscaled_->WaitForCertRequestCount(1, std::chrono::seconds(5)));
  // Not ready, and /ready says why in tailscaled's words.
  std::string problem;
  for (int i = 0; i < 50 && problem.find("not enabled") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    problem = TlsProblem(server_->CheckReadiness());
  }
  EXPECT_NE(problem.find("not enabled"), std::string::npos) << problem;
  EXPECT_FALSE(server_->CheckReadiness().ready);
  // Handshakes are refused (no certificate to offer), counted, and nothing reaches Flower.
  EXPECT_EQ(CallFleet(100).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(backend_->CallCount("/flwr.proto.Fleet/CreateNode"), 0);
  double refused =
      SeriesValue(metrics::DefaultRegistry().Serialize(),
                  "sepal_tls_handshake_errors_total{listener=\"fleet\",reason=\"no_certificate\"}");
  EXPECT_GT(refused, refused_before);

  // The operator enables HTTPS: the next retry (backoff from 1 s) gets the certificate.
  tailscaled_->SetHttpsEnabled(true);
  int channel_id = 0;
  ASSERT_TRUE(WaitForSuccessfulCall(std::chrono::seconds(15), &channel_id));
  EXPECT_EQ(TlsProblem(server_->CheckReadiness()), "");
}

TEST_F(TailscaleTlsTest, ReloadKeepsTheFetchedCertificate) {
  StartSepal(TailscaleTlsConfig(tailscaled_->socket_path(), backend_->address()));
  int channel_id = 0;
  ASSERT_TRUE(WaitForSuccessfulCall(std::chrono::seconds(10), &channel_id));
  int requests = tailscaled_->CertRequestCount();
  // Same listener, a route changed: the pair is kept (no new fetch needed to serve).
  std::string yaml = TailscaleTlsConfig(tailscaled_->socket_path(), backend_->address());
  auto next = config::ParseConfig(yaml + "metrics: {peer_node_label: false}\n", "reload.yaml");
  ASSERT_TRUE(next.ok()) << next.status();
  ASSERT_TRUE(server_->Reload(std::make_shared<const config::Config>(std::move(*next))).ok());
  EXPECT_TRUE(CallFleet(++channel_id).ok());
  EXPECT_EQ(tailscaled_->CertRequestCount(), requests);
}

}  // namespace
}  // namespace sepal::test
