// Flower's Fleet REST transport through a `protocol: http1` listener: requests-shaped
// keep-alive clients on different loopback addresses (different peers), sepal in-process,
// the stand-in REST SuperLink behind it.
#include <gtest/gtest.h>
#include <openssl/ssl.h>
#include <unistd.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <cstdlib>
#include <cstring>

#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include "proxy/common/log.h"
#include "proxy/config/config.h"
#include "proxy/metrics/metrics.h"
#include "proxy/server/server.h"
#include "tests/integration/loopback.h"
#include "tests/proto/fleet.pb.h"
#include "tests/support/fake_rest_superlink.h"
#include "tests/support/payload.h"
#include "tests/support/rest_client.h"
#include "tests/support/test_pki.h"

namespace sepal::test {
namespace {

using flwr::proto::FleetRequest;
using flwr::proto::FleetResponse;

constexpr char kFleet[] = "/api/v0/fleet/";

// 127.0.0.2 is a tagged SuperNode, 127.0.0.3 a node tagged otherwise, 127.0.0.4 a user's
// laptop; anything else on loopback is not in the tailnet.
constexpr char kIdentityYaml[] = R"(identity:
  provider: static
  static:
    - match: 127.0.0.2/32
      node: hospital-a
      user: tagged-devices
      tags: [tag:supernode]
    - match: 127.0.0.3/32
      node: intruder
      user: tagged-devices
      tags: [tag:other]
    - match: 127.0.0.4/32
      node: laptop
      user: alice@example.com
)";

std::string FleetRequestBody(uint64_t node_id, std::string payload = "hello") {
  FleetRequest request;
  request.mutable_node()->set_node_id(node_id);
  request.set_payload(std::move(payload));
  return request.SerializeAsString();
}

// The request headers the stand-in saw ("name=value", lowercased names).
std::vector<std::string> SeenHeaders(const RestResponse& response) {
  FleetResponse parsed;
  EXPECT_TRUE(parsed.ParseFromString(response.body)) << response.body.substr(0, 200);
  return {parsed.seen_metadata().begin(), parsed.seen_metadata().end()};
}

bool Contains(const std::vector<std::string>& list, const std::string& item) {
  return std::find(list.begin(), list.end(), item) != list.end();
}

std::string Metric(const std::string& series) {
  if (std::getenv("SEPAL_TEST_DEBUG") != nullptr) {
    std::istringstream in(metrics::DefaultRegistry().Serialize());
    for (std::string line; std::getline(in, line);) {
      if (line.find("rest") != std::string::npos && line[0] != '#') std::cerr << line << "\n";
    }
  }
  double value = SeriesValue(metrics::DefaultRegistry().Serialize(), series);
  std::ostringstream out;
  out << value;
  return out.str();
}

// Waits up to `within` for `series` to read `value` (workers count on their own thread,
// sometimes after the client has its answer); true if it did.
bool WaitForMetric(const std::string& series, const std::string& value,
                   std::chrono::milliseconds within) {
  auto deadline = std::chrono::steady_clock::now() + within;
  while (Metric(series) != value) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

class RestTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::getenv("SEPAL_TEST_DEBUG") != nullptr) g_min_log_level = LogLevel::kDebug;
    backend_ = FakeRestSuperLink::Start("127.0.0.1:0");
    ASSERT_NE(backend_, nullptr);
  }
  void TearDown() override {
    if (server_) server_->Stop();
    if (backend_) backend_->Shutdown();
  }

  // `listener_extra` goes under the listener (http1 limits, tls, proxy_protocol), `allow`
  // under the route.
  std::string Yaml(const std::string& listener_extra = "", const std::string& allow = "",
                   bool identity = true) const {
    std::string yaml = "workers: 1\ndrain_timeout: 2s\n";
    if (identity) yaml += kIdentityYaml;
    yaml += "listeners:\n"
            "  - name: rest\n"
            "    address: 127.0.0.1:0\n"
            "    protocol: http1\n"
            "    peer_limits: {concurrent_calls: 0, calls_per_second: 0}\n" +
            listener_extra +
            "    routes:\n"
            "      - match: /api/v0/fleet/\n"
            "        upstream: superlink-rest\n" +
            allow +
            "upstreams:\n"
            "  - name: superlink-rest\n"
            "    address: " +
            upstream_address_override_.value_or(backend_->address()) +
            "\n"
            "    protocol: http1\n"
            "    connect_timeout: 1s\n";
    return yaml;
  }

  void StartSepal(const std::string& yaml) {
    auto config = config::ParseConfig(yaml, "test.yaml");
    ASSERT_TRUE(config.ok()) << config.status() << "\n" << yaml;
    server_ = std::make_unique<Server>(std::make_shared<const config::Config>(std::move(*config)));
    absl::Status status = server_->Start();
    ASSERT_TRUE(status.ok()) << status;
    port_ = server_->BoundPort("rest");
    ASSERT_NE(port_, 0);
  }

  std::string Address() const { return "127.0.0.1:" + std::to_string(port_); }

  RestClient ClientFrom(const std::string& ip) {
    RestClient::Options options;
    options.bind_address = ip;
    options.timeout = std::chrono::seconds(10);
    RestClient client(options);
    EXPECT_TRUE(client.Connect(Address())) << client.last_error();
    return client;
  }

  PostOptions Protobuf(std::string body) {
    PostOptions options;
    options.body = std::move(body);
    return options;
  }

  std::unique_ptr<FakeRestSuperLink> backend_;
  std::unique_ptr<Server> server_;
  std::optional<std::string> upstream_address_override_;
  uint16_t port_ = 0;
};

