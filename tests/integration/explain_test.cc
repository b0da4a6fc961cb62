// `sepal explain` against the proxy itself: one config file, the fake tailscaled answering for
// three peers, and for each (peer, method) both the explain command's verdict and the status
// a real HTTP/2 client bound to that peer's address gets through sepal. They must agree.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "tests/integration/proxy_fixture.h"
#include "tests/proto/grpcadapter.pb.h"
#include "tests/support/fake_tailscaled.h"
#include "tests/support/h2_test_client.h"

namespace sepal::test {
namespace {

constexpr char kSuperNode[] = "127.0.0.2";  // tagged-node.json: supernode-a, tag:supernode
constexpr char kAlice[] = "127.0.0.3";      // user-node.json: alice@example.com
constexpr char kStranger[] = "127.0.0.4";   // unknown to tailscaled

std::string ExplainConfig(const std::string& socket, const std::string& upstream) {
  return "workers: 1\n"
         "identity:\n  provider: tailscale\n  tailscale: {socket: " + socket + "}\n"
         "listeners:\n"
         "  - name: fleet\n"
         "    address: 127.0.0.1:0\n"
         "    routes:\n"
         "      - match: /flwr.proto.Fleet/\n"
         "        upstream: superlink\n"
         "        allow: {tags: [tag:supernode]}\n"
         "      - match: /flwr.proto.Control/StopRun\n"
         "        upstream: superlink\n"
         "        mode: audit\n"
         "        allow: {users: [bob@example.com]}\n"
         "      - match: /flwr.proto.Control/\n"
         "        upstream: superlink\n"
         "        allow: {users: [alice@example.com], nodes: [ops-box]}\n"
         "upstreams:\n  - {name: superlink, address: " + upstream + "}\n";
}

class ExplainTest : public ProxyTest {
 protected:
  void SetUp() override {
    ProxyTest::SetUp();
    dir_ = std::filesystem::temp_directory_path() /
           ("sepal-explain-" + std::to_string(getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
    tailscaled_ = FakeTailscaled::Start((dir_ / "tailscaled.sock").string());
    ASSERT_NE(tailscaled_, nullptr);
    ASSERT_TRUE(tailscaled_->AddPeer(kSuperNode, FakeTailscaled::LoadFixture("tagged-node.json")));
    ASSERT_TRUE(tailscaled_->AddPeer(kAlice, FakeTailscaled::LoadFixture("user-node.json")));
    yaml_ = ExplainConfig(tailscaled_->socket_path(), backend_->address());
    config_path_ = (dir_ / "sepal.yaml").string();
    std::ofstream(config_path_) << yaml_;
  }
  void TearDown() override {
    ProxyTest::TearDown();
    tailscaled_.reset();
    std::filesystem::remove_all(dir_);
  }

  int Explain(const std::string& args, std::string* output) {
    std::string command =
        std::string(SEPAL_BINARY) + " explain --config " + config_path_ + " " + args + " 2>&1";
    FILE* pipe = popen(command.c_str(), "r");
    char buf[512];
    while (fgets(buf, sizeof(buf), pipe) != nullptr) *output += buf;
    return WEXITSTATUS(pclose(pipe));
  }

  // The grpc-status a client at `ip` gets for `method` through the running sepal.
  int CallFrom(const std::string& ip, const std::string& method) {
    auto client = ConnectFrom(ip);
    if (client == nullptr) return -1;
    int32_t id = client->SubmitRequest(H2TestClient::GrpcRequestHeaders(method));
    EXPECT_GT(id, 0);
    EXPECT_TRUE(client->SendData(id, H2TestClient::GrpcFrame(""), /*end_stream=*/true));
    EXPECT_TRUE(client->WaitForStreamClose(id, std::chrono::seconds(5))) << method;
    return client->stream(id).GrpcStatus().value_or(-1);
  }

  std::filesystem::path dir_;
  std::unique_ptr<FakeTailscaled> tailscaled_;
  std::string yaml_, config_path_;
};

struct Case {
  const char* peer;
  const char* method;
  int grpc_status;          // what the client gets
  const char* explained;    // a line explain must print
};

TEST_F(ExplainTest, AgreesWithTheProxyForEveryKindOfDecision) {
  StartSepal(yaml_);
  const Case cases[] = {
      {kSuperNode, "/flwr.proto.Fleet/PullMessages", 0, "decision:     allow (tag)"},
      {kSuperNode, "/flwr.proto.Control/StartRun", 7,
       "decision:     deny (no_rule_matched): PERMISSION_DENIED"},
      {kAlice, "/flwr.proto.Control/StartRun", 0, "decision:     allow (user)"},
      {kAlice, "/flwr.proto.Fleet/PullMessages", 7,
       "decision:     deny (no_rule_matched): PERMISSION_DENIED"},
      {kAlice, "/flwr.proto.Control/StopRun", 0, "decision:     audit_deny (no_rule_matched)"},
      {kStranger, "/flwr.proto.Fleet/PullMessages", 16,
       "decision:     deny (not_in_tailnet): UNAUTHENTICATED"},
      {kSuperNode, "/flwr.proto.Exec/ListRuns", 12, "no listener routes /flwr.proto.Exec/ListRuns"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string(c.peer) + " " + c.method);
    std::string output;
    int exit_code = Explain(std::string(c.peer) + ":41000 " + c.method, &output);
    EXPECT_EQ(exit_code, c.grpc_status == 0 ? 0 : 1) << output;
    EXPECT_NE(output.find(c.explained), std::string::npos) << output;
    EXPECT_EQ(CallFrom(c.peer, c.method), c.grpc_status);
  }
}

TEST_F(ExplainTest, PrintsEachRuleTheRouteHasAndWhyItMatchedOrNot) {
  std::string output;
  EXPECT_EQ(Explain("127.0.0.2:41000 flwr.proto.Control/StartRun", &output), 1);
  // The identity tailscaled gave, then each rule of the matching route.
  EXPECT_NE(output.find("node:         supernode-a (supernode-a.tail3c4d5e.ts.net)"),
            std::string::npos) << output;
  EXPECT_NE(output.find("route:        /flwr.proto.Control/ (every method of the service) -> "
                        "upstream superlink, mode enforce"),
            std::string::npos) << output;
  EXPECT_NE(output.find("users       alice@example.com"), std::string::npos) << output;
  EXPECT_NE(output.find("no    tagged node: user rules do not apply"), std::string::npos)
      << output;
  EXPECT_NE(output.find("no    peer is supernode-a (supernode-a.tail3c4d5e.ts.net)"),
            std::string::npos) << output;
  // The message the client would see names the peer and the method.
  EXPECT_NE(output.find("\"sepal: peer supernode-a (tag:supernode) at 127.0.0.2:41000 may not "
                        "call /flwr.proto.Control/StartRun\""),
            std::string::npos) << output;

  output.clear();
  EXPECT_EQ(Explain("127.0.0.2 /flwr.proto.Fleet/PushObject", &output), 0);
  EXPECT_NE(output.find("MATCH peer has tag:supernode"), std::string::npos) << output;
  EXPECT_NE(output.find("peer limits:  the listener's: connections 16"), std::string::npos)
      << output;
}

// A listener serving Flower's gRPC adapter: a Fleet method is explained as the adapter route
// authorizes it, and agrees with what a SendReceive wrapping it gets.
TEST_F(ExplainTest, FleetMethodsAreExplainedThroughAnInspectingAdapterRoute) {
  std::string adapter_yaml = yaml_;
  const std::string fleet_route = "      - match: /flwr.proto.Fleet/\n";
  ASSERT_NE(adapter_yaml.find(fleet_route), std::string::npos);
  adapter_yaml.replace(adapter_yaml.find(fleet_route), fleet_route.size(),
                       "      - match: /flwr.proto.GrpcAdapter/SendReceive\n"
                       "        inspect: grpc_adapter\n");
  std::ofstream(config_path_) << adapter_yaml;
  std::string output;
  EXPECT_EQ(Explain("127.0.0.2:41000 /flwr.proto.Fleet/PushMessages", &output), 0) << output;
  EXPECT_NE(output.find("route:        /flwr.proto.GrpcAdapter/SendReceive (this method only)"),
            std::string::npos) << output;
  EXPECT_NE(output.find("transport:    the gRPC adapter: /flwr.proto.GrpcAdapter/SendReceive "
                        "carrying a PushMessagesRequest"),
            std::string::npos) << output;
  EXPECT_NE(output.find("decision:     allow (tag)"), std::string::npos) << output;
  output.clear();
  EXPECT_EQ(Explain("127.0.0.3:41000 /flwr.proto.Fleet/PushMessages", &output), 1) << output;
  EXPECT_NE(output.find("may not call /flwr.proto.Fleet/PushMessages"), std::string::npos)
      << output;
  // The proxy agrees: a SendReceive wrapping PushMessagesRequest from each peer.
  StartSepal(adapter_yaml);
  flwr::proto::MessageContainer container;
  container.set_grpc_message_name("PushMessagesRequest");
  for (auto [ip, status] : {std::pair{kSuperNode, 0}, std::pair{kAlice, 7}}) {
    auto client = ConnectFrom(ip);
    ASSERT_NE(client, nullptr);
    int32_t id = client->SubmitRequest(
        H2TestClient::GrpcRequestHeaders("/flwr.proto.GrpcAdapter/SendReceive"));
    ASSERT_TRUE(client->SendData(id, H2TestClient::GrpcFrame(container.SerializeAsString()),
                                 /*end_stream=*/true));
    ASSERT_TRUE(client->WaitForStreamClose(id, std::chrono::seconds(5)));
    EXPECT_EQ(client->stream(id).GrpcStatus(), status) << ip;
  }
  // SendReceive itself: the decision depends on the wrapped message.
  output.clear();
  EXPECT_EQ(Explain("127.0.0.2:41000 /flwr.proto.GrpcAdapter/SendReceive", &output), 1);
  EXPECT_NE(output.find("explain that method instead"), std::string::npos) << output;
}

// A REST path is explained on the protocol: http1 listeners, with the HTTP status the proxy
// answers; the gRPC listener is not consulted for it.
TEST_F(ExplainTest, RestPathsAreExplainedOnHttp1ListenersWithHttpStatuses) {
  std::string rest_yaml = yaml_;
  rest_yaml.replace(rest_yaml.find("upstreams:\n"), std::string("upstreams:\n").size(),
                    "  - name: rest\n"
                    "    address: 127.0.0.1:0\n"
                    "    protocol: http1\n"
                    "    routes:\n"
                    "      - match: /api/v0/fleet/\n"
                    "        upstream: superlink-rest\n"
                    "        allow: {tags: [tag:supernode]}\n"
                    "upstreams:\n"
                    "  - {name: superlink-rest, address: 127.0.0.1:1, protocol: http1}\n");
  std::ofstream(config_path_) << rest_yaml;
  std::string output;
  // Flower's client sends "//api/...": explained as the proxy routes it.
  EXPECT_EQ(Explain("127.0.0.2:41000 //api/v0/fleet/pull-messages", &output), 0) << output;
  EXPECT_NE(output.find("call /api/v0/fleet/pull-messages"), std::string::npos) << output;
  EXPECT_NE(output.find("route:        /api/v0/fleet/ (every path under it)"), std::string::npos)
      << output;
  EXPECT_EQ(output.find("listener fleet"), std::string::npos) << output;
  output.clear();
  EXPECT_EQ(Explain("127.0.0.3:41000 /api/v0/fleet/pull-messages", &output), 1) << output;
  EXPECT_NE(output.find("deny (no_rule_matched): HTTP 403"), std::string::npos) << output;
  output.clear();
  EXPECT_EQ(Explain("127.0.0.2:41000 /api/v0/fleet/../x", &output), 2) << output;
}

TEST_F(ExplainTest, TailscaledDownIsUnavailableAndBadArgumentsAreUsageErrors) {
  tailscaled_->Stop();
  std::string output;
  EXPECT_EQ(Explain("127.0.0.2:41000 /flwr.proto.Fleet/PullMessages", &output), 1);
  EXPECT_NE(output.find("lookup failed"), std::string::npos) << output;
  EXPECT_NE(output.find("deny (lookup_failed): UNAVAILABLE"), std::string::npos) << output;

  for (const char* bad : {"127.0.0.2:99999 /flwr.proto.Fleet/X", "127.0.0.2 notapath",
                          "127.0.0.2", "--listener nope 127.0.0.2 /flwr.proto.Fleet/X"}) {
    output.clear();
    EXPECT_EQ(Explain(bad, &output), 2) << bad << ": " << output;
    EXPECT_NE(output.find("usage: sepal explain"), std::string::npos) << output;
  }
}

}  // namespace
}  // namespace sepal::test
