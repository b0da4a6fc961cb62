// Self-tests of the stand-in REST SuperLink: Flower's REST wire format, keep-alive, streamed
// bodies both ways, 100-continue, unix sockets.
#include "tests/support/fake_rest_superlink.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <string>

#include "tests/proto/fleet.pb.h"

namespace sepal::test {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using ::testing::Contains;

using Response = http::response<http::string_body>;

// A keep-alive client on one TCP connection, as Python requests' session is.
class RestClient {
 public:
  explicit RestClient(uint16_t port) : socket_(io_) {
    socket_.connect({asio::ip::make_address("127.0.0.1"), port});
  }
  Response Post(const std::string& path, const std::string& body,
                std::vector<std::pair<std::string, std::string>> extra = {},
                bool protobuf_headers = true) {
    http::request<http::string_body> request{http::verb::post, path, 11};
    request.set(http::field::host, "superlink");
    if (protobuf_headers) {
      request.set(http::field::content_type, "application/protobuf");
      request.set(http::field::accept, "application/protobuf");
    }
    for (auto& [name, value] : extra) request.set(name, value);
    request.body() = body;
    request.prepare_payload();
    http::write(socket_, request);
    return Read();
  }
  Response Read() {
    http::response_parser<http::string_body> parser;
    parser.body_limit(1ull << 32);
    http::read(socket_, buffer_, parser);
    return parser.release();
  }
  asio::ip::tcp::socket& socket() { return socket_; }

