// Integration fixture: a stand-in SuperLink, sepal in-process in front of it, and grpc++
// clients dialing sepal over 127.0.0.1.
#pragma once

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "proxy/config/config.h"
#include "proxy/server/server.h"
#include "tests/proto/control.grpc.pb.h"
#include "tests/proto/echo.grpc.pb.h"
#include "tests/proto/fleet.grpc.pb.h"
#include "tests/support/fake_superlink.h"
#include "tests/support/h2_test_client.h"

namespace sepal::test {

// The Flower services every integration test calls.
using flwr::proto::Control;
using flwr::proto::ControlRequest;
using flwr::proto::ControlResponse;
using flwr::proto::Fleet;
using flwr::proto::FleetRequest;
using flwr::proto::FleetResponse;

// Routes used by most tests: Fleet, Control and Echo go to the stand-in; Exec has no route.
// Every test client comes from 127.0.0.1 (one peer), and these tests drive far more calls
// than a SuperNode would, so the per-peer call caps are off here; limits_test.cc covers them.
inline std::string DefaultConfigYaml(const std::string& upstream_address, unsigned workers = 1) {
  return "workers: " + std::to_string(workers) +
         "\n"
         "drain_timeout: 5s\n"
         "listeners:\n"
         "  - name: fleet\n"
         "    address: 127.0.0.1:0\n"
         "    peer_limits: {concurrent_calls: 0, calls_per_second: 0}\n"
         "    routes:\n"
         "      - match: /flwr.proto.Fleet/\n"
         "        upstream: superlink\n"
         "      - match: /flwr.proto.Control/\n"
         "        upstream: superlink\n"
         "      - match: /sepal.test.Echo/\n"
         "        upstream: superlink\n"
         "upstreams:\n"
         "  - name: superlink\n"
         "    address: " +
         upstream_address + "\n    connect_timeout: 2s\n";
}

// An identity section making every loopback peer the tagged SuperNode "loopback-supernode".
inline constexpr const char* kLoopbackSupernodeIdentityYaml = R"(identity:
  provider: static
  static:
    - match: 127.0.0.0/8
      node: loopback-supernode
      user: tagged-devices
      tags: [tag:supernode]
)";

class ProxyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    backend_ = FakeSuperLink::Start("127.0.0.1:0");
    ASSERT_NE(backend_, nullptr);
  }
  void TearDown() override {
    if (server_) server_->Stop();
    if (backend_) backend_->Shutdown();
  }

  // Starts sepal with `yaml`; fails the test on any config or bind error.
  void StartSepal(const std::string& yaml) {
    auto config = config::ParseConfig(yaml, "test.yaml");
    ASSERT_TRUE(config.ok()) << config.status();
    server_ = std::make_unique<Server>(std::make_shared<const config::Config>(std::move(*config)));
    absl::Status status = server_->Start();
    ASSERT_TRUE(status.ok()) << status;
    port_ = server_->BoundPort("fleet");
    ASSERT_NE(port_, 0);
  }
  void StartDefault(unsigned workers = 1) {
    StartSepal(DefaultConfigYaml(backend_->address(), workers));
  }

  std::string SepalAddress() const { return "127.0.0.1:" + std::to_string(port_); }

  // A channel with its own TCP connection (channel_id keeps grpc from sharing subchannels).
  std::shared_ptr<grpc::Channel> NewChannel(int channel_id = 0) const {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(FakeSuperLink::kMaxMessageBytes);
    args.SetMaxSendMessageSize(FakeSuperLink::kMaxMessageBytes);
    args.SetInt("sepal.test.channel_id", channel_id);
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    return grpc::CreateCustomChannel(SepalAddress(), grpc::InsecureChannelCredentials(), args);
  }

  // A raw HTTP/2 client connected to sepal from `ip` (another loopback peer), past the
  // server's SETTINGS. Null, with a test failure, if it cannot connect.
  std::unique_ptr<H2TestClient> ConnectFrom(const std::string& ip,
                                            bool ignore_server_stream_limit = false) const {
    H2TestClient::Options options;
    options.bind_ip = ip;
    options.ignore_server_stream_limit = ignore_server_stream_limit;
    std::string error;
    auto client = H2TestClient::Connect(SepalAddress(), options, &error);
    EXPECT_NE(client, nullptr) << error;
    if (client) {
      EXPECT_TRUE(client->WaitForSettings());
    }
    return client;
  }

  static std::chrono::system_clock::time_point In(std::chrono::milliseconds d) {
    return std::chrono::system_clock::now() + d;
  }

  std::unique_ptr<FakeSuperLink> backend_;
  std::unique_ptr<Server> server_;
  uint16_t port_ = 0;
};

}  // namespace sepal::test
