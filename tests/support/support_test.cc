// Self-tests of the stand-in SuperLink and the raw HTTP/2 client the proxy tests build on.
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "tests/proto/control.grpc.pb.h"
#include "tests/proto/echo.grpc.pb.h"
#include "tests/proto/fleet.grpc.pb.h"
#include "tests/support/fake_superlink.h"
#include "tests/support/h2_test_client.h"

namespace sepal::test {
namespace {

using std::chrono::milliseconds;
using ::testing::Contains;
using ::testing::ElementsAre;

std::shared_ptr<grpc::Channel> Dial(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(FakeSuperLink::kMaxMessageBytes);
  args.SetMaxSendMessageSize(FakeSuperLink::kMaxMessageBytes);
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
}

std::string MetadataValue(const std::multimap<grpc::string_ref, grpc::string_ref>& metadata,
                          const std::string& key) {
  auto it = metadata.find(key);
  return it == metadata.end() ? "<absent>" : std::string(it->second.data(), it->second.size());
}

void SetDeadline(grpc::ClientContext& context, milliseconds timeout) {
  context.set_deadline(std::chrono::system_clock::now() + timeout);
}

class FakeSuperLinkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    link_ = FakeSuperLink::Start("127.0.0.1:0");
    ASSERT_NE(link_, nullptr);
    ASSERT_GT(link_->port(), 0);
    ASSERT_EQ(link_->address(), "127.0.0.1:" + std::to_string(link_->port()));
    channel_ = Dial(link_->address());
    echo_ = Echo::NewStub(channel_);
  }

  std::unique_ptr<FakeSuperLink> link_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<Echo::Stub> echo_;
};

TEST_F(FakeSuperLinkTest, UnaryEchoesPayloadAndReportsMetadata) {
  grpc::ClientContext context;
  SetDeadline(context, milliseconds(5000));
  context.AddMetadata("x-token", "secret");
  context.AddMetadata("x-data-bin", std::string("\x00\x01\x02", 3));
  EchoRequest request;
  request.set_payload("hello");
  request.set_echo_metadata(true);
  EchoResponse response;
  ASSERT_TRUE(echo_->Unary(&context, request, &response).ok());

  EXPECT_EQ(response.payload(), "hello");
  EXPECT_THAT(response.seen_metadata(), Contains("x-token=secret"));
  EXPECT_THAT(response.seen_metadata(), Contains("x-data-bin=AAEC"));
  EXPECT_EQ(FakeSuperLink::FormatMetadata("x-data-bin", std::string("\x00\x01\x02", 3)),
            "x-data-bin=AAEC");
  EXPECT_EQ(MetadataValue(context.GetServerInitialMetadata(), "x-superlink"), "stand-in");
  EXPECT_EQ(MetadataValue(context.GetServerTrailingMetadata(), "echo-x-token"), "secret");
  EXPECT_EQ(MetadataValue(context.GetServerTrailingMetadata(), "echo-x-data-bin"),
            std::string("\x00\x01\x02", 3));
  EXPECT_EQ(link_->CallCount("/sepal.test.Echo/Unary"), 1);
  EXPECT_EQ(link_->CallCount("/sepal.test.Echo/Bidi"), 0);
}

