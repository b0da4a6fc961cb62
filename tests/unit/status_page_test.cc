// The peer activity record, /peers' JSON and the status page's HTML, from hand-built inputs.
#include <gtest/gtest.h>

#include <boost/json.hpp>

#include "proxy/admin/status.h"
#include "proxy/peers/peer_activity.h"

namespace sepal {
namespace {

namespace json = boost::json;
using admin::CertificateStatus;
using admin::PeerEntry;
using admin::StatusInfo;
using std::chrono::hours;
using std::chrono::seconds;
using SystemTime = std::chrono::system_clock::time_point;

const SystemTime kNow = SystemTime{} + seconds(1'800'000'000);

identity::LookupResult Found(std::string node, std::vector<std::string> tags,
                             std::string user = "tagged-devices") {
  auto who = std::make_shared<identity::PeerIdentity>();
  who->node_name = node;
  who->node_fqdn = node + ".tail3c4d5e.ts.net";
  who->user_login = std::move(user);
  who->tags = std::move(tags);
  identity::LookupResult result;
  result.kind = identity::LookupResult::Kind::kFound;
  result.identity = std::move(who);
  return result;
}

TEST(PeerActivityTest, CountsCallsBytesAndErrorsByMethod) {
  peers::PeerActivity activity;
  auto lookup = Found("supernode-a", {"tag:supernode"});
  int connection_a = 0, connection_b = 0;
  activity.ConnectionOpened(&connection_a, "100.64.0.2:41000", &lookup, kNow);
  activity.ConnectionOpened(&connection_b, "100.64.0.2:41002", &lookup, kNow + seconds(5));
  activity.CallFinished("/flwr.proto.Fleet/PullMessages", 0, 10, 200, "", kNow + seconds(6));
  activity.CallFinished("/flwr.proto.Fleet/PullMessages", 0, 12, 0, "", kNow + seconds(7));
  activity.CallFinished("/flwr.proto.Control/StartRun", 7, 5, 0, "no_rule_matched",
                        kNow + seconds(8));
  activity.CallFinished("/flwr.proto.Fleet/PushObject", 0, 5 << 20, 2, "", kNow + seconds(9));

  peers::PeerSnapshot snapshot = activity.Snapshot();
  EXPECT_EQ(snapshot.identity_result, "found");
  ASSERT_NE(snapshot.identity, nullptr);
  EXPECT_EQ(snapshot.identity->node_name, "supernode-a");
  EXPECT_EQ(snapshot.connection_count, 2u);
  EXPECT_EQ(snapshot.first_seen, kNow);
  ASSERT_EQ(snapshot.methods.size(), 3u);
  const auto& pull = snapshot.methods.at("/flwr.proto.Fleet/PullMessages");
  EXPECT_EQ(pull.calls, 2u);
  EXPECT_EQ(pull.errors, 0u);
  EXPECT_EQ(pull.request_bytes, 22u);
  EXPECT_EQ(pull.response_bytes, 200u);
  EXPECT_EQ(snapshot.methods.at("/flwr.proto.Control/StartRun").errors, 1u);
  // The last call is the PushObject; the last error stays the refused StartRun.
  EXPECT_EQ(snapshot.last_call.method, "/flwr.proto.Fleet/PushObject");
  EXPECT_EQ(snapshot.last_call.grpc_status, 0);
  EXPECT_EQ(snapshot.last_error.method, "/flwr.proto.Control/StartRun");
  EXPECT_EQ(snapshot.last_error.grpc_status, 7);
  EXPECT_EQ(snapshot.last_error.reason, "no_rule_matched");
  EXPECT_EQ(snapshot.last_error.time, kNow + seconds(8));

  activity.ConnectionClosed(&connection_a);
  snapshot = activity.Snapshot();
  ASSERT_EQ(snapshot.connection_count, 1u);
  EXPECT_EQ(snapshot.connections[0].address, "100.64.0.2:41002");
  // Closing a connection it does not know changes nothing.
  activity.ConnectionClosed(&connection_a);
  EXPECT_EQ(activity.Snapshot().connection_count, 1u);
}

TEST(PeerActivityTest, MethodsAndListedConnectionsAreBounded) {
  peers::PeerActivity activity;
  std::vector<int> connections(40);
  for (int& connection : connections) {
    activity.ConnectionOpened(&connection, "127.0.0.9:1000", nullptr, kNow);
  }
  // A client can send any path: distinct ones beyond the cap add up under "other".
  for (int i = 0; i < 100; ++i) {
    activity.CallFinished("/x.Svc/M" + std::to_string(i), 12, 1, 0, "unknown_route", kNow);
  }
  peers::PeerSnapshot snapshot = activity.Snapshot();
  EXPECT_EQ(snapshot.identity_result, "none");
  EXPECT_EQ(snapshot.connection_count, 40u);
  EXPECT_EQ(snapshot.connections.size(), peers::PeerActivity::kMaxListedConnections);
  EXPECT_EQ(snapshot.methods.size(), peers::PeerActivity::kMaxMethods + 1);
  ASSERT_TRUE(snapshot.methods.contains("other"));
  EXPECT_EQ(snapshot.methods.at("other").calls, 100 - peers::PeerActivity::kMaxMethods);
  uint64_t calls = 0;
  for (const auto& [method, counts] : snapshot.methods) calls += counts.calls;
  EXPECT_EQ(calls, 100u);
  EXPECT_EQ(snapshot.last_call.method, "other");
}

std::vector<PeerEntry> TwoPeers() {
  std::vector<PeerEntry> peers(2);
  {
    PeerEntry& user = peers[0];
    user.listener = "fleet";
    user.key = "node:laptop.tail3c4d5e.ts.net";
    auto lookup = Found("laptop", {}, "alice@example.com");
    user.activity.identity_result = "found";
    user.activity.identity = lookup.identity;
    user.activity.connection_count = 1;
    user.activity.connections.push_back({"100.64.0.3:50000", kNow - seconds(30)});
    user.activity.first_seen = kNow - seconds(30);
  }
  {
    PeerEntry& tagged = peers[1];
    tagged.listener = "control";
    tagged.key = "node:supernode-a.tail3c4d5e.ts.net";
    peers::PeerActivity activity;
    auto lookup = Found("supernode-a", {"tag:supernode", "tag:site-a"});
    int connection = 0;
    activity.ConnectionOpened(&connection, "100.64.0.2:41000", &lookup, kNow - hours(2));
    activity.CallFinished("/flwr.proto.Control/StartRun", 7, 5, 0, "no_rule_matched",
                          kNow - seconds(3));
    activity.CallFinished("/flwr.proto.Fleet/PullMessages", 0, 100, 2000, "", kNow - seconds(2));
    tagged.activity = activity.Snapshot();
    tagged.calls_in_flight = 3;
  }
  return peers;
}

TEST(PeersJsonTest, ListsEveryPeerSortedWithTotalsAndMethods) {
  json::value parsed = json::parse(admin::PeersToJson(TwoPeers(), kNow));
  const json::object& root = parsed.as_object();
  EXPECT_EQ(root.at("peer_count").as_int64(), 2);
  EXPECT_EQ(root.at("generated_at").as_string(), "2027-01-15T08:00:00.000Z");
  const json::array& peers = root.at("peers").as_array();
  ASSERT_EQ(peers.size(), 2u);
  // Sorted by listener: control before fleet.
  const json::object& tagged = peers[0].as_object();
  EXPECT_EQ(tagged.at("listener").as_string(), "control");
  EXPECT_EQ(tagged.at("peer").as_string(), "supernode-a");
  EXPECT_EQ(tagged.at("fqdn").as_string(), "supernode-a.tail3c4d5e.ts.net");
  EXPECT_EQ(tagged.at("identity").as_string(), "found");
  EXPECT_EQ(tagged.at("tags").as_array().size(), 2u);
  EXPECT_EQ(tagged.at("tags").as_array()[1].as_string(), "tag:site-a");
  EXPECT_EQ(tagged.at("connections").as_int64(), 1);
  EXPECT_EQ(tagged.at("addresses").as_array()[0].as_string(), "100.64.0.2:41000");
  EXPECT_EQ(tagged.at("connected_since").as_string(), "2027-01-15T06:00:00.000Z");
  EXPECT_EQ(tagged.at("calls_in_flight").as_int64(), 3);
  EXPECT_EQ(tagged.at("calls").as_int64(), 2);
  EXPECT_EQ(tagged.at("errors").as_int64(), 1);
  EXPECT_EQ(tagged.at("request_bytes").as_int64(), 105);
  EXPECT_EQ(tagged.at("response_bytes").as_int64(), 2000);
  const json::object& methods = tagged.at("methods").as_object();
  EXPECT_EQ(methods.at("/flwr.proto.Fleet/PullMessages").at("response_bytes").as_int64(), 2000);
  EXPECT_EQ(methods.at("/flwr.proto.Control/StartRun").at("errors").as_int64(), 1);
  const json::object& last_error = tagged.at("last_error").as_object();
  EXPECT_EQ(last_error.at("method").as_string(), "/flwr.proto.Control/StartRun");
  EXPECT_EQ(last_error.at("grpc_status").as_string(), "PERMISSION_DENIED");
  EXPECT_EQ(last_error.at("reason").as_string(), "no_rule_matched");
  EXPECT_EQ(tagged.at("last_call").at("method").as_string(), "/flwr.proto.Fleet/PullMessages");
  EXPECT_EQ(tagged.at("last_call").at("grpc_status").as_string(), "OK");
  EXPECT_TRUE(tagged.at("last_call").at("reason").is_null());

  const json::object& user = peers[1].as_object();
  EXPECT_EQ(user.at("user").as_string(), "alice@example.com");
  EXPECT_TRUE(user.at("tags").as_array().empty());
  EXPECT_TRUE(user.at("last_call").is_null());
  EXPECT_EQ(user.at("calls").as_int64(), 0);
}

TEST(PeersJsonTest, PeersWithoutIdentityHaveNullFields) {
  std::vector<PeerEntry> peers(1);
  peers[0].listener = "fleet";
  peers[0].key = "addr:127.0.0.4";
  peers[0].activity.identity_result = "not_in_tailnet";
  json::value parsed = json::parse(admin::PeersToJson(peers, kNow));
  const json::object& peer = parsed.at("peers").as_array()[0].as_object();
  EXPECT_EQ(peer.at("peer").as_string(), "127.0.0.4");
  EXPECT_EQ(peer.at("identity").as_string(), "not_in_tailnet");
  EXPECT_TRUE(peer.at("node").is_null());
  EXPECT_TRUE(peer.at("connected_since").is_null());
  EXPECT_EQ(json::parse(admin::PeersToJson({}, kNow)).at("peer_count").as_int64(), 0);
}

TEST(StatusPageTest, EscapesEverythingFromOutside) {
  EXPECT_EQ(admin::HtmlEscape(R"(<a href="x">'&'</a>)"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
  std::vector<PeerEntry> peers = TwoPeers();
  peers::PeerActivity activity;
  activity.CallFinished("/<script>alert(1)</script>", 12, 0, 0, "unknown_route", kNow);
  peers[1].activity.methods = activity.Snapshot().methods;
  peers[1].activity.last_error = activity.Snapshot().last_error;
  StatusInfo info;
  info.now = kNow;
  info.peers = peers;
  info.config_path = "/etc/sepal/<x>.yaml";
  std::string html = admin::StatusPageHtml(info);
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_NE(html.find("/&lt;script&gt;alert(1)&lt;/script&gt;"), std::string::npos);
  EXPECT_NE(html.find("/etc/sepal/&lt;x&gt;.yaml"), std::string::npos);
}

TEST(StatusPageTest, ShowsPeersListenersAndRefreshes) {
  StatusInfo info;
  info.version = "0.4.0";
  info.now = kNow;
  info.generation = 7;
  info.listeners.push_back({"fleet", "0.0.0.0:9092", 9092, "none", "none", 2});
  info.listeners.push_back({"control", "0.0.0.0:9093", 9093, "files", "v2", 1});
  info.upstreams.push_back({"superlink", "127.0.0.2:19092", ""});
  info.upstreams.push_back({"serverapp", "127.0.0.2:19091", "connect: Connection refused"});
  info.peers = TwoPeers();
  std::string html = admin::StatusPageHtml(info, 9);
  EXPECT_NE(html.find("<meta http-equiv=\"refresh\" content=\"9\">"), std::string::npos);
  EXPECT_NE(html.find("<b id=\"generation\">7</b>"), std::string::npos);
  EXPECT_NE(html.find("id=\"ready\">ready<"), std::string::npos);
  EXPECT_NE(html.find("<table id=\"peers\">"), std::string::npos);
  EXPECT_EQ(html.find("id=\"no-peers\""), std::string::npos);
  EXPECT_NE(html.find("tag:supernode tag:site-a"), std::string::npos);
  EXPECT_NE(html.find("alice@example.com"), std::string::npos);
  EXPECT_NE(html.find("<td class=\"bad\">connect: Connection refused</td>"), std::string::npos);
  EXPECT_NE(html.find("PERMISSION_DENIED (no_rule_matched)"), std::string::npos);
  EXPECT_NE(html.find("2 s ago"), std::string::npos);  // the last call
  EXPECT_NE(html.find("3 s ago"), std::string::npos);  // the last error
  // Each listener row counts its own peers: one each.
  EXPECT_NE(html.find("<td>fleet</td><td>0.0.0.0:9092</td><td class=\"num\">9092</td><td>none"
                      "</td><td>none</td><td class=\"num\">2</td><td class=\"num\">1</td>"),
            std::string::npos)
      << html;
  EXPECT_EQ(html.find("<script"), std::string::npos);

  info.peers.clear();
  info.ready = false;
  info.problems = {"upstream serverapp: connect: Connection refused"};
  html = admin::StatusPageHtml(info);
  EXPECT_NE(html.find("id=\"no-peers\""), std::string::npos);
  EXPECT_NE(html.find("id=\"ready\">not ready<"), std::string::npos);
  EXPECT_NE(html.find("<ul id=\"problems\"><li class=\"bad\">upstream serverapp"),
            std::string::npos);
}

TEST(StatusPageTest, CertificatesAreColouredByDaysLeft) {
  StatusInfo info;
  info.now = kNow;
  auto certificate = [&](std::string listener, SystemTime not_after, bool installed = true) {
    CertificateStatus status;
    status.listener = std::move(listener);
    status.source = "files";
    status.installed = installed;
    status.subject = "CN=superlink";
    status.not_after = not_after;
    status.expired = not_after < kNow;
    return status;
  };
  info.certificates.push_back(certificate("fresh", kNow + hours(24 * 60)));
  info.certificates.push_back(certificate("soon", kNow + hours(24 * 3)));
  info.certificates.push_back(certificate("gone", kNow - hours(12)));
  info.certificates.push_back(certificate("waiting", {}, false));
  std::string html = admin::StatusPageHtml(info);
  EXPECT_NE(html.find("<td class=\"num ok\">60.0</td>"), std::string::npos) << html;
  EXPECT_NE(html.find("<td class=\"num warn\">3.0</td>"), std::string::npos);
  EXPECT_NE(html.find("<td class=\"num bad\">-0.5</td>"), std::string::npos);
  EXPECT_NE(html.find("waiting for the first certificate from tailscaled"), std::string::npos);
  // No certificates (no TLS listener): no table.
  info.certificates.clear();
  EXPECT_EQ(admin::StatusPageHtml(info).find("id=\"certificates\""), std::string::npos);
}

}  // namespace
}  // namespace sepal
