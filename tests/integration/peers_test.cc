// /peers and sepal_peers_connected against real traffic: HTTP/2 clients bound to 127.0.0.2 and
// 127.0.0.3 (two tailnet nodes by the static provider) and 127.0.0.9 (nobody) hold
// connections and make calls; the admin endpoint must list exactly who is connected, with
// their calls, bytes, last call and last error, and forget a peer once it hangs up.
#include <gtest/gtest.h>

#include <unistd.h>

#include <boost/json.hpp>
#include <filesystem>

#include "tests/integration/loopback.h"
#include "tests/integration/proxy_fixture.h"
#include "tests/support/fake_tailscaled.h"
#include "tests/support/h2_test_client.h"

namespace sepal::test {
namespace {

namespace json = boost::json;
using std::chrono::seconds;

std::string PeersConfig(const std::string& upstream) {
  return "workers: 2\n"
         "admin: {address: 127.0.0.1:0}\n"
         "identity:\n"
         "  provider: static\n"
         "  static:\n"
         "    - {match: 127.0.0.2/32, node: supernode-a, tags: [tag:supernode]}\n"
         "    - {match: 127.0.0.3/32, node: alice-laptop, user: alice@example.com}\n"
         "listeners:\n"
         "  - name: fleet\n"
         "    address: 127.0.0.1:0\n"
         "    routes:\n"
         "      - match: /flwr.proto.Fleet/\n"
         "        upstream: superlink\n"
         "        allow: {tags: [tag:supernode]}\n"
         "upstreams:\n  - {name: superlink, address: " + upstream + "}\n";
}

class PeersTest : public ProxyTest {
 protected:
  // A whole unary call with `payload` bytes of body; returns its grpc-status.
  static int Call(H2TestClient& client, const std::string& method, size_t payload = 0) {
    FleetRequest request;
    request.set_payload(std::string(payload, 'x'));
    int32_t id = client.SubmitRequest(H2TestClient::GrpcRequestHeaders(method));
    EXPECT_GT(id, 0);
    EXPECT_TRUE(client.SendData(id, H2TestClient::GrpcFrame(request.SerializeAsString()), true));
    EXPECT_TRUE(client.WaitForStreamClose(id, seconds(5))) << method;
    return client.stream(id).GrpcStatus().value_or(-1);
  }
  json::object Peers() {
    std::string response = HttpGet(server_->admin_port(), "/peers");
    EXPECT_NE(response.find("200 OK"), std::string::npos) << response;
    EXPECT_NE(response.find("application/json"), std::string::npos) << response;
    return json::parse(response.substr(response.find("\r\n\r\n") + 4)).as_object();
  }
  double Connected() {
    std::string scraped = HttpGet(server_->admin_port(), "/metrics");
    return SeriesValue(scraped.substr(scraped.find("\r\n\r\n") + 4),
                       R"(sepal_peers_connected{listener="fleet"})");
  }
  static const json::object* Find(const json::object& peers, std::string_view name) {
    for (const json::value& peer : peers.at("peers").as_array()) {
      if (peer.at("peer").as_string() == name) return &peer.as_object();
    }
    return nullptr;
  }
};

TEST_F(PeersTest, ListsWhoIsConnectedWithTheirCallsAndForgetsThemWhenTheyLeave) {
  StartSepal(PeersConfig(backend_->address()));
  EXPECT_EQ(Peers().at("peers").as_array().size(), 0u);

  auto supernode = ConnectFrom("127.0.0.2");
  auto supernode_second = ConnectFrom("127.0.0.2");
  auto alice = ConnectFrom("127.0.0.3");
  auto stranger = ConnectFrom("127.0.0.9");
  ASSERT_TRUE(supernode && supernode_second && alice && stranger);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(Call(*supernode, "/flwr.proto.Fleet/PullMessages"), 0);
  EXPECT_EQ(Call(*supernode_second, "/flwr.proto.Fleet/PushObject", 100000), 0);
  EXPECT_EQ(Call(*alice, "/flwr.proto.Fleet/PullMessages"), 7);
  EXPECT_EQ(Call(*stranger, "/flwr.proto.Fleet/PullMessages"), 16);

  // Calls are recorded as the worker closes their streams, possibly just after the client
  // saw the answer: wait until all six are in.
  json::object peers;
  auto settle = std::chrono::steady_clock::now() + seconds(5);
  auto calls_in = [](const json::object& all) {
    int64_t total = 0;
    for (const json::value& peer : all.at("peers").as_array()) total += peer.at("calls").as_int64();
    return total;
  };
  do {
    peers = Peers();
  } while (calls_in(peers) < 6 && std::chrono::steady_clock::now() < settle);
  EXPECT_EQ(peers.at("peer_count").as_int64(), 3) << json::serialize(peers);
  EXPECT_EQ(Connected(), 3);

  const json::object* node = Find(peers, "supernode-a");
  ASSERT_NE(node, nullptr) << json::serialize(peers);
  EXPECT_EQ(node->at("listener").as_string(), "fleet");
  EXPECT_EQ(node->at("identity").as_string(), "found");
  EXPECT_EQ(node->at("tags").as_array().at(0).as_string(), "tag:supernode");
  EXPECT_EQ(node->at("connections").as_int64(), 2);
  ASSERT_EQ(node->at("addresses").as_array().size(), 2u);
  EXPECT_TRUE(node->at("addresses").as_array().at(0).as_string().starts_with("127.0.0.2:"));
  EXPECT_EQ(node->at("calls").as_int64(), 4);
  EXPECT_EQ(node->at("errors").as_int64(), 0);
  const json::object& methods = node->at("methods").as_object();
  EXPECT_EQ(methods.at("/flwr.proto.Fleet/PullMessages").at("calls").as_int64(), 3);
  const json::object& push = methods.at("/flwr.proto.Fleet/PushObject").as_object();
  EXPECT_EQ(push.at("calls").as_int64(), 1);
  EXPECT_GT(push.at("request_bytes").as_int64(), 100000);  // the message and its framing
  EXPECT_GT(push.at("response_bytes").as_int64(), 100000);  // the stand-in echoes it
  EXPECT_EQ(node->at("last_call").at("method").as_string(), "/flwr.proto.Fleet/PushObject");
  EXPECT_EQ(node->at("last_call").at("grpc_status").as_string(), "OK");
  EXPECT_TRUE(node->at("last_error").is_null());

  const json::object* user = Find(peers, "alice-laptop");
  ASSERT_NE(user, nullptr);
  EXPECT_EQ(user->at("user").as_string(), "alice@example.com");
  EXPECT_EQ(user->at("errors").as_int64(), 1);
  const json::value& error = user->at("last_error");
  ASSERT_TRUE(error.is_object());
  EXPECT_EQ(error.at("grpc_status").as_string(), "PERMISSION_DENIED");
  EXPECT_EQ(error.at("reason").as_string(), "no_rule_matched");

  // Not in the tailnet: listed by its address, with why it was refused.
  const json::object* unknown = Find(peers, "127.0.0.9");
  ASSERT_NE(unknown, nullptr) << json::serialize(peers);
  EXPECT_EQ(unknown->at("identity").as_string(), "not_in_tailnet");
  EXPECT_TRUE(unknown->at("node").is_null());
  EXPECT_EQ(unknown->at("last_error").at("grpc_status").as_string(), "UNAUTHENTICATED");

  // Leaving: one of two connections, then the other, then everybody.
  supernode_second.reset();
  auto wait_for = [&](auto done) {
    auto deadline = std::chrono::steady_clock::now() + seconds(5);
    while (!done() && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return done();
  };
  EXPECT_TRUE(wait_for([&] {
    json::object now = Peers();
    const json::object* still = Find(now, "supernode-a");
    return still != nullptr && still->at("connections").as_int64() == 1;
  }));
  supernode.reset();
  alice.reset();
  stranger.reset();
  EXPECT_TRUE(wait_for([&] { return Peers().at("peers").as_array().empty(); }));
  EXPECT_EQ(Connected(), 0);
}

// The status page is served at / as HTML (the browser test looks at it in chromium), and a
// method path a client chose cannot inject markup into it.
TEST_F(PeersTest, StatusPageShowsThePeersAndEscapesWhatClientsSent) {
  StartSepal(PeersConfig(backend_->address()));
  auto supernode = ConnectFrom("127.0.0.2");
  ASSERT_NE(supernode, nullptr);
  EXPECT_EQ(Call(*supernode, "/flwr.proto.Fleet/PullMessages"), 0);
  EXPECT_EQ(Call(*supernode, "/<script>alert(1)</script>/X"), 12);  // no route: UNIMPLEMENTED
  // The worker records the call when it closes the stream, which may be just after the
  // client saw the answer: wait for it.
  std::string page;
  auto deadline = std::chrono::steady_clock::now() + seconds(5);
  do {
    page = HttpGet(server_->admin_port(), "/");
  } while (page.find("UNIMPLEMENTED (no_route)") == std::string::npos &&
           std::chrono::steady_clock::now() < deadline);
  EXPECT_NE(page.find("200 OK"), std::string::npos) << page;
  EXPECT_NE(page.find("text/html; charset=utf-8"), std::string::npos);
  EXPECT_NE(page.find("Content-Security-Policy: default-src 'none'"), std::string::npos);
  EXPECT_NE(page.find("<table id=\"peers\">"), std::string::npos) << page;
  EXPECT_NE(page.find("<td>supernode-a</td><td>tag:supernode</td>"), std::string::npos) << page;
  EXPECT_NE(page.find("<td class=\"ok\">reachable</td>"), std::string::npos) << page;
  EXPECT_EQ(page.find("<script>"), std::string::npos) << page;
  EXPECT_NE(page.find("/&lt;script&gt;alert(1)&lt;/script&gt;/X"), std::string::npos) << page;
  EXPECT_NE(page.find("UNIMPLEMENTED (no_route)"), std::string::npos) << page;
}

// A service-prefix route admits any method name a client makes up: what /peers keeps of a
// path is bounded in length as well as in number, so a peer cannot make sepal hold its junk.
TEST_F(PeersTest, LongMethodNamesAreKeptShort) {
  StartSepal(PeersConfig(backend_->address()));
  auto supernode = ConnectFrom("127.0.0.2");
  ASSERT_NE(supernode, nullptr);
  const std::string long_path = "/flwr.proto.Fleet/" + std::string(4000, 'M');
  EXPECT_EQ(Call(*supernode, long_path), 12);  // routed; the stand-in has no such method
  json::object peers = Peers();
  const json::object* node = Find(peers, "supernode-a");
  ASSERT_NE(node, nullptr);
  const json::object& methods = node->at("methods").as_object();
  ASSERT_EQ(methods.size(), 1u);
  EXPECT_EQ(methods.begin()->key(), long_path.substr(0, 128));
  EXPECT_EQ(node->at("last_call").at("method").as_string(), long_path.substr(0, 128));
}

// A call without a route is answered at once, before tailscaled has said who the peer is:
// it still shows in the peer's record once the identity arrives.
TEST_F(PeersTest, CallsAnsweredBeforeTheIdentityArrivesAreRecorded) {
  std::string socket = std::filesystem::temp_directory_path() /
                       ("sepal-peers-" + std::to_string(getpid()) + ".sock");
  auto tailscaled = FakeTailscaled::Start(socket);
  ASSERT_NE(tailscaled, nullptr);
  ASSERT_TRUE(tailscaled->AddPeer("127.0.0.2", FakeTailscaled::LoadFixture("tagged-node.json")));
  tailscaled->SetDelay(std::chrono::milliseconds(300));
  StartSepal("workers: 1\n"
             "admin: {address: 127.0.0.1:0}\n"
             "identity:\n  provider: tailscale\n  tailscale: {socket: " + socket + "}\n"
             "listeners:\n"
             "  - name: fleet\n"
             "    address: 127.0.0.1:0\n"
             "    routes:\n"
             "      - {match: /flwr.proto.Fleet/, upstream: superlink, allow: {tags: [tag:supernode]}}\n"
             "upstreams:\n  - {name: superlink, address: " + backend_->address() + "}\n");
  auto supernode = ConnectFrom("127.0.0.2");
  ASSERT_NE(supernode, nullptr);
  auto started = std::chrono::steady_clock::now();
  EXPECT_EQ(Call(*supernode, "/flwr.proto.Exec/ListRuns"), 12);  // no route: at once
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::milliseconds(250));
  EXPECT_EQ(Call(*supernode, "/flwr.proto.Fleet/PullMessages"), 0);  // waits for WhoIs
  json::object peers = Peers();
  const json::object* node = Find(peers, "supernode-a");
  ASSERT_NE(node, nullptr);
  EXPECT_EQ(node->at("calls").as_int64(), 2);
  EXPECT_EQ(node->at("errors").as_int64(), 1);
  EXPECT_EQ(node->at("last_error").at("method").as_string(), "/flwr.proto.Exec/ListRuns");
  EXPECT_EQ(node->at("last_error").at("reason").as_string(), "no_route");
  supernode.reset();
  server_->Stop();
  server_.reset();
  tailscaled.reset();
}

}  // namespace
}  // namespace sepal::test
