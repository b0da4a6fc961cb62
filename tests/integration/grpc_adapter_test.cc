// Flower's gRPC adapter transport through an `inspect: grpc_adapter` route: the wrapped Fleet
// method is what the allow rules, the metrics and the access log see. grpc++ GrpcAdapter
// clients play the tagged SuperNode; raw HTTP/2 clients from other loopback addresses play
// the other peers and send what grpc++ would not.
#include <fstream>
#include <thread>

#include "proxy/metrics/metrics.h"
#include "tests/integration/loopback.h"
#include "tests/integration/proxy_fixture.h"
#include "tests/proto/grpcadapter.grpc.pb.h"

namespace sepal::test {
namespace {

using flwr::proto::GrpcAdapter;
using flwr::proto::MessageContainer;

constexpr const char* kSendReceive = "/flwr.proto.GrpcAdapter/SendReceive";

// 127.0.0.1: the tagged SuperNode. 127.0.0.3: an untagged laptop. 127.0.0.4: a node with the
// wrong tag and a capability that covers only the Pull* methods. 127.0.0.9: no tailnet node.
std::string AdapterConfig(const std::string& upstream, const std::string& access_log) {
  return R"(workers: 1
identity:
  provider: static
  static:
    - match: 127.0.0.1/32
      node: supernode-a
      user: tagged-devices
      tags: [tag:supernode]
    - match: 127.0.0.3/32
      node: alice-laptop
      user: alice@example.com
    - match: 127.0.0.4/32
      node: puller
      user: tagged-devices
      tags: [tag:other]
      capabilities:
        example.com/cap/flower:
          - methods: ["/flwr.proto.Fleet/Pull*"]
)" + (access_log.empty() ? std::string() : "access_log: " + access_log + "\n") +
         R"(listeners:
  - name: fleet
    address: 127.0.0.1:0
    peer_limits: {concurrent_calls: 0, calls_per_second: 0}
    limits: {request_progress_timeout: 2s}
    routes:
      - match: /flwr.proto.GrpcAdapter/SendReceive
        upstream: superlink
        inspect: grpc_adapter
        allow:
          tags: [tag:supernode]
          capability: example.com/cap/flower
upstreams:
  - name: superlink
    address: )" + upstream + "\n";
}

// What a SuperNode on --grpc-adapter sends for `name` ("PullMessagesRequest").
MessageContainer Wrap(const std::string& name, const std::string& payload = "model") {
  FleetRequest request;
  request.mutable_node()->set_node_id(7);
  request.set_payload(payload);
  MessageContainer container;
  (*container.mutable_metadata())["flower-version"] = "1.23.0";
  (*container.mutable_metadata())["grpc-message-qualname"] = name;
  container.set_grpc_message_name(name);
  container.set_grpc_message_content(request.SerializeAsString());
  return container;
}

std::string WireField(int number, const std::string& value) {
  return std::string(1, static_cast<char>(number << 3 | 2)) +
         std::string(1, static_cast<char>(value.size())) + value;
}

double Metric(const std::string& series) {
  return SeriesValue(metrics::DefaultRegistry().Serialize(), series);
}

std::string Inspections(const std::string& result) {
  return R"(sepal_grpc_adapter_inspections_total{listener="fleet",result=")" + result + "\"}";
}

class GrpcAdapterTest : public ProxyTest {
 protected:
  void Start(const std::string& access_log = "") {
    StartSepal(AdapterConfig(backend_->address(), access_log));
  }

  // One SendReceive from `ip` over raw HTTP/2 with `body` as the whole request body.
  H2Stream CallFrom(const std::string& ip, const std::string& body) {
    auto client = ConnectFrom(ip);
    if (!client) return {};
    int32_t id = client->SubmitRequest(H2TestClient::GrpcRequestHeaders(kSendReceive));
    EXPECT_GT(id, 0);
    EXPECT_TRUE(client->SendData(id, body, /*end_stream=*/true));
    EXPECT_TRUE(client->WaitForStreamClose(id));
    return client->stream(id);
  }
  H2Stream CallFrom(const std::string& ip, const MessageContainer& container) {
    return CallFrom(ip, H2TestClient::GrpcFrame(container.SerializeAsString()));
  }
};

