// Identity and per-method allowlists end to end with the static provider: grpc++ clients
// from loopback, and PROXY-protocol connections carrying Tailscale-range peers.
#include <arpa/inet.h>

#include "proxy/metrics/metrics.h"
#include "tests/integration/loopback.h"
#include "tests/integration/proxy_fixture.h"
#include "tests/support/h2_test_client.h"

namespace sepal::test {
namespace {

// Loopback clients are a tagged SuperNode; PROXY sources map to the other identities.
std::string AuthzConfig(const std::string& upstream, const std::string& proxy_protocol) {
  return R"(workers: 1
identity:
  provider: static
  static:
    - match: 100.101.12.34/32
      node: supernode-a
      user: tagged-devices
      tags: [tag:supernode]
    - match: 100.88.201.7/32
      node: alice-laptop
      user: alice@example.com
    - match: 100.77.0.0/16
      node: capped-node
      user: tagged-devices
      tags: [tag:other]
      capabilities:
        example.com/cap/flower:
          - methods: ["/flwr.proto.Fleet/Pull*", "/flwr.proto.Fleet/SendNodeHeartbeat"]
    - match: 100.66.0.0/16
      node: cap-all-node
      user: bob@example.com
      capabilities:
        example.com/cap/flower:
          - role: admin
    - match: 127.0.0.0/8
      node: loopback-supernode
      user: tagged-devices
      tags: [tag:supernode]
listeners:
  - name: fleet
    address: 127.0.0.1:0
    proxy_protocol: )" +
         proxy_protocol + R"(
    routes:
      - match: /flwr.proto.Fleet/
        upstream: superlink
        allow:
          tags: [tag:supernode]
          nodes: [alice-laptop]
          capability: example.com/cap/flower
      - match: /flwr.proto.Control/
        upstream: superlink
        allow:
          users: [alice@example.com, tagged-devices]
          capability: example.com/cap/flower
      - match: /sepal.test.Echo/
        upstream: superlink
upstreams:
  - name: superlink
    address: )" +
         upstream + "\n";
}

class AuthzTest : public ProxyTest {
 protected:
  // One unary call over a PROXY-v2 connection from `source`; returns the stream state.
  H2Stream CallAs(const std::string& source, const std::string& path,
                  const H2Headers& extra = {}) {
    H2TestClient::Options options;
    options.send_preface = false;
    std::string error;
    auto client = H2TestClient::Connect(SepalAddress(), options, &error);
    EXPECT_NE(client, nullptr) << error;
    if (!client) return {};
    EXPECT_TRUE(client->SendRaw(ProxyV2(source, 41000)));
    H2Headers headers = H2TestClient::GrpcRequestHeaders(path);
    headers.insert(headers.end(), extra.begin(), extra.end());
    int32_t id = client->SubmitRequest(headers);
    FleetRequest request;
    request.set_payload("x");
    EXPECT_TRUE(client->SendData(id, H2TestClient::GrpcFrame(request.SerializeAsString()), true));
    EXPECT_TRUE(client->WaitForStreamClose(id, std::chrono::seconds(5)));
    return client->stream(id);
  }
};