TEST_F(FakeSuperLinkTest, UnaryResponseSizeAndStatus) {
  {
    grpc::ClientContext context;
    EchoRequest request;
    request.set_payload("ignored");
    request.set_response_size(100);
    EchoResponse response;
    ASSERT_TRUE(echo_->Unary(&context, request, &response).ok());
    EXPECT_EQ(response.payload(), FakeSuperLink::MakePayload(100));
  }
  {
    grpc::ClientContext context;
    EchoRequest request;
    request.set_status_code(grpc::StatusCode::RESOURCE_EXHAUSTED);
    request.set_status_message("too big");
    EchoResponse response;
    const grpc::Status status = echo_->Unary(&context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
    EXPECT_EQ(status.error_message(), "too big");
  }
}

TEST_F(FakeSuperLinkTest, FleetAndControlMethodsAreCountedByFullName) {
  auto fleet = flwr::proto::Fleet::NewStub(channel_);
  grpc::ClientContext context;
  context.AddMetadata("flwr-public-key-bin", "key");
  flwr::proto::FleetRequest request;
  request.set_payload("weights");
  flwr::proto::FleetResponse response;
  ASSERT_TRUE(fleet->CreateNode(&context, request, &response).ok());
  EXPECT_NE(response.node().node_id(), 0u);
  EXPECT_EQ(response.payload(), "weights");
  EXPECT_THAT(response.seen_metadata(),
              Contains(FakeSuperLink::FormatMetadata("flwr-public-key-bin", "key")));

  auto exec = flwr::proto::Exec::NewStub(channel_);
  grpc::ClientContext exec_context;
  flwr::proto::ControlRequest control_request;
  control_request.set_run_id(7);
  flwr::proto::ControlResponse control_response;
  ASSERT_TRUE(exec->ListRuns(&exec_context, control_request, &control_response).ok());
  EXPECT_EQ(control_response.run_id(), 7u);

  EXPECT_EQ(link_->CallCount("/flwr.proto.Fleet/CreateNode"), 1);
  EXPECT_EQ(link_->CallCount("/flwr.proto.Exec/ListRuns"), 1);
  EXPECT_EQ(link_->CallCount("/flwr.proto.Control/ListRuns"), 0);
  EXPECT_EQ(link_->TotalCallCount(), 2);
}

TEST_F(FakeSuperLinkTest, FleetReplyBytesSizesTheAnswer) {
  auto fleet = flwr::proto::Fleet::NewStub(channel_);
  flwr::proto::FleetRequest request;
  request.set_payload(std::string(4096, 'w'));
  const auto call = [&](const char* reply_bytes) {
    grpc::ClientContext context;
    if (reply_bytes != nullptr) context.AddMetadata("x-reply-bytes", reply_bytes);
    flwr::proto::FleetResponse response;
    EXPECT_TRUE(fleet->PullObject(&context, request, &response).ok());
    return response.payload();
  };
  EXPECT_EQ(call("100000"), FakeSuperLink::MakePayload(100000));  // a large object for a small ask
  EXPECT_EQ(call("100000"), FakeSuperLink::MakePayload(100000));  // again, from the cache
  EXPECT_EQ(call("0"), "");                                       // a small answer to an upload
  EXPECT_EQ(call("12x"), request.payload());                      // not a number: echo
  EXPECT_EQ(call(nullptr), request.payload());
}

TEST_F(FakeSuperLinkTest, ServerStreamSendsRequestedReplies) {
  grpc::ClientContext context;
  SetDeadline(context, milliseconds(5000));
  EchoRequest request;
  request.set_response_count(5);
  request.set_response_size(1000);
  auto reader = echo_->ServerStream(&context, request);
  EchoResponse response;
  int received = 0;
  while (reader->Read(&response)) {
    EXPECT_EQ(response.payload(), FakeSuperLink::MakePayload(1000));
    ++received;
  }
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_EQ(received, 5);
}

TEST_F(FakeSuperLinkTest, BidiAnswersInOrderAndEndsOnHalfClose) {
  grpc::ClientContext context;
  SetDeadline(context, milliseconds(5000));
  auto stream = echo_->Bidi(&context);
  for (int i = 0; i < 10; ++i) {
    EchoRequest request;
    request.set_payload("message " + std::to_string(i));
    ASSERT_TRUE(stream->Write(request));
    EchoResponse response;
    ASSERT_TRUE(stream->Read(&response));
    EXPECT_EQ(response.payload(), "message " + std::to_string(i));
    EXPECT_EQ(response.received_messages(), static_cast<uint32_t>(i + 1));
  }
  ASSERT_TRUE(stream->WritesDone());
  EchoResponse extra;
  EXPECT_FALSE(stream->Read(&extra));
  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_EQ(link_->CancelledCount(), 0);
}

TEST_F(FakeSuperLinkTest, ClientStreamCountsBytes) {
  grpc::ClientContext context;
  EchoResponse response;
  auto writer = echo_->ClientStream(&context, &response);
  EchoRequest request;
  request.set_response_size(10);
  request.set_payload(std::string(300, 'x'));
  ASSERT_TRUE(writer->Write(request));
  request.clear_response_size();
  ASSERT_TRUE(writer->Write(request));
  ASSERT_TRUE(writer->WritesDone());
  ASSERT_TRUE(writer->Finish().ok());
  EXPECT_EQ(response.received_bytes(), 600u);
  EXPECT_EQ(response.received_messages(), 2u);
  EXPECT_EQ(response.payload(), FakeSuperLink::MakePayload(10));
}

TEST_F(FakeSuperLinkTest, ServerSeesClientCancellation) {
  grpc::ClientContext context;
  EchoRequest request;
  request.set_response_count(1000);
  request.set_sleep_ms(20);
  auto reader = echo_->ServerStream(&context, request);
  EchoResponse response;
  ASSERT_TRUE(reader->Read(&response));
  context.TryCancel();
  EXPECT_TRUE(link_->WaitForCancelled(1, milliseconds(2000)));
  EXPECT_EQ(link_->CancelledCount("/sepal.test.Echo/ServerStream"), 1);
}

TEST_F(FakeSuperLinkTest, ServerSeesDeadlineOfSleepingUnary) {
  grpc::ClientContext context;
  SetDeadline(context, milliseconds(100));
  EchoRequest request;
  request.set_sleep_ms(10000);
  EchoResponse response;
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(echo_->Unary(&context, request, &response).error_code(),
            grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_TRUE(link_->WaitForCancelled(1, milliseconds(2000)));
  EXPECT_LT(std::chrono::steady_clock::now() - start, milliseconds(2000));
}

TEST_F(FakeSuperLinkTest, StreamLogsStopsWhenCancelled) {
  auto control = flwr::proto::Control::NewStub(channel_);
  grpc::ClientContext context;
  flwr::proto::ControlRequest request;
  request.set_log_lines(1000);
  request.set_interval_ms(10);
  auto reader = control->StreamLogs(&context, request);
  flwr::proto::ControlResponse response;
  ASSERT_TRUE(reader->Read(&response));
  EXPECT_EQ(response.log_output(), "log line 1 of 1000");
  context.TryCancel();
  EXPECT_TRUE(link_->WaitForCancelled(1, milliseconds(2000)));
  EXPECT_EQ(link_->CancelledCount("/flwr.proto.Control/StreamLogs"), 1);
}

TEST_F(FakeSuperLinkTest, LargeUnaryEcho) {
  const std::string payload = FakeSuperLink::MakePayload(64 << 20);
  grpc::ClientContext context;
  SetDeadline(context, milliseconds(60000));
  EchoRequest request;
  request.set_payload(payload);
  EchoResponse response;
  ASSERT_TRUE(echo_->Unary(&context, request, &response).ok());
  EXPECT_TRUE(response.payload() == payload);  // not EXPECT_EQ: no 64 MiB failure message
}

// --- concurrency: ActiveCalls, PeakActiveCalls, max_concurrent_calls ---

// A sleeping Echo.Unary on its own thread; the status is read after join().
struct SleepingCall {
  SleepingCall(Echo::Stub& stub, uint32_t sleep_ms) {
    thread = std::thread([this, &stub, sleep_ms] {
      grpc::ClientContext context;
      SetDeadline(context, milliseconds(10000));
      EchoRequest request;
      request.set_sleep_ms(sleep_ms);
      EchoResponse response;
      status = stub.Unary(&context, request, &response);
    });
  }
  grpc::Status Join() {
    thread.join();
    return status;
  }
  std::thread thread;
  grpc::Status status;
};

bool WaitUntil(const std::function<bool()>& condition, milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!condition()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(milliseconds(5));
  }
  return true;
}

std::unique_ptr<FakeSuperLink> StartWithLimit(int max_concurrent_calls) {
  FakeSuperLink::Options options;
  options.addresses = {"127.0.0.1:0"};
  options.max_concurrent_calls = max_concurrent_calls;
  return FakeSuperLink::Start(options);
}

TEST(FakeSuperLinkConcurrency, CallsPastTheLimitAreRejectedAtOnce) {
  auto link = StartWithLimit(2);
  ASSERT_NE(link, nullptr);
  auto echo = Echo::NewStub(Dial(link->address()));
  SleepingCall first(*echo, 1500);
  SleepingCall second(*echo, 1500);
  ASSERT_TRUE(WaitUntil([&] { return link->ActiveCalls() == 2; }, milliseconds(5000)));

  const auto start = std::chrono::steady_clock::now();
  SleepingCall third(*echo, 1500);
  const grpc::Status refused = third.Join();
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << refused.error_message();
  EXPECT_LT(std::chrono::steady_clock::now() - start, milliseconds(1000));  // not after a sleep
  EXPECT_EQ(link->RejectedCount(), 1);
  EXPECT_EQ(link->ActiveCalls(), 2);

  EXPECT_TRUE(first.Join().ok());
  EXPECT_TRUE(second.Join().ok());
  EXPECT_TRUE(WaitUntil([&] { return link->ActiveCalls() == 0; }, milliseconds(2000)));
  EXPECT_EQ(link->PeakActiveCalls(), 2);
  EXPECT_EQ(link->TotalCallCount(), 2);  // the refused call never reached a handler
  EXPECT_EQ(link->StatsJson(),
            R"({"calls":2,"active":0,"peak":2,"rejected":1,"cancelled":0})");

  // Below the limit again: calls are served; ResetPeak restarts from what runs now.
  link->ResetPeak();
  EXPECT_EQ(link->PeakActiveCalls(), 0);
  SleepingCall fourth(*echo, 0);
  EXPECT_TRUE(fourth.Join().ok());
  EXPECT_EQ(link->PeakActiveCalls(), 1);
  EXPECT_EQ(link->RejectedCount(), 1);
}

TEST(FakeSuperLinkConcurrency, UnlimitedByDefaultAndPeakCountsEveryCall) {
  auto link = FakeSuperLink::Start("127.0.0.1:0");
  ASSERT_NE(link, nullptr);
  auto echo = Echo::NewStub(Dial(link->address()));
  std::vector<std::unique_ptr<SleepingCall>> calls;
  for (int i = 0; i < 5; ++i) calls.push_back(std::make_unique<SleepingCall>(*echo, 800));
  EXPECT_TRUE(WaitUntil([&] { return link->ActiveCalls() == 5; }, milliseconds(5000)));
  for (auto& call : calls) EXPECT_TRUE(call->Join().ok());
  EXPECT_TRUE(WaitUntil([&] { return link->ActiveCalls() == 0; }, milliseconds(2000)));
  EXPECT_EQ(link->PeakActiveCalls(), 5);
  EXPECT_EQ(link->RejectedCount(), 0);
}

TEST(FakeSuperLinkConcurrency, CancelledCallsLeaveTheActiveCount) {
  auto link = StartWithLimit(1);
  ASSERT_NE(link, nullptr);
  auto echo = Echo::NewStub(Dial(link->address()));
  {
    grpc::ClientContext context;
    SetDeadline(context, milliseconds(200));
    EchoRequest request;
    request.set_sleep_ms(10000);
    EchoResponse response;
    EXPECT_EQ(echo->Unary(&context, request, &response).error_code(),
              grpc::StatusCode::DEADLINE_EXCEEDED);
  }
  ASSERT_TRUE(link->WaitForCancelled(1, milliseconds(2000)));
  EXPECT_TRUE(WaitUntil([&] { return link->ActiveCalls() == 0; }, milliseconds(2000)));
  SleepingCall next(*echo, 0);  // the slot is free again
  EXPECT_TRUE(next.Join().ok());
  EXPECT_EQ(link->RejectedCount(), 0);
  EXPECT_EQ(link->StatsJson(),
            R"({"calls":2,"active":0,"peak":1,"rejected":0,"cancelled":1})");
}

TEST(FakeSuperLinkConcurrency, UnaryWithoutItsBodyHoldsASlotAsInGrpcio) {
  auto link = StartWithLimit(1);
  ASSERT_NE(link, nullptr);
  std::string error;
  auto client = H2TestClient::Connect(link->address(), &error);
  ASSERT_NE(client, nullptr) << error;
  // HEADERS of an Echo.Unary call and never its message.
  const int32_t id = client->SubmitRequest(
      H2TestClient::GrpcRequestHeaders("/sepal.test.Echo/Unary", link->address()));
  ASSERT_GT(id, 0);
  ASSERT_TRUE(client->WaitFor([&] { return link->ActiveCalls() == 1; }, milliseconds(5000)));

  auto echo = Echo::NewStub(Dial(link->address()));
  SleepingCall refused(*echo, 0);
  EXPECT_EQ(refused.Join().error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);

  ASSERT_TRUE(client->ResetStream(id));
  EXPECT_TRUE(WaitUntil([&] { return link->ActiveCalls() == 0; }, milliseconds(2000)));
  SleepingCall served(*echo, 0);
  EXPECT_TRUE(served.Join().ok());
  EXPECT_EQ(link->RejectedCount(), 1);
  EXPECT_EQ(link->CancelledCount("/sepal.test.Echo/Unary"), 1);
}

TEST(FakeSuperLinkConcurrency, LimitedUnaryKeepsMetadataAndTrailersOnlyErrors) {
  auto link = StartWithLimit(10);
  ASSERT_NE(link, nullptr);
  auto echo = Echo::NewStub(Dial(link->address()));
  grpc::ClientContext context;
  SetDeadline(context, milliseconds(5000));
  context.AddMetadata("x-token", "secret");
  EchoRequest request;
  request.set_payload("hello");
  request.set_echo_metadata(true);
  EchoResponse response;
  ASSERT_TRUE(echo->Unary(&context, request, &response).ok());
  EXPECT_EQ(response.payload(), "hello");
  EXPECT_THAT(response.seen_metadata(), Contains("x-token=secret"));
  EXPECT_EQ(MetadataValue(context.GetServerInitialMetadata(), "x-superlink"), "stand-in");
  EXPECT_EQ(MetadataValue(context.GetServerTrailingMetadata(), "echo-x-token"), "secret");

  std::string error;
  auto client = H2TestClient::Connect(link->address(), &error);
  ASSERT_NE(client, nullptr) << error;
  EchoRequest failing;
  failing.set_status_code(static_cast<int>(grpc::StatusCode::NOT_FOUND));
  const int32_t id = client->SubmitRequest(
      H2TestClient::GrpcRequestHeaders("/sepal.test.Echo/Unary", link->address()));
  ASSERT_TRUE(client->SendData(id, H2TestClient::GrpcFrame(failing.SerializeAsString()), true));
  ASSERT_TRUE(client->WaitForStreamClose(id));
  EXPECT_TRUE(client->stream(id).trailers_only);
  EXPECT_EQ(client->stream(id).GrpcStatus(), static_cast<int>(grpc::StatusCode::NOT_FOUND));
}

TEST(FakeSuperLinkLifecycle, RestartsOnTheSamePort) {
  auto first = FakeSuperLink::Start("127.0.0.1:0");
  ASSERT_NE(first, nullptr);
  const int port = first->port();
  first->Shutdown();
  first.reset();

  auto second = FakeSuperLink::Start("127.0.0.1:" + std::to_string(port));
  ASSERT_NE(second, nullptr);
  EXPECT_EQ(second->port(), port);
  auto echo = Echo::NewStub(Dial(second->address()));
  grpc::ClientContext context;
  SetDeadline(context, milliseconds(5000));
  EchoRequest request;
  EchoResponse response;
  EXPECT_TRUE(echo->Unary(&context, request, &response).ok());
}

TEST(FakeSuperLinkLifecycle, ServesTcpAndUnixTogether) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("sepal-support-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  const std::string unix_address = "unix:" + (dir / "superlink.sock").string();
  FakeSuperLink::Options options;
  options.addresses = {"127.0.0.1:0", unix_address};
  auto link = FakeSuperLink::Start(options);
  ASSERT_NE(link, nullptr);
  EXPECT_THAT(link->addresses(),
              ElementsAre("127.0.0.1:" + std::to_string(link->port()), unix_address));
  for (const auto& address : link->addresses()) {
    auto echo = Echo::NewStub(Dial(address));
    grpc::ClientContext context;
    SetDeadline(context, milliseconds(5000));
    EchoRequest request;
    request.set_payload(address);
    EchoResponse response;
    ASSERT_TRUE(echo->Unary(&context, request, &response).ok()) << address;
    EXPECT_EQ(response.payload(), address);
  }
  link->Shutdown();
  std::filesystem::remove_all(dir);
}

TEST(FakeSuperLinkLifecycle, ShutdownEndsHungStreamsQuickly) {
  auto link = FakeSuperLink::Start("127.0.0.1:0");
  ASSERT_NE(link, nullptr);
  auto echo = Echo::NewStub(Dial(link->address()));
  grpc::ClientContext context;
  auto stream = echo->Bidi(&context);
  EchoRequest request;
  ASSERT_TRUE(stream->Write(request));
  EchoResponse response;
  ASSERT_TRUE(stream->Read(&response));
  const auto start = std::chrono::steady_clock::now();
  link->Shutdown();
  EXPECT_LT(std::chrono::steady_clock::now() - start, milliseconds(2000));
  EXPECT_FALSE(stream->Finish().ok());
}

// --- H2TestClient against the stand-in ---

class H2TestClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    link_ = FakeSuperLink::Start("127.0.0.1:0");
    ASSERT_NE(link_, nullptr);
    std::string error;
    client_ = H2TestClient::Connect(link_->address(), &error);
    ASSERT_NE(client_, nullptr) << error;
  }

  // The one EchoResponse a stream carried; nullopt if it carried anything else.
  static std::optional<EchoResponse> OnlyResponse(const H2Stream& stream) {
    const auto messages = stream.GrpcMessages();
    EchoResponse response;
    if (!messages || messages->size() != 1 || !response.ParseFromString(messages->front())) {
      return std::nullopt;
    }
    return response;
  }

  H2Headers UnaryHeaders() const {
    return H2TestClient::GrpcRequestHeaders("/sepal.test.Echo/Unary", link_->address());
  }

  std::unique_ptr<FakeSuperLink> link_;
  std::unique_ptr<H2TestClient> client_;
};

