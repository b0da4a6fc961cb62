// Live reload (Server::Reload in-process, SIGHUP on the real binary) and graceful drain on
// SIGTERM: new streams get the new routes and allow rules, streams in flight finish under
// the old ones, listeners open, close and move, and a bad config changes nothing.
#include <signal.h>
#include <sys/socket.h>

#include <atomic>
#include <fstream>
#include <thread>

#include "proxy/metrics/metrics.h"
#include "tests/integration/loopback.h"
#include "tests/integration/proxy_fixture.h"
#include "tests/integration/sepal_process.h"
#include "tests/support/h2_test_client.h"

// Shapes are written with designated initializers naming only what differs from the default.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

namespace sepal::test {
namespace {

struct Shape {
  bool control_for_supernodes = true;  // else Control admits only alice@example.com
  bool extra_listener = false;         // a second listener "extra"
  std::string fleet_address = "127.0.0.1:0";
  std::string extra_address = "127.0.0.1:0";
  std::string upstream;
  std::string access_log;  // "" = off
  std::string drain_timeout = "5s";
};

// Loopback peers are the tagged SuperNode "loopback-supernode".
std::string ReloadConfig(const Shape& shape) {
  std::string routes = R"(
      - match: /flwr.proto.Fleet/
        upstream: superlink
        allow:
          tags: [tag:supernode]
      - match: /flwr.proto.Control/
        upstream: superlink
        allow:
          )" + std::string(shape.control_for_supernodes ? "tags: [tag:supernode]"
                                                         : "users: [alice@example.com]") +
                       "\n";
  std::string yaml = "workers: 2\ndrain_timeout: " + shape.drain_timeout + "\n" +
                     kLoopbackSupernodeIdentityYaml;
  if (!shape.access_log.empty()) yaml += "access_log: " + shape.access_log + "\n";
  // Every client is the one loopback peer, calling far faster than a SuperNode: no per-peer
  // call caps (limits_test.cc covers those).
  yaml += "listeners:\n  - name: fleet\n    address: " + shape.fleet_address +
          "\n    peer_limits: {concurrent_calls: 0, calls_per_second: 0}\n    routes:" + routes;
  if (shape.extra_listener) {
    yaml += "  - name: extra\n    address: " + shape.extra_address + "\n    routes:" + routes;
  }
  yaml += "upstreams:\n  - name: superlink\n    address: " + shape.upstream +
          "\n    connect_timeout: 2s\n";
  return yaml;
}

double MetricNow(const std::string& series) {
  return SeriesValue(metrics::DefaultRegistry().Serialize(), series);
}

std::shared_ptr<grpc::Channel> ChannelTo(uint16_t port, int channel_id = 0) {
  grpc::ChannelArguments args;
  args.SetInt("sepal.test.channel_id", channel_id);
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel("127.0.0.1:" + std::to_string(port),
                                   grpc::InsecureChannelCredentials(), args);
}

// A unary call with a 5 s deadline and an empty request.
template <typename Request, typename Response, typename Method>
grpc::Status CallWithDeadline(Method method) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  Request request;
  Response response;
  return method(&context, request, &response);
}

grpc::Status CallFleet(Fleet::Stub& stub) {
  return CallWithDeadline<FleetRequest, FleetResponse>(
      [&](auto... args) { return stub.PullMessages(args...); });
}

grpc::Status CallControl(Control::Stub& stub) {
  return CallWithDeadline<ControlRequest, ControlResponse>(
      [&](auto... args) { return stub.ListRuns(args...); });
}

