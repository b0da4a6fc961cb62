// Self-tests of the REST test client, against the stand-in REST SuperLink (real sockets) and,
// for what that server never sends (chunked or read-until-close replies, interim responses,
// the client's exact bytes and source address), a canned one-thread server.
#include "tests/support/rest_client.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/write.hpp>
#include <mutex>
#include <string>
#include <thread>

#include "tests/proto/fleet.pb.h"
#include "tests/support/fake_rest_superlink.h"
#include "tests/support/payload.h"

namespace sepal::test {
namespace {

namespace asio = boost::asio;
using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::StartsWith;

std::string FleetBody(uint64_t node_id, const std::string& payload) {
  flwr::proto::FleetRequest request;
  request.mutable_node()->set_node_id(node_id);
  request.set_payload(payload);
  return request.SerializeAsString();
}

flwr::proto::FleetResponse Parse(const RestResponse& response) {
  flwr::proto::FleetResponse parsed;
  EXPECT_TRUE(parsed.ParseFromString(response.body)) << response.body_bytes << " bytes";
  return parsed;
}

std::unique_ptr<FakeRestSuperLink> StartLink() {
  auto link = FakeRestSuperLink::Start();
  EXPECT_NE(link, nullptr);
  return link;
}

// Answers every request head (bodies are not expected) with the same bytes, and records
// what it received and from where. Closes after each answer if asked.
class CannedServer {
 public:
  CannedServer(std::string reply, bool close_after)
      : reply_(std::move(reply)),
        close_after_(close_after),
        acceptor_(io_, {asio::ip::make_address("127.0.0.1"), 0}) {
    thread_ = std::thread([this] { Run(); });
  }
  ~CannedServer() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
      if (connection_fd_ >= 0) ::shutdown(connection_fd_, SHUT_RDWR);
    }
    ::shutdown(acceptor_.native_handle(), SHUT_RDWR);
    thread_.join();
  }
  std::string address() const {
    return "127.0.0.1:" + std::to_string(acceptor_.local_endpoint().port());
  }
  std::string received() const {
    std::lock_guard lock(mutex_);
    return received_;
  }
  std::string peer() const {
    std::lock_guard lock(mutex_);
    return peer_;
  }

 private:
  void Run() {
    while (true) {
      asio::ip::tcp::socket socket(io_);
      boost::system::error_code ec;
      acceptor_.accept(socket, ec);
      {
        std::lock_guard lock(mutex_);
        if (stopping_ || ec) return;
        peer_ = socket.remote_endpoint(ec).address().to_string();
        connection_fd_ = socket.native_handle();
      }
      std::string buffer;
      while (true) {
        size_t n = asio::read_until(socket, asio::dynamic_buffer(buffer), "\r\n\r\n", ec);
        if (ec) break;
        {
          std::lock_guard lock(mutex_);
          received_.append(buffer, 0, n);
        }
        buffer.erase(0, n);
        asio::write(socket, asio::buffer(reply_), ec);
        if (ec || close_after_) break;
      }
      std::lock_guard lock(mutex_);
      connection_fd_ = -1;
      socket.close(ec);
    }
  }

  const std::string reply_;
  const bool close_after_;
  asio::io_context io_;
  asio::ip::tcp::acceptor acceptor_;
  mutable std::mutex mutex_;
  bool stopping_ = false;
  int connection_fd_ = -1;
  std::string received_;
  std::string peer_;
  std::thread thread_;
};

