// Hostile and runaway peers: one allowed peer (the attacker, 127.0.0.2, node "attacker")
// misbehaves while another (127.0.0.3, node "good-node") makes ordinary calls. Each test
// checks the attacker meets its limit, the good peer keeps full service, what reached the
// stand-in SuperLink, and the metrics.
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/loopback.h"
#include "tests/integration/proxy_fixture.h"
#include "tests/proto/echo.pb.h"
#include "tests/support/h2_test_client.h"

namespace sepal::test {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr char kAttacker[] = "127.0.0.2";
constexpr char kGood[] = "127.0.0.3";
constexpr char kUnary[] = "/sepal.test.Echo/Unary";

std::string LimitsYaml(const std::string& upstream, const std::string& listener_extra = "",
                       const std::string& upstream_extra = "") {
  return "workers: 1\n"
         "admin:\n  address: 127.0.0.1:0\n"
         "identity:\n"
         "  provider: static\n"
         "  static:\n"
         "    - {match: 127.0.0.2/32, node: attacker, user: tagged-devices, tags: [tag:supernode]}\n"
         "    - {match: 127.0.0.3/32, node: good-node, user: tagged-devices, tags: [tag:supernode]}\n"
         "    - {match: 127.0.0.4/32, node: bulk-node, user: tagged-devices, tags: [tag:bulk]}\n"
         "listeners:\n"
         "  - name: fleet\n"
         "    address: 127.0.0.1:0\n" +
         listener_extra +
         "    routes:\n"
         "      - match: /sepal.test.Echo/\n"
         "        upstream: superlink\n"
         "        allow: {tags: [tag:supernode, tag:bulk]}\n"
         "upstreams:\n"
         "  - name: superlink\n"
         "    address: " +
         upstream + "\n" + upstream_extra;
}

std::string EchoBody(const std::string& payload, uint32_t sleep_ms = 0) {
  EchoRequest request;
  request.set_payload(payload);
  request.set_sleep_ms(sleep_ms);
  return H2TestClient::GrpcFrame(request.SerializeAsString());
}

class LimitsTest : public ProxyTest {
 protected:
  // Opens a whole unary call (headers, one message, END_STREAM); returns the stream id.
  static int32_t StartUnary(H2TestClient& client, const std::string& body) {
    int32_t id = client.SubmitRequest(H2TestClient::GrpcRequestHeaders(kUnary));
    EXPECT_GT(id, 0);
    if (id > 0) {
      EXPECT_TRUE(client.SendData(id, body, /*end_stream=*/true));
    }
    return id;
  }

  // `count` unary calls from the good peer, one after another on one connection; expects
  // every one to be answered OK within 2 s.
  void ExpectGoodPeerServed(int count) {
    auto good = ConnectFrom(kGood);
    ASSERT_NE(good, nullptr);
    for (int i = 0; i < count; ++i) {
      auto start = std::chrono::steady_clock::now();
      int32_t id = StartUnary(*good, EchoBody("good " + std::to_string(i)));
      ASSERT_TRUE(good->WaitForStreamClose(id, seconds(5))) << "call " << i;
      EXPECT_EQ(good->stream(id).GrpcStatus(), 0)
          << "call " << i << ": " << good->stream(id).GrpcMessage();
      EXPECT_LT(std::chrono::steady_clock::now() - start, seconds(2)) << "call " << i;
    }
  }

  // One series of sepal's /metrics (0 if absent).
  double Metric(const std::string& series) {
    std::string scraped = HttpGet(server_->admin_port(), "/metrics");
    return SeriesValue(scraped.substr(scraped.find("\r\n\r\n") + 4), series);
  }
  double Rejections(const std::string& limit) {
    return Metric(R"(sepal_limit_rejections_total{listener="fleet",limit=")" + limit + "\"}");
  }
  double Glitches(const std::string& kind) {
    return Metric(R"(sepal_downstream_glitches_total{listener="fleet",kind=")" + kind + "\"}");
  }
};