TEST_F(H2TestClientTest, HandBuiltUnaryCall) {
  H2Headers headers = UnaryHeaders();
  headers.emplace_back("grpc-timeout", "5S");
  headers.emplace_back("x-spoofed", "yes");
  const int32_t id = client_->SubmitRequest(headers);
  ASSERT_GT(id, 0);
  EchoRequest request;
  request.set_payload("over raw h2");
  ASSERT_TRUE(client_->SendData(id, H2TestClient::GrpcFrame(request.SerializeAsString()), true));
  ASSERT_TRUE(client_->WaitForStreamClose(id));

  const H2Stream& stream = client_->stream(id);
  EXPECT_EQ(stream.Header(":status"), "200");
  EXPECT_EQ(stream.Header("x-superlink"), "stand-in");
  EXPECT_FALSE(stream.trailers_only);
  EXPECT_EQ(stream.GrpcStatus(), 0);
  const std::optional<EchoResponse> response = OnlyResponse(stream);
  ASSERT_TRUE(response.has_value());
  EXPECT_EQ(response->payload(), "over raw h2");
  EXPECT_THAT(response->seen_metadata(), Contains("x-spoofed=yes"));
}

TEST_F(H2TestClientTest, LargeMessagesBothWaysUnderFlowControl) {
  const int32_t id = client_->SubmitRequest(UnaryHeaders());
  EchoRequest request;
  request.set_payload(FakeSuperLink::MakePayload(20 << 20));
  ASSERT_TRUE(client_->SendData(id, H2TestClient::GrpcFrame(request.SerializeAsString()), true,
                                milliseconds(30000)));
  ASSERT_TRUE(client_->WaitForStreamClose(id, milliseconds(30000)));
  const H2Stream& stream = client_->stream(id);
  EXPECT_EQ(stream.GrpcStatus(), 0);
  const std::optional<EchoResponse> response = OnlyResponse(stream);
  ASSERT_TRUE(response.has_value());
  EXPECT_TRUE(response->payload() == request.payload());
  EXPECT_GT(stream.data_frames, 1);
}