TEST_F(RestTest, ATaggedSuperNodeCompletesItsCallsOnOneKeepAliveConnection) {
  StartSepal(Yaml("", "        allow: {tags: [tag:supernode]}\n"));
  RestClient node = ClientFrom("127.0.0.2");
  // Flower's client joins its base URL and the path into "//api/v0/fleet/...".
  for (const char* method : {"register-node", "activate-node", "pull-messages",
                             "push-messages", "send-node-heartbeat", "get-run"}) {
    RestResponse response =
        node.Post(std::string("/") + kFleet + method, Protobuf(FleetRequestBody(7)));
    ASSERT_EQ(response.status, 200) << method << ": " << response.error << response.body;
    EXPECT_EQ(response.Header("content-type"), "application/protobuf");
    EXPECT_FALSE(response.connection_closed) << method;
    EXPECT_EQ(backend_->CallCount(std::string(kFleet) + method), 1) << method;
  }
  EXPECT_EQ(node.connects(), 1);
  // The upstream connection was kept alive too.
  EXPECT_EQ(backend_->ConnectionCount(), 1);
  EXPECT_EQ(Metric("sepal_grpc_requests_total{listener=\"rest\",grpc_service=\"rest\","
                   "grpc_method=\"pull-messages\",grpc_code=\"OK\"}"),
            "1");
}

TEST_F(RestTest, UntaggedAndWronglyTaggedNodesAreRefusedWithHttpStatuses) {
  StartSepal(Yaml("", "        allow: {tags: [tag:supernode]}\n"));
  RestClient intruder = ClientFrom("127.0.0.3");
  RestResponse denied = intruder.Post("/api/v0/fleet/register-node", Protobuf(FleetRequestBody(1)));
  EXPECT_EQ(denied.status, 403);
  EXPECT_NE(denied.body.find("intruder"), std::string::npos) << denied.body;
  EXPECT_EQ(denied.Header("content-type"), "text/plain; charset=utf-8");
  // The whole request was read: the connection stays usable.
  EXPECT_FALSE(denied.connection_closed);
  EXPECT_EQ(intruder.Post("/api/v0/fleet/pull-messages", Protobuf(FleetRequestBody(1))).status,
            403);
  EXPECT_EQ(intruder.connects(), 1);

  RestClient laptop = ClientFrom("127.0.0.4");
  EXPECT_EQ(laptop.Post("/api/v0/fleet/register-node", Protobuf(FleetRequestBody(1))).status,
            403);
  RestClient stranger = ClientFrom("127.0.0.9");
  RestResponse unknown = stranger.Post("/api/v0/fleet/register-node", Protobuf(FleetRequestBody(1)));
  EXPECT_EQ(unknown.status, 401) << unknown.body;

  RestClient node = ClientFrom("127.0.0.2");
  EXPECT_EQ(node.Post("/api/v0/fleet/register-node", Protobuf(FleetRequestBody(1))).status, 200);
  EXPECT_EQ(node.Post("/api/v1/other", Protobuf(FleetRequestBody(1))).status, 404);
  EXPECT_EQ(backend_->RequestCount(), 1);  // nothing refused reached the SuperLink
  EXPECT_EQ(Metric("sepal_authz_decisions_total{listener=\"rest\",decision=\"deny\","
                   "reason=\"no_rule_matched\"}"),
            "3");
}