// A server stream of `lines` messages `interval_ms` apart, read on its own thread.
class LongStream {
 public:
  LongStream(std::shared_ptr<grpc::Channel> channel, int lines, int interval_ms)
      : stub_(Control::NewStub(std::move(channel))), lines_(lines) {
    context_.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    ControlRequest request;
    request.set_log_lines(lines);
    request.set_interval_ms(interval_ms);
    reader_ = stub_->StreamLogs(&context_, request);
    ControlResponse first;
    started_ = reader_->Read(&first);
    if (started_) received_ = 1;
    thread_ = std::thread([this] {
      ControlResponse response;
      while (started_ && reader_->Read(&response)) ++received_;
      status_ = reader_->Finish();
    });
  }
  // Waits for the end; true if every line arrived and the call ended OK.
  bool Complete() {
    thread_.join();
    return started_ && status_.ok() && received_ == lines_;
  }
  std::string Describe() const {
    return std::to_string(received_) + "/" + std::to_string(lines_) + " lines, " +
           status_.error_message();
  }

 private:
  std::unique_ptr<Control::Stub> stub_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReader<ControlResponse>> reader_;
  int lines_;
  bool started_ = false;
  std::atomic<int> received_{0};
  grpc::Status status_;
  std::thread thread_;
};

class ReloadTest : public ProxyTest {
 protected:
  void Start(const Shape& shape) { StartSepal(ReloadConfig(WithUpstream(shape))); }
  absl::Status Reload(const Shape& shape) {
    auto config = config::ParseConfig(ReloadConfig(WithUpstream(shape)), "reload.yaml");
    if (!config.ok()) return config.status();
    return server_->Reload(std::make_shared<const config::Config>(std::move(*config)));
  }
  Shape WithUpstream(Shape shape) const {
    if (shape.upstream.empty()) shape.upstream = backend_->address();
    return shape;
  }
};