TEST_F(GrpcAdapterTest, TaggedSuperNodeCallsThroughTheAdapterAndRulesSeeTheFleetMethod) {
  Start();
  const std::string fleet_ok =
      R"(sepal_grpc_requests_total{listener="fleet",grpc_service="flwr.proto.Fleet",)"
      R"(grpc_method="PullMessages",grpc_code="OK"})";
  double before = Metric(fleet_ok);
  double inspected = Metric(Inspections("ok"));
  auto stub = GrpcAdapter::NewStub(NewChannel());
  grpc::ClientContext context;
  MessageContainer response;
  grpc::Status status = stub->SendReceive(&context, Wrap("PullMessagesRequest"), &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.grpc_message_name(), "PullMessagesResponse");
  FleetResponse reply;
  ASSERT_TRUE(reply.ParseFromString(response.grpc_message_content()));
  EXPECT_EQ(reply.payload(), "model");
  EXPECT_EQ(reply.node().node_id(), 7u);
  // The identity headers reach the SuperLink as on any gRPC call.
  std::vector<std::string> seen(reply.seen_metadata().begin(), reply.seen_metadata().end());
  EXPECT_NE(std::find(seen.begin(), seen.end(), "tailscale-node-name=supernode-a"), seen.end());
  EXPECT_EQ(backend_->CallCount(kSendReceive), 1);
  EXPECT_EQ(backend_->CallCount("/flwr.proto.Fleet/PullMessages"), 1);
  EXPECT_EQ(Metric(fleet_ok), before + 1);
  EXPECT_EQ(Metric(Inspections("ok")), inspected + 1);
  // Counted as the Fleet method, not as SendReceive.
  EXPECT_EQ(Metric(R"(sepal_grpc_requests_total{listener="fleet",)"
                   R"(grpc_service="flwr.proto.GrpcAdapter",grpc_method="SendReceive",)"
                   R"(grpc_code="OK"})"),
            0);
}

TEST_F(GrpcAdapterTest, UntaggedAndWronglyTaggedNodesAreRefusedPerWrappedMethod) {
  Start();
  // Untagged laptop: no rule admits it.
  H2Stream laptop = CallFrom("127.0.0.3", Wrap("PullMessagesRequest"));
  EXPECT_EQ(laptop.GrpcStatus(), static_cast<int>(grpc::StatusCode::PERMISSION_DENIED));
  EXPECT_NE(laptop.GrpcMessage().find("/flwr.proto.Fleet/PullMessages"), std::string::npos)
      << laptop.GrpcMessage();
  // tag:other with a capability for Pull* only: PullObject passes, PushMessages does not.
  H2Stream pull = CallFrom("127.0.0.4", Wrap("PullObjectRequest"));
  EXPECT_EQ(pull.GrpcStatus(), 0) << pull.GrpcMessage();
  H2Stream push = CallFrom("127.0.0.4", Wrap("PushMessagesRequest"));
  EXPECT_EQ(push.GrpcStatus(), static_cast<int>(grpc::StatusCode::PERMISSION_DENIED));
  EXPECT_NE(push.GrpcMessage().find("PushMessages"), std::string::npos) << push.GrpcMessage();
  EXPECT_EQ(backend_->CallCount("/flwr.proto.Fleet/PullObject"), 1);
  EXPECT_EQ(backend_->CallCount("/flwr.proto.Fleet/PushMessages"), 0);
  EXPECT_EQ(backend_->CallCount("/flwr.proto.Fleet/PullMessages"), 0);
  EXPECT_EQ(backend_->CallCount(kSendReceive), 1);
}

TEST_F(GrpcAdapterTest, APeerOutsideTheTailnetIsRefusedBeforeItSendsAMessage) {
  Start();
  auto client = ConnectFrom("127.0.0.9");
  ASSERT_NE(client, nullptr);
  int32_t id = client->SubmitRequest(H2TestClient::GrpcRequestHeaders(kSendReceive));
  ASSERT_GT(id, 0);
  // No body at all: the identity alone decides, well before request_progress_timeout.
  ASSERT_TRUE(client->WaitForHeaders(id, std::chrono::milliseconds(1500)));
  EXPECT_TRUE(client->stream(id).trailers_only);
  EXPECT_EQ(client->stream(id).GrpcStatus(),
            static_cast<int>(grpc::StatusCode::UNAUTHENTICATED));
}