// Four calls in flight per peer: the attacker's fifth to tenth are refused at once with
// UNAVAILABLE (which a SuperNode retries) and never reach the SuperLink; the good peer,
// another node, is not affected.
TEST_F(LimitsTest, ConcurrentCallsPerPeerRefuseOnlyTheExcess) {
  StartSepal(LimitsYaml(backend_->address(), "    peer_limits: {concurrent_calls: 4}\n"));
  auto attacker = ConnectFrom(kAttacker);
  ASSERT_NE(attacker, nullptr);
  std::vector<int32_t> ids;
  for (int i = 0; i < 10; ++i) ids.push_back(StartUnary(*attacker, EchoBody("slow", 1500)));
  ASSERT_TRUE(backend_->WaitForCallCount(kUnary, 4, seconds(3)));
  // The excess is answered at once, long before the slow calls end.
  int refused = 0;
  ASSERT_TRUE(attacker->WaitFor(
      [&] {
        refused = 0;
        for (int32_t id : ids) refused += attacker->stream(id).closed ? 1 : 0;
        return refused >= 6;
      },
      seconds(1)));
  EXPECT_EQ(refused, 6);
  for (size_t i = 4; i < ids.size(); ++i) {
    const H2Stream& s = attacker->stream(ids[i]);
    EXPECT_TRUE(s.trailers_only);
    EXPECT_EQ(s.GrpcStatus(), 14) << s.GrpcMessage();
    EXPECT_NE(s.GrpcMessage().find("peer_limits.concurrent_calls"), std::string::npos)
        << s.GrpcMessage();
  }
  ExpectGoodPeerServed(5);
  for (size_t i = 0; i < 4; ++i) {
    ASSERT_TRUE(attacker->WaitForStreamClose(ids[i], seconds(5)));
    EXPECT_EQ(attacker->stream(ids[i]).GrpcStatus(), 0);
  }
  EXPECT_EQ(backend_->CallCount(kUnary), 4 + 5);
  EXPECT_EQ(Rejections("peer_concurrent_calls"), 6);
  // Slots come back when calls end: the attacker may call again.
  int32_t again = StartUnary(*attacker, EchoBody("again"));
  ASSERT_TRUE(attacker->WaitForStreamClose(again, seconds(5)));
  EXPECT_EQ(attacker->stream(again).GrpcStatus(), 0);
}

// A token bucket per peer: 5 calls at once, then 2 per second.
TEST_F(LimitsTest, CallsPerSecondPerPeer) {
  StartSepal(LimitsYaml(backend_->address(),
                        "    peer_limits: {calls_per_second: 2, calls_burst: 5}\n"));
  auto attacker = ConnectFrom(kAttacker);
  ASSERT_NE(attacker, nullptr);
  int ok = 0;
  int refused = 0;
  for (int i = 0; i < 20; ++i) {
    int32_t id = StartUnary(*attacker, EchoBody("burst"));
    ASSERT_TRUE(attacker->WaitForStreamClose(id, seconds(5)));
    int status = attacker->stream(id).GrpcStatus().value_or(-1);
    if (status == 0) ++ok;
    if (status == 14) {
      ++refused;
      EXPECT_NE(attacker->stream(id).GrpcMessage().find("peer_limits.calls_per_second"),
                std::string::npos);
    }
  }
  // The loop takes well under a second: the burst, plus at most a refill or two.
  EXPECT_GE(ok, 5);
  EXPECT_LE(ok, 7);
  EXPECT_EQ(ok + refused, 20);
  EXPECT_EQ(Rejections("peer_calls_per_second"), refused);
  ExpectGoodPeerServed(5);  // its own bucket
}

// An override by tag: the tag:bulk node gets more calls in flight than the listener's cap.
TEST_F(LimitsTest, OverrideByTagRaisesTheCap) {
  StartSepal(LimitsYaml(backend_->address(),
                        "    peer_limits:\n"
                        "      concurrent_calls: 2\n"
                        "      overrides:\n"
                        "        - {tags: [tag:bulk], concurrent_calls: 8}\n"));
  auto bulk = ConnectFrom("127.0.0.4");
  auto attacker = ConnectFrom(kAttacker);
  ASSERT_NE(bulk, nullptr);
  ASSERT_NE(attacker, nullptr);
  std::vector<int32_t> bulk_ids;
  std::vector<int32_t> attacker_ids;
  for (int i = 0; i < 6; ++i) bulk_ids.push_back(StartUnary(*bulk, EchoBody("bulk", 500)));
  for (int i = 0; i < 6; ++i) {
    attacker_ids.push_back(StartUnary(*attacker, EchoBody("attacker", 500)));
  }
  int bulk_ok = 0;
  int attacker_ok = 0;
  for (int32_t id : bulk_ids) {
    ASSERT_TRUE(bulk->WaitForStreamClose(id, seconds(5)));
    bulk_ok += bulk->stream(id).GrpcStatus() == 0 ? 1 : 0;
  }
  for (int32_t id : attacker_ids) {
    ASSERT_TRUE(attacker->WaitForStreamClose(id, seconds(5)));
    attacker_ok += attacker->stream(id).GrpcStatus() == 0 ? 1 : 0;
  }
  EXPECT_EQ(bulk_ok, 6);
  EXPECT_EQ(attacker_ok, 2);
}

