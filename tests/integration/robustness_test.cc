// Bad input never hurts other clients: HTTP/1.1 text, TLS bytes and garbage on the h2c
// port, oversized header lists, rapid reset floods.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <filesystem>
#include <fstream>
#include <thread>

#include "tests/fuzz/fake_h2_upstream.h"
#include "proxy/metrics/metrics.h"
#include "tests/integration/loopback.h"
#include "tests/integration/proxy_fixture.h"
#include "tests/support/h2_test_client.h"

namespace sepal::test {
namespace {

// Sends `bytes` on a fresh TCP connection and returns what comes back before the server
// closes (or 3 s pass). `closed` tells whether the server closed the connection.
std::string RawExchange(uint16_t port, const std::string& bytes, bool* closed) {
  int fd = ConnectLoopback(port);
  EXPECT_GE(fd, 0);
  EXPECT_EQ(write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  std::string received;
  *closed = false;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 100) <= 0) continue;
    char buf[4096];
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n <= 0) {
      *closed = true;
      break;
    }
    received.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return received;
}

class RobustnessTest : public ProxyTest {
 protected:
  void ExpectStillServing() {
    auto stub = Echo::NewStub(NewChannel(99));
    grpc::ClientContext context;
    context.set_deadline(In(std::chrono::seconds(5)));
    EchoRequest request;
    request.set_payload("still here");
    EchoResponse response;
    grpc::Status status = stub->Unary(&context, request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(response.payload(), "still here");
  }
};

TEST_F(RobustnessTest, Http11RequestGetsAClearAnswer) {
  StartDefault();
  bool closed = false;
  std::string reply =
      RawExchange(port_, "GET /metrics HTTP/1.1\r\nHost: sepal\r\n\r\n", &closed);
  EXPECT_TRUE(reply.starts_with("HTTP/1.1 505")) << reply;
  EXPECT_NE(reply.find("HTTP/2"), std::string::npos);
  EXPECT_TRUE(closed);
  ExpectStillServing();
}

// sepal speaks only after it has seen a client's first bytes, even when the peer's identity
// arrives before them (the identity answer used to flush the queued SETTINGS, so a slow
// HTTP/1.1 client got binary frames instead of the 505: curl's "Received HTTP/0.9").
TEST_F(RobustnessTest, SlowHttp11RequestAfterTheIdentityStillGetsTheAnswer) {
  StartSepal(std::string(kLoopbackSupernodeIdentityYaml) + DefaultConfigYaml(backend_->address()));
  int fd = ConnectLoopback(port_);
  ASSERT_GE(fd, 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the identity is known
  const std::string request = "GET / HTTP/1.1\r\nHost: sepal\r\n\r\n";
  ASSERT_EQ(send(fd, request.data(), request.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(request.size()));
  std::string reply;
  char buf[4096];
  ssize_t n;
  while ((n = recv(fd, buf, sizeof(buf), 0)) > 0) reply.append(buf, static_cast<size_t>(n));
  close(fd);
  EXPECT_TRUE(reply.starts_with("HTTP/1.1 505")) << reply.size() << " bytes: " << reply;
  ExpectStillServing();
}

// A connection that never sends a byte does not hold up a drain (drain_timeout is 5 s here).
TEST_F(RobustnessTest, SilentConnectionDoesNotHoldUpTheDrain) {
  StartSepal(std::string(kLoopbackSupernodeIdentityYaml) + DefaultConfigYaml(backend_->address()));
  int fd = ConnectLoopback(port_);
  ASSERT_GE(fd, 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  auto started = std::chrono::steady_clock::now();
  server_->Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(2));
  char byte;
  EXPECT_EQ(recv(fd, &byte, 1, 0), 0);  // closed, without a byte
  close(fd);
  server_.reset();
}

TEST_F(RobustnessTest, TlsClientHelloOnCleartextPortIsClosed) {
  StartDefault();
  bool closed = false;
  std::string hello("\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", 11);
  hello.append(200, '\x42');
  std::string reply = RawExchange(port_, hello, &closed);
  EXPECT_TRUE(closed);
  EXPECT_TRUE(reply.empty());
  ExpectStillServing();
}

TEST_F(RobustnessTest, GarbageIsClosed) {
  StartDefault();
  bool closed = false;
  RawExchange(port_, std::string(1000, '\x07'), &closed);
  EXPECT_TRUE(closed);
  ExpectStillServing();
}

// A flood of bad clients does not flood the log: each kind of line is rate-limited, while
// the metric counts every one.
TEST_F(RobustnessTest, AFloodOfBadClientsDoesNotFloodTheLog) {
  StartDefault();
  char path[] = "/tmp/sepal-log-XXXXXX";
  int log_fd = mkstemp(path);
  ASSERT_GE(log_fd, 0);
  int saved_stderr = dup(STDERR_FILENO);
  dup2(log_fd, STDERR_FILENO);
  for (int i = 0; i < 60; ++i) {
    bool closed = false;
    RawExchange(port_, std::string(100, '\x07'), &closed);
    EXPECT_TRUE(closed);
  }
  dup2(saved_stderr, STDERR_FILENO);
  close(saved_stderr);
  std::ifstream in(path);
  std::string line;
  int lines = 0;
  while (std::getline(in, line)) {
    if (line.find("not an HTTP/2 connection preface") != std::string::npos) ++lines;
  }
  close(log_fd);
  std::remove(path);
  EXPECT_GE(lines, 1);
  EXPECT_LE(lines, 20);
  EXPECT_EQ(SeriesValue(metrics::DefaultRegistry().Serialize(),
                        R"(sepal_downstream_protocol_errors_total{listener="fleet",kind="bad_preface"})"),
            60);
  ExpectStillServing();
}

TEST_F(RobustnessTest, BrokenFramesAfterPrefaceGetGoAway) {
  StartDefault();
  H2TestClient::Options options;
  std::string error;
  auto client = H2TestClient::Connect(SepalAddress(), options, &error);
  ASSERT_NE(client, nullptr) << error;
  ASSERT_TRUE(client->WaitForSettings());
  // A DATA frame on stream 0 is a connection error (PROTOCOL_ERROR).
  std::string frame("\x00\x00\x04\x00\x00\x00\x00\x00\x00" "abcd", 13);
  ASSERT_TRUE(client->SendRaw(frame));
  EXPECT_TRUE(client->WaitForConnectionClose(std::chrono::seconds(3)));
  ASSERT_FALSE(client->goaways().empty());
  EXPECT_EQ(client->goaways().back().error_code, static_cast<uint32_t>(NGHTTP2_PROTOCOL_ERROR));
  ExpectStillServing();
}

TEST_F(RobustnessTest, OversizedHeaderListIsResourceExhausted) {
  StartDefault();
  std::string error;
  auto client = H2TestClient::Connect(SepalAddress(), &error);
  ASSERT_NE(client, nullptr) << error;
  H2Headers headers = H2TestClient::GrpcRequestHeaders("/sepal.test.Echo/Unary");
  for (int i = 0; i < 10; ++i) headers.emplace_back("x-big-" + std::to_string(i), std::string(3000, 'v'));
  int32_t id = client->SubmitRequest(headers, /*end_stream=*/false);
  ASSERT_GT(id, 0);
  ASSERT_TRUE(client->WaitForStreamClose(id, std::chrono::seconds(3)) ||
              client->stream(id).end_stream_received);
  EXPECT_EQ(client->stream(id).GrpcStatus(), 8);
  EXPECT_EQ(backend_->TotalCallCount(), 0);
  EXPECT_EQ(SeriesValue(metrics::DefaultRegistry().Serialize(),
                        R"(sepal_limit_rejections_total{listener="fleet",limit="max_header_list_bytes"})"),
            1);
  ExpectStillServing();
}

TEST_F(RobustnessTest, RapidResetFloodIsCutOffAndOthersKeepWorking) {
  StartDefault();
  std::string error;
  auto attacker = H2TestClient::Connect(SepalAddress(), &error);
  ASSERT_NE(attacker, nullptr) << error;
  ASSERT_TRUE(attacker->WaitForSettings());
  attacker->OpenAndResetStreams(H2TestClient::GrpcRequestHeaders("/sepal.test.Echo/Unary"), 3000);
  EXPECT_TRUE(attacker->WaitForGoAway(std::chrono::seconds(5)));
  EXPECT_TRUE(attacker->WaitForConnectionClose(std::chrono::seconds(5)));
  ExpectStillServing();
}

TEST_F(RobustnessTest, MaxConcurrentStreamsIsAdvertised) {
  StartDefault();
  std::string error;
  auto client = H2TestClient::Connect(SepalAddress(), &error);
  ASSERT_NE(client, nullptr) << error;
  ASSERT_TRUE(client->WaitForSettings());
  auto settings = client->server_settings();
  EXPECT_EQ(settings[NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS], 256u);
  EXPECT_EQ(settings[NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE], 16384u);
}

}  // namespace
}  // namespace sepal::test

namespace sepal::test {
namespace {

// Identity metadata is sepal's to set, in request trailers as in headers: a client's own
// tailscale-* trailers never reach the upstream (an nghttp2 upstream that answers with the
// trailers it received).
TEST_F(RobustnessTest, ClientTrailersLoseTheirTailscaleFields) {
  boost::asio::io_context io;
  auto guard = boost::asio::make_work_guard(io);
  std::string socket_path =
      (std::filesystem::temp_directory_path() / ("sepal-trailers-" + std::to_string(getpid())))
          .string();
  fuzz::FakeH2Upstream upstream(io, socket_path);
  std::thread runner([&io] { io.run(); });
  StartSepal("workers: 1\n" + std::string(kLoopbackSupernodeIdentityYaml) +
             "listeners:\n  - name: fleet\n    address: 127.0.0.1:0\n    routes:\n"
             "      - {match: /sepal.test.Echo/, upstream: raw}\n"
             "upstreams:\n  - {name: raw, address: \"unix:" + socket_path + "\"}\n");
  std::string error;
  auto client = H2TestClient::Connect(SepalAddress(), &error);
  ASSERT_NE(client, nullptr) << error;
  int32_t id = client->SubmitRequest(H2TestClient::GrpcRequestHeaders("/sepal.test.Echo/Trailers"));
  ASSERT_GT(id, 0);
  ASSERT_TRUE(client->SendData(id, H2TestClient::GrpcFrame("body"), false));
  ASSERT_TRUE(client->SendTrailers(id, {{"x-kept", "yes"},
                                        {"tailscale-user-login", "mallory@example.com"},
                                        {"tailscale-node-tags", "tag:admin"}}));
  ASSERT_TRUE(client->WaitForStreamClose(id, std::chrono::seconds(5)));
  const std::string& seen = client->stream(id).data;
  EXPECT_NE(seen.find("x-kept=yes"), std::string::npos) << seen;
  EXPECT_EQ(seen.find("tailscale-"), std::string::npos) << seen;
  server_->Stop();
  server_.reset();
  boost::asio::post(io, [&] { upstream.Stop(); });
  guard.reset();
  runner.join();
  std::filesystem::remove(socket_path);
}

}  // namespace
}  // namespace sepal::test