TEST_F(GrpcAdapterTest, MalformedContainersAreInvalidArgumentAndNeverReachTheSuperLink) {
  Start();
  double malformed = Metric(Inspections("malformed"));
  double unknown = Metric(Inspections("unknown_message"));
  double compressed = Metric(Inspections("compressed"));
  double extra = Metric(Inspections("extra_message"));
  std::string name = WireField(2, "PullMessagesRequest");
  std::string content = WireField(3, "x");
  auto expect_invalid = [&](const std::string& what, const std::string& body,
                            const std::string& in_message) {
    H2Stream stream = CallFrom("127.0.0.1", body);
    EXPECT_EQ(stream.GrpcStatus(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT)) << what;
    EXPECT_NE(stream.GrpcMessage().find(in_message), std::string::npos)
        << what << ": " << stream.GrpcMessage();
  };
  // A second name after the content would be what the SuperLink decodes.
  expect_invalid("name after content",
                 H2TestClient::GrpcFrame(name + content + WireField(2, "PushMessagesRequest")),
                 "grpc_adapter");
  expect_invalid("content first", H2TestClient::GrpcFrame(content + name), "grpc_adapter");
  expect_invalid("not a request", H2TestClient::GrpcFrame(WireField(2, "Hello") + content),
                 "names no Fleet request");
  expect_invalid("compressed",
                 H2TestClient::GrpcFrame(Wrap("PullMessagesRequest").SerializeAsString(), true),
                 "compressed");
  expect_invalid("two messages",
                 H2TestClient::GrpcFrame(Wrap("PullMessagesRequest").SerializeAsString()) +
                     H2TestClient::GrpcFrame(Wrap("PushMessagesRequest").SerializeAsString()),
                 "second message");
  expect_invalid("no message", "", "no gRPC message");
  EXPECT_EQ(backend_->CallCount(kSendReceive), 0);
  EXPECT_EQ(Metric(Inspections("malformed")), malformed + 3);
  EXPECT_EQ(Metric(Inspections("unknown_message")), unknown + 1);
  EXPECT_EQ(Metric(Inspections("compressed")), compressed + 1);
  EXPECT_EQ(Metric(Inspections("extra_message")), extra + 1);
  // sepal still serves the well-formed call on a new connection.
  EXPECT_EQ(CallFrom("127.0.0.1", Wrap("GetRunRequest")).GrpcStatus(), 0);
}

TEST_F(GrpcAdapterTest, APrefixArrivingInPiecesIsReadAcrossFrames) {
  Start();
  std::string body = H2TestClient::GrpcFrame(Wrap("SendNodeHeartbeatRequest").SerializeAsString());
  auto client = ConnectFrom("127.0.0.1");
  ASSERT_NE(client, nullptr);
  int32_t id = client->SubmitRequest(H2TestClient::GrpcRequestHeaders(kSendReceive));
  for (size_t at = 0; at < body.size(); at += 7) {
    ASSERT_TRUE(client->SendData(id, body.substr(at, 7), at + 7 >= body.size()));
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_TRUE(client->WaitForStreamClose(id));
  EXPECT_EQ(client->stream(id).GrpcStatus(), 0) << client->stream(id).GrpcMessage();
  EXPECT_EQ(backend_->CallCount("/flwr.proto.Fleet/SendNodeHeartbeat"), 1);
}

TEST_F(GrpcAdapterTest, AClientThatStopsInsideThePrefixTimesOut) {
  Start();
  std::string body = H2TestClient::GrpcFrame(Wrap("PullMessagesRequest").SerializeAsString());
  auto client = ConnectFrom("127.0.0.1");
  ASSERT_NE(client, nullptr);
  int32_t id = client->SubmitRequest(H2TestClient::GrpcRequestHeaders(kSendReceive));
  ASSERT_TRUE(client->SendData(id, body.substr(0, 12), false));
  // limits.request_progress_timeout is 2 s here; the worker checks once a second.
  ASSERT_TRUE(client->WaitForStreamClose(id, std::chrono::milliseconds(5000)));
  EXPECT_EQ(client->stream(id).GrpcStatus(), static_cast<int>(grpc::StatusCode::UNAVAILABLE));
  EXPECT_EQ(backend_->CallCount(kSendReceive), 0);
}

TEST_F(GrpcAdapterTest, ALargeWrappedMessageStreamsThroughUnchanged) {
  Start();
  std::string payload = FakeSuperLink::MakePayload(24 << 20);
  auto stub = GrpcAdapter::NewStub(NewChannel());
  grpc::ClientContext context;
  MessageContainer response;
  grpc::Status status =
      stub->SendReceive(&context, Wrap("PushObjectRequest", payload), &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  FleetResponse reply;
  ASSERT_TRUE(reply.ParseFromString(response.grpc_message_content()));
  EXPECT_EQ(reply.payload().size(), payload.size());
  EXPECT_TRUE(reply.payload() == payload);
  EXPECT_EQ(backend_->CallCount("/flwr.proto.Fleet/PushObject"), 1);
}

TEST_F(GrpcAdapterTest, TheAccessLogNamesTheWrappedMethod) {
  char dir_template[] = "/tmp/sepal-adapter-XXXXXX";
  std::string dir = mkdtemp(dir_template);
  std::string path = dir + "/access.log";
  Start(path);
  EXPECT_EQ(CallFrom("127.0.0.1", Wrap("PushMessagesRequest")).GrpcStatus(), 0);
  std::string line;
  for (int i = 0; i < 100 && line.empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    std::ifstream in(path);
    std::getline(in, line);
  }
  EXPECT_NE(line.find("\"method\":\"/flwr.proto.Fleet/PushMessages\",\"grpc_status\":0,"
                      "\"decision\":\"allow\",\"reason\":\"tag\""),
            std::string::npos)
      << line;
  std::system(("rm -rf '" + dir + "'").c_str());
}

}  // namespace
}  // namespace sepal::test