TEST(RestClientTest, KeepsOneConnectionAcrossPostsWithRequestsHeaders) {
  auto link = StartLink();
  ASSERT_NE(link, nullptr);
  RestClient client;
  ASSERT_TRUE(client.Connect(link->address())) << client.last_error();
  for (int i = 0; i < 3; ++i) {
    PostOptions post;
    post.body = FleetBody(7, "abc" + std::to_string(i));
    RestResponse response = client.Post("/api/v0/fleet/pull-messages", post);
    ASSERT_EQ(response.status, 200) << response.error;
    EXPECT_TRUE(response.error.empty());
    EXPECT_FALSE(response.connection_closed);
    EXPECT_EQ(response.Header("Content-Type"), "application/protobuf");
    EXPECT_EQ(response.headers.at("content-type"), "application/protobuf");
    EXPECT_EQ(response.body_bytes, response.body.size());
    EXPECT_EQ(response.body_fnv1a, Fnv1aHex(response.body));
    flwr::proto::FleetResponse parsed = Parse(response);
    EXPECT_EQ(parsed.node().node_id(), 7u);
    EXPECT_EQ(parsed.payload(), "abc" + std::to_string(i));
    const auto& seen = parsed.seen_metadata();
    EXPECT_THAT(seen, Contains("host=" + link->address()));
    EXPECT_THAT(seen, Contains("user-agent=python-requests/2.28.1"));
    EXPECT_THAT(seen, Contains("accept-encoding=gzip, deflate"));
    EXPECT_THAT(seen, Contains("accept=application/protobuf"));
    EXPECT_THAT(seen, Contains("content-type=application/protobuf"));
    EXPECT_THAT(seen, Contains("connection=keep-alive"));
    EXPECT_THAT(seen, Contains("content-length=" + std::to_string(post.body.size())));
  }
  EXPECT_EQ(client.connects(), 1);
  EXPECT_EQ(link->ConnectionCount(), 1);
  EXPECT_EQ(link->CallCount("/api/v0/fleet/pull-messages"), 3);
}

TEST(RestClientTest, ConnectsLazilyOnTheFirstPost) {
  auto link = StartLink();
  ASSERT_NE(link, nullptr);
  RestClient client;
  ASSERT_TRUE(client.Connect(link->address()));
  client.Close();
  EXPECT_EQ(client.Post("/api/v0/fleet/ping", {.body = FleetBody(1, "")}).status, 200);
  EXPECT_EQ(client.Post("/api/v0/fleet/ping", {.body = FleetBody(1, "")}).status, 200);
  EXPECT_EQ(client.connects(), 2);  // the explicit one, and one after Close
  EXPECT_EQ(link->ConnectionCount(), 2);
}

TEST(RestClientTest, StreamsA64MiBGeneratedBody) {
  auto link = StartLink();
  ASSERT_NE(link, nullptr);
  RestClient client;
  ASSERT_TRUE(client.Connect(link->address()));
  constexpr uint64_t kSize = 64 << 20;
  RestResponse response = client.Post("/api/v0/fleet/push-object", {.generated_body_bytes = kSize});
  ASSERT_EQ(response.status, 200) << response.error;
  flwr::proto::FleetResponse parsed = Parse(response);
  EXPECT_THAT(parsed.seen_metadata(), Contains("body-bytes=" + std::to_string(kSize)));
  EXPECT_THAT(parsed.seen_metadata(), Contains("body-fnv1a=" + PayloadFnv1aHex(kSize)));
  EXPECT_THAT(parsed.seen_metadata(), Contains("content-length=" + std::to_string(kSize)));
  EXPECT_EQ(link->BodyBytes(), kSize);
}