 private:
  asio::io_context io_;
  asio::ip::tcp::socket socket_;
  beast::flat_buffer buffer_;
};

std::string Request(uint64_t node_id, const std::string& payload) {
  flwr::proto::FleetRequest request;
  request.mutable_node()->set_node_id(node_id);
  request.set_payload(payload);
  return request.SerializeAsString();
}

flwr::proto::FleetResponse Parse(const Response& response) {
  flwr::proto::FleetResponse parsed;
  EXPECT_TRUE(parsed.ParseFromString(response.body()));
  return parsed;
}

TEST(FakeRestSuperLinkTest, AnswersFleetPostsOnOneKeepAliveConnection) {
  auto link = FakeRestSuperLink::Start();
  ASSERT_NE(link, nullptr);
  RestClient client(static_cast<uint16_t>(link->port()));
  for (int i = 0; i < 3; ++i) {
    Response response = client.Post("/api/v0/fleet/pull-messages", Request(5, "abc"));
    EXPECT_EQ(response.result_int(), 200);
    EXPECT_EQ(response[http::field::content_type], "application/protobuf");
    flwr::proto::FleetResponse parsed = Parse(response);
    EXPECT_EQ(parsed.node().node_id(), 5u);
    EXPECT_EQ(parsed.payload(), "abc");
    EXPECT_THAT(parsed.seen_metadata(), Contains("accept=application/protobuf"));
    EXPECT_THAT(parsed.seen_metadata(), Contains("host=superlink"));
  }
  EXPECT_EQ(link->CallCount("/api/v0/fleet/pull-messages"), 3);
  EXPECT_EQ(link->ConnectionCount(), 1);
}

TEST(FakeRestSuperLinkTest, RefusesWhatFlowersRestServerRefuses) {
  auto link = FakeRestSuperLink::Start();
  ASSERT_NE(link, nullptr);
  RestClient client(static_cast<uint16_t>(link->port()));
  Response missing = client.Post("/api/v0/fleet/get-run", Request(1, ""), {}, false);
  EXPECT_EQ(missing.result_int(), 400);
  EXPECT_EQ(missing.body(), "{\"detail\":\"Missing header `Content-Type`\"}");
  Response wrong = client.Post("/api/v0/fleet/get-run", "", {{"Accept", "*/*"}}, false);
  EXPECT_EQ(wrong.result_int(), 400);
  EXPECT_EQ(client.Post("/api/v0/fleet/no-such-method", "").result_int(), 404);
  EXPECT_EQ(client.Post("/api/v0/other", "").result_int(), 404);
  EXPECT_EQ(client.Post("/api/v0/fleet/get-run", "", {{"x-reply-status", "503"}}).result_int(),
            503);
  EXPECT_EQ(link->CallCount("/api/v0/fleet/get-run"), 0);
  EXPECT_EQ(link->RequestCount(), 5);
}

TEST(FakeRestSuperLinkTest, StreamsLargeBodiesBothWays) {
  FakeRestSuperLink::Options options;
  options.parse_limit = 1 << 20;
  auto link = FakeRestSuperLink::Start(options);
  ASSERT_NE(link, nullptr);
  RestClient client(static_cast<uint16_t>(link->port()));
  // Past parse_limit: counted and hashed, not echoed.
  std::string big(8 << 20, 'x');
  Response upload = client.Post("/api/v0/fleet/push-object", big);
  ASSERT_EQ(upload.result_int(), 200);
  flwr::proto::FleetResponse uploaded = Parse(upload);
  EXPECT_THAT(uploaded.seen_metadata(), Contains("body-bytes=8388608"));
  EXPECT_TRUE(uploaded.payload().empty());
  EXPECT_EQ(link->BodyBytes(), big.size());
  // A generated reply of any size.
  Response download = client.Post("/api/v0/fleet/pull-object", Request(9, ""),
                                  {{"x-reply-bytes", "3000000"}});
  ASSERT_EQ(download.result_int(), 200);
  flwr::proto::FleetResponse pulled = Parse(download);
  ASSERT_EQ(pulled.payload().size(), 3000000u);
  EXPECT_EQ(pulled.payload().substr(0, 3), "abc");
  EXPECT_EQ(pulled.payload()[2999999], static_cast<char>('a' + 2999999 % 26));
  EXPECT_EQ(pulled.node().node_id(), 9u);
}

TEST(FakeRestSuperLinkTest, AnswersExpectContinueBeforeTheBody) {
  auto link = FakeRestSuperLink::Start();
  ASSERT_NE(link, nullptr);
  RestClient client(static_cast<uint16_t>(link->port()));
  std::string body = Request(3, "later");
  std::string head =
      "POST /api/v0/fleet/push-messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/protobuf"
      "\r\nAccept: application/protobuf\r\nExpect: 100-continue\r\nContent-Length: " +
      std::to_string(body.size()) + "\r\n\r\n";
  asio::write(client.socket(), asio::buffer(head));
  Response interim = client.Read();
  EXPECT_EQ(interim.result_int(), 100);
  asio::write(client.socket(), asio::buffer(body));
  Response final_response = client.Read();
  EXPECT_EQ(final_response.result_int(), 200);
  EXPECT_EQ(Parse(final_response).payload(), "later");
}

TEST(FakeRestSuperLinkTest, ServesAUnixSocket) {
  std::string path = "/tmp/sepal-rest-" + std::to_string(::getpid()) + ".sock";
  auto link = FakeRestSuperLink::Start("unix:" + path);
  ASSERT_NE(link, nullptr);
  asio::io_context io;
  asio::local::stream_protocol::socket socket(io);
  socket.connect(asio::local::stream_protocol::endpoint(path));
  http::request<http::string_body> request{http::verb::post, "/api/v0/fleet/send-node-heartbeat",
                                           11};
  request.set(http::field::content_type, "application/protobuf");
  request.set(http::field::accept, "application/protobuf");
  request.keep_alive(false);
  request.body() = Request(1, "");
  request.prepare_payload();
  http::write(socket, request);
  beast::flat_buffer buffer;
  Response response;
  http::read(socket, buffer, response);
  EXPECT_EQ(response.result_int(), 200);
  EXPECT_FALSE(response.keep_alive());
  link->Shutdown();
  EXPECT_EQ(link->CallCount("/api/v0/fleet/send-node-heartbeat"), 1);
}

}  // namespace
}  // namespace sepal::test