TEST_F(RestTest, CapabilityMethodPatternsApplyToRestPaths) {
  std::string yaml = Yaml("", "        allow: {capability: example.com/cap/flower}\n");
  // The laptop may only pull; its capability names a REST path pattern.
  std::string identity = std::string(kIdentityYaml) +
      "      capabilities:\n"
      "        example.com/cap/flower: [{methods: [\"/api/v0/fleet/pull-*\"]}]\n";
  yaml.replace(yaml.find(kIdentityYaml), std::strlen(kIdentityYaml), identity);
  StartSepal(yaml);
  RestClient laptop = ClientFrom("127.0.0.4");
  EXPECT_EQ(laptop.Post("/api/v0/fleet/pull-messages", Protobuf(FleetRequestBody(1))).status,
            200);
  EXPECT_EQ(laptop.Post("/api/v0/fleet/push-messages", Protobuf(FleetRequestBody(1))).status,
            403);
}

TEST_F(RestTest, IdentityHeadersAreSepalsToSet) {
  StartSepal(Yaml());
  RestClient node = ClientFrom("127.0.0.2");
  PostOptions options = Protobuf(FleetRequestBody(3));
  options.headers = {{"Tailscale-User-Login", "ceo@example.com"},
                     {"tailscale-node-tags", "tag:admin"},
                     {"X-Flower-Trace", "abc"}};
  RestResponse response = node.Post("/api/v0/fleet/pull-messages", options);
  ASSERT_EQ(response.status, 200) << response.body;
  std::vector<std::string> seen = SeenHeaders(response);
  EXPECT_TRUE(Contains(seen, "tailscale-node-name=hospital-a"));
  EXPECT_TRUE(Contains(seen, "tailscale-node-tags=tag:supernode"));
  EXPECT_TRUE(Contains(seen, "x-flower-trace=abc"));
  EXPECT_FALSE(Contains(seen, "tailscale-user-login=ceo@example.com"));
  EXPECT_FALSE(Contains(seen, "tailscale-node-tags=tag:admin"));
}

TEST_F(RestTest, LargeBodiesStreamBothWaysIntact) {
  StartSepal(Yaml());
  RestClient node = ClientFrom("127.0.0.2");
  constexpr uint64_t kBytes = 48ull << 20;
  PostOptions upload;
  upload.generated_body_bytes = kBytes;
  RestResponse pushed = node.Post("/api/v0/fleet/push-object", upload);
  ASSERT_EQ(pushed.status, 200) << pushed.error;
  std::vector<std::string> seen = SeenHeaders(pushed);
  EXPECT_TRUE(Contains(seen, "body-bytes=" + std::to_string(kBytes)));
  EXPECT_TRUE(Contains(seen, "body-fnv1a=" + PayloadFnv1aHex(kBytes)));

  PostOptions chunked = upload;
  chunked.chunked = true;
  chunked.generated_body_bytes = 5ull << 20;
  RestResponse pushed_chunked = node.Post("/api/v0/fleet/push-object", chunked);
  ASSERT_EQ(pushed_chunked.status, 200) << pushed_chunked.error;
  EXPECT_TRUE(Contains(SeenHeaders(pushed_chunked), "body-fnv1a=" + PayloadFnv1aHex(5ull << 20)));

  PostOptions pull = Protobuf(FleetRequestBody(9));
  pull.headers = {{"x-reply-bytes", std::to_string(kBytes)}};
  RestResponse pulled = node.Post("/api/v0/fleet/pull-object", pull);
  ASSERT_EQ(pulled.status, 200) << pulled.error;
  EXPECT_GT(pulled.body_bytes, kBytes);
  EXPECT_EQ(node.connects(), 1);
}