TEST(RestClientTest, SendsChunkedBodies) {
  auto link = StartLink();
  ASSERT_NE(link, nullptr);
  RestClient client;
  ASSERT_TRUE(client.Connect(link->address()));
  // Small chunks of a FleetRequest: the server reassembles and parses it.
  std::string body = FleetBody(11, "chunked payload");
  RestResponse small =
      client.Post("/api/v0/fleet/push-messages", {.body = body, .chunked = true, .chunk_bytes = 7});
  ASSERT_EQ(small.status, 200) << small.error;
  flwr::proto::FleetResponse parsed = Parse(small);
  EXPECT_EQ(parsed.payload(), "chunked payload");
  EXPECT_THAT(parsed.seen_metadata(), Contains("transfer-encoding=chunked"));
  EXPECT_THAT(parsed.seen_metadata(), Contains("body-fnv1a=" + Fnv1aHex(body)));
  for (const std::string& line : parsed.seen_metadata()) {
    EXPECT_THAT(line, ::testing::Not(StartsWith("content-length=")));
  }
  // A generated body, slowly: three chunks with pauses between them.
  RestResponse slow = client.Post("/api/v0/fleet/push-object",
                                  {.generated_body_bytes = 300000,
                                   .chunked = true,
                                   .chunk_bytes = 100000,
                                   .pause_between_chunks = std::chrono::milliseconds(30)});
  ASSERT_EQ(slow.status, 200) << slow.error;
  EXPECT_GE(slow.elapsed, std::chrono::milliseconds(60));
  EXPECT_THAT(Parse(slow).seen_metadata(), Contains("body-bytes=300000"));
  EXPECT_THAT(Parse(slow).seen_metadata(), Contains("body-fnv1a=" + PayloadFnv1aHex(300000)));
  EXPECT_EQ(client.connects(), 1);
}

TEST(RestClientTest, WaitsFor100ContinueBeforeTheBody) {
  auto link = StartLink();
  ASSERT_NE(link, nullptr);
  RestClient client;
  ASSERT_TRUE(client.Connect(link->address()));
  RestResponse response = client.Post("/api/v0/fleet/push-messages",
                                      {.body = FleetBody(3, "after 100"), .expect_continue = true});
  ASSERT_EQ(response.status, 200) << response.error;
  // Well under the 1 s the client waits when no 100 comes.
  EXPECT_LT(response.elapsed, std::chrono::milliseconds(900));
  flwr::proto::FleetResponse parsed = Parse(response);
  EXPECT_EQ(parsed.payload(), "after 100");
  EXPECT_THAT(parsed.seen_metadata(), Contains("expect=100-continue"));
  // The interim response did not disturb the connection.
  EXPECT_EQ(client.Post("/api/v0/fleet/ping", {.body = FleetBody(3, "")}).status, 200);
  EXPECT_EQ(client.connects(), 1);
}

TEST(RestClientTest, StreamsALargeGeneratedReply) {
  auto link = StartLink();
  ASSERT_NE(link, nullptr);
  RestClient client;
  ASSERT_TRUE(client.Connect(link->address()));
  constexpr uint64_t kSize = 32 << 20;
  RestResponse response = client.Post(
      "/api/v0/fleet/pull-object",
      {.body = FleetBody(9, ""), .headers = {{"x-reply-bytes", std::to_string(kSize)}}});
  ASSERT_EQ(response.status, 200) << response.error;
  ASSERT_GT(response.body_bytes, kSize);
  EXPECT_EQ(response.Header("content-length"), std::to_string(response.body_bytes));
  // Only keep_body bytes are held: the protobuf head, then the generated payload's start.
  ASSERT_EQ(response.body.size(), size_t{1} << 20);
  size_t head = static_cast<size_t>(response.body_bytes - kSize);
  EXPECT_EQ(response.body.substr(head, 5), "abcde");
  Fnv1a expected;
  expected.Update(std::string_view(response.body).substr(0, head));
  expected.UpdatePayload(0, kSize);
  EXPECT_EQ(response.body_fnv1a, expected.Hex());
  EXPECT_FALSE(response.connection_closed);
}

TEST(RestClientTest, ReportsA404AndKeepsTheConnection) {
  auto link = StartLink();
  ASSERT_NE(link, nullptr);
  RestClient client;
  ASSERT_TRUE(client.Connect(link->address()));
  RestResponse missing = client.Post("/api/v0/fleet/no-such-method");
  EXPECT_EQ(missing.status, 404);
  EXPECT_EQ(missing.body, "Not Found");
  EXPECT_EQ(missing.body_bytes, 9u);
  EXPECT_TRUE(missing.error.empty());
  EXPECT_FALSE(missing.connection_closed);
  RestResponse refused = client.Post("/api/v0/fleet/get-run", {.protobuf_headers = false});
  EXPECT_EQ(refused.status, 400);
  EXPECT_THAT(refused.body, HasSubstr("Missing header `Content-Type`"));
  EXPECT_EQ(client.Post("/api/v0/fleet/get-run", {.body = FleetBody(1, "")}).status, 200);
  EXPECT_EQ(client.connects(), 1);
  EXPECT_EQ(link->ConnectionCount(), 1);
}