TEST_F(AuthzTest, TaggedSuperNodeAllowedOnFleetRefusedOnControl) {
  StartSepal(AuthzConfig(backend_->address(), "none"));
  {
    auto stub = Fleet::NewStub(NewChannel());
    grpc::ClientContext context;
    FleetRequest request;
    FleetResponse response;
    grpc::Status status = stub->PullMessages(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
  }
  {
    // Control allows users alice@ and "tagged-devices": the pseudo-user of tagged nodes
    // must not count as a user.
    auto stub = Control::NewStub(NewChannel());
    grpc::ClientContext context;
    ControlRequest request;
    ControlResponse response;
    grpc::Status status = stub->StartRun(&context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
    EXPECT_NE(status.error_message().find("loopback-supernode"), std::string::npos)
        << status.error_message();
    EXPECT_NE(status.error_message().find("/flwr.proto.Control/StartRun"), std::string::npos)
        << status.error_message();
  }
  EXPECT_EQ(backend_->CallCount("/flwr.proto.Fleet/PullMessages"), 1);
  EXPECT_EQ(backend_->CallCount("/flwr.proto.Control/StartRun"), 0);
}

// mode: audit forwards what the allow rules deny, counted as decision="audit_deny"; a peer
// that is not identified is still refused, and an enforcing route still denies.
TEST_F(AuthzTest, AuditModeForwardsDeniedCallsAndCountsThem) {
  std::string config = AuthzConfig(backend_->address(), "v2");
  const std::string control_route = "      - match: /flwr.proto.Control/\n        upstream: superlink\n";
  ASSERT_NE(config.find(control_route), std::string::npos);
  config.replace(config.find(control_route), control_route.size(),
                 control_route + "        mode: audit\n");
  StartSepal(config);
  const std::string audited =
      R"(sepal_authz_decisions_total{listener="fleet",decision="audit_deny",reason="no_rule_matched"})";
  const std::string denied =
      R"(sepal_authz_decisions_total{listener="fleet",decision="deny",reason="no_rule_matched"})";
  const double audited_before = SeriesValue(metrics::DefaultRegistry().Serialize(), audited);
  const double denied_before = SeriesValue(metrics::DefaultRegistry().Serialize(), denied);

  // supernode-a (tag:supernode) may not call Control by the rules: forwarded, with its identity.
  H2Stream control = CallAs("100.101.12.34", "/flwr.proto.Control/StartRun");
  EXPECT_EQ(control.GrpcStatus(), 0) << control.GrpcMessage();
  EXPECT_EQ(backend_->CallCount("/flwr.proto.Control/StartRun"), 1);
  // The Fleet route enforces: capped-node's capability does not cover PushMessages.
  H2Stream fleet = CallAs("100.77.1.2", "/flwr.proto.Fleet/PushMessages");
  EXPECT_EQ(fleet.GrpcStatus(), static_cast<int>(grpc::StatusCode::PERMISSION_DENIED));
  EXPECT_EQ(backend_->CallCount("/flwr.proto.Fleet/PushMessages"), 0);
  // Not in the tailnet (no static entry): refused on the audited route too.
  H2Stream stranger = CallAs("100.99.0.1", "/flwr.proto.Control/StartRun");
  EXPECT_EQ(stranger.GrpcStatus(), static_cast<int>(grpc::StatusCode::UNAUTHENTICATED));
  EXPECT_EQ(backend_->CallCount("/flwr.proto.Control/StartRun"), 1);

  EXPECT_EQ(SeriesValue(metrics::DefaultRegistry().Serialize(), audited), audited_before + 1);
  EXPECT_EQ(SeriesValue(metrics::DefaultRegistry().Serialize(), denied), denied_before + 1);
}

TEST_F(AuthzTest, IdentityMetadataReachesUpstreamAndSpoofedCopiesAreStripped) {
  StartSepal(AuthzConfig(backend_->address(), "none"));
  auto stub = Fleet::NewStub(NewChannel());
  grpc::ClientContext context;
  context.AddMetadata("tailscale-user-login", "mallory@evil.example");
  context.AddMetadata("tailscale-node-tags", "tag:admin");
  context.AddMetadata("tailscale-extra", "spoof");
  FleetRequest request;
  FleetResponse response;
  ASSERT_TRUE(stub->CreateNode(&context, request, &response).ok());
  std::vector<std::string> seen(response.seen_metadata().begin(), response.seen_metadata().end());
  auto has = [&](const std::string& line) {
    return std::find(seen.begin(), seen.end(), line) != seen.end();
  };
  EXPECT_TRUE(has("tailscale-user-login=tagged-devices"));
  EXPECT_TRUE(has("tailscale-node-name=loopback-supernode"));
  EXPECT_TRUE(has("tailscale-node-tags=tag:supernode"));
  EXPECT_TRUE(has("tailscale-app-capabilities={}"));
  EXPECT_FALSE(has("tailscale-user-login=mallory@evil.example"));
  EXPECT_FALSE(has("tailscale-node-tags=tag:admin"));
  EXPECT_FALSE(has("tailscale-extra=spoof"));
}

TEST_F(AuthzTest, UserAllowedOnControlViaProxyProtocol) {
  StartSepal(AuthzConfig(backend_->address(), "v2"));
  H2Stream stream = CallAs("100.88.201.7", "/flwr.proto.Control/ListRuns");
  EXPECT_EQ(stream.GrpcStatus(), 0) << stream.GrpcMessage();
  // alice is neither tagged nor named on the Fleet route... but is listed in nodes.
  EXPECT_EQ(CallAs("100.88.201.7", "/flwr.proto.Fleet/CreateNode").GrpcStatus(), 0);
  EXPECT_EQ(backend_->CallCount("/flwr.proto.Control/ListRuns"), 1);
}

TEST_F(AuthzTest, CapabilityWithMethodsAllowsOnlyMatchingMethods) {
  StartSepal(AuthzConfig(backend_->address(), "v2"));
  EXPECT_EQ(CallAs("100.77.1.2", "/flwr.proto.Fleet/PullMessages").GrpcStatus(), 0);
  EXPECT_EQ(CallAs("100.77.1.2", "/flwr.proto.Fleet/SendNodeHeartbeat").GrpcStatus(), 0);
  H2Stream denied = CallAs("100.77.1.2", "/flwr.proto.Fleet/PushMessages");
  EXPECT_EQ(denied.GrpcStatus(), 7);
  EXPECT_NE(denied.GrpcMessage().find("capped-node"), std::string::npos) << denied.GrpcMessage();
  EXPECT_EQ(CallAs("100.77.1.2", "/flwr.proto.Control/StartRun").GrpcStatus(), 7);
  EXPECT_EQ(backend_->CallCount("/flwr.proto.Fleet/PushMessages"), 0);
}

TEST_F(AuthzTest, CapabilityWithoutMethodsAllowsEveryMethodOfTheRoute) {
  StartSepal(AuthzConfig(backend_->address(), "v2"));
  EXPECT_EQ(CallAs("100.66.3.4", "/flwr.proto.Fleet/PushMessages").GrpcStatus(), 0);
  EXPECT_EQ(CallAs("100.66.3.4", "/flwr.proto.Control/StopRun").GrpcStatus(), 0);
}

TEST_F(AuthzTest, PeerWithoutIdentityIsUnauthenticated) {
  StartSepal(AuthzConfig(backend_->address(), "v2"));
  H2Stream stream = CallAs("100.99.99.99", "/flwr.proto.Fleet/CreateNode");
  EXPECT_EQ(stream.GrpcStatus(), 16) << stream.GrpcMessage();
  EXPECT_NE(stream.GrpcMessage().find("100.99.99.99"), std::string::npos);
  // Routes without allow rules still require a known peer.
  EXPECT_EQ(CallAs("100.99.99.99", "/sepal.test.Echo/Unary").GrpcStatus(), 16);
  EXPECT_EQ(backend_->TotalCallCount(), 0);
}

TEST_F(AuthzTest, MissingOrMalformedProxyHeaderClosesTheConnection) {
  StartSepal(AuthzConfig(backend_->address(), "v2"));
  std::string error;
  // A plain HTTP/2 client on a PROXY listener.
  auto plain = H2TestClient::Connect(SepalAddress(), &error);
  ASSERT_NE(plain, nullptr) << error;
  plain->SubmitRequest(H2TestClient::GrpcRequestHeaders("/flwr.proto.Fleet/CreateNode"), true);
  EXPECT_TRUE(plain->WaitForConnectionClose(std::chrono::seconds(3)));
  // A v1 header where v2 is required.
  H2TestClient::Options options;
  options.send_preface = false;
  auto v1 = H2TestClient::Connect(SepalAddress(), options, &error);
  ASSERT_NE(v1, nullptr) << error;
  v1->SendRaw("PROXY TCP4 100.101.12.34 127.0.0.1 41000 9092\r\n");
  EXPECT_TRUE(v1->WaitForConnectionClose(std::chrono::seconds(3)));
  EXPECT_EQ(backend_->TotalCallCount(), 0);
  // Good connections are unaffected.
  EXPECT_EQ(CallAs("100.101.12.34", "/flwr.proto.Fleet/CreateNode").GrpcStatus(), 0);
}

TEST_F(AuthzTest, ProxyV1HeaderIsAcceptedOnAnyListener) {
  StartSepal(AuthzConfig(backend_->address(), "any"));
  H2TestClient::Options options;
  options.send_preface = false;
  std::string error;
  auto client = H2TestClient::Connect(SepalAddress(), options, &error);
  ASSERT_NE(client, nullptr) << error;
  ASSERT_TRUE(client->SendRaw("PROXY TCP4 100.88.201.7 127.0.0.1 41000 9092\r\n"));
  int32_t id = client->SubmitRequest(
      H2TestClient::GrpcRequestHeaders("/flwr.proto.Control/ListRuns"));
  ASSERT_TRUE(client->SendData(id, H2TestClient::GrpcFrame(""), true));
  ASSERT_TRUE(client->WaitForStreamClose(id, std::chrono::seconds(5)));
  EXPECT_EQ(client->stream(id).GrpcStatus(), 0) << client->stream(id).GrpcMessage();
}

}  // namespace
}  // namespace sepal::test
