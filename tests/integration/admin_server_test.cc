// Integration tests for the admin HTTP server over real 127.0.0.1 sockets.
#include "proxy/admin/admin_server.h"

#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/json.hpp>
#include <cctype>
#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace sepal::admin {
namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;
using ::testing::HasSubstr;

constexpr milliseconds kWait{5000};  // upper bound for anything that should be prompt

struct HttpResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;

  std::string Header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
};

// A deliberately tiny blocking HTTP/1.1 client on a raw socket: the test must control exactly
// which bytes go out (partial headers, oversized headers, nothing at all), and every wait ends
// at a deadline with a result instead of hanging the test.
class RawClient {
 public:
  explicit RawClient(uint16_t port) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    // Loopback connects complete (or fail) at once; the listen backlog absorbs them.
    connected_ =
        fd_ >= 0 && connect(fd_, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) == 0;
  }
  ~RawClient() { Close(); }
  RawClient(const RawClient&) = delete;
  RawClient& operator=(const RawClient&) = delete;

  bool connected() const { return connected_; }

  void Close() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

  bool Send(std::string_view bytes) {
    while (!bytes.empty()) {
      ssize_t sent = send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (sent <= 0) return false;
      bytes.remove_prefix(static_cast<size_t>(sent));
    }
    return true;
  }

  static std::string Get(std::string_view path, std::string_view method = "GET") {
    return std::string(method) + " " + std::string(path) +
           " HTTP/1.1\r\nHost: localhost\r\nUser-Agent: admin-test\r\n\r\n";
  }

  // Reads one response; nullopt if the connection closed or `timeout` passed first.
  // `head`: the response to a HEAD request, whose Content-Length describes no body.
  std::optional<HttpResponse> ReadResponse(bool head = false, milliseconds timeout = kWait) {
    auto deadline = steady_clock::now() + timeout;
    size_t header_end;
    while ((header_end = pending_.find("\r\n\r\n")) == std::string::npos) {
      if (!ReadMore(deadline)) return std::nullopt;
    }
    HttpResponse response;
    std::string_view head_text(pending_.data(), header_end);
    size_t line_end = head_text.find("\r\n");
    std::string_view status_line = head_text.substr(0, line_end);
    if (status_line.substr(0, 9) != "HTTP/1.1 ") return std::nullopt;
    response.status = std::stoi(std::string(status_line.substr(9, 3)));
    while (line_end != std::string_view::npos) {
      size_t start = line_end + 2;
      line_end = head_text.find("\r\n", start);
      std::string_view line = head_text.substr(start, line_end - start);
      size_t colon = line.find(':');
      if (colon == std::string_view::npos) continue;
      std::string name(line.substr(0, colon));
      std::transform(name.begin(), name.end(), name.begin(),
                     [](unsigned char c) { return std::tolower(c); });
      std::string_view value = line.substr(colon + 1);
      while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
      response.headers[name] = std::string(value);
    }
    pending_.erase(0, header_end + 4);
    size_t length = head ? 0
                         : std::stoul(response.Header("content-length").empty()
                                          ? "0"
                                          : response.Header("content-length"));
    while (pending_.size() < length) {
      if (!ReadMore(deadline)) return std::nullopt;
    }
    response.body = pending_.substr(0, length);
    pending_.erase(0, length);
    return response;
  }

  // True once the server has closed the connection (EOF or reset) within `timeout`;
  // any data that arrives first is kept for ReadResponse.
  bool WaitClosed(milliseconds timeout = kWait) {
    auto deadline = steady_clock::now() + timeout;
    while (ReadMore(deadline)) {
    }
    return closed_;
  }

  const std::string& pending() const { return pending_; }

 private:
  // Appends what arrives before `deadline`; false on timeout or close (sets closed_).
  bool ReadMore(steady_clock::time_point deadline) {
    if (fd_ < 0 || closed_) return false;
    auto left = std::chrono::duration_cast<milliseconds>(deadline - steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd poll_fd{fd_, POLLIN, 0};
    if (poll(&poll_fd, 1, static_cast<int>(left.count())) <= 0) return false;
    char buffer[16384];
    ssize_t got = recv(fd_, buffer, sizeof(buffer), 0);
    if (got <= 0) {
      closed_ = true;  // EOF or ECONNRESET: either way the server is done with us
      return false;
    }
    pending_.append(buffer, static_cast<size_t>(got));
    return true;
  }

  int fd_ = -1;
  bool connected_ = false;
  bool closed_ = false;
  std::string pending_;
};