TEST_F(H2TestClientTest, ErrorStatusIsTrailersOnly) {
  const int32_t id = client_->SubmitRequest(UnaryHeaders());
  EchoRequest request;
  request.set_status_code(grpc::StatusCode::PERMISSION_DENIED);
  request.set_status_message("no");
  ASSERT_TRUE(client_->SendData(id, H2TestClient::GrpcFrame(request.SerializeAsString()), true));
  ASSERT_TRUE(client_->WaitForStreamClose(id));
  const H2Stream& stream = client_->stream(id);
  EXPECT_TRUE(stream.trailers_only);
  EXPECT_EQ(stream.headers_frames, 1);
  EXPECT_EQ(stream.GrpcStatus(), 7);
  EXPECT_EQ(stream.GrpcMessage(), "no");
  EXPECT_EQ(stream.Header("x-superlink"), std::nullopt);

  // After a pause the same error comes as HEADERS then trailers.
  const int32_t delayed = client_->SubmitRequest(UnaryHeaders());
  request.set_sleep_ms(1);
  ASSERT_TRUE(
      client_->SendData(delayed, H2TestClient::GrpcFrame(request.SerializeAsString()), true));
  ASSERT_TRUE(client_->WaitForStreamClose(delayed));
  const H2Stream& split = client_->stream(delayed);
  EXPECT_FALSE(split.trailers_only);
  EXPECT_EQ(split.headers_frames, 2);
  EXPECT_EQ(split.Header("x-superlink"), "stand-in");
  EXPECT_EQ(split.GrpcStatus(), 7);
}

