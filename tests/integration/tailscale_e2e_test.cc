// sepal with the tailscale identity provider against the fake tailscaled: real grpc++
// clients, tailscaled down and back, non-tailnet peers, `sepal whois`, and peers with real
// Tailscale-range addresses in a network namespace.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include "tests/integration/proxy_fixture.h"
#include "tests/support/fake_tailscaled.h"
#include "tests/support/h2_test_client.h"

namespace sepal::test {
namespace {

std::string TailscaleConfig(const std::string& socket, const std::string& upstream,
                            const std::string& listen = "127.0.0.1:0") {
  return "workers: 1\nidentity:\n  provider: tailscale\n  tailscale:\n    socket: " + socket +
         "\n    cache_ttl: 60s\n    lookup_timeout: 500ms\n"
         "listeners:\n  - name: fleet\n    address: " +
         listen +
         "\n    routes:\n"
         "      - match: /flwr.proto.Fleet/\n        upstream: superlink\n"
         "        allow: {tags: [tag:supernode]}\n"
         "      - match: /flwr.proto.Control/\n        upstream: superlink\n"
         "        allow: {users: [alice@example.com]}\n"
         "upstreams:\n  - name: superlink\n    address: " +
         upstream + "\n";
}

class TailscaleE2eTest : public ProxyTest {
 protected:
  void SetUp() override {
    ProxyTest::SetUp();
    dir_ = std::filesystem::temp_directory_path() /
           ("sepal-ts-" + std::to_string(getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
    tailscaled_ = FakeTailscaled::Start((dir_ / "tailscaled.sock").string());
    ASSERT_NE(tailscaled_, nullptr);
  }
  void TearDown() override {
    ProxyTest::TearDown();
    tailscaled_.reset();
    std::filesystem::remove_all(dir_);
  }

  grpc::Status CallFleet(std::shared_ptr<grpc::Channel> channel) {
    grpc::ClientContext context;
    context.set_deadline(In(std::chrono::seconds(5)));
    FleetRequest request;
    FleetResponse response;
    return Fleet::NewStub(channel)->CreateNode(&context, request, &response);
  }

  std::filesystem::path dir_;
  std::unique_ptr<FakeTailscaled> tailscaled_;
};

TEST_F(TailscaleE2eTest, TaggedSuperNodeFromTailscaledAllowedOnFleetOnly) {
  // Userspace networking: tailnet peers show up from 127.0.0.1 and WhoIs resolves them.
  ASSERT_TRUE(tailscaled_->AddPeer("127.0.0.1", FakeTailscaled::LoadFixture("tagged-node.json")));
  StartSepal(TailscaleConfig(tailscaled_->socket_path(), backend_->address()));
  auto channel = NewChannel();
  grpc::Status fleet = CallFleet(channel);
  EXPECT_TRUE(fleet.ok()) << fleet.error_message();
  grpc::ClientContext context;
  ControlRequest request;
  ControlResponse response;
  grpc::Status control = Control::NewStub(channel)->StartRun(&context, request, &response);
  EXPECT_EQ(control.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_NE(control.error_message().find("supernode-a"), std::string::npos)
      << control.error_message();
  // The lookup went out as tailscaled expects it.
  EXPECT_EQ(tailscaled_->LastHostHeader(), "local-tailscaled.sock");
  EXPECT_NE(tailscaled_->LastRequestTarget().find("proto=tcp"), std::string::npos);
  EXPECT_NE(tailscaled_->LastRequestTarget().find("addr=127.0.0.1%3A"), std::string::npos)
      << tailscaled_->LastRequestTarget();
}

TEST_F(TailscaleE2eTest, UnknownPeerIsUnauthenticated) {
  StartSepal(TailscaleConfig(tailscaled_->socket_path(), backend_->address()));
  grpc::Status status = CallFleet(NewChannel());
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << status.error_message();
  EXPECT_EQ(backend_->TotalCallCount(), 0);
}

TEST_F(TailscaleE2eTest, TailscaledDownFailsClosedAndRecovers) {
  ASSERT_TRUE(tailscaled_->AddPeer("127.0.0.1", FakeTailscaled::LoadFixture("tagged-node.json")));
  StartSepal(TailscaleConfig(tailscaled_->socket_path(), backend_->address()));
  tailscaled_->Stop();
  grpc::Status down = CallFleet(NewChannel(1));
  EXPECT_EQ(down.error_code(), grpc::StatusCode::UNAVAILABLE) << down.error_message();
  EXPECT_NE(down.error_message().find("tailscaled"), std::string::npos) << down.error_message();
  EXPECT_EQ(backend_->TotalCallCount(), 0);
  ASSERT_TRUE(tailscaled_->Restart());
  // A new connection is looked up again (loopback peers are never cached).
  grpc::Status up = CallFleet(NewChannel(2));
  EXPECT_TRUE(up.ok()) << up.error_message();
}

TEST_F(TailscaleE2eTest, SlowTailscaledTimesOutWithUnavailable) {
  ASSERT_TRUE(tailscaled_->AddPeer("127.0.0.1", FakeTailscaled::LoadFixture("tagged-node.json")));
  tailscaled_->SetDelay(std::chrono::milliseconds(1500));  // lookup_timeout is 500ms
  StartSepal(TailscaleConfig(tailscaled_->socket_path(), backend_->address()));
  grpc::Status status = CallFleet(NewChannel());
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
}

// Stopping sepal while a WhoIs is in flight: the provider answers the waiting connection
// ("shutting down") on that connection's worker, which must still exist then (it was
// destroyed first: heap-use-after-free under ASan, seen as a flaky TLS test).
TEST_F(TailscaleE2eTest, StoppingWhileAWhoisIsInFlightIsSafe) {
  ASSERT_TRUE(tailscaled_->AddPeer("127.0.0.1", FakeTailscaled::LoadFixture("tagged-node.json")));
  tailscaled_->SetDelay(std::chrono::milliseconds(1500));  // lookup_timeout is 500ms
  StartSepal(TailscaleConfig(tailscaled_->socket_path(), backend_->address()));
  std::string error;
  auto client = H2TestClient::Connect(SepalAddress(), &error);
  ASSERT_NE(client, nullptr) << error;
  int32_t stream =
      client->SubmitRequest(H2TestClient::GrpcRequestHeaders("/flwr.proto.Fleet/CreateNode"), true);
  ASSERT_GT(stream, 0);
  // The lookup reaches the (slow) fake tailscaled before sepal stops.
  ASSERT_TRUE(tailscaled_->WaitForRequestCount(1, std::chrono::seconds(3)));
  server_->Stop();
  server_.reset();
  EXPECT_TRUE(client->WaitForConnectionClose(std::chrono::seconds(3)));
  EXPECT_EQ(backend_->TotalCallCount(), 0);
}

TEST_F(TailscaleE2eTest, WhoisCommandReportsWhatTailscaledSays) {
  ASSERT_TRUE(tailscaled_->AddPeer("100.101.12.34",
                                   FakeTailscaled::LoadFixture("tagged-node.json")));
  auto run = [&](const std::string& args, std::string* output) {
    std::string command = std::string(SEPAL_BINARY) + " whois " + args + " --socket " +
                          tailscaled_->socket_path() + " 2>&1";
    FILE* pipe = popen(command.c_str(), "r");
    char buf[512];
    while (fgets(buf, sizeof(buf), pipe) != nullptr) *output += buf;
    return WEXITSTATUS(pclose(pipe));
  };
  std::string found, missing, outside;
  EXPECT_EQ(run("100.101.12.34:41000", &found), 0) << found;
  EXPECT_NE(found.find("supernode-a"), std::string::npos) << found;
  EXPECT_NE(found.find("tag:supernode"), std::string::npos) << found;
  EXPECT_NE(found.find("example.com/cap/flower"), std::string::npos) << found;
  EXPECT_EQ(run("100.64.0.9:1", &missing), 1) << missing;
  EXPECT_EQ(run("8.8.8.8:443", &outside), 1) << outside;
  EXPECT_NE(outside.find("not a Tailscale address"), std::string::npos) << outside;
}

// Peers with real Tailscale-range addresses: a network namespace joined by a veth pair,
// addressed in 100.64.0.0/10; the client runs inside the namespace.
class NetnsTest : public TailscaleE2eTest {
 protected:
  void SetUp() override {
    TailscaleE2eTest::SetUp();
    if (geteuid() != 0 || std::system("ip netns list >/dev/null 2>&1") != 0) {
      GTEST_SKIP() << "network namespaces need root and iproute2; skipping";
    }
    ns_ = "sepal-t" + std::to_string(getpid());
    std::string setup = "ip netns add " + ns_ + " && ip link add " + ns_ + "h type veth peer name " +
                        ns_ + "n && ip link set " + ns_ + "n netns " + ns_ +
                        " && ip addr add 100.100.7.1/24 dev " + ns_ + "h && ip link set " + ns_ +
                        "h up && ip netns exec " + ns_ + " ip addr add 100.100.7.2/24 dev " + ns_ +
                        "n && ip netns exec " + ns_ + " ip link set " + ns_ +
                        "n up && ip netns exec " + ns_ + " ip link set lo up";
    if (std::system((setup + " 2>/dev/null").c_str()) != 0) {
      Cleanup();
      GTEST_SKIP() << "cannot create network namespaces here (" << setup << "); skipping";
    }
    created_ = true;
  }
  void TearDown() override {
    Cleanup();
    TailscaleE2eTest::TearDown();
  }
  void Cleanup() {
    if (ns_.empty()) return;
    std::system(("ip link del " + ns_ + "h 2>/dev/null; ip netns del " + ns_ + " 2>/dev/null")
                    .c_str());
  }
  int ClientInNamespace(const std::string& method, const std::string& expect) {
    std::string command = "ip netns exec " + ns_ + " " + std::string(SEPAL_FLOWER_CLIENT) +
                          " --target 100.100.7.1:" + std::to_string(port_) +
                          " --timeout 5s --expect " + expect + " " + method + " 2>&1";
    return WEXITSTATUS(std::system(command.c_str()));
  }
  std::string ns_;
  bool created_ = false;
};

TEST_F(NetnsTest, TailnetAddressedPeersAreIdentifiedByTheirIp) {
  ASSERT_TRUE(created_);
  ASSERT_TRUE(tailscaled_->AddPeer("100.100.7.2", FakeTailscaled::LoadFixture("tagged-node.json")));
  StartSepal(TailscaleConfig(tailscaled_->socket_path(), backend_->address(), "100.100.7.1:0"));
  EXPECT_EQ(ClientInNamespace("/flwr.proto.Fleet/CreateNode", "OK"), 0);
  EXPECT_EQ(ClientInNamespace("/flwr.proto.Control/StartRun", "PERMISSION_DENIED"), 0);
  EXPECT_EQ(backend_->CallCount("/flwr.proto.Fleet/CreateNode"), 1);
  // Same IP, new connection: answered from the cache (tailnet IPs are cached by IP).
  int before = tailscaled_->RequestCount();
  EXPECT_EQ(ClientInNamespace("/flwr.proto.Fleet/GetRun", "OK"), 0);
  EXPECT_EQ(tailscaled_->RequestCount(), before);
  // The peer leaves the tailnet: after a netmap change the cache is flushed and it is refused.
  tailscaled_->RemovePeer("100.100.7.2");
  ASSERT_TRUE(tailscaled_->WaitForWatcherCount(1, std::chrono::seconds(5)));
  tailscaled_->PushNotification(R"({"NetMap":{"SelfNode":{}}})");
  bool refused = false;
  for (int i = 0; i < 50 && !refused; ++i) {
    refused = ClientInNamespace("/flwr.proto.Fleet/GetRun", "UNAUTHENTICATED") == 0;
    if (!refused) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(refused);
}

}  // namespace
}  // namespace sepal::test