config::SocketAddress Loopback(uint16_t port = 0) {
  config::SocketAddress address;
  address.host = "127.0.0.1";
  address.port = port;
  address.text = "127.0.0.1:" + std::to_string(port);
  return address;
}

std::shared_ptr<const config::Config> SmallConfig() {
  auto config = std::make_shared<config::Config>();
  config->source_path = "test.yaml";
  config->admin.address = Loopback();
  config->drain_timeout = std::chrono::seconds(30);
  config::UpstreamConfig upstream;
  upstream.name = "superlink-fleet";
  upstream.address.kind = config::SocketAddress::Kind::kUnix;
  upstream.address.path = "/run/flower/fleet.sock";
  upstream.address.text = "unix:/run/flower/fleet.sock";
  config->upstreams.push_back(upstream);
  return config;
}

class AdminServerTest : public ::testing::Test {
 protected:
  void TearDown() override {
    if (server_) server_->Stop();
  }

  // Handlers read these; the admin thread calls them, hence the atomics and the mutex.
  AdminServer::Handlers DefaultHandlers() {
    AdminServer::Handlers handlers;
    handlers.metrics = [this] {
      metrics_calls_.fetch_add(1);
      return std::string("# TYPE sepal_build_info gauge\nsepal_build_info{version=\"t\"} 1\n");
    };
    handlers.ready = [this] {
      std::lock_guard lock(mutex_);
      return readiness_;
    };
    handlers.config = [this] {
      std::lock_guard lock(mutex_);
      return config_info_;
    };
    return handlers;
  }

  void StartServer(AdminLimits limits = {}) { StartServer(DefaultHandlers(), limits); }
  void StartServer(AdminServer::Handlers handlers, AdminLimits limits = {}) {
    server_ = std::make_unique<AdminServer>(Loopback(), std::move(handlers), limits);
    absl::Status status = server_->Start();
    ASSERT_TRUE(status.ok()) << status;
    ASSERT_NE(server_->port(), 0);
  }

  std::optional<HttpResponse> Fetch(std::string_view path, std::string_view method = "GET") {
    RawClient client(server_->port());
    EXPECT_TRUE(client.connected());
    EXPECT_TRUE(client.Send(RawClient::Get(path, method)));
    return client.ReadResponse(method == "HEAD");
  }

  std::unique_ptr<AdminServer> server_;
  std::atomic<int> metrics_calls_{0};
  std::mutex mutex_;
  Readiness readiness_;
  ConfigInfo config_info_;
};

TEST_F(AdminServerTest, Healthz) {
  StartServer();
  std::optional<HttpResponse> response = Fetch("/healthz");
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(response->body, "ok\n");
  EXPECT_EQ(response->Header("content-type"), "text/plain; charset=utf-8");
  EXPECT_EQ(response->Header("content-length"), "3");
  EXPECT_EQ(response->Header("cache-control"), "no-store");
}

TEST_F(AdminServerTest, MetricsComesFromTheCallback) {
  StartServer();
  std::optional<HttpResponse> response = Fetch("/metrics");
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(response->Header("content-type"), "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_EQ(response->body, "# TYPE sepal_build_info gauge\nsepal_build_info{version=\"t\"} 1\n");
  EXPECT_EQ(metrics_calls_.load(), 1);
  // A query string does not change the endpoint.
  response = Fetch("/metrics?name[]=sepal_build_info");
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 200);
}

TEST_F(AdminServerTest, HeadHasHeadersWithoutBody) {
  StartServer();
  RawClient client(server_->port());
  ASSERT_TRUE(client.Send(RawClient::Get("/metrics", "HEAD")));
  std::optional<HttpResponse> head = client.ReadResponse(/*head=*/true);
  ASSERT_TRUE(head);
  EXPECT_EQ(head->status, 200);
  EXPECT_EQ(head->Header("content-type"), "text/plain; version=0.0.4; charset=utf-8");
  // The next response on the connection starts right away: no stray body bytes in between.
  ASSERT_TRUE(client.Send(RawClient::Get("/healthz")));
  std::optional<HttpResponse> next = client.ReadResponse();
  ASSERT_TRUE(next);
  EXPECT_EQ(next->body, "ok\n");
  EXPECT_EQ(head->Header("content-length"),
            std::to_string(std::string("# TYPE sepal_build_info gauge\nsepal_build_info"
                                       "{version=\"t\"} 1\n")
                               .size()));
}