TEST_F(H2TestClientTest, ResetStreamIsSeenAsCancellation) {
  const int32_t id =
      client_->SubmitRequest(H2TestClient::GrpcRequestHeaders("/sepal.test.Echo/Bidi"));
  EchoRequest request;
  request.set_payload("ping");
  ASSERT_TRUE(client_->SendData(id, H2TestClient::GrpcFrame(request.SerializeAsString()), false));
  ASSERT_TRUE(client_->WaitForData(id, 5));
  ASSERT_TRUE(client_->ResetStream(id));
  EXPECT_TRUE(link_->WaitForCancelled(1, milliseconds(2000)));
  EXPECT_EQ(link_->CancelledCount("/sepal.test.Echo/Bidi"), 1);
}

TEST_F(H2TestClientTest, RapidResetStillLeavesAUsableOrClosedConnection) {
  const auto ids = client_->OpenAndResetStreams(UnaryHeaders(), 200);
  EXPECT_EQ(ids.size(), 200u);
  // Whatever the server makes of it, the client must report it without hanging.
  client_->PumpFor(milliseconds(200));
  if (client_->connection_closed() || !client_->goaways().empty()) return;
  const int32_t id = client_->SubmitRequest(UnaryHeaders());
  ASSERT_TRUE(client_->SendData(id, H2TestClient::GrpcFrame(""), true));
  ASSERT_TRUE(client_->WaitForStreamClose(id));
  EXPECT_EQ(client_->stream(id).GrpcStatus(), 0);
}

TEST_F(H2TestClientTest, SeesServerSettings) {
  ASSERT_TRUE(client_->WaitForSettings());
  EXPECT_TRUE(client_->SendPing());
  EXPECT_TRUE(client_->WaitFor([&] { return client_->pings_acked() == 1; }, milliseconds(2000)));
}

TEST(H2TestClientRaw, Http1RequestGetsConnectionClosed) {
  auto link = FakeSuperLink::Start("127.0.0.1:0");
  ASSERT_NE(link, nullptr);
  H2TestClient::Options options;
  options.send_preface = false;
  auto client = H2TestClient::Connect(link->address(), options);
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(client->SendRaw("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
  EXPECT_TRUE(client->WaitForConnectionClose(milliseconds(5000)));
}

TEST(H2TestClientRaw, ConnectFailureIsReported) {
  auto link = FakeSuperLink::Start("127.0.0.1:0");
  ASSERT_NE(link, nullptr);
  const std::string address = link->address();
  link->Shutdown();
  link.reset();
  std::string error;
  EXPECT_EQ(H2TestClient::Connect(address, &error), nullptr);
  EXPECT_FALSE(error.empty());
}

}  // namespace
}  // namespace sepal::test