TEST_F(RestTest, ExpectContinueIsAnsweredAfterAuthorization) {
  StartSepal(Yaml("", "        allow: {tags: [tag:supernode]}\n"));
  RestClient node = ClientFrom("127.0.0.2");
  PostOptions options;
  options.generated_body_bytes = 1 << 20;
  options.expect_continue = true;
  RestResponse response = node.Post("/api/v0/fleet/push-object", options);
  ASSERT_EQ(response.status, 200) << response.error;
  EXPECT_LT(response.elapsed, std::chrono::milliseconds(900));  // 100 came, no 1 s fallback
  EXPECT_FALSE(Contains(SeenHeaders(response), "expect=100-continue"));

  // A refused peer gets its 403 instead of 100 Continue, and never sends the body.
  RestClient intruder = ClientFrom("127.0.0.3");
  RestResponse denied = intruder.Post("/api/v0/fleet/push-object", options);
  EXPECT_EQ(denied.status, 403);
  EXPECT_EQ(backend_->RequestCount(), 1);
}

TEST_F(RestTest, PipelinedRequestsAreAnsweredInOrder) {
  StartSepal(Yaml());
  RestClient node = ClientFrom("127.0.0.2");
  std::string body = FleetRequestBody(1);
  std::string one = "POST /api/v0/fleet/get-run HTTP/1.1\r\nHost: x\r\n"
                    "Content-Type: application/protobuf\r\nAccept: application/protobuf\r\n"
                    "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  std::string two = one;
  two.replace(two.find("get-run"), 7, "get-fab");
  ASSERT_TRUE(node.WriteRaw(one + two));
  RestResponse first = node.ReadResponse();
  RestResponse second = node.ReadResponse();
  EXPECT_EQ(first.status, 200);
  EXPECT_EQ(second.status, 200);
  EXPECT_EQ(backend_->CallCount("/api/v0/fleet/get-run"), 1);
  EXPECT_EQ(backend_->CallCount("/api/v0/fleet/get-fab"), 1);
}