TEST_F(AdminServerTest, ReadyAndNotReady) {
  StartServer();
  std::optional<HttpResponse> response = Fetch("/ready");
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(response->body, "ready\n");
  {
    std::lock_guard lock(mutex_);
    readiness_.ready = false;
    readiness_.problems = {{"upstream superlink-fleet", "connect refused"},
                           {"identity", "tailscaled unreachable"}};
  }
  response = Fetch("/ready");
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 503);
  EXPECT_EQ(response->body,
            "upstream superlink-fleet: connect refused\nidentity: tailscaled unreachable\n");
  {
    std::lock_guard lock(mutex_);
    readiness_.problems.clear();
  }
  response = Fetch("/ready");
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 503);
  EXPECT_EQ(response->body, "not ready\n");
}

TEST_F(AdminServerTest, ConfigIsJsonAndFollowsReloads) {
  StartServer();
  std::optional<HttpResponse> response = Fetch("/config");
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 503);  // nothing loaded yet

  {
    std::lock_guard lock(mutex_);
    config_info_.config = SmallConfig();
    config_info_.generation = 1;
    config_info_.loaded_at = std::chrono::system_clock::time_point(std::chrono::seconds(60));
  }
  response = Fetch("/config");
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(response->Header("content-type"), "application/json");
  boost::system::error_code ec;
  boost::json::value json = boost::json::parse(response->body, ec);
  ASSERT_FALSE(ec) << response->body;
  EXPECT_EQ(json.at("generation").to_number<uint64_t>(), 1u);
  EXPECT_EQ(json.at("loaded_at").as_string(), "1970-01-01T00:01:00.000Z");
  EXPECT_EQ(json.at("drain_timeout").as_string(), "30s");
  EXPECT_EQ(json.at("upstreams").at(0).at("address").as_string(), "unix:/run/flower/fleet.sock");

  // A reload swaps what the callback returns; the next request shows it.
  {
    std::lock_guard lock(mutex_);
    config_info_.generation = 2;
  }
  response = Fetch("/config");
  ASSERT_TRUE(response);
  EXPECT_EQ(boost::json::parse(response->body).at("generation").to_number<uint64_t>(), 2u);
}

TEST_F(AdminServerTest, UnknownPathIs404ListingEndpoints) {
  StartServer();
  std::optional<HttpResponse> response = Fetch("/nope");
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 404);
  EXPECT_THAT(response->body, HasSubstr("/metrics"));
  EXPECT_THAT(response->body, HasSubstr("/healthz"));
  EXPECT_THAT(response->body, HasSubstr("/ready"));
  EXPECT_THAT(response->body, HasSubstr("/config"));
}

TEST_F(AdminServerTest, OtherMethodsAre405) {
  StartServer();
  for (std::string_view method : {"POST", "PUT", "DELETE", "OPTIONS"}) {
    std::optional<HttpResponse> response = Fetch("/metrics", method);
    ASSERT_TRUE(response) << method;
    EXPECT_EQ(response->status, 405) << method;
    EXPECT_EQ(response->Header("allow"), "GET, HEAD");
  }
  EXPECT_EQ(metrics_calls_.load(), 0);
}

// Requests the server cannot or will not parse get one error response, then a close: the
// position of the next request in the stream is unknown.
TEST_F(AdminServerTest, UnparsableRequestsAreAnsweredThenClosed) {
  StartServer();
  struct Case {
    std::string request;
    int status;
  };
  const Case cases[] = {
      {"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", 413},
      {"GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
       "chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
       413},
      {"GET /healthz HTTP/1.1\r\nBad Header Line\r\n\r\n", 400},
  };
  for (const Case& test_case : cases) {
    RawClient client(server_->port());
    ASSERT_TRUE(client.Send(test_case.request));
    std::optional<HttpResponse> response = client.ReadResponse();
    ASSERT_TRUE(response) << test_case.request;
    EXPECT_EQ(response->status, test_case.status) << test_case.request;
    EXPECT_TRUE(client.WaitClosed()) << test_case.request;
  }
}