// Connections per peer: a third connection's calls are refused with a message saying why,
// then it is sent GOAWAY; the first two keep working, and so does another peer.
TEST_F(LimitsTest, ConnectionsPerPeer) {
  StartSepal(LimitsYaml(backend_->address(), "    peer_limits: {connections: 2}\n"));
  auto first = ConnectFrom(kAttacker);
  auto second = ConnectFrom(kAttacker);
  ASSERT_NE(first, nullptr);
  ASSERT_NE(second, nullptr);
  // Both are past their identity lookup (one call each), then the third comes.
  for (H2TestClient* client : {first.get(), second.get()}) {
    int32_t id = StartUnary(*client, EchoBody("in"));
    ASSERT_TRUE(client->WaitForStreamClose(id, seconds(5)));
    EXPECT_EQ(client->stream(id).GrpcStatus(), 0);
  }
  auto third = ConnectFrom(kAttacker);
  ASSERT_NE(third, nullptr);
  int32_t id = StartUnary(*third, EchoBody("one too many"));
  ASSERT_TRUE(third->WaitForStreamClose(id, seconds(5)));
  EXPECT_EQ(third->stream(id).GrpcStatus(), 14);
  EXPECT_NE(third->stream(id).GrpcMessage().find("peer_limits.connections"), std::string::npos)
      << third->stream(id).GrpcMessage();
  EXPECT_TRUE(third->WaitForGoAway(seconds(3)));
  EXPECT_TRUE(third->WaitForConnectionClose(seconds(3)));
  EXPECT_EQ(Rejections("peer_connections"), 1);
  // One over the cap that sends no call is sent GOAWAY and closed within seconds.
  auto idle = ConnectFrom(kAttacker);
  ASSERT_NE(idle, nullptr);
  EXPECT_TRUE(idle->WaitForGoAway(seconds(4)));
  EXPECT_TRUE(idle->WaitForConnectionClose(seconds(2)));
  EXPECT_EQ(Rejections("peer_connections"), 2);
  idle.reset();
  ExpectGoodPeerServed(3);
  int32_t later = StartUnary(*first, EchoBody("still in"));
  ASSERT_TRUE(first->WaitForStreamClose(later, seconds(5)));
  EXPECT_EQ(first->stream(later).GrpcStatus(), 0);
  // Closing one frees its slot.
  third.reset();
  second.reset();
  first->PumpFor(milliseconds(200));  // sepal sees them close
  auto fourth = ConnectFrom(kAttacker);
  ASSERT_NE(fourth, nullptr);
  int32_t back = StartUnary(*fourth, EchoBody("back"));
  ASSERT_TRUE(fourth->WaitForStreamClose(back, seconds(5)));
  EXPECT_EQ(fourth->stream(back).GrpcStatus(), 0) << fourth->stream(back).GrpcMessage();
}

// The upstream's circuit breaker caps the calls in flight to it over every peer.
TEST_F(LimitsTest, UpstreamConcurrentStreamsCap) {
  StartSepal(LimitsYaml(backend_->address(), "",
                        "    circuit_breaker: {max_concurrent_streams: 3}\n"));
  auto attacker = ConnectFrom(kAttacker);
  ASSERT_NE(attacker, nullptr);
  std::vector<int32_t> ids;
  for (int i = 0; i < 5; ++i) ids.push_back(StartUnary(*attacker, EchoBody("slow", 800)));
  int ok = 0;
  int unavailable = 0;
  for (int32_t id : ids) {
    ASSERT_TRUE(attacker->WaitForStreamClose(id, seconds(5)));
    const H2Stream& s = attacker->stream(id);
    if (s.GrpcStatus() == 0) ++ok;
    if (s.GrpcStatus() == 14) {
      ++unavailable;
      EXPECT_NE(s.GrpcMessage().find("circuit_breaker"), std::string::npos) << s.GrpcMessage();
    }
  }
  EXPECT_EQ(ok, 3);
  EXPECT_EQ(unavailable, 2);
  EXPECT_EQ(backend_->CallCount(kUnary), 3);
  EXPECT_EQ(Rejections("upstream_concurrent_streams"), 2);
  ExpectGoodPeerServed(3);  // the slots came back
}

