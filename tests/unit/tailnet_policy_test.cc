// `sepal policy`: the tailnet policy made from a configuration, parsed back as JSON, and the
// command's exit codes and streams.
#include "proxy/config/tailnet_policy.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <cstdio>
#include <fstream>
#include <string>

namespace sepal::config {
namespace {

namespace json = boost::json;

constexpr char kConfig[] = R"(identity:
  provider: tailscale
listeners:
  - name: fleet
    address: 100.64.0.1:9092
    routes:
      - match: /flwr.proto.Fleet/
        upstream: superlink
        allow: {tags: [tag:supernode]}
  - name: control
    address: 100.64.0.1:9093
    routes:
      - match: /flwr.proto.Control/ListRuns
        upstream: superlink
        allow: {capability: example.com/cap/flower}
      - match: /flwr.proto.Control/StreamLogs
        upstream: superlink
        allow: {tags: [tag:monitor], capability: example.com/cap/flower}
      - match: /flwr.proto.Control/
        upstream: superlink
        allow: {users: [alice@example.com], nodes: [laptop-bob]}
upstreams:
  - name: superlink
    address: 127.0.0.2:9092
)";

Config Load(const std::string& yaml) {
  auto config = ParseConfig(yaml, "test.yaml");
  EXPECT_TRUE(config.ok()) << config.status().message();
  return *config;
}

// The grant whose src is exactly `src` (there is at most one per kind in these configs).
const json::object* GrantFrom(const json::array& grants, const json::array& src, const char* kind) {
  for (const auto& grant : grants) {
    const auto& object = grant.as_object();
    if (object.at("src") == json::value(src) && object.contains(kind)) return &object;
  }
  return nullptr;
}

TEST(TailnetPolicyTest, GrantsEachListenerPortToThePeersItsRulesName) {
  TailnetPolicy policy = MakeTailnetPolicy(Load(kConfig), PolicyOptions{});
  json::value root = json::parse(policy.json);  // throws (fails the test) if not JSON
  const auto& owners = root.at("tagOwners").as_object();
  EXPECT_EQ(owners.at("tag:superlink"), (json::array{"autogroup:admin"}));
  EXPECT_EQ(owners.at("tag:supernode"), (json::array{"autogroup:admin"}));
  EXPECT_EQ(owners.at("tag:monitor"), (json::array{"autogroup:admin"}));
  const auto& grants = root.at("grants").as_array();

  const json::object* fleet = GrantFrom(grants, {"tag:supernode"}, "ip");
  ASSERT_NE(fleet, nullptr) << policy.json;
  EXPECT_EQ(fleet->at("dst"), (json::array{"tag:superlink"}));
  EXPECT_EQ(fleet->at("ip"), (json::array{"tcp:9092"}));

  // Control: the user, the capability's holders (the tag of the route that names both, and
  // autogroup:member for the route with the capability alone), and the monitor tag.
  const json::object* control = GrantFrom(
      grants, {"alice@example.com", "autogroup:member", "tag:monitor"}, "ip");
  ASSERT_NE(control, nullptr) << policy.json;
  EXPECT_EQ(control->at("ip"), (json::array{"tcp:9093"}));

  const json::object* app = GrantFrom(grants, {"autogroup:member", "tag:monitor"}, "app");
  ASSERT_NE(app, nullptr) << policy.json;
  EXPECT_EQ(app->at("app").at("example.com/cap/flower"),
            (json::array{json::object{{"methods", json::array{"/flwr.proto.Control/ListRuns",
                                                              "/flwr.proto.Control/StreamLogs"}}}}));
  EXPECT_EQ(grants.size(), 3u) << policy.json;

  // What a policy cannot say is said on the side.
  ASSERT_EQ(policy.notes.size(), 2u);
  EXPECT_NE(policy.notes[0].find("autogroup:member"), std::string::npos);
  EXPECT_NE(policy.notes[1].find("laptop-bob"), std::string::npos);
}

TEST(TailnetPolicyTest, AnAuditedRouteIsGrantedByItsRulesAndSaysSo) {
  TailnetPolicy policy = MakeTailnetPolicy(Load(R"(identity:
  provider: tailscale
listeners:
  - name: fleet
    address: 100.64.0.1:9092
    routes:
      - match: /flwr.proto.Fleet/
        upstream: superlink
        allow: {tags: [tag:supernode]}
        mode: audit
upstreams:
  - name: superlink
    address: 127.0.0.2:9092
)"),
                                           PolicyOptions{});
  json::value root = json::parse(policy.json);
  EXPECT_EQ(root.at("grants").as_array().size(), 1u);
  ASSERT_NE(GrantFrom(root.at("grants").as_array(), {"tag:supernode"}, "ip"), nullptr);
  ASSERT_EQ(policy.notes.size(), 1u);
  EXPECT_NE(policy.notes[0].find("audit mode"), std::string::npos);
}

TEST(TailnetPolicyTest, ARouteWithoutAllowOpensItsPortToEveryPeerAndSaysSo) {
  TailnetPolicy policy = MakeTailnetPolicy(Load(R"(listeners:
  - name: fleet
    address: 0.0.0.0:9092
    routes:
      - match: /flwr.proto.Fleet/
        upstream: superlink
upstreams:
  - name: superlink
    address: unix:/run/flower/fleet.sock
)"),
                                           PolicyOptions{"tag:flower", "group:ops"});
  json::value root = json::parse(policy.json);
  EXPECT_EQ(root.at("tagOwners"), (json::object{{"tag:flower", json::array{"group:ops"}}}));
  EXPECT_EQ(root.at("grants"),
            (json::array{json::object{
                {"src", json::array{"*"}}, {"dst", json::array{"tag:flower"}},
                {"ip", json::array{"tcp:9092"}}}}));
  ASSERT_EQ(policy.notes.size(), 1u);
  EXPECT_NE(policy.notes[0].find("every tailnet peer"), std::string::npos);
}

std::string RunPolicy(const std::string& args, int* status) {
  std::string output;
  FILE* pipe = popen((std::string(SEPAL_BINARY) + " policy " + args).c_str(), "r");
  char buf[512];
  while (fgets(buf, sizeof(buf), pipe) != nullptr) output += buf;
  *status = WEXITSTATUS(pclose(pipe));
  return output;
}

TEST(TailnetPolicyTest, CommandPrintsThePolicyOnStdoutAndNotesOnStderr) {
  char path[] = "/tmp/sepal-policy-XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  std::ofstream(path) << kConfig;
  int status = -1;
  std::string out = RunPolicy(std::string("--config ") + path + " --superlink-tag tag:sl 2>/dev/null", &status);
  EXPECT_EQ(status, 0);
  json::value root = json::parse(out);
  EXPECT_TRUE(root.at("tagOwners").as_object().contains("tag:sl"));
  std::string err = RunPolicy(std::string("--config ") + path + " 2>&1 >/dev/null", &status);
  EXPECT_NE(err.find("note: listener control"), std::string::npos) << err;
  std::remove(path);

  RunPolicy("--config /nonexistent/sepal.yaml 2>/dev/null", &status);
  EXPECT_EQ(status, 1);
  RunPolicy("--superlink-tag superlink 2>/dev/null", &status);
  EXPECT_EQ(status, 2);
  RunPolicy("2>/dev/null", &status);
  EXPECT_EQ(status, 2);
}

}  // namespace
}  // namespace sepal::config
