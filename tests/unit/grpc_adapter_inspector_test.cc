// The gRPC adapter prefix reader against MessageContainers serialized by protobuf itself (as
// Flower's SuperNode sends them), their prefixes, and hand-made non-canonical ones.
#include "filters/grpc_adapter/adapter_inspector.h"

#include <gtest/gtest.h>

#include <string>

#include "tests/proto/fleet.pb.h"
#include "tests/proto/grpcadapter.pb.h"
#include "tests/support/h2_test_client.h"

namespace sepal::filters::grpc_adapter {
namespace {

using Outcome = Inspection::Outcome;

// The metadata Flower's SuperNode puts on every container.
flwr::proto::MessageContainer FlowerContainer(const std::string& name, size_t payload_bytes) {
  flwr::proto::FleetRequest request;
  request.mutable_node()->set_node_id(42);
  request.set_payload(std::string(payload_bytes, 'p'));
  flwr::proto::MessageContainer container;
  auto& metadata = *container.mutable_metadata();
  metadata["flower-package-name"] = "flwr";
  metadata["flower-package-version"] = "1.23.0";
  metadata["flower-version"] = "1.23.0";
  metadata["grpc-message-module"] = "flwr.proto.fleet_pb2";
  metadata["grpc-message-qualname"] = name;
  container.set_grpc_message_name(name);
  container.set_grpc_message_content(request.SerializeAsString());
  return container;
}

std::string Framed(const std::string& message) { return test::H2TestClient::GrpcFrame(message); }

Inspection InspectBytes(const std::string& body, bool ended) {
  return Inspect({reinterpret_cast<const uint8_t*>(body.data()), body.size()}, ended);
}

// Protobuf wire pieces for hand-made containers.
std::string Field(int number, const std::string& value) {
  std::string out;
  out.push_back(static_cast<char>(number << 3 | 2));
  size_t n = value.size();
  do {
    uint8_t byte = n & 0x7f;
    n >>= 7;
    out.push_back(static_cast<char>(n ? byte | 0x80 : byte));
  } while (n);
  return out + value;
}

TEST(GrpcAdapterInspectorTest, FindsTheWrappedFleetMethodOfAFlowerContainer) {
  std::string message = FlowerContainer("PullMessagesRequest", 100).SerializeAsString();
  Inspection inspection = InspectBytes(Framed(message), true);
  ASSERT_EQ(inspection.outcome, Outcome::kFound) << inspection.message;
  EXPECT_EQ(inspection.method, "/flwr.proto.Fleet/PullMessages");
  EXPECT_EQ(inspection.result, result::kOk);
  EXPECT_EQ(inspection.message_end, 5 + message.size());
}

TEST(GrpcAdapterInspectorTest, EveryPrefixNeedsMoreUntilTheContentHeaderThenFindsTheSame) {
  std::string body = Framed(FlowerContainer("PushMessagesRequest", 300).SerializeAsString());
  size_t first_found = 0;
  for (size_t n = 0; n <= body.size(); ++n) {
    Inspection part = InspectBytes(body.substr(0, n), false);
    ASSERT_NE(part.outcome, Outcome::kRefused) << n << ": " << part.message;
    if (part.outcome == Outcome::kFound) {
      if (first_found == 0) first_found = n;
      EXPECT_EQ(part.method, "/flwr.proto.Fleet/PushMessages") << n;
    } else {
      EXPECT_EQ(first_found, 0u) << "found at " << first_found << ", undecided again at " << n;
    }
  }
  // Decided as soon as the content's tag and length are in: long before its 300 bytes.
  EXPECT_GT(first_found, 5u);
  EXPECT_LT(first_found, body.size() - 300);
}

TEST(GrpcAdapterInspectorTest, ReadsOnlyThePrefixOfAHugeMessage) {
  std::string body = Framed(FlowerContainer("PushObjectRequest", 5 << 20).SerializeAsString());
  Inspection inspection = InspectBytes(body.substr(0, kMaxInspectedBytes), false);
  ASSERT_EQ(inspection.outcome, Outcome::kFound) << inspection.message;
  EXPECT_EQ(inspection.method, "/flwr.proto.Fleet/PushObject");
  EXPECT_EQ(inspection.message_end, body.size());
}

TEST(GrpcAdapterInspectorTest, AContainerWithoutContentEndsWithItsName) {
  flwr::proto::MessageContainer container;
  container.set_grpc_message_name("GetRunRequest");
  Inspection inspection = InspectBytes(Framed(container.SerializeAsString()), true);
  ASSERT_EQ(inspection.outcome, Outcome::kFound) << inspection.message;
  EXPECT_EQ(inspection.method, "/flwr.proto.Fleet/GetRun");
}

TEST(GrpcAdapterInspectorTest, UnknownFieldsBeforeTheNameAreSkipped) {
  // Field 7 as a varint, field 8 as fixed32, field 9 as fixed64, field 10 length-delimited.
  std::string unknown = std::string("\x38\x96\x01", 3) + std::string("\x45" "abcd", 5) +
                        std::string("\x49" "abcdefgh", 9) + Field(10, "zz");
  std::string message = unknown + Field(2, "SendNodeHeartbeatRequest") + Field(3, "xyz");
  Inspection inspection = InspectBytes(Framed(message), true);
  ASSERT_EQ(inspection.outcome, Outcome::kFound) << inspection.message;
  EXPECT_EQ(inspection.method, "/flwr.proto.Fleet/SendNodeHeartbeat");
}

// A later copy of grpc_message_name would replace the first when the SuperLink decodes the
// container: only containers where nothing but the content follows the name pass.
TEST(GrpcAdapterInspectorTest, RefusesEveryOrderWhereASecondNameCouldHide) {
  std::string name = Field(2, "PullMessagesRequest");
  std::string other = Field(2, "PushMessagesRequest");
  std::string content = Field(3, "payload");
  struct Case {
    const char* what;
    std::string message;
  } cases[] = {
      {"content first", content + name},
      {"two names", name + other + content},
      {"a name after the content", name + content + other},
      {"metadata after the name", name + Field(1, Field(1, "k") + Field(2, "v")) + content},
      {"an unknown field after the name", name + Field(9, "x") + content},
      {"no name at all", Field(1, Field(1, "k") + Field(2, "v"))},
      {"empty", ""},
  };
  for (const Case& c : cases) {
    Inspection inspection = InspectBytes(Framed(c.message), true);
    EXPECT_EQ(inspection.outcome, Outcome::kRefused) << c.what;
    EXPECT_EQ(inspection.result, result::kMalformed) << c.what << ": " << inspection.message;
    EXPECT_FALSE(inspection.message.empty()) << c.what;
  }
}

TEST(GrpcAdapterInspectorTest, RefusesWrongWireTypesAndBrokenVarints) {
  std::string name = Field(2, "PullMessagesRequest");
  struct Case {
    const char* what;
    std::string message;
  } cases[] = {
      {"name as a varint", std::string("\x10\x01", 2)},
      {"metadata as fixed32", std::string("\x0d" "abcd", 5) + name},
      {"field number 0", std::string("\x02\x01x", 3) + name},
      {"a group", std::string("\x0b", 1) + name},
      {"an 11-byte varint tag", std::string(10, '\xff') + "\x01" + name},
      {"a length past the end", std::string("\x12\x7f" "Pull", 6)},
  };
  for (const Case& c : cases) {
    Inspection inspection = InspectBytes(Framed(c.message), true);
    EXPECT_EQ(inspection.outcome, Outcome::kRefused) << c.what;
    EXPECT_EQ(inspection.result, result::kMalformed) << c.what << ": " << inspection.message;
  }
}

TEST(GrpcAdapterInspectorTest, RefusesNamesThatAreNoFleetRequest) {
  for (const char* name : {"PullMessages", "Request", "../Request", "Pull/MessagesRequest",
                           "1PullRequest", "Pull MessagesRequest"}) {
    Inspection inspection = InspectBytes(Framed(Field(2, name) + Field(3, "x")), true);
    EXPECT_EQ(inspection.outcome, Outcome::kRefused) << name;
    EXPECT_EQ(inspection.result, result::kUnknownMessage) << name;
    EXPECT_NE(inspection.message.find("names no Fleet request"), std::string::npos)
        << inspection.message;
  }
  std::string long_name(kMaxNameBytes, 'A');
  Inspection too_long = InspectBytes(Framed(Field(2, long_name + "Request")), true);
  EXPECT_EQ(too_long.result, result::kUnknownMessage);
}

TEST(GrpcAdapterInspectorTest, ANameBeyondThePrefixIsTooLarge) {
  flwr::proto::MessageContainer container = FlowerContainer("PullMessagesRequest", 10);
  (*container.mutable_metadata())["padding"] = std::string(kMaxPrefixBytes, 'm');
  std::string body = Framed(container.SerializeAsString());
  // Map entries (field 1, in any order) all precede the name (field 2).
  Inspection inspection = InspectBytes(body, false);
  EXPECT_EQ(inspection.outcome, Outcome::kRefused);
  EXPECT_EQ(inspection.result, result::kTooLarge) << inspection.message;
  // Only the window is needed to decide that.
  Inspection windowed = InspectBytes(body.substr(0, kMaxInspectedBytes), false);
  EXPECT_EQ(windowed.result, result::kTooLarge);
}

TEST(GrpcAdapterInspectorTest, RefusesCompressedMessagesAndBadFlags) {
  std::string message = FlowerContainer("PullMessagesRequest", 10).SerializeAsString();
  Inspection compressed = InspectBytes(test::H2TestClient::GrpcFrame(message, true), true);
  EXPECT_EQ(compressed.result, result::kCompressed);
  std::string flagged = Framed(message);
  flagged[0] = 2;
  EXPECT_EQ(InspectBytes(flagged, true).result, result::kMalformed);
}

TEST(GrpcAdapterInspectorTest, ABodyThatEndsEarlyIsMalformed) {
  std::string body = Framed(FlowerContainer("PullMessagesRequest", 10).SerializeAsString());
  EXPECT_EQ(InspectBytes("", true).result, result::kMalformed);
  EXPECT_EQ(InspectBytes(body.substr(0, 3), true).result, result::kMalformed);
  EXPECT_EQ(InspectBytes(body.substr(0, 40), true).result, result::kMalformed);
  EXPECT_EQ(InspectBytes(body.substr(0, 40), false).outcome, Outcome::kNeedMore);
}

TEST(GrpcAdapterInspectorTest, MapsRequestNamesToFleetMethods) {
  EXPECT_EQ(FleetMethodFor("PullMessagesRequest"), "/flwr.proto.Fleet/PullMessages");
  EXPECT_EQ(FleetMethodFor("GetFabRequest"), "/flwr.proto.Fleet/GetFab");
  EXPECT_EQ(FleetMethodFor("Push_Object2Request"), "/flwr.proto.Fleet/Push_Object2");
  EXPECT_EQ(FleetMethodFor("PullMessagesResponse"), "");
  EXPECT_EQ(FleetMethodFor("_XRequest"), "");
  EXPECT_EQ(FleetMethodFor(""), "");
}

}  // namespace
}  // namespace sepal::filters::grpc_adapter