// Rapid reset: thousands of HEADERS + RST_STREAM pairs. The connection is sent GOAWAY
// ENHANCE_YOUR_CALM after a couple of hundred, and none of the reset streams reached the
// SuperLink: each was reset in the same bytes that opened it.
TEST_F(LimitsTest, RapidResetIsCutOffEarlyAndNeverReachesTheUpstream) {
  StartSepal(LimitsYaml(backend_->address()));
  auto attacker = ConnectFrom(kAttacker);
  ASSERT_NE(attacker, nullptr);
  attacker->OpenAndResetStreams(H2TestClient::GrpcRequestHeaders(kUnary), 3000);
  ASSERT_TRUE(attacker->WaitForGoAway(seconds(5)));
  EXPECT_EQ(attacker->goaways().front().error_code,
            static_cast<uint32_t>(NGHTTP2_ENHANCE_YOUR_CALM));
  EXPECT_LT(attacker->goaways().front().last_stream_id, 2 * 400);
  EXPECT_TRUE(attacker->WaitForConnectionClose(seconds(5)));
  ExpectGoodPeerServed(5);
  EXPECT_EQ(backend_->CallCount(kUnary), 5);  // the good peer's only
  EXPECT_GE(Glitches("early_reset"), 200);
  EXPECT_EQ(Metric(R"(sepal_downstream_protocol_errors_total{listener="fleet",kind="glitches"})"),
            1);
}

// A flood of empty DATA frames on an open stream ends with GOAWAY ENHANCE_YOUR_CALM.
TEST_F(LimitsTest, EmptyDataFloodGetsGoAway) {
  StartSepal(LimitsYaml(backend_->address()));
  auto attacker = ConnectFrom(kAttacker);
  ASSERT_NE(attacker, nullptr);
  int32_t id = attacker->SubmitRequest(H2TestClient::GrpcRequestHeaders(kUnary));
  ASSERT_GT(id, 0);
  ASSERT_TRUE(attacker->SendData(id, "", /*end_stream=*/false));
  std::string frames;
  for (int i = 0; i < 1000; ++i) {
    char header[9] = {0, 0, 0, 0 /*DATA*/, 0, static_cast<char>((id >> 24) & 0x7f),
                      static_cast<char>(id >> 16), static_cast<char>(id >> 8),
                      static_cast<char>(id)};
    frames.append(header, sizeof(header));
  }
  ASSERT_TRUE(attacker->SendRaw(frames));
  ASSERT_TRUE(attacker->WaitForGoAway(seconds(5)));
  EXPECT_EQ(attacker->goaways().back().error_code,
            static_cast<uint32_t>(NGHTTP2_ENHANCE_YOUR_CALM));
  EXPECT_GE(Glitches("empty_data"), 200);
  ExpectGoodPeerServed(3);
}

// PING floods: ENHANCE_YOUR_CALM even from a client that reads every ACK.
TEST_F(LimitsTest, PingFloodGetsGoAway) {
  StartSepal(LimitsYaml(backend_->address()));
  auto attacker = ConnectFrom(kAttacker);
  ASSERT_NE(attacker, nullptr);
  for (int i = 0; i < 400 && !attacker->connection_closed(); ++i) attacker->SendPing();
  ASSERT_TRUE(attacker->WaitForGoAway(seconds(5)));
  EXPECT_EQ(attacker->goaways().back().error_code,
            static_cast<uint32_t>(NGHTTP2_ENHANCE_YOUR_CALM));
  EXPECT_GE(Glitches("ping"), 200);
  ExpectGoodPeerServed(3);
}

// Streams past the advertised SETTINGS_MAX_CONCURRENT_STREAMS get RST_STREAM REFUSED_STREAM
// (which gRPC clients retry), not a GOAWAY for the whole connection.
TEST_F(LimitsTest, StreamsOverTheAdvertisedLimitAreRefusedOneByOne) {
  StartSepal(LimitsYaml(backend_->address(), "    limits: {max_concurrent_streams: 20}\n"));
  auto attacker = ConnectFrom(kAttacker, /*ignore_limit=*/true);
  ASSERT_NE(attacker, nullptr);
  EXPECT_EQ(attacker->server_settings().at(NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS), 20u);
  attacker->PumpFor(milliseconds(100));  // our SETTINGS ACK reaches sepal
  std::vector<int32_t> ids;
  for (int i = 0; i < 30; ++i) {
    ids.push_back(attacker->SubmitRequest(H2TestClient::GrpcRequestHeaders(kUnary)));
  }
  attacker->PumpFor(milliseconds(300));
  int refused = 0;
  for (int32_t id : ids) {
    const H2Stream& s = attacker->stream(id);
    if (s.rst_error_code == static_cast<uint32_t>(NGHTTP2_REFUSED_STREAM)) ++refused;
  }
  EXPECT_EQ(refused, 10);
  EXPECT_TRUE(attacker->goaways().empty());
  EXPECT_FALSE(attacker->connection_closed());
  EXPECT_EQ(Rejections("max_concurrent_streams"), 10);
  // The open ones still work: finish one.
  ASSERT_TRUE(attacker->SendData(ids[0], EchoBody("first"), /*end_stream=*/true));
  ASSERT_TRUE(attacker->WaitForStreamClose(ids[0], seconds(5)));
  EXPECT_EQ(attacker->stream(ids[0]).GrpcStatus(), 0);
}

