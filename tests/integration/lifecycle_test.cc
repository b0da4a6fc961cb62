// Call lifecycle through sepal: cancellation both ways, deadlines, upstream down and back,
// upstream GOAWAY, graceful drain.
#include <atomic>
#include <thread>

#include "tests/integration/proxy_fixture.h"
#include "tests/support/h2_test_client.h"

namespace sepal::test {
namespace {

TEST_F(ProxyTest, ClientCancellationReachesTheSuperLink) {
  StartDefault();
  auto stub = Control::NewStub(NewChannel());
  grpc::ClientContext context;
  ControlRequest request;
  request.set_log_lines(100000);
  request.set_interval_ms(10);
  auto reader = stub->StreamLogs(&context, request);
  ControlResponse response;
  ASSERT_TRUE(reader->Read(&response));
  context.TryCancel();
  EXPECT_TRUE(backend_->WaitForCancelled(1, std::chrono::seconds(5)));
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
}

TEST_F(ProxyTest, RstStreamFromClientIsForwardedWithItsCode) {
  StartDefault();
  std::string error;
  auto client = H2TestClient::Connect(SepalAddress(), &error);
  ASSERT_NE(client, nullptr) << error;
  int32_t id = client->SubmitRequest(H2TestClient::GrpcRequestHeaders("/sepal.test.Echo/Bidi"));
  ASSERT_GT(id, 0);
  EchoRequest request;
  request.set_payload("first");
  ASSERT_TRUE(client->SendData(id, H2TestClient::GrpcFrame(request.SerializeAsString()), false));
  ASSERT_TRUE(client->WaitForData(id, 5));
  ASSERT_TRUE(client->ResetStream(id, NGHTTP2_CANCEL));
  EXPECT_TRUE(backend_->WaitForCancelled(1, std::chrono::seconds(5)));
}

TEST_F(ProxyTest, ClientDeadlineEndsTheCallAndCancelsUpstream) {
  StartDefault();
  auto stub = Echo::NewStub(NewChannel());
  grpc::ClientContext context;
  context.set_deadline(In(std::chrono::milliseconds(300)));
  EchoRequest request;
  request.set_sleep_ms(5000);
  EchoResponse response;
  auto start = std::chrono::steady_clock::now();
  grpc::Status status = stub->Unary(&context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(3));
  EXPECT_TRUE(backend_->WaitForCancelled(1, std::chrono::seconds(5)));
}

TEST_F(ProxyTest, SepalAnswersDeadlineExceededWhenGrpcTimeoutExpires) {
  StartDefault();
  std::string error;
  auto client = H2TestClient::Connect(SepalAddress(), &error);
  ASSERT_NE(client, nullptr) << error;
  H2Headers headers = H2TestClient::GrpcRequestHeaders("/sepal.test.Echo/Unary");
  headers.emplace_back("grpc-timeout", "200m");
  int32_t id = client->SubmitRequest(headers);
  EchoRequest request;
  request.set_sleep_ms(3000);
  ASSERT_TRUE(client->SendData(id, H2TestClient::GrpcFrame(request.SerializeAsString()), true));
  ASSERT_TRUE(client->WaitForStreamClose(id, std::chrono::seconds(2)));
  EXPECT_EQ(client->stream(id).GrpcStatus(), 4);
  // The upstream also learnt that nobody waits any more.
  EXPECT_TRUE(backend_->WaitForCancelled(1, std::chrono::seconds(5)));
}

// Streams that end (client reset) just as their grpc-timeout fires: when the worker sees
// both in one turn, the timer's handler is already queued when the stream is destroyed and
// runs afterwards with a success code. It must not touch the stream (ASan catches it).
// A busy worker (another client hammering it) makes such turns common; the reset times are
// spread around the deadline so that many streams land in the window.
TEST_F(ProxyTest, DeadlineFiringAsTheStreamEndsIsHarmless) {
  StartDefault();
  std::atomic<bool> stop{false};
  std::atomic<int> background_failures{0};
  std::thread load([&] {
    auto stub = Echo::NewStub(NewChannel(1));
    while (!stop.load()) {
      grpc::ClientContext context;
      EchoRequest request;
      request.set_payload("busy");
      EchoResponse response;
      if (!stub->Unary(&context, request, &response).ok()) background_failures.fetch_add(1);
    }
  });
  EchoRequest slow;
  slow.set_sleep_ms(2000);
  std::string body = H2TestClient::GrpcFrame(slow.SerializeAsString());
  H2Headers headers = H2TestClient::GrpcRequestHeaders("/sepal.test.Echo/Unary");
  headers.emplace_back("grpc-timeout", "20m");
  for (int round = 0; round < 12; ++round) {
    std::string error;
    auto client = H2TestClient::Connect(SepalAddress(), &error);
    ASSERT_NE(client, nullptr) << error;
    std::vector<int32_t> ids;
    for (int i = 0; i < 40; ++i) {
      int32_t id = client->SubmitRequest(headers);
      ASSERT_GT(id, 0);
      ASSERT_TRUE(client->SendData(id, body, true));
      ids.push_back(id);
    }
    // Reset them one by one from shortly before to shortly after the deadline.
    std::this_thread::sleep_for(std::chrono::microseconds(17000 + 250 * round));
    for (int32_t id : ids) {
      if (!client->stream(id).closed) client->ResetStream(id);
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    client->PumpFor(std::chrono::milliseconds(30));
  }
  stop.store(true);
  load.join();
  EXPECT_EQ(background_failures.load(), 0);
  // Still serving, and still answering 4 when a deadline really passes.
  std::string error;
  auto client = H2TestClient::Connect(SepalAddress(), &error);
  ASSERT_NE(client, nullptr) << error;
  int32_t id = client->SubmitRequest(headers);
  ASSERT_TRUE(client->SendData(id, body, true));
  ASSERT_TRUE(client->WaitForStreamClose(id, std::chrono::seconds(2)));
  EXPECT_EQ(client->stream(id).GrpcStatus(), 4);
}

TEST_F(ProxyTest, GrpcTimeoutIsPassedToTheUpstream) {
  StartDefault();
  auto stub = Echo::NewStub(NewChannel());
  grpc::ClientContext context;
  context.set_deadline(In(std::chrono::seconds(30)));
  EchoRequest request;
  request.set_echo_metadata(true);
  EchoResponse response;
  ASSERT_TRUE(stub->Unary(&context, request, &response).ok());
  // grpc++ servers consume grpc-timeout themselves; it shows as the server's deadline.
  EXPECT_EQ(backend_->CallCount("/sepal.test.Echo/Unary"), 1);
}

TEST_F(ProxyTest, UpstreamDownGivesUnavailablePromptlyAndRecovers) {
  StartDefault();
  int backend_port = backend_->port();
  auto stub = Echo::NewStub(NewChannel());
  {
    grpc::ClientContext context;
    EchoRequest request;
    EchoResponse response;
    ASSERT_TRUE(stub->Unary(&context, request, &response).ok());
  }
  backend_->Shutdown();
  backend_.reset();
  for (int i = 0; i < 3; ++i) {
    grpc::ClientContext context;
    context.set_deadline(In(std::chrono::seconds(5)));
    EchoRequest request;
    EchoResponse response;
    auto start = std::chrono::steady_clock::now();
    grpc::Status status = stub->Unary(&context, request, &response);
    auto elapsed = std::chrono::steady_clock::now() - start;
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
    EXPECT_LT(elapsed, std::chrono::milliseconds(500));
    EXPECT_NE(status.error_message().find("superlink"), std::string::npos)
        << status.error_message();
  }
  backend_ = FakeSuperLink::Start("127.0.0.1:" + std::to_string(backend_port));
  ASSERT_NE(backend_, nullptr);
  grpc::ClientContext context;
  context.set_deadline(In(std::chrono::seconds(5)));
  EchoRequest request;
  request.set_payload("back");
  EchoResponse response;
  grpc::Status status = stub->Unary(&context, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.payload(), "back");
}

TEST_F(ProxyTest, UpstreamLostMidStreamEndsTheCallWithAnError) {
  StartDefault();
  auto stub = Control::NewStub(NewChannel());
  grpc::ClientContext context;
  context.set_deadline(In(std::chrono::seconds(10)));
  ControlRequest request;
  request.set_log_lines(100000);
  request.set_interval_ms(5);
  auto reader = stub->StreamLogs(&context, request);
  ControlResponse response;
  ASSERT_TRUE(reader->Read(&response));
  backend_->Shutdown();
  while (reader->Read(&response)) {
  }
  grpc::Status status = reader->Finish();
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << status.error_message();
}

TEST_F(ProxyTest, UpstreamRestartWithGoAwayDoesNotFailNewCalls) {
  StartDefault();
  int backend_port = backend_->port();
  auto stub = Echo::NewStub(NewChannel());
  auto call = [&](const std::string& payload) {
    grpc::ClientContext context;
    context.set_deadline(In(std::chrono::seconds(5)));
    EchoRequest request;
    request.set_payload(payload);
    EchoResponse response;
    return stub->Unary(&context, request, &response);
  };
  ASSERT_TRUE(call("one").ok());
  // Graceful shutdown sends GOAWAY on the pooled connection; a new backend takes the port.
  backend_->Shutdown();
  backend_ = FakeSuperLink::Start("127.0.0.1:" + std::to_string(backend_port));
  ASSERT_NE(backend_, nullptr);
  for (int i = 0; i < 20; ++i) {
    grpc::Status status = call("again");
    EXPECT_TRUE(status.ok()) << i << ": " << status.error_message();
  }
}

TEST_F(ProxyTest, DrainLetsInFlightStreamFinishThenCloses) {
  StartDefault();
  auto stub = Control::NewStub(NewChannel());
  grpc::ClientContext context;
  context.set_deadline(In(std::chrono::seconds(10)));
  ControlRequest request;
  request.set_log_lines(30);
  request.set_interval_ms(20);  // ~600 ms of streaming
  auto reader = stub->StreamLogs(&context, request);
  ControlResponse response;
  ASSERT_TRUE(reader->Read(&response));
  std::thread drainer([&] { EXPECT_TRUE(server_->Drain(std::chrono::seconds(5))); });
  int count = 1;
  while (reader->Read(&response)) ++count;
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_EQ(count, 30);
  drainer.join();
  // New connections are refused after the drain.
  std::string error;
  auto late = H2TestClient::Connect(SepalAddress(), &error);
  EXPECT_EQ(late, nullptr);
}

}  // namespace
}  // namespace sepal::test