TEST_F(ReloadTest, NewAllowRulesApplyToNewStreamsWhileAStreamInFlightFinishes) {
  Start({});
  auto channel = NewChannel();
  auto control = Control::NewStub(channel);
  ASSERT_TRUE(CallControl(*control).ok());
  LongStream stream(channel, 25, 20);  // ~500 ms, on the same connection

  ASSERT_TRUE(Reload({.control_for_supernodes = false}).ok());
  EXPECT_EQ(server_->generation(), 2u);
  // Same connection, new stream: the new allowlist (users: alice) refuses the SuperNode.
  grpc::Status denied = CallControl(*control);
  EXPECT_EQ(denied.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_NE(denied.error_message().find("/flwr.proto.Control/ListRuns"), std::string::npos)
      << denied.error_message();
  auto fleet = Fleet::NewStub(channel);
  EXPECT_TRUE(CallFleet(*fleet).ok());
  // The stream that began under generation 1 keeps its route and allow rule to the end.
  EXPECT_TRUE(stream.Complete()) << stream.Describe();

  ASSERT_TRUE(Reload({.control_for_supernodes = true}).ok());
  EXPECT_TRUE(CallControl(*control).ok());
}

TEST_F(ReloadTest, ListenersAreAddedRemovedAndMovedWithoutDroppingStreams) {
  Start({.extra_listener = true});
  uint16_t extra_port = server_->BoundPort("extra");
  ASSERT_NE(extra_port, 0);
  auto extra_channel = ChannelTo(extra_port);
  ASSERT_TRUE(CallFleet(*Fleet::NewStub(extra_channel)).ok());
  LongStream on_extra(extra_channel, 25, 20);

  // Remove "extra": its socket closes, its stream finishes, its port refuses new clients.
  ASSERT_TRUE(Reload({.extra_listener = false}).ok());
  EXPECT_EQ(server_->BoundPort("extra"), 0);
  EXPECT_TRUE(on_extra.Complete()) << on_extra.Describe();
  EXPECT_FALSE(CanConnect(extra_port));
  EXPECT_TRUE(CallFleet(*Fleet::NewStub(NewChannel(1))).ok());  // fleet untouched

  // Add it back (new socket), then move "fleet" to another port while a stream runs on it.
  ASSERT_TRUE(Reload({.extra_listener = true}).ok());
  uint16_t new_extra_port = server_->BoundPort("extra");
  ASSERT_NE(new_extra_port, 0);
  EXPECT_TRUE(CallFleet(*Fleet::NewStub(ChannelTo(new_extra_port, 2))).ok());

  uint16_t old_fleet_port = port_;
  LongStream on_fleet(NewChannel(3), 25, 20);
  uint16_t moved = FreeLoopbackPort();
  ASSERT_TRUE(Reload({.extra_listener = true,
                      .fleet_address = "127.0.0.1:" + std::to_string(moved)})
                  .ok());
  EXPECT_EQ(server_->BoundPort("fleet"), moved);
  EXPECT_TRUE(CallFleet(*Fleet::NewStub(ChannelTo(moved, 4))).ok());
  EXPECT_TRUE(on_fleet.Complete()) << on_fleet.Describe();
  EXPECT_FALSE(CanConnect(old_fleet_port));
}

// A removed listener's drain deadline must only close that listener's connections, even
// when a listener added later took its memory (a regression: the timer compared pointers).
TEST_F(ReloadTest, ARemovedListenersDrainDeadlineSparesTheListenerThatReplacedIt) {
  Start({.extra_listener = true, .drain_timeout = "1s"});
  {
    auto idle = ChannelTo(server_->BoundPort("extra"));
    ASSERT_TRUE(CallFleet(*Fleet::NewStub(idle)).ok());
    // Removed: the idle connection gets GOAWAY and closes, the listener is destroyed, and
    // its drain deadline (1 s) is still pending.
    ASSERT_TRUE(Reload({.extra_listener = false, .drain_timeout = "1s"}).ok());
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  ASSERT_TRUE(Reload({.extra_listener = true, .drain_timeout = "1s"}).ok());
  LongStream on_new_extra(ChannelTo(server_->BoundPort("extra"), 1), 40, 30);  // ~1.2 s
  EXPECT_TRUE(on_new_extra.Complete()) << on_new_extra.Describe();
}

TEST_F(ReloadTest, ARejectedReloadChangesNothing) {
  Start({});
  double failures = MetricNow("sepal_config_reloads_total{result=\"failure\"}");
  // A port held by a socket without SO_REUSEPORT cannot be bound: the whole reload fails.
  uint16_t blocked_port = 0;
  int blocker = ListenLoopback(&blocked_port);
  ASSERT_GE(blocker, 0);
  std::string taken = "127.0.0.1:" + std::to_string(blocked_port);
  absl::Status status = Reload({.control_for_supernodes = false, .extra_listener = true,
                                .extra_address = taken});
  close(blocker);
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.message().find("listener extra"), std::string::npos) << status;
  // An upstream that does not resolve fails it too.
  status = Reload({.control_for_supernodes = false, .upstream = "no-such-host.invalid:9092"});
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.message().find("cannot resolve"), std::string::npos) << status;

  EXPECT_EQ(server_->generation(), 1u);
  EXPECT_EQ(MetricNow("sepal_config_reloads_total{result=\"failure\"}") - failures, 2);
  // Still generation 1: Control still admits SuperNodes, and no "extra" listener.
  EXPECT_TRUE(CallControl(*Control::NewStub(NewChannel())).ok());
  EXPECT_EQ(server_->BoundPort("extra"), 0);
}

TEST_F(ReloadTest, ChangedUpstreamTakesNewCallsWhileTheOldOneFinishesItsStream) {
  auto second = FakeSuperLink::Start("127.0.0.1:0");
  ASSERT_NE(second, nullptr);
  Start({});
  auto channel = NewChannel();
  LongStream on_first(channel, 25, 20);
  ASSERT_TRUE(Reload({.upstream = second->address()}).ok());
  auto fleet = Fleet::NewStub(channel);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(CallFleet(*fleet).ok());
  EXPECT_EQ(second->CallCount("/flwr.proto.Fleet/PullMessages"), 3);
  EXPECT_EQ(backend_->CallCount("/flwr.proto.Fleet/PullMessages"), 0);
  EXPECT_TRUE(on_first.Complete()) << on_first.Describe();
  second->Shutdown();
}