// A call whose request body never comes is ended after limits.request_progress_timeout with
// UNAVAILABLE and RST_STREAM NO_ERROR, and its upstream stream is cancelled.
TEST_F(LimitsTest, StalledRequestBodyIsEnded) {
  StartSepal(LimitsYaml(backend_->address(), "    limits: {request_progress_timeout: 1s}\n"));
  auto attacker = ConnectFrom(kAttacker);
  ASSERT_NE(attacker, nullptr);
  int32_t id = attacker->SubmitRequest(H2TestClient::GrpcRequestHeaders(kUnary));
  ASSERT_GT(id, 0);
  auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(attacker->WaitForStreamClose(id, seconds(5)));
  auto took = std::chrono::steady_clock::now() - start;
  EXPECT_GE(took, milliseconds(900));
  EXPECT_LE(took, milliseconds(3100));
  const H2Stream& s = attacker->stream(id);
  EXPECT_EQ(s.GrpcStatus(), 14);
  EXPECT_NE(s.GrpcMessage().find("request_progress_timeout"), std::string::npos);
  EXPECT_EQ(s.rst_error_code, std::optional<uint32_t>(NGHTTP2_NO_ERROR));
  EXPECT_EQ(Rejections("request_progress_timeout"), 1);
  EXPECT_EQ(Glitches("stalled_request"), 1);
  ExpectGoodPeerServed(3);
  EXPECT_EQ(backend_->CallCount(kUnary), 3);  // the stalled one never became a call
}

// A trickling body that keeps making progress is not a stall.
TEST_F(LimitsTest, SlowButSteadyRequestIsNotAStall) {
  StartSepal(LimitsYaml(backend_->address(), "    limits: {request_progress_timeout: 1s}\n"));
  auto client = ConnectFrom(kGood);
  ASSERT_NE(client, nullptr);
  int32_t id = client->SubmitRequest(H2TestClient::GrpcRequestHeaders(kUnary));
  std::string body = EchoBody(std::string(30, 'x'));
  size_t sent = 0;
  for (; body.size() - sent > 10; sent += 10) {  // 10 bytes every 0.6 s: 2 s in all
    ASSERT_TRUE(client->SendData(id, body.substr(sent, 10), false));
    client->PumpFor(milliseconds(600));
  }
  ASSERT_TRUE(client->SendData(id, body.substr(sent), true));
  ASSERT_TRUE(client->WaitForStreamClose(id, seconds(5)));
  EXPECT_EQ(client->stream(id).GrpcStatus(), 0) << client->stream(id).GrpcMessage();
}

}  // namespace
}  // namespace sepal::test

namespace sepal::test {
namespace {

// Over the memory budget (here a high watermark far below any process's RSS) new streams
// are refused with REFUSED_STREAM, which gRPC clients retry, and counted; nothing reaches
// the upstream and the connection stays.
TEST_F(LimitsTest, OverTheMemoryBudgetNewStreamsAreRefused) {
  StartSepal("memory: {high_watermark_bytes: 1048576, low_watermark_bytes: 524288}\n" +
             LimitsYaml(backend_->address()));
  auto client = ConnectFrom(kGood);
  ASSERT_NE(client, nullptr);
  // Headers only (END_STREAM): the refusal may come back before a DATA frame could be sent.
  int32_t id = client->SubmitRequest(H2TestClient::GrpcRequestHeaders(kUnary), /*end_stream=*/true);
  ASSERT_GT(id, 0);
  ASSERT_TRUE(client->WaitForStreamClose(id, seconds(5)));
  EXPECT_EQ(client->stream(id).rst_error_code,
            std::optional<uint32_t>(NGHTTP2_REFUSED_STREAM));
  EXPECT_FALSE(client->connection_closed());
  EXPECT_GE(Rejections("memory_overload"), 1);
  EXPECT_EQ(backend_->TotalCallCount(), 0);
}

}  // namespace
}  // namespace sepal::test