TEST_F(AdminServerTest, KeepAliveServesSeveralRequestsOnOneConnection) {
  StartServer();
  RawClient client(server_->port());
  ASSERT_TRUE(client.Send(RawClient::Get("/healthz")));
  std::optional<HttpResponse> first = client.ReadResponse();
  ASSERT_TRUE(first);
  EXPECT_EQ(first->body, "ok\n");
  ASSERT_TRUE(client.Send(RawClient::Get("/metrics")));
  std::optional<HttpResponse> second = client.ReadResponse();
  ASSERT_TRUE(second);
  EXPECT_EQ(second->status, 200);
  EXPECT_EQ(metrics_calls_.load(), 1);
  // Pipelined: both requests in one write, answered in order.
  ASSERT_TRUE(client.Send(RawClient::Get("/ready") + RawClient::Get("/nope")));
  std::optional<HttpResponse> third = client.ReadResponse();
  std::optional<HttpResponse> fourth = client.ReadResponse();
  ASSERT_TRUE(third && fourth);
  EXPECT_EQ(third->body, "ready\n");
  EXPECT_EQ(fourth->status, 404);
}

TEST_F(AdminServerTest, ConnectionCloseIsHonoured) {
  StartServer();
  RawClient client(server_->port());
  ASSERT_TRUE(client.Send("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
  std::optional<HttpResponse> response = client.ReadResponse();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->Header("connection"), "close");
  EXPECT_TRUE(client.WaitClosed());
}

TEST_F(AdminServerTest, OversizedHeaderIsRejected) {
  StartServer();
  RawClient client(server_->port());
  std::string request =
      "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Filler: " + std::string(16 * 1024, 'a') + "\r\n\r\n";
  client.Send(request);  // the server may stop reading (and close) part-way
  std::optional<HttpResponse> response = client.ReadResponse();
  if (response) {
    EXPECT_EQ(response->status, 431);
  }
  EXPECT_TRUE(client.WaitClosed());
  // The server is still fine.
  std::optional<HttpResponse> after = Fetch("/healthz");
  ASSERT_TRUE(after);
  EXPECT_EQ(after->status, 200);
}

TEST_F(AdminServerTest, SlowClientDoesNotBlockOthersAndTimesOut) {
  AdminLimits limits;
  limits.io_timeout = milliseconds(500);
  StartServer(limits);
  RawClient silent(server_->port());
  ASSERT_TRUE(silent.connected());
  RawClient dribbling(server_->port());
  ASSERT_TRUE(dribbling.Send("GET /healthz HTTP/1.1\r\nHo"));  // and then nothing more

  auto start = steady_clock::now();
  std::optional<HttpResponse> response = Fetch("/healthz");
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 200);
  EXPECT_LT(steady_clock::now() - start, milliseconds(400));

  // Both stalled connections are closed at the deadline, not held forever.
  EXPECT_TRUE(silent.WaitClosed(milliseconds(3000)));
  EXPECT_TRUE(dribbling.WaitClosed(milliseconds(3000)));
  EXPECT_GE(steady_clock::now() - start, milliseconds(400));
}

TEST_F(AdminServerTest, SlowClientWithDefaultTimeoutDoesNotBlockOthers) {
  StartServer();
  RawClient silent(server_->port());
  ASSERT_TRUE(silent.connected());
  std::optional<HttpResponse> response = Fetch("/healthz");
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 200);
}

TEST_F(AdminServerTest, StopWithIdleKeepAliveConnectionIsPrompt) {
  StartServer();  // default 10 s timeout: Stop must not wait for it
  RawClient client(server_->port());
  ASSERT_TRUE(client.Send(RawClient::Get("/healthz")));
  ASSERT_TRUE(client.ReadResponse());
  RawClient never_spoke(server_->port());
  ASSERT_TRUE(never_spoke.connected());
  std::this_thread::sleep_for(milliseconds(50));  // let the server accept the second one

  auto start = steady_clock::now();
  server_->Stop();
  EXPECT_LT(steady_clock::now() - start, milliseconds(1000));
  EXPECT_TRUE(client.WaitClosed(milliseconds(1000)));
  EXPECT_TRUE(never_spoke.WaitClosed(milliseconds(1000)));
  server_->Stop();  // idempotent

  RawClient refused(server_->port());
  EXPECT_FALSE(refused.connected() && refused.Send(RawClient::Get("/healthz")) &&
               refused.ReadResponse(false, milliseconds(500)));
}