// The issue's acceptance test: 20 reloads that flip an allowlist and add and remove a
// listener while clients hammer unary calls and one long server stream runs.
TEST_F(ReloadTest, TwentyReloadsUnderLoadFailNoCallAndDropNoStream) {
  Start({});
  std::atomic<bool> stop{false};
  std::atomic<int> ok_calls{0};
  std::atomic<int> failed_calls{0};
  std::string first_failure;
  std::mutex failure_mutex;
  std::vector<std::thread> clients;
  for (int c = 0; c < 3; ++c) {
    clients.emplace_back([&, c] {
      auto stub = Fleet::NewStub(NewChannel(10 + c));
      while (!stop.load()) {
        grpc::Status status = CallFleet(*stub);
        if (status.ok()) {
          ++ok_calls;
        } else {
          std::lock_guard lock(failure_mutex);
          if (failed_calls++ == 0) first_failure = status.error_message();
        }
      }
    });
  }
  LongStream stream(NewChannel(20), 60, 25);  // ~1.5 s, across every reload

  bool control_open = true;
  for (int i = 0; i < 20; ++i) {
    control_open = !control_open;
    ASSERT_TRUE(Reload({.control_for_supernodes = control_open, .extra_listener = i % 2 == 0})
                    .ok());
    // Every allowlist is in force for new streams as soon as Reload returns.
    grpc::Status control = CallControl(*Control::NewStub(NewChannel(100 + i)));
    EXPECT_EQ(control.ok(), control_open) << i << ": " << control.error_message();
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
  }
  EXPECT_TRUE(stream.Complete()) << stream.Describe();
  stop = true;
  for (auto& client : clients) client.join();
  EXPECT_EQ(failed_calls.load(), 0) << first_failure;
  EXPECT_GT(ok_calls.load(), 100);
  EXPECT_EQ(server_->generation(), 21u);
}