TEST_F(RestTest, SmugglingAndMalformedRequestsAreRefused) {
  StartSepal(Yaml());
  struct Case {
    std::string request;
    int status;
  } cases[] = {
      {"POST /api/v0/fleet/get-run HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
       "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
       400},
      {"POST /api/v0/fleet/get-run HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
       "Content-Length: 5\r\n\r\nabcd",
       400},
      {"POST /api/v0/fleet/get-run HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 400},
      {"POST /api/v0/fleet/pull%2Dmessages HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
       400},
      {"POST /api/v0/fleet/../../admin HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 400},
      {"POST http://evil/api/v0/fleet/get-run HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
       400},
      {"GARBAGE\r\n\r\n", 400},
      {"POST /api/v0/fleet/get-run HTTP/1.1\r\nHost: x\r\nExpect: tea\r\n"
       "Content-Length: 0\r\n\r\n",
       417},
  };
  for (const Case& c : cases) {
    RestClient client = ClientFrom("127.0.0.2");
    ASSERT_TRUE(client.WriteRaw(c.request));
    RestResponse response = client.ReadResponse();
    EXPECT_EQ(response.status, c.status) << c.request << response.error;
    EXPECT_NE(response.body.find("sepal:"), std::string::npos) << response.body;
  }
  EXPECT_EQ(backend_->RequestCount(), 0);
  EXPECT_GE(std::stod(Metric("sepal_downstream_protocol_errors_total{listener=\"rest\",kind=\"http1_framing\"}")),
            3);
}

TEST_F(RestTest, HeaderLimitsAndSlowClientsAreBounded) {
  StartSepal(Yaml("    http1: {max_header_bytes: 2048, max_headers: 8, max_request_line_bytes: 256,\n"
                  "            header_timeout: 300ms, body_timeout: 300ms, idle_timeout: 400ms}\n"));
  {
    PostOptions options = Protobuf(FleetRequestBody(1));
    options.headers = {{"x-big", std::string(4000, 'a')}};
    RestClient client = ClientFrom("127.0.0.2");
    EXPECT_EQ(client.Post("/api/v0/fleet/get-run", options).status, 431);
  }
  {
    PostOptions options = Protobuf(FleetRequestBody(1));
    for (int i = 0; i < 10; ++i) options.headers.push_back({"x-h" + std::to_string(i), "1"});
    RestClient client = ClientFrom("127.0.0.2");
    EXPECT_EQ(client.Post("/api/v0/fleet/get-run", options).status, 431);
  }
  {
    RestClient client = ClientFrom("127.0.0.2");
    EXPECT_EQ(client.Post("/api/v0/fleet/" + std::string(300, 'x'), Protobuf("")).status, 414);
  }
  {  // Slow headers: half a request, then nothing.
    RestClient client = ClientFrom("127.0.0.2");
    ASSERT_TRUE(client.WriteRaw("POST /api/v0/fleet/get-run HTTP/1.1\r\nHost: x\r\n"));
    RestResponse response = client.ReadResponse();
    EXPECT_EQ(response.status, 408);
    EXPECT_TRUE(client.WaitForClose(std::chrono::seconds(3)));
  }
  {  // Slow body: the header promises 100 bytes, 10 come.
    RestClient client = ClientFrom("127.0.0.2");
    ASSERT_TRUE(client.WriteRaw("POST /api/v0/fleet/push-object HTTP/1.1\r\nHost: x\r\n"
                                "Content-Type: application/protobuf\r\n"
                                "Accept: application/protobuf\r\nContent-Length: 100\r\n\r\n"
                                "0123456789"));
    RestResponse response = client.ReadResponse();
    EXPECT_EQ(response.status, 408);
    EXPECT_TRUE(client.WaitForClose(std::chrono::seconds(3)));
  }
  {  // Idle keep-alive connections are closed.
    RestClient client = ClientFrom("127.0.0.2");
    EXPECT_EQ(client.Post("/api/v0/fleet/get-run", Protobuf(FleetRequestBody(1))).status, 200);
    auto start = std::chrono::steady_clock::now();
    EXPECT_TRUE(client.WaitForClose(std::chrono::seconds(3)));
    EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(300));
  }
  EXPECT_EQ(Metric("sepal_limit_rejections_total{listener=\"rest\",limit=\"http1_header_timeout\"}"),
            "1");
  EXPECT_EQ(Metric("sepal_limit_rejections_total{listener=\"rest\",limit=\"http1_body_timeout\"}"),
            "1");
  // Others kept being served meanwhile.
  RestClient node = ClientFrom("127.0.0.2");
  EXPECT_EQ(node.Post("/api/v0/fleet/get-run", Protobuf(FleetRequestBody(1))).status, 200);
}

TEST_F(RestTest, BodiesOverTheLimitAre413) {
  StartSepal(Yaml("    http1: {max_body_bytes: 1048576}\n"));
  RestClient client = ClientFrom("127.0.0.2");
  PostOptions options;
  options.generated_body_bytes = 2 << 20;
  EXPECT_EQ(client.Post("/api/v0/fleet/push-object", options).status, 413);
  RestClient chunked_client = ClientFrom("127.0.0.2");
  options.chunked = true;
  EXPECT_EQ(chunked_client.Post("/api/v0/fleet/push-object", options).status, 413);
}

TEST_F(RestTest, UpstreamFailuresAre502And504) {
  upstream_address_override_ = "127.0.0.1:1";  // nothing listens there
  StartSepal(Yaml());
  RestClient client = ClientFrom("127.0.0.2");
  RestResponse response = client.Post("/api/v0/fleet/get-run", Protobuf(FleetRequestBody(1)));
  EXPECT_EQ(response.status, 502);
  EXPECT_NE(response.body.find("superlink-rest"), std::string::npos) << response.body;
}

TEST_F(RestTest, SlowUpstreamIs504) {
  StartSepal(Yaml("    http1: {upstream_timeout: 300ms}\n"));
  RestClient client = ClientFrom("127.0.0.2");
  PostOptions options = Protobuf(FleetRequestBody(1));
  options.headers = {{"x-sleep-ms", "2000"}};
  RestResponse response = client.Post("/api/v0/fleet/pull-messages", options);
  EXPECT_EQ(response.status, 504);
  // The next call on the same connection goes through.
  EXPECT_EQ(client.Post("/api/v0/fleet/pull-messages", Protobuf(FleetRequestBody(1))).status, 200);
}

// A client that gives up while the SuperLink is still thinking: sepal sees it leave, drops
// the upstream connection and ends the call (499) at once, not when the upstream answers or
// upstream_timeout fires. Else every abandoned request would hold an upstream connection and
// the peer's call slot for up to 300 s.
TEST_F(RestTest, AClientLeavingWhileTheUpstreamThinksEndsTheCallAtOnce) {
  StartSepal(Yaml());
  const std::string active = "sepal_grpc_streams_active{listener=\"rest\"}";
  const std::string slow_call =
      "POST /api/v0/fleet/pull-messages HTTP/1.1\r\nHost: superlink\r\n"
      "Content-Type: application/protobuf\r\nx-sleep-ms: 2500\r\nContent-Length: 0\r\n\r\n";
  // Sends the slow call from `ip`, then `more` while the upstream thinks, then leaves: the
  // call must be over within 1 s of the close (the upstream answers after 2.5 s).
  auto leave_while_upstream_thinks = [&](const std::string& ip, const std::string& more) {
    RestClient client = ClientFrom(ip);
    ASSERT_TRUE(client.WriteRaw(slow_call));
    ASSERT_TRUE(WaitForMetric(active, "1", std::chrono::seconds(2)));
    if (!more.empty()) {
      ASSERT_TRUE(client.WriteRaw(more));
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    auto left = std::chrono::steady_clock::now();
    client.Close();
    EXPECT_TRUE(WaitForMetric(active, "0", std::chrono::seconds(3)));
    EXPECT_LT(std::chrono::steady_clock::now() - left, std::chrono::seconds(1));
  };
  leave_while_upstream_thinks("127.0.0.2", "");
  EXPECT_EQ(Metric("sepal_grpc_requests_total{listener=\"rest\",grpc_service=\"rest\","
                   "grpc_method=\"pull-messages\",grpc_code=\"CANCELLED\"}"),
            "1");
  // One that sends more while it waits (the start of a pipelined request) and then leaves
  // is seen too.
  leave_while_upstream_thinks("127.0.0.3", "POST /api/v0/fleet/send-node-heartbeat HTTP/1.1\r\nHo");
}

TEST_F(RestTest, UpstreamAnswersOtherThan200AreForwarded) {
  StartSepal(Yaml());
  RestClient client = ClientFrom("127.0.0.2");
  PostOptions no_protobuf;
  no_protobuf.body = FleetRequestBody(1);
  no_protobuf.protobuf_headers = false;
  RestResponse response = client.Post("/api/v0/fleet/pull-messages", no_protobuf);
  EXPECT_EQ(response.status, 400);  // the SuperLink's own answer
  EXPECT_NE(response.body.find("detail"), std::string::npos) << response.body;
}

// One HTTPS POST with the given ALPN offer ("" = none): the status (0 when the handshake
// failed, *error says why) and the protocol negotiated.
int TlsPost(uint16_t port, const std::string& ca_pem, const std::string& alpn,
            std::string* negotiated, std::string* error) {
  namespace asio = boost::asio;
  namespace http = boost::beast::http;
  asio::io_context io;
  asio::ssl::context context(asio::ssl::context::tls_client);
  context.add_certificate_authority(asio::buffer(ca_pem));
  context.set_verify_mode(asio::ssl::verify_peer);
  asio::ssl::stream<asio::ip::tcp::socket> stream(io, context);
  if (!alpn.empty()) {
    std::string wire = std::string(1, static_cast<char>(alpn.size())) + alpn;
    SSL_set_alpn_protos(stream.native_handle(), reinterpret_cast<const unsigned char*>(wire.data()),
                        static_cast<unsigned>(wire.size()));
  }
  SSL_set_tlsext_host_name(stream.native_handle(), "localhost");
  boost::system::error_code ec;
  stream.lowest_layer().connect({asio::ip::make_address("127.0.0.1"), port}, ec);
  if (!ec) stream.handshake(asio::ssl::stream_base::client, ec);
  if (ec) {
    *error = ec.message();
    return 0;
  }
  const unsigned char* protocol = nullptr;
  unsigned int length = 0;
  SSL_get0_alpn_selected(stream.native_handle(), &protocol, &length);
  negotiated->assign(reinterpret_cast<const char*>(protocol), length);
  http::request<http::string_body> request{http::verb::post, "//api/v0/fleet/get-run", 11};
  request.set(http::field::host, "localhost");
  request.set(http::field::content_type, "application/protobuf");
  request.set(http::field::accept, "application/protobuf");
  request.body() = FleetRequestBody(5);
  request.prepare_payload();
  http::write(stream, request, ec);
  boost::beast::flat_buffer buffer;
  http::response<http::string_body> response;
  if (!ec) http::read(stream, buffer, response, ec);
  if (ec) {
    *error = ec.message();
    return 0;
  }
  return response.result_int();
}

TEST_F(RestTest, TlsListenerNegotiatesHttp11AndRefusesH2Only) {
  TestCa ca;
  CertifiedKey leaf = ca.IssueLocalhost();
  char dir_template[] = "/tmp/sepal-rest-tls-XXXXXX";
  std::string dir = mkdtemp(dir_template);
  ASSERT_TRUE(WriteTextFile(dir + "/cert.pem", leaf.certificate_pem));
  ASSERT_TRUE(WriteTextFile(dir + "/key.pem", leaf.private_key_pem));
  StartSepal(Yaml("    tls: {certificate: " + dir + "/cert.pem, private_key: " + dir +
                      "/key.pem}\n",
                  "", /*identity=*/false));
  std::string negotiated, error;
  EXPECT_EQ(TlsPost(port_, ca.certificate_pem(), "http/1.1", &negotiated, &error), 200) << error;
  EXPECT_EQ(negotiated, "http/1.1");
  negotiated.clear();
  EXPECT_EQ(TlsPost(port_, ca.certificate_pem(), "", &negotiated, &error), 200) << error;
  EXPECT_EQ(negotiated, "");  // no ALPN: HTTP/1.1
  EXPECT_EQ(TlsPost(port_, ca.certificate_pem(), "h2", &negotiated, &error), 0);
  // The client has the alert before sepal's handshake handler has counted it.
  EXPECT_TRUE(WaitForMetric(
      "sepal_tls_handshake_errors_total{listener=\"rest\",reason=\"no_alpn_h2\"}", "1",
      std::chrono::seconds(2)));
  // Cleartext HTTP/1.1 on the TLS port: a plain 400 naming https.
  RestClient plain = ClientFrom("127.0.0.2");
  RestResponse response = plain.Post("/api/v0/fleet/get-run", Protobuf(FleetRequestBody(1)));
  EXPECT_EQ(response.status, 400);
  EXPECT_NE(response.body.find("https://"), std::string::npos) << response.body;
  EXPECT_EQ(backend_->CallCount("/api/v0/fleet/get-run"), 2);
  std::remove((dir + "/cert.pem").c_str());
  std::remove((dir + "/key.pem").c_str());
  rmdir(dir.c_str());
}

// A PROXY v1 header names the real peer: the identity, and so the decision, follow it.
TEST_F(RestTest, ProxyHeaderNamesThePeer) {
  StartSepal(Yaml("    proxy_protocol: v1\n", "        allow: {tags: [tag:supernode]}\n"));
  auto through_serve = [&](const std::string& claimed) {
    RestClient::Options options;
    options.preamble = "PROXY TCP4 " + claimed + " 127.0.0.1 41000 9095\r\n";
    RestClient client(options);
    EXPECT_TRUE(client.Connect(Address())) << client.last_error();
    return client.Post("/api/v0/fleet/register-node", Protobuf(FleetRequestBody(1))).status;
  };
  EXPECT_EQ(through_serve("127.0.0.2"), 200);
  EXPECT_EQ(through_serve("127.0.0.3"), 403);
  // A connection without the header is closed without an answer.
  RestClient bare = ClientFrom("127.0.0.2");
  RestResponse response = bare.Post("/api/v0/fleet/register-node", Protobuf(FleetRequestBody(1)));
  EXPECT_EQ(response.status, 0);
  EXPECT_EQ(backend_->CallCount("/api/v0/fleet/register-node"), 1);
}

// Drain: an idle keep-alive connection closes at once; a request in flight is answered
// with Connection: close.
TEST_F(RestTest, DrainClosesIdleConnectionsAndFinishesRequests) {
  StartSepal(Yaml());
  RestClient idle = ClientFrom("127.0.0.2");
  ASSERT_EQ(idle.Post("/api/v0/fleet/get-run", Protobuf(FleetRequestBody(1))).status, 200);
  RestClient busy = ClientFrom("127.0.0.2");
  PostOptions slow = Protobuf(FleetRequestBody(1));
  slow.headers = {{"x-sleep-ms", "600"}};
  RestResponse answer;
  std::thread request([&] { answer = busy.Post("/api/v0/fleet/pull-messages", slow); });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  bool drained = false;
  std::thread drainer([&] { drained = server_->Drain(std::chrono::seconds(5)); });
  EXPECT_TRUE(idle.WaitForClose(std::chrono::seconds(2)));
  request.join();
  drainer.join();
  EXPECT_TRUE(drained);
  EXPECT_EQ(answer.status, 200) << answer.error;
  EXPECT_TRUE(answer.connection_closed);
}

}  // namespace
}  // namespace sepal::test
