// Metrics after known traffic: request counts by method and code, bytes, authz decisions,
// identity lookups, protocol errors and upstream connect failures.
#include <arpa/inet.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/ip/tcp.hpp>
#include <sstream>
#include <thread>

#include "proxy/admin/admin_server.h"
#include "proxy/metrics/metrics.h"
#include "tests/integration/loopback.h"
#include "tests/integration/proxy_fixture.h"

namespace sepal::test {
namespace {

double Value(const std::string& exposition, const std::string& series) {
  return SeriesValue(exposition, series);
}

double Now(const std::string& series) {
  return Value(metrics::DefaultRegistry().Serialize(), series);
}

constexpr char kConfig[] = R"(workers: 2
identity:
  provider: static
  static:
    - match: 127.0.0.0/8
      node: metrics-node
      user: tagged-devices
      tags: [tag:supernode]
listeners:
  - name: fleet
    address: 127.0.0.1:0
    routes:
      - match: /flwr.proto.Fleet/
        upstream: superlink
        allow: {tags: [tag:supernode]}
      - match: /flwr.proto.Control/
        upstream: superlink
        allow: {users: [alice@example.com]}
upstreams:
  - name: superlink
    address: )";

TEST_F(ProxyTest, PeerNodeLabelCountsBytesByNodeOnlyWhenEnabled) {
  const std::string series =
      R"(sepal_peer_request_bytes_total{listener="fleet",peer_node="metrics-node"})";
  auto push = [&](int channel_id) {
    grpc::ClientContext context;
    FleetRequest request;
    request.set_payload(std::string(1000, 'p'));
    FleetResponse response;
    return Fleet::NewStub(NewChannel(channel_id))->PushMessages(&context, request, &response);
  };
  auto settle = [&](double at_least) {
    for (int i = 0; i < 100 && Now(series) < at_least; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  };
  StartSepal(std::string(kConfig) + backend_->address() + "\n");
  double before = Now(series);
  ASSERT_TRUE(push(1).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(Now(series), before);  // off by default: no per-node series grows
  server_->Stop();

  StartSepal("metrics:\n  peer_node_label: true\n" + std::string(kConfig) + backend_->address() +
             "\n");
  ASSERT_TRUE(push(2).ok());
  ASSERT_TRUE(push(2).ok());
  settle(before + 2 * 1008);
  EXPECT_EQ(Now(series) - before, 2 * (5 + 1003));
  EXPECT_GT(Now(R"(sepal_peer_response_bytes_total{listener="fleet",peer_node="metrics-node"})"),
            0);
}

TEST_F(ProxyTest, MetricsCountCallsBytesAndDecisions) {
  StartSepal(std::string(kConfig) + backend_->address() + "\n");
  const std::string ok_series =
      R"(sepal_grpc_requests_total{listener="fleet",grpc_service="flwr.proto.Fleet",grpc_method="PushMessages",grpc_code="OK"})";
  const std::string denied_series =
      R"(sepal_grpc_requests_total{listener="fleet",grpc_service="flwr.proto.Control",grpc_method="StartRun",grpc_code="PERMISSION_DENIED"})";
  const std::string unrouted_series =
      R"(sepal_grpc_requests_total{listener="fleet",grpc_service="other",grpc_method="other",grpc_code="UNIMPLEMENTED"})";
  const std::string bytes_series =
      R"(sepal_grpc_request_bytes_total{listener="fleet",grpc_service="flwr.proto.Fleet",grpc_method="PushMessages"})";
  const std::string allow_series =
      R"(sepal_authz_decisions_total{listener="fleet",decision="allow",reason="tag"})";
  const std::string deny_series =
      R"(sepal_authz_decisions_total{listener="fleet",decision="deny",reason="no_rule_matched"})";
  const std::string lookups_series = R"(sepal_identity_lookups_total{result="found"})";
  double ok0 = Now(ok_series), denied0 = Now(denied_series), unrouted0 = Now(unrouted_series),
         bytes0 = Now(bytes_series), allow0 = Now(allow_series), deny0 = Now(deny_series),
         lookups0 = Now(lookups_series);

  auto channel = NewChannel();
  auto fleet = Fleet::NewStub(channel);
  for (int i = 0; i < 3; ++i) {
    grpc::ClientContext context;
    FleetRequest request;
    request.set_payload(std::string(1000, 'p'));
    FleetResponse response;
    ASSERT_TRUE(fleet->PushMessages(&context, request, &response).ok());
  }
  {
    grpc::ClientContext context;
    ControlRequest request;
    ControlResponse response;
    EXPECT_EQ(Control::NewStub(channel)->StartRun(&context, request, &response).error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
  }
  {
    grpc::ClientContext context;
    ControlRequest request;
    ControlResponse response;
    EXPECT_EQ(flwr::proto::Exec::NewStub(channel)->ListRuns(&context, request, &response)
                  .error_code(),
              grpc::StatusCode::UNIMPLEMENTED);
  }
  // Stream stats are recorded when the server side of the stream is gone; give the worker
  // a moment after the client saw the end.
  for (int i = 0; i < 100 && Now(unrouted_series) < unrouted0 + 1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(Now(ok_series) - ok0, 3);
  EXPECT_EQ(Now(denied_series) - denied0, 1);
  EXPECT_EQ(Now(unrouted_series) - unrouted0, 1);
  // Three gRPC frames of 5 + 1000-byte payload + 3 bytes of protobuf framing each.
  EXPECT_EQ(Now(bytes_series) - bytes0, 3 * (5 + 1003));
  EXPECT_EQ(Now(allow_series) - allow0, 3);
  EXPECT_EQ(Now(deny_series) - deny0, 1);
  EXPECT_EQ(Now(lookups_series) - lookups0, 1);  // one connection, one lookup
  std::string text = metrics::DefaultRegistry().Serialize();
  EXPECT_NE(text.find("# TYPE sepal_grpc_request_duration_seconds histogram"), std::string::npos);
  EXPECT_NE(text.find("sepal_build_info{version=\""), std::string::npos) << text;
}

TEST_F(ProxyTest, MetricsCountBadInputAndUpstreamFailures) {
  StartDefault();
  const std::string http1 = R"(sepal_downstream_protocol_errors_total{listener="fleet",kind="http1"})";
  const std::string connect_series =
      R"(sepal_upstream_connect_failures_total{upstream="superlink"})";
  double http1_0 = Now(http1), connect0 = Now(connect_series);
  backend_->Shutdown();
  auto stub = Fleet::NewStub(NewChannel());
  grpc::ClientContext context;
  FleetRequest request;
  FleetResponse response;
  EXPECT_EQ(stub->CreateNode(&context, request, &response).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(Now(connect_series) - connect0, 1);
  // An HTTP/1.1 request is counted once.
  int fd = ConnectLoopback(port_);
  ASSERT_GE(fd, 0);
  const char kRequest[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  ASSERT_GT(write(fd, kRequest, sizeof(kRequest) - 1), 0);
  char buf[256];
  while (read(fd, buf, sizeof(buf)) > 0) {
  }
  close(fd);
  EXPECT_EQ(Now(http1) - http1_0, 1);
}

TEST_F(ProxyTest, WorkerConnectionsGaugeCountsEachWorkersConnections) {
  const std::string w0 = R"(sepal_worker_connections_active{worker="0"})";
  const std::string w1 = R"(sepal_worker_connections_active{worker="1"})";
  const std::string all = R"(sepal_downstream_connections_active{listener="fleet"})";
  auto workers_sum = [&] { return Now(w0) + Now(w1); };
  auto wait_for = [&](double want) {
    for (int i = 0; i < 300 && workers_sum() != want; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return workers_sum();
  };
  StartSepal(DefaultConfigYaml(backend_->address(), 2));
  const double before = workers_sum();
  const double before_all = Now(all);
  {
    std::vector<std::shared_ptr<grpc::Channel>> channels;
    for (int id = 1; id <= 6; ++id) {
      channels.push_back(NewChannel(id));
      grpc::ClientContext context;
      FleetRequest request;
      FleetResponse response;
      ASSERT_TRUE(Fleet::NewStub(channels.back())->GetFab(&context, request, &response).ok());
    }
    EXPECT_EQ(wait_for(before + 6), before + 6);
    EXPECT_EQ(Now(all) - before_all, 6);  // the per-listener gauge agrees
    // Both workers have their series from the start, whichever got the connections.
    const std::string text = metrics::DefaultRegistry().Serialize();
    EXPECT_NE(text.find(w0), std::string::npos);
    EXPECT_NE(text.find(w1), std::string::npos);
  }
  EXPECT_EQ(wait_for(before), before);  // closed connections leave the gauge
}

TEST_F(ProxyTest, AdminServerExposesMetricsReadinessAndConfig) {
  StartSepal("admin:\n  address: 127.0.0.1:0\n" + DefaultConfigYaml(backend_->address()));
  uint16_t admin = server_->admin_port();
  ASSERT_NE(admin, 0);
  {
    auto stub = Fleet::NewStub(NewChannel());
    grpc::ClientContext context;
    FleetRequest request;
    FleetResponse response;
    ASSERT_TRUE(stub->GetFab(&context, request, &response).ok());
  }
  std::string scraped;
  const std::string series =
      R"(sepal_grpc_requests_total{listener="fleet",grpc_service="flwr.proto.Fleet",grpc_method="GetFab",grpc_code="OK"})";
  for (int i = 0; i < 100; ++i) {
    scraped = HttpGet(admin, "/metrics");
    if (Value(scraped.substr(scraped.find("\r\n\r\n") + 4), series) >= 1) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(scraped.starts_with("HTTP/1.1 200")) << scraped.substr(0, 200);
  std::string body = scraped.substr(scraped.find("\r\n\r\n") + 4);
  EXPECT_GE(Value(body, series), 1);
  if (std::system("command -v promtool >/dev/null 2>&1") == 0) {
    char path[] = "/tmp/sepal-metrics-XXXXXX";
    int fd = mkstemp(path);
    ASSERT_EQ(write(fd, body.data(), body.size()), static_cast<ssize_t>(body.size()));
    close(fd);
    int rc = std::system((std::string("promtool check metrics < ") + path + " >/dev/null 2>&1").c_str());
    std::remove(path);
    EXPECT_EQ(WEXITSTATUS(rc), 0) << "promtool rejected the exposition";
  }
  EXPECT_TRUE(HttpGet(admin, "/healthz").starts_with("HTTP/1.1 200"));
  EXPECT_TRUE(HttpGet(admin, "/ready").starts_with("HTTP/1.1 200"));
  std::string config = HttpGet(admin, "/config");
  EXPECT_NE(config.find("\"upstreams\""), std::string::npos);
  EXPECT_NE(config.find("\"generation\""), std::string::npos);
  backend_->Shutdown();
  std::string ready = HttpGet(admin, "/ready");
  EXPECT_TRUE(ready.starts_with("HTTP/1.1 503")) << ready;
  EXPECT_NE(ready.find("upstream superlink"), std::string::npos) << ready;
}

// An upstream given by host name is probed where sepal connects to it (the address its
// pools resolved at load), not on 127.0.0.1. Needs a name for another loopback address:
// Debian's /etc/hosts has "::1 ip6-localhost" and "127.0.1.1 <hostname>"; else skipped.
TEST_F(ProxyTest, ReadinessProbesAnUpstreamNamedByHostWhereTheNameResolves) {
  std::vector<std::string> names = {"ip6-localhost"};
  char hostname[256] = {};
  if (gethostname(hostname, sizeof(hostname) - 1) == 0 && hostname[0] != 0) {
    names.emplace_back(hostname);
  }
  boost::asio::io_context io;
  boost::asio::ip::tcp::resolver resolver(io);
  std::string name;
  boost::asio::ip::address ip;
  for (const std::string& candidate : names) {
    boost::system::error_code ec;
    auto results =
        resolver.resolve(candidate, "1", boost::asio::ip::tcp::resolver::numeric_service, ec);
    if (ec || results.empty()) continue;
    auto first = results.begin()->endpoint().address();
    if (first.is_loopback() && first != boost::asio::ip::make_address("127.0.0.1")) {
      name = candidate;
      ip = first;
      break;
    }
  }
  if (name.empty()) GTEST_SKIP() << "no host name for a loopback address but 127.0.0.1 here";
  std::string bind = ip.is_v6() ? "[" + ip.to_string() + "]:0" : ip.to_string() + ":0";
  auto named_backend = FakeSuperLink::Start(bind);
  if (!named_backend) GTEST_SKIP() << "cannot listen on " << bind;
  StartSepal(DefaultConfigYaml(name + ":" + std::to_string(named_backend->port())));
  auto describe = [](const admin::Readiness& readiness) {
    std::string text;
    for (const auto& [component, what] : readiness.problems) text += component + ": " + what + "\n";
    return text;
  };
  admin::Readiness readiness = server_->CheckReadiness();
  EXPECT_TRUE(readiness.ready) << name << " is " << ip << "\n" << describe(readiness);
  {
    auto stub = Fleet::NewStub(NewChannel());
    grpc::ClientContext context;
    FleetRequest request;
    FleetResponse response;
    EXPECT_TRUE(stub->GetFab(&context, request, &response).ok());
  }
  named_backend->Shutdown();
  readiness = server_->CheckReadiness();
  EXPECT_FALSE(readiness.ready);
  EXPECT_NE(describe(readiness).find("upstream superlink: " + name + ":"), std::string::npos)
      << describe(readiness);
}

}  // namespace
}  // namespace sepal::test