TEST_F(AdminServerTest, ExtraConnectionsAreClosed) {
  AdminLimits limits;
  limits.max_connections = 2;
  StartServer(limits);
  RawClient first(server_->port());
  RawClient second(server_->port());
  // Make sure both are accepted (served) before the third arrives.
  for (RawClient* client : {&first, &second}) {
    ASSERT_TRUE(client->Send(RawClient::Get("/healthz")));
    ASSERT_TRUE(client->ReadResponse());
  }
  RawClient third(server_->port());
  EXPECT_TRUE(third.WaitClosed(milliseconds(2000)));

  // Once one leaves, new connections are served again (the server notices the close async).
  first.Close();
  bool served = false;
  auto deadline = steady_clock::now() + kWait;
  while (!served && steady_clock::now() < deadline) {
    RawClient next(server_->port());
    served = next.Send(RawClient::Get("/healthz")) &&
             next.ReadResponse(false, milliseconds(500)).has_value();
    if (!served) std::this_thread::sleep_for(milliseconds(20));
  }
  EXPECT_TRUE(served);
}

TEST_F(AdminServerTest, ThrowingHandlerAnswers500AndServerKeepsGoing) {
  AdminServer::Handlers handlers = DefaultHandlers();
  handlers.metrics = []() -> std::string { throw std::runtime_error("registry exploded"); };
  StartServer(std::move(handlers));
  RawClient client(server_->port());
  ASSERT_TRUE(client.Send(RawClient::Get("/metrics")));
  std::optional<HttpResponse> response = client.ReadResponse();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 500);
  ASSERT_TRUE(client.Send(RawClient::Get("/healthz")));
  response = client.ReadResponse();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 200);
}

TEST_F(AdminServerTest, MissingHandlers) {
  StartServer(AdminServer::Handlers{});
  std::optional<HttpResponse> metrics = Fetch("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_EQ(metrics->status, 503);
  std::optional<HttpResponse> ready = Fetch("/ready");
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->status, 200);
  std::optional<HttpResponse> config = Fetch("/config");
  ASSERT_TRUE(config);
  EXPECT_EQ(config->status, 503);
}

TEST(AdminServerLifecycleTest, BindErrorNamesTheAddress) {
  AdminServer first(Loopback(), {});
  ASSERT_TRUE(first.Start().ok());
  AdminServer second(Loopback(first.port()), {});
  absl::Status status = second.Start();
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("127.0.0.1:" + std::to_string(first.port())));
  EXPECT_EQ(second.port(), 0);
  second.Stop();  // harmless after a failed Start
}

TEST(AdminServerLifecycleTest, StartTwiceFailsStopWithoutStartIsFine) {
  AdminServer never_started(Loopback(), {});
  never_started.Stop();
  never_started.Stop();

  AdminServer server(Loopback(), {});
  ASSERT_TRUE(server.Start().ok());
  EXPECT_EQ(server.Start().code(), absl::StatusCode::kFailedPrecondition);
  server.Stop();
  EXPECT_EQ(server.Start().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(AdminServerLifecycleTest, UnixAddressIsRejected) {
  config::SocketAddress address;
  address.kind = config::SocketAddress::Kind::kUnix;
  address.path = "/tmp/admin.sock";
  address.text = "unix:/tmp/admin.sock";
  AdminServer server(address, {});
  absl::Status status = server.Start();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("unix:/tmp/admin.sock"));
}

TEST(AdminServerLifecycleTest, DestructorStops) {
  uint16_t port;
  std::unique_ptr<RawClient> idle;  // outlives the server: its open connection must not hold it
  {
    AdminServer server(Loopback(), {});
    ASSERT_TRUE(server.Start().ok());
    port = server.port();
    idle = std::make_unique<RawClient>(port);
    ASSERT_TRUE(idle->connected());
  }
  EXPECT_TRUE(idle->WaitClosed(milliseconds(1000)));
  RawClient after(port);
  EXPECT_FALSE(after.connected());
}

}  // namespace
}  // namespace sepal::admin