TEST(RestClientTest, ServesAUnixSocket) {
  std::string path = "/tmp/sepal-rest-client-" + std::to_string(::getpid()) + ".sock";
  auto link = FakeRestSuperLink::Start("unix:" + path);
  ASSERT_NE(link, nullptr);
  RestClient client;
  ASSERT_TRUE(client.Connect("unix:" + path)) << client.last_error();
  RestResponse response =
      client.Post("/api/v0/fleet/send-node-heartbeat", {.body = FleetBody(4, "over unix")});
  ASSERT_EQ(response.status, 200) << response.error;
  EXPECT_EQ(Parse(response).payload(), "over unix");
  EXPECT_THAT(Parse(response).seen_metadata(), Contains("host=localhost"));
}

TEST(RestClientTest, RawAccessAndServerClose) {
  auto link = StartLink();
  ASSERT_NE(link, nullptr);
  RestClient client;
  ASSERT_TRUE(client.Connect(link->address()));
  std::string body = FleetBody(2, "raw");
  ASSERT_TRUE(client.WriteRaw(
      "POST /api/v0/fleet/ping HTTP/1.1\r\nHost: x\r\nContent-Type: application/protobuf\r\n"
      "Accept: application/protobuf\r\nConnection: close\r\nContent-Length: " +
      std::to_string(body.size()) + "\r\n\r\n" + body));
  RestResponse response = client.ReadResponse();
  ASSERT_EQ(response.status, 200) << response.error;
  EXPECT_EQ(response.Header("connection"), "close");
  EXPECT_TRUE(response.connection_closed);
  EXPECT_EQ(Parse(response).payload(), "raw");
  EXPECT_TRUE(client.WaitForClose(std::chrono::seconds(2)));
  // The next Post reopens, as requests' pool does.
  EXPECT_EQ(client.Post("/api/v0/fleet/ping", {.body = FleetBody(2, "")}).status, 200);
  EXPECT_EQ(client.connects(), 2);
  EXPECT_EQ(link->ConnectionCount(), 2);
  // An open keep-alive connection is not closed by the server.
  EXPECT_FALSE(client.WaitForClose(std::chrono::milliseconds(50)));
}

TEST(RestClientTest, RefusesNonLoopbackAddresses) {
  RestClient client;
  EXPECT_FALSE(client.Connect("192.0.2.1:80"));
  EXPECT_THAT(client.last_error(), HasSubstr("not a loopback address"));
  EXPECT_FALSE(client.Connect("example.com:80"));
  EXPECT_FALSE(client.Connect("[2001:db8::1]:80"));
  RestResponse response = client.Post("/api/v0/fleet/ping");
  EXPECT_EQ(response.status, 0);
  EXPECT_THAT(response.error, HasSubstr("not a loopback address"));
  EXPECT_EQ(client.connects(), 0);
  EXPECT_FALSE(client.Connect("127.0.0.1:notaport"));
}

TEST(RestClientTest, ReportsAConnectionRefused) {
  int port = 0;
  {
    auto link = StartLink();
    ASSERT_NE(link, nullptr);
    port = link->port();
  }
  RestClient client;
  EXPECT_FALSE(client.Connect("127.0.0.1:" + std::to_string(port)));
  EXPECT_THAT(client.last_error(), HasSubstr("refused"));
}