// Access log: one JSON line per call, with identity, decision and outcome.
TEST_F(ReloadTest, AccessLogHasOneLinePerCallAndFollowsReloads) {
  char dir_template[] = "/tmp/sepal-access-XXXXXX";
  std::string dir = mkdtemp(dir_template);
  std::string path = dir + "/access.log";
  Start({.control_for_supernodes = false, .access_log = path});
  auto channel = NewChannel();
  EXPECT_TRUE(CallFleet(*Fleet::NewStub(channel)).ok());
  EXPECT_EQ(CallControl(*Control::NewStub(channel)).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  // Reload with the access log off: the lines so far are flushed, nothing more is added.
  ASSERT_TRUE(Reload({.control_for_supernodes = false}).ok());
  EXPECT_TRUE(CallFleet(*Fleet::NewStub(channel)).ok());

  std::vector<std::string> lines;
  for (int i = 0; i < 100 && lines.size() < 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    lines.clear();
    std::ifstream in(path);
    for (std::string line; std::getline(in, line);) lines.push_back(line);
  }
  ASSERT_EQ(lines.size(), 2u);
  const std::string& allowed = lines[0];
  EXPECT_NE(allowed.find("\"listener\":\"fleet\""), std::string::npos) << allowed;
  EXPECT_NE(allowed.find("\"peer\":\"127.0.0.1:"), std::string::npos) << allowed;
  EXPECT_NE(allowed.find("\"node\":\"loopback-supernode\",\"user\":\"tagged-devices\","
                         "\"tags\":[\"tag:supernode\"]"),
            std::string::npos)
      << allowed;
  EXPECT_NE(allowed.find("\"method\":\"/flwr.proto.Fleet/PullMessages\",\"grpc_status\":0,"
                         "\"decision\":\"allow\",\"reason\":\"tag\""),
            std::string::npos)
      << allowed;
  EXPECT_NE(allowed.find("\"upstream\":\"superlink\"}"), std::string::npos) << allowed;
  const std::string& denied = lines[1];
  EXPECT_NE(denied.find("\"method\":\"/flwr.proto.Control/ListRuns\",\"grpc_status\":7,"
                        "\"decision\":\"deny\""),
            std::string::npos)
      << denied;
  EXPECT_NE(denied.find("\"response_bytes\":0,\"upstream\":null}"),
            std::string::npos)
      << denied;
  std::system(("rm -rf '" + dir + "'").c_str());
}

TEST_F(ReloadTest, AccessLogToAFullDiskDropsLinesAndKeepsServing) {
  Start({.access_log = "/dev/full"});
  double dropped = MetricNow("sepal_access_log_lines_total{result=\"dropped\"}");
  auto fleet = Fleet::NewStub(NewChannel());
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(CallFleet(*fleet).ok()) << i;
  for (int i = 0; i < 100; ++i) {
    if (MetricNow("sepal_access_log_lines_total{result=\"dropped\"}") - dropped >= 20) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(MetricNow("sepal_access_log_lines_total{result=\"dropped\"}") - dropped, 20);
}

// --- The real binary: SIGHUP and SIGTERM.

std::string ProcessConfig(const std::string& upstream, bool control_for_supernodes,
                          const std::string& extra = "") {
  Shape shape{.control_for_supernodes = control_for_supernodes,
              .fleet_address = "127.0.0.1:{PORT}",
              .upstream = upstream};
  return "admin:\n  address: 127.0.0.1:{ADMIN_PORT}\n" + ReloadConfig(shape) + extra;
}

double Scrape(const SepalProcess& sepal, const std::string& series) {
  std::string response = HttpGet(sepal.admin_port(), "/metrics");
  size_t body = response.find("\r\n\r\n");
  return body == std::string::npos ? -1 : SeriesValue(response.substr(body + 4), series);
}

// Waits until `series` reaches `value` (SIGHUP is asynchronous).
bool WaitForSeries(const SepalProcess& sepal, const std::string& series, double value) {
  for (int i = 0; i < 200; ++i) {
    if (Scrape(sepal, series) == value) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

TEST_F(ProxyTest, SighupAppliesAGoodFileAndRejectsABadOne) {
  SepalProcess sepal;
  ASSERT_TRUE(sepal.Start(ProcessConfig(backend_->address(), true)));
  auto control = Control::NewStub(ChannelTo(sepal.port()));
  ASSERT_TRUE(CallControl(*control).ok());

  sepal.WriteConfig(ProcessConfig(backend_->address(), true, "bogus_key: 1\n"));
  ASSERT_TRUE(sepal.Signal(SIGHUP));
  EXPECT_TRUE(WaitForSeries(sepal, "sepal_config_reloads_total{result=\"failure\"}", 1));
  EXPECT_TRUE(CallControl(*control).ok());  // still generation 1
  EXPECT_NE(HttpGet(sepal.admin_port(), "/config").find("\"generation\":1"), std::string::npos);

  sepal.WriteConfig(ProcessConfig(backend_->address(), false));
  ASSERT_TRUE(sepal.Signal(SIGHUP));
  EXPECT_TRUE(WaitForSeries(sepal, "sepal_config_reloads_total{result=\"success\"}", 1));
  EXPECT_EQ(CallControl(*control).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_NE(HttpGet(sepal.admin_port(), "/config").find("\"generation\":2"), std::string::npos);
  EXPECT_GT(Scrape(sepal, "sepal_config_last_reload_success_timestamp_seconds"), 1.7e9);
  EXPECT_EQ(sepal.Stop(SIGTERM), 0);
}

TEST_F(ProxyTest, SigtermLetsALongStreamFinishRefusesNewConnectionsAndExitsZero) {
  SepalProcess sepal;
  ASSERT_TRUE(sepal.Start(ProcessConfig(backend_->address(), true)));
  LongStream stream(ChannelTo(sepal.port()), 40, 25);  // ~1 s, within drain_timeout (5 s)
  ASSERT_TRUE(sepal.Signal(SIGTERM));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_FALSE(CanConnect(sepal.port()));
  EXPECT_TRUE(stream.Complete()) << stream.Describe();
  EXPECT_EQ(sepal.Stop(SIGTERM, std::chrono::seconds(8)), 0);
}

}  // namespace
}  // namespace sepal::test
