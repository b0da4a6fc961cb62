// Capabilities scoped to a destination (tailscaled 1.100 and later): WhoIs with &dst_ip= (the
// tailnet address the peer dialled, here from the PROXY header `tailscale serve` sends) or
// &svc_name= (a listener's tailscale_service) returns the CapMap toward it. The fake
// tailscaled grants supernode-a example.com/cap/flower only toward 100.100.7.1 and toward
// svc:superlink; a capability route must honour exactly that.
#include <unistd.h>

#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include "tests/integration/loopback.h"
#include "tests/integration/proxy_fixture.h"
#include "tests/support/fake_tailscaled.h"
#include "tests/support/h2_test_client.h"

namespace sepal::test {
namespace {

constexpr char kSuperNode[] = "100.101.12.34";
constexpr char kGrantedAddress[] = "100.100.7.1";  // the SuperLink node's granted address
constexpr char kOtherAddress[] = "100.100.7.2";    // another address of the same node

std::string ScopeConfig(const std::string& socket, const std::string& upstream) {
  std::string route =
      "    routes:\n"
      "      - match: /flwr.proto.Fleet/\n"
      "        upstream: superlink\n"
      "        allow: {capability: example.com/cap/flower}\n";
  return "workers: 1\n"
         "identity:\n  provider: tailscale\n  tailscale: {socket: " + socket + "}\n"
         "listeners:\n"
         "  - name: fleet\n"
         "    address: 127.0.0.1:0\n"
         "    proxy_protocol: v2\n" + route +
         "  - name: service\n"
         "    address: 127.0.0.1:0\n"
         "    proxy_protocol: v2\n"
         "    tailscale_service: svc:superlink\n" + route +
         "upstreams:\n  - {name: superlink, address: " + upstream + "}\n";
}

class DestinationScopeTest : public ProxyTest {
 protected:
  void SetUp() override {
    ProxyTest::SetUp();
    socket_ = (std::filesystem::temp_directory_path() /
               ("sepal-scope-" + std::to_string(getpid()) + ".sock")).string();
    tailscaled_ = FakeTailscaled::Start(socket_);
    ASSERT_NE(tailscaled_, nullptr);
    // Nothing granted toward the node in general; the capability toward one address and
    // toward the Service.
    ASSERT_TRUE(tailscaled_->AddPeer(kSuperNode, FakeTailscaled::LoadFixture("tagged-node-no-caps.json")));
    std::string granted = FakeTailscaled::LoadFixture("tagged-node.json");
    ASSERT_TRUE(tailscaled_->AddPeerToward(kSuperNode, kGrantedAddress, granted));
    ASSERT_TRUE(tailscaled_->AddPeerToward(kSuperNode, "svc:superlink", granted));
    StartSepal(ScopeConfig(socket_, backend_->address()));
    // The provider's watch-ipn-bus stream flushes the cache when it (re)connects: let it
    // settle first, so the cache checks below see only lookups.
    ASSERT_TRUE(tailscaled_->WaitForWatcherCount(1, std::chrono::seconds(5)));
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  void TearDown() override {
    ProxyTest::TearDown();
    tailscaled_.reset();
  }

  // grpc-status of one PullMessages from the SuperNode, as tailscaled's serve forwards it
  // to `listener` after a connection to `destination`.
  int CallToward(const std::string& listener, const std::string& destination) {
    H2TestClient::Options options;
    options.send_preface = false;
    std::string error;
    auto client = H2TestClient::Connect("127.0.0.1:" + std::to_string(server_->BoundPort(listener)),
                                        options, &error);
    EXPECT_NE(client, nullptr) << error;
    if (!client) return -1;
    EXPECT_TRUE(client->SendRaw(ProxyV2(kSuperNode, 41000, destination)));
    int32_t id = client->SubmitRequest(H2TestClient::GrpcRequestHeaders("/flwr.proto.Fleet/PullMessages"));
    EXPECT_TRUE(client->SendData(id, H2TestClient::GrpcFrame(""), true));
    EXPECT_TRUE(client->WaitForStreamClose(id, std::chrono::seconds(5)));
    return client->stream(id).GrpcStatus().value_or(-1);
  }

  std::string socket_;
  std::unique_ptr<FakeTailscaled> tailscaled_;
};

TEST_F(DestinationScopeTest, CapabilityGrantedTowardOneAddressIsHonouredThereOnly) {
  EXPECT_EQ(CallToward("fleet", kGrantedAddress), 0);
  EXPECT_NE(tailscaled_->LastRequestTarget().find("&dst_ip=100.100.7.1"), std::string::npos)
      << tailscaled_->LastRequestTarget();
  // Same peer, another destination: its own lookup (not the first answer from the cache).
  EXPECT_EQ(CallToward("fleet", kOtherAddress), 7);  // PERMISSION_DENIED
  EXPECT_NE(tailscaled_->LastRequestTarget().find("&dst_ip=100.100.7.2"), std::string::npos);
  // Both answers are cached, each under its destination.
  int requests = tailscaled_->RequestCount();
  EXPECT_EQ(CallToward("fleet", kGrantedAddress), 0);
  EXPECT_EQ(CallToward("fleet", kOtherAddress), 7);
  EXPECT_EQ(tailscaled_->RequestCount(), requests);
}

TEST_F(DestinationScopeTest, LoopbackDestinationIsNotSent) {
  // serve's PROXY header names the node's tailnet address; anything else (here loopback) is
  // not one of the node's tailnet addresses, so tailscaled's default CapMap applies.
  EXPECT_EQ(CallToward("fleet", "127.0.0.1"), 7);
  EXPECT_EQ(tailscaled_->LastRequestTarget().find("dst_ip"), std::string::npos)
      << tailscaled_->LastRequestTarget();
}

TEST_F(DestinationScopeTest, ListenerOfATailscaleServiceAsksTowardTheService) {
  EXPECT_EQ(CallToward("service", kOtherAddress), 0);
  const std::string target = tailscaled_->LastRequestTarget();
  EXPECT_NE(target.find("&svc_name=svc%3Asuperlink"), std::string::npos) << target;
  EXPECT_EQ(target.find("dst_ip"), std::string::npos) << target;
}

// The command-line tools ask toward a destination too: `sepal whois --destination` and
// `sepal explain`, which by default scopes by the one listener it explains.
std::pair<int, std::string> RunSepal(const std::string& args) {
  std::string command = std::string(SEPAL_BINARY) + " " + args + " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  std::string output;
  char buf[512];
  while (fgets(buf, sizeof(buf), pipe) != nullptr) output += buf;
  return {WEXITSTATUS(pclose(pipe)), output};
}

TEST_F(DestinationScopeTest, WhoisAndExplainAskTowardTheDestination) {
  auto [plain_code, plain] = RunSepal("whois --socket " + socket_ + " " + kSuperNode);
  EXPECT_EQ(plain_code, 0) << plain;
  EXPECT_EQ(plain.find("example.com/cap/flower"), std::string::npos) << plain;
  auto [toward_code, toward] = RunSepal("whois --socket " + socket_ + " --destination " +
                                        kGrantedAddress + " " + kSuperNode);
  EXPECT_EQ(toward_code, 0) << toward;
  EXPECT_NE(toward.find("toward:       100.100.7.1"), std::string::npos) << toward;
  EXPECT_NE(toward.find("example.com/cap/flower"), std::string::npos) << toward;
  auto [bad_code, bad] = RunSepal("whois --socket " + socket_ + " --destination nowhere " +
                                  kSuperNode);
  EXPECT_EQ(bad_code, 2) << bad;

  std::string config_path = socket_ + ".yaml";
  std::ofstream(config_path) << ScopeConfig(socket_, backend_->address());
  std::string explain = "explain --config " + config_path + " ";
  // The service listener scopes by svc:superlink, toward which the grant holds.
  auto [service_code, service] =
      RunSepal(explain + "--listener service " + kSuperNode + " /flwr.proto.Fleet/PullMessages");
  EXPECT_EQ(service_code, 0) << service;
  EXPECT_NE(service.find("toward svc:superlink (listener service)"), std::string::npos)
      << service;
  EXPECT_NE(service.find("decision:     allow (capability)"), std::string::npos) << service;
  // The fleet listener (a loopback address) sends no destination: nothing granted.
  auto [fleet_code, fleet] =
      RunSepal(explain + "--listener fleet " + kSuperNode + " /flwr.proto.Fleet/PullMessages");
  EXPECT_EQ(fleet_code, 1) << fleet;
  EXPECT_NE(fleet.find("deny (no_rule_matched)"), std::string::npos) << fleet;
  // ... unless told what the peer dialled.
  auto [dialled_code, dialled] =
      RunSepal(explain + "--listener fleet --destination " + kGrantedAddress + " " + kSuperNode +
               " /flwr.proto.Fleet/PullMessages");
  EXPECT_EQ(dialled_code, 0) << dialled;
  EXPECT_NE(dialled.find("toward 100.100.7.1 (--destination)"), std::string::npos) << dialled;
  std::filesystem::remove(config_path);
}

}  // namespace
}  // namespace sepal::test