TEST(RestClientTest, SkipsInterimResponsesAndReadsChunkedReplies) {
  CannedServer server(
      "HTTP/1.1 100 Continue\r\n\r\n"
      "HTTP/1.1 103 Early Hints\r\nLink: </style.css>\r\n\r\n"
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Dup: a\r\nX-Dup: b\r\n\r\n"
      "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
      false);
  RestClient client;
  ASSERT_TRUE(client.Connect(server.address()));
  for (int i = 0; i < 2; ++i) {
    RestResponse response = client.Post("/chunked");
    ASSERT_EQ(response.status, 200) << response.error;
    EXPECT_EQ(response.body, "hello world");
    EXPECT_EQ(response.body_bytes, 11u);
    EXPECT_EQ(response.body_fnv1a, Fnv1aHex("hello world"));
    EXPECT_EQ(response.Header("x-dup"), "a, b");
    EXPECT_FALSE(response.connection_closed);
  }
  EXPECT_EQ(client.connects(), 1);
  // Raw reads can see the interim responses.
  ASSERT_TRUE(client.WriteRaw("POST /raw HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"));
  EXPECT_EQ(client.ReadResponse(false).status, 100);
  EXPECT_EQ(client.ReadResponse(false).status, 103);
  EXPECT_EQ(client.ReadResponse(false).body, "hello world");
}

TEST(RestClientTest, ReadsRepliesUntilCloseAndReconnects) {
  CannedServer server(
      "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + std::string(100000, 'z'), true);
  RestClient::Options options;
  options.keep_body = 1000;
  RestClient client(options);
  ASSERT_TRUE(client.Connect(server.address()));
  for (int i = 0; i < 2; ++i) {
    RestResponse response = client.Post("/until-close");
    ASSERT_EQ(response.status, 200) << response.error;
    EXPECT_EQ(response.body_bytes, 100000u);
    EXPECT_EQ(response.body, std::string(1000, 'z'));
    EXPECT_EQ(response.body_fnv1a, Fnv1aHex(std::string(100000, 'z')));
    EXPECT_TRUE(response.connection_closed);
  }
  EXPECT_EQ(client.connects(), 2);
}

TEST(RestClientTest, SendsRequestsHeadAfterThePreambleFromTheBindAddress) {
  CannedServer server("HTTP/1.1 204 No Content\r\n\r\n", false);
  RestClient::Options options;
  options.bind_address = "127.0.0.2";
  options.preamble = "PROXY TCP4 100.64.0.7 127.0.0.1 40000 9095\r\n";
  RestClient client(options);
  ASSERT_TRUE(client.Connect(server.address())) << client.last_error();
  RestResponse response =
      client.Post("/api/v0/fleet/ping", {.headers = {{"x-extra", "1"}, {"user-agent", "me"}}});
  ASSERT_EQ(response.status, 204) << response.error;
  EXPECT_EQ(response.body_bytes, 0u);
  EXPECT_EQ(server.peer(), "127.0.0.2");
  EXPECT_EQ(server.received(), options.preamble +
                                   "POST /api/v0/fleet/ping HTTP/1.1\r\n"
                                   "Host: " +
                                   server.address() +
                                   "\r\n"
                                   "User-Agent: me\r\n"
                                   "Accept-Encoding: gzip, deflate\r\n"
                                   "Accept: application/protobuf\r\n"
                                   "Connection: keep-alive\r\n"
                                   "Content-Type: application/protobuf\r\n"
                                   "x-extra: 1\r\n"
                                   "Content-Length: 0\r\n\r\n");
}

TEST(RestClientTest, BindsTheSourceAddressTowardTheFake) {
  auto link = StartLink();
  ASSERT_NE(link, nullptr);
  RestClient::Options options;
  options.bind_address = "127.0.0.3";
  RestClient client(options);
  ASSERT_TRUE(client.Connect(link->address())) << client.last_error();
  EXPECT_EQ(client.Post("/api/v0/fleet/ping", {.body = FleetBody(1, "")}).status, 200);
  RestClient::Options bad;
  bad.bind_address = "::1";
  RestClient mismatched(bad);
  EXPECT_FALSE(mismatched.Connect(link->address()));
}

}  // namespace
}  // namespace sepal::test
