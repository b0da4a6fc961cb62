// Unit tests for the YAML config loader: schema, validation messages (file:line: path), helpers.
#include "proxy/config/config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cstdlib>
#include <fstream>
#include <string>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"

namespace sepal::config {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

// Test YAML is written as R"(\n...)"; dropping the first newline makes file line 1 the
// first line of text, so expected line numbers can be read off the literal.
std::string Yaml(const std::string& text) {
  return !text.empty() && text[0] == '\n' ? text.substr(1) : text;
}

absl::StatusOr<Config> Parse(const std::string& text) {
  return ParseConfig(Yaml(text), "sepal.yaml");
}

std::string ErrorOf(const std::string& text) {
  absl::StatusOr<Config> config = Parse(text);
  if (config.ok()) return "<parsed without error>";
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(config.status().message());
}

// The smallest valid config; tests append to or vary it.
constexpr const char* kUpstreams = R"(
upstreams:
  - name: up
    address: 127.0.0.2:9092
)";

// Stable, readable names for parameterized cases (gtest allows only [A-Za-z0-9_]).
std::string CaseName(std::string_view input, size_t index) {
  std::string name = absl::StrCat("Case", index, "_");
  for (char c : input) name.push_back(std::isalnum(static_cast<unsigned char>(c)) ? c : '_');
  return name;
}

class TempDir {
 public:
  TempDir() {
    std::string pattern = testing::TempDir() + "sepal_config_XXXXXX";
    path_ = mkdtemp(pattern.data());
  }
  ~TempDir() { std::system(absl::StrCat("rm -rf '", path_, "'").c_str()); }
  std::string Write(const std::string& name, const std::string& content) const {
    std::string file = absl::StrCat(path_, "/", name);
    std::ofstream(file) << content;
    return file;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// --- round trips ------------------------------------------------------------------------------

TEST(ConfigTest, FullConfigRoundTripsEveryKey) {
  TempDir dir;
  std::string cert = dir.Write("server.pem", "cert");
  std::string key = dir.Write("server.key", "key");
  std::string client_ca = dir.Write("ca.pem", "ca");
  std::string upstream_ca = dir.Write("up-ca.pem", "ca");
  std::string text = absl::StrReplaceAll(
      R"(
admin:
  address: 127.0.0.1:9901
workers: 4
drain_timeout: 45s
identity:
  provider: static
  tailscale:
    socket: /tmp/tailscaled.sock
    cache_ttl: 2m
    lookup_timeout: 1500ms
  static:
    - match: 127.0.0.0/8
      node: dev-node
      user: alice@example.com
      tags: [tag:supernode, tag:dev]
      capabilities: {example.com/cap/flower: [{methods: ["/flwr.proto.Fleet/*"]}]}
    - match: fd7a:115c:a1e0::/48
listeners:
  - name: fleet
    address: 0.0.0.0:9092
    proxy_protocol: v2
    tls:
      certificate: CERT
      private_key: KEY
      client_ca: CLIENT_CA
    routes:
      - match: /flwr.proto.Fleet/
        upstream: superlink-fleet
        allow:
          tags: [tag:supernode]
          users: [alice@example.com]
          nodes: [supernode-a]
          capability: example.com/cap/flower
      - match: /flwr.proto.Exec/StartRun
        upstream: superlink-exec
    limits:
      max_concurrent_streams: 100
      max_header_list_bytes: 8192
      stream_window_bytes: 65535
      connection_window_bytes: 2147483647
      stream_reset_burst: 50
      stream_reset_rate: 10
      max_continuations: 0
  - name: exec
    address: "[::1]:9093"
    proxy_protocol: any
upstreams:
  - name: superlink-fleet
    address: unix:/run/flower/fleet.sock
    tls: {ca: UPSTREAM_CA, server_name: superlink}
    connect_timeout: 250us
  - name: superlink-exec
    address: localhost:9093
)",
      {{"UPSTREAM_CA", upstream_ca}, {"CLIENT_CA", client_ca}, {"CERT", cert}, {"KEY", key}});
  absl::StatusOr<Config> parsed = Parse(text);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const Config& config = *parsed;

  ASSERT_TRUE(config.admin.address.has_value());
  EXPECT_EQ(config.admin.address->host, "127.0.0.1");
  EXPECT_EQ(config.admin.address->port, 9901);
  EXPECT_EQ(config.workers, 4u);
  EXPECT_EQ(config.drain_timeout, std::chrono::seconds(45));

  EXPECT_EQ(config.identity.provider, IdentityConfig::Provider::kStatic);
  EXPECT_EQ(config.identity.tailscale.socket, "/tmp/tailscaled.sock");
  EXPECT_EQ(config.identity.tailscale.cache_ttl, std::chrono::minutes(2));
  EXPECT_EQ(config.identity.tailscale.lookup_timeout, std::chrono::milliseconds(1500));
  ASSERT_EQ(config.identity.static_identities.size(), 2u);
  const StaticIdentity& dev = config.identity.static_identities[0];
  EXPECT_EQ(dev.match, "127.0.0.0/8");
  EXPECT_EQ(dev.node, "dev-node");
  EXPECT_EQ(dev.user, "alice@example.com");
  EXPECT_THAT(dev.tags, testing::ElementsAre("tag:supernode", "tag:dev"));
  ASSERT_EQ(dev.capabilities.size(), 1u);
  EXPECT_EQ(dev.capabilities.at("example.com/cap/flower"),
            R"([{"methods":["/flwr.proto.Fleet/*"]}])");
  const StaticIdentity& bare = config.identity.static_identities[1];
  EXPECT_EQ(bare.match, "fd7a:115c:a1e0::/48");
  EXPECT_TRUE(bare.node.empty());
  EXPECT_TRUE(bare.tags.empty());
  EXPECT_TRUE(bare.capabilities.empty());

  ASSERT_EQ(config.listeners.size(), 2u);
  const ListenerConfig& fleet = config.listeners[0];
  EXPECT_EQ(fleet.name, "fleet");
  EXPECT_EQ(fleet.address.kind, SocketAddress::Kind::kTcp);
  EXPECT_EQ(fleet.address.host, "0.0.0.0");
  EXPECT_EQ(fleet.address.port, 9092);
  EXPECT_EQ(fleet.address.text, "0.0.0.0:9092");
  EXPECT_EQ(fleet.proxy_protocol, ProxyProtocol::kV2);
  ASSERT_TRUE(fleet.tls.has_value());
  EXPECT_EQ(fleet.tls->certificate, cert);
  EXPECT_EQ(fleet.tls->private_key, key);
  EXPECT_EQ(fleet.tls->client_ca, client_ca);
  ASSERT_EQ(fleet.routes.size(), 2u);
  EXPECT_EQ(fleet.routes[0].match, "/flwr.proto.Fleet/");
  EXPECT_EQ(fleet.routes[0].upstream, "superlink-fleet");
  ASSERT_TRUE(fleet.routes[0].allow.has_value());
  EXPECT_THAT(fleet.routes[0].allow->tags, testing::ElementsAre("tag:supernode"));
  EXPECT_THAT(fleet.routes[0].allow->users, testing::ElementsAre("alice@example.com"));
  EXPECT_THAT(fleet.routes[0].allow->nodes, testing::ElementsAre("supernode-a"));
  EXPECT_EQ(fleet.routes[0].allow->capability, "example.com/cap/flower");
  EXPECT_EQ(fleet.routes[1].match, "/flwr.proto.Exec/StartRun");
  EXPECT_EQ(fleet.routes[1].upstream, "superlink-exec");
  EXPECT_FALSE(fleet.routes[1].allow.has_value());
  EXPECT_EQ(fleet.limits.max_concurrent_streams, 100u);
  EXPECT_EQ(fleet.limits.max_header_list_bytes, 8192u);
  EXPECT_EQ(fleet.limits.stream_window_bytes, 65535u);
  EXPECT_EQ(fleet.limits.connection_window_bytes, 2147483647u);
  EXPECT_EQ(fleet.limits.stream_reset_burst, 50u);
  EXPECT_EQ(fleet.limits.stream_reset_rate, 10u);
  EXPECT_EQ(fleet.limits.max_continuations, 0u);

  const ListenerConfig& exec = config.listeners[1];
  EXPECT_EQ(exec.address.host, "::1");
  EXPECT_EQ(exec.address.port, 9093);
  EXPECT_EQ(exec.proxy_protocol, ProxyProtocol::kAny);
  EXPECT_FALSE(exec.tls.has_value());
  EXPECT_TRUE(exec.routes.empty());

  ASSERT_EQ(config.upstreams.size(), 2u);
  const UpstreamConfig& upstream = config.upstreams[0];
  EXPECT_EQ(upstream.name, "superlink-fleet");
  EXPECT_EQ(upstream.address.kind, SocketAddress::Kind::kUnix);
  EXPECT_EQ(upstream.address.path, "/run/flower/fleet.sock");
  ASSERT_TRUE(upstream.tls.has_value());
  EXPECT_EQ(upstream.tls->ca, upstream_ca);
  EXPECT_EQ(upstream.tls->server_name, "superlink");
  EXPECT_EQ(upstream.connect_timeout, std::chrono::milliseconds(1));
  EXPECT_EQ(config.upstreams[1].address.host, "localhost");
  EXPECT_EQ(config.upstreams[1].connect_timeout, std::chrono::seconds(5));
}

TEST(ConfigTest, MinimalConfigKeepsDefaults) {
  absl::StatusOr<Config> config = Parse(R"(
listeners:
  - name: fleet
    address: 127.0.0.1:0
    routes: [{match: /a.B/, upstream: up}]
)" + std::string(kUpstreams));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_FALSE(config->admin.address.has_value());
  EXPECT_EQ(config->workers, 0u);
  EXPECT_EQ(config->drain_timeout, std::chrono::seconds(30));
  EXPECT_EQ(config->identity.provider, IdentityConfig::Provider::kNone);
  EXPECT_EQ(config->identity.tailscale.socket, "/var/run/tailscale/tailscaled.sock");
  const ListenerConfig& listener = config->listeners[0];
  EXPECT_EQ(listener.address.port, 0);
  EXPECT_EQ(listener.proxy_protocol, ProxyProtocol::kNone);
  EXPECT_EQ(listener.limits.max_concurrent_streams, Http2Limits().max_concurrent_streams);
  EXPECT_EQ(listener.limits.stream_window_bytes, Http2Limits().stream_window_bytes);
  EXPECT_FALSE(config->upstreams[0].tls.has_value());
  EXPECT_TRUE(config->source_path.empty());
}

TEST(ConfigTest, ListenerWithoutRoutesIsAllowed) {
  absl::StatusOr<Config> config = Parse(R"(
listeners:
  - name: closed
    address: 127.0.0.1:9092
)");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(config->listeners[0].routes.empty());
  EXPECT_TRUE(config->upstreams.empty());
}

TEST(ConfigTest, TailscaleProviderWithDefaults) {
  absl::StatusOr<Config> config = Parse(R"(
identity:
  provider: tailscale
listeners:
  - {name: a, address: "127.0.0.1:1"}
)");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->identity.provider, IdentityConfig::Provider::kTailscale);
  EXPECT_EQ(config->identity.tailscale.cache_ttl, std::chrono::seconds(60));
  EXPECT_EQ(config->identity.tailscale.lookup_timeout, std::chrono::seconds(2));
}

TEST(ConfigTest, FindUpstream) {
  absl::StatusOr<Config> config = Parse(R"(
listeners: [{name: a, address: "127.0.0.1:1"}]
upstreams:
  - {name: one, address: "127.0.0.1:1"}
  - {name: two, address: "unix:/x"}
)");
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_NE(config->FindUpstream("two"), nullptr);
  EXPECT_EQ(config->FindUpstream("two")->address.path, "/x");
  EXPECT_EQ(config->FindUpstream("three"), nullptr);
}

// --- unknown keys and wrong types -------------------------------------------------------------

TEST(ConfigErrorTest, UnknownNestedKeySuggestsClosest) {
  EXPECT_EQ(ErrorOf(R"(
listeners:
  - name: fleet
    adress: 127.0.0.1:9092
)"),
            "sepal.yaml:3: listeners[0].adress: unknown key \"adress\" (did you mean "
            "\"address\"?)");
}

TEST(ConfigTest, RouteModeAuditIsReadAndNeedsAllowRules) {
  constexpr char kBase[] = R"(identity:
  provider: tailscale
listeners:
  - name: fleet
    address: 127.0.0.1:9092
    routes:
      - match: /flwr.proto.Fleet/
        upstream: superlink
)";
  constexpr char kTail[] = R"(upstreams:
  - name: superlink
    address: 127.0.0.2:9092
)";
  auto parse = [&](const std::string& route_tail) {
    return ParseConfig(std::string(kBase) + route_tail + kTail, "sepal.yaml");
  };
  auto audit = parse("        allow: {tags: [tag:supernode]}\n        mode: audit\n");
  ASSERT_TRUE(audit.ok()) << audit.status().message();
  EXPECT_TRUE(audit->listeners[0].routes[0].audit);
  auto enforce = parse("        allow: {tags: [tag:supernode]}\n        mode: enforce\n");
  ASSERT_TRUE(enforce.ok()) << enforce.status().message();
  EXPECT_FALSE(enforce->listeners[0].routes[0].audit);
  auto bogus = parse("        allow: {tags: [tag:supernode]}\n        mode: shadow\n");
  ASSERT_FALSE(bogus.ok());
  EXPECT_NE(bogus.status().message().find("listeners[0].routes[0].mode"), std::string::npos)
      << bogus.status().message();
  auto nothing_to_audit = parse("        mode: audit\n");
  ASSERT_FALSE(nothing_to_audit.ok());
  EXPECT_NE(nothing_to_audit.status().message().find("needs allow rules"), std::string::npos)
      << nothing_to_audit.status().message();
}

TEST(ConfigErrorTest, UnknownTopLevelKey) {
  EXPECT_EQ(ErrorOf(R"(
workers: 1
listners: []
)"),
            "sepal.yaml:2: listners: unknown key \"listners\" (did you mean \"listeners\"?)");
  EXPECT_EQ(ErrorOf("frobnicate: 1\n"), "sepal.yaml:1: frobnicate: unknown key \"frobnicate\"");
}

TEST(ConfigErrorTest, DuplicateKey) {
  EXPECT_EQ(ErrorOf(R"(
workers: 1
workers: 2
)"),
            "sepal.yaml:2: workers: duplicate key \"workers\"");
}

TEST(ConfigErrorTest, WorkersMustBeASmallNonNegativeInteger) {
  EXPECT_EQ(ErrorOf("workers: abc\n"),
            "sepal.yaml:1: workers: expected a non-negative integer, got \"abc\"");
  EXPECT_EQ(ErrorOf("workers: -1\n"),
            "sepal.yaml:1: workers: expected a non-negative integer, got \"-1\"");
  EXPECT_EQ(ErrorOf("workers: 1025\n"),
            "sepal.yaml:1: workers: must be between 0 and 1024, got 1025");
  EXPECT_EQ(ErrorOf("workers: [1]\n"),
            "sepal.yaml:1: workers: expected a non-negative integer, got a list");
}

TEST(ConfigErrorTest, MapWhereListExpected) {
  EXPECT_EQ(ErrorOf(R"(
listeners:
  name: fleet
  address: 127.0.0.1:9092
)"),
            "sepal.yaml:1: listeners: expected a list, got a map");
}

TEST(ConfigErrorTest, ListWhereStringExpected) {
  EXPECT_EQ(ErrorOf(R"(
listeners:
  - name: [a, b]
    address: 127.0.0.1:9092
)"),
            "sepal.yaml:2: listeners[0].name: expected a string, got a list");
}

TEST(ConfigErrorTest, EmptySectionIsAWrongType) {
  EXPECT_EQ(ErrorOf(R"(
identity:
listeners: [{name: a, address: "127.0.0.1:1"}]
)"),
            "sepal.yaml:1: identity: expected a map, got nothing");
}

TEST(ConfigErrorTest, TopLevelMustBeAMap) {
  EXPECT_EQ(ErrorOf("- a\n- b\n"), "sepal.yaml:1: (top level): expected a map, got a list");
}

TEST(ConfigErrorTest, YamlSyntaxErrorReportsLine) {
  EXPECT_EQ(ErrorOf(R"(
workers: 1
listeners: name: a
drain_timeout: 1s
)"),
            "sepal.yaml:2: YAML syntax: illegal map value (column 16)");
  EXPECT_EQ(ErrorOf("workers: 1\nadmin: {address: [1, 2}\n"),
            "sepal.yaml:2: YAML syntax: illegal flow end (column 23)");
  EXPECT_THAT(ErrorOf("workers: 1\ndrain_timeout: *undefined\n"),
              StartsWith("sepal.yaml:2: YAML syntax: the referenced anchor is not defined"));
}

TEST(ConfigErrorTest, SeveralDocumentsAreRejected) {
  EXPECT_EQ(ErrorOf("workers: 1\n---\nworkers: 2\n"),
            "sepal.yaml:3: (top level): the file holds several YAML documents; expected one");
}

// --- listeners --------------------------------------------------------------------------------

TEST(ConfigErrorTest, AtLeastOneListener) {
  EXPECT_EQ(ErrorOf("workers: 2\n"), "sepal.yaml:1: listeners: at least one listener is required");
  EXPECT_EQ(ErrorOf(""), "sepal.yaml:1: listeners: at least one listener is required");
  EXPECT_EQ(ErrorOf("workers: 2\nlisteners: []\n"),
            "sepal.yaml:2: listeners: at least one listener is required");
}

TEST(ConfigErrorTest, ListenerNameRequiredAndNonEmpty) {
  EXPECT_EQ(ErrorOf(R"(
listeners:
  - address: 127.0.0.1:9092
)"),
            "sepal.yaml:2: listeners[0].name: required");
  EXPECT_EQ(ErrorOf(R"(
listeners:
  - name: ""
    address: 127.0.0.1:9092
)"),
            "sepal.yaml:2: listeners[0].name: must not be empty");
}

TEST(ConfigErrorTest, DuplicateListenerName) {
  EXPECT_EQ(ErrorOf(R"(
listeners:
  - name: fleet
    address: 127.0.0.1:9092
  - name: fleet
    address: 127.0.0.1:9093
)"),
            "sepal.yaml:4: listeners[1].name: duplicate listener name \"fleet\" (also "
            "listeners[0])");
}

TEST(ConfigErrorTest, DuplicateListenerAddress) {
  EXPECT_EQ(ErrorOf(R"(
listeners:
  - name: a
    address: 127.0.0.1:9092
  - name: b
    address: 127.0.0.1:9092
)"),
            "sepal.yaml:4: listeners[1].address: duplicate listener address "
            "\"127.0.0.1:9092\" (also listeners[0])");
}

TEST(ConfigTest, EphemeralListenerPortsMayRepeat) {
  absl::StatusOr<Config> config = Parse(R"(
listeners:
  - {name: a, address: "127.0.0.1:0"}
  - {name: b, address: "127.0.0.1:0"}
)");
  EXPECT_TRUE(config.ok()) << config.status();
}

TEST(ConfigErrorTest, UnixListenerRejected) {
  EXPECT_EQ(ErrorOf(R"(
listeners:
  - name: a
    address: unix:/run/sepal.sock
)"),
            "sepal.yaml:3: listeners[0].address: unix listeners are not supported; use "
            "host:port");
}

TEST(ConfigErrorTest, UnknownProxyProtocol) {
  EXPECT_EQ(ErrorOf(R"(
listeners:
  - name: a
    address: 127.0.0.1:1
    proxy_protocol: v3
)"),
            "sepal.yaml:4: listeners[0].proxy_protocol: unknown value \"v3\" (expected one of "
            "none, v1, v2, any)");
}

// --- routes and upstreams ---------------------------------------------------------------------

TEST(ConfigErrorTest, UnknownUpstreamNamesKnownOnes) {
  EXPECT_EQ(ErrorOf(R"(
upstreams:
  - name: superlink-fleet
    address: unix:/run/flower/fleet.sock
listeners:
  - name: fleet
    address: 0.0.0.0:9092
    routes:
      - match: /flwr.proto.Fleet/CreateNode
        upstream: superlink-fleet
      - match: /flwr.proto.Fleet/
        upstream: fleet-x
)"),
            "sepal.yaml:11: listeners[0].routes[1].upstream: unknown upstream \"fleet-x\" "
            "(known: superlink-fleet)");
}

TEST(ConfigErrorTest, UnknownUpstreamWhenNoneDefined) {
  EXPECT_EQ(ErrorOf(R"(
listeners:
  - name: fleet
    address: 0.0.0.0:9092
    routes: [{match: /a.B/, upstream: up}]
)"),
            "sepal.yaml:4: listeners[0].routes[0].upstream: unknown upstream \"up\" (no "
            "upstreams are defined)");
}

TEST(ConfigErrorTest, DuplicateUpstreamName) {
  EXPECT_EQ(ErrorOf(R"(
listeners: [{name: a, address: "127.0.0.1:1"}]
upstreams:
  - name: up
    address: 127.0.0.1:1
  - name: up
    address: 127.0.0.1:2
)"),
            "sepal.yaml:5: upstreams[1].name: duplicate upstream name \"up\" (also "
            "upstreams[0])");
}

TEST(ConfigErrorTest, UpstreamNeedsANonZeroPort) {
  EXPECT_EQ(ErrorOf(R"(
listeners: [{name: a, address: "127.0.0.1:1"}]
upstreams:
  - name: up
    address: 127.0.0.1:0
)"),
            "sepal.yaml:4: upstreams[0].address: upstream port must be between 1 and 65535");
}

TEST(ConfigErrorTest, RouteMatchMustStartWithSlash) {
  EXPECT_EQ(ErrorOf(R"(
listeners:
  - name: a
    address: 127.0.0.1:1
    routes:
      - match: flwr.proto.Fleet/
        upstream: up
)" + std::string(kUpstreams)),
            "sepal.yaml:5: listeners[0].routes[0].match: route match \"flwr.proto.Fleet/\" "
            "must start with \"/\"");
}

class ConfigRouteMatchShapeTest : public testing::TestWithParam<const char*> {};

TEST_P(ConfigRouteMatchShapeTest, IsRejectedOnItsLine) {
  std::string text = absl::StrCat(R"(
listeners:
  - name: a
    address: 127.0.0.1:1
    routes:
      - upstream: up
        match: ")",
                                  GetParam(), "\"\n", kUpstreams);
  EXPECT_THAT(ErrorOf(text),
              StartsWith(absl::StrCat("sepal.yaml:6: listeners[0].routes[0].match: route match \"",
                                      GetParam(), "\" ")));
}

INSTANTIATE_TEST_SUITE_P(BadShapes, ConfigRouteMatchShapeTest,
                         testing::Values("/", "/flwr.proto.Fleet", "//Method", "/a/b/c",
                                         "/flwr.proto.Fleet/*", "/a b/M", ""),
                         [](const auto& case_info) {
                           return CaseName(case_info.param, case_info.index);
                         });

TEST(ConfigErrorTest, ShadowedRouteIsAnError) {
  EXPECT_EQ(ErrorOf(R"(
listeners:
  - name: a
    address: 127.0.0.1:1
    routes:
      - {match: /flwr.proto.Fleet/, upstream: up}
      - {match: /flwr.proto.Fleet/PullMessages, upstream: up}
)" + std::string(kUpstreams)),
            "sepal.yaml:6: listeners[0].routes[1].match: route "
            "\"/flwr.proto.Fleet/PullMessages\" can never match: listeners[0].routes[0] "
            "(\"/flwr.proto.Fleet/\") comes first and wins");
}

TEST(ConfigTest, ExactRouteBeforeServiceRouteIsFine) {
  absl::StatusOr<Config> config = Parse(R"(
listeners:
  - name: a
    address: 127.0.0.1:1
    routes:
      - {match: /flwr.proto.Fleet/PullMessages, upstream: up}
      - {match: /flwr.proto.Fleet/, upstream: up}
      - {match: /flwr.proto.FleetV2/, upstream: up}
)" + std::string(kUpstreams));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->listeners[0].routes.size(), 3u);
}

// --- allow rules and identity -----------------------------------------------------------------

constexpr const char* kTailscaleIdentity = R"(
identity: {provider: tailscale}
)";

TEST(ConfigErrorTest, EmptyAllowIsAnError) {
  EXPECT_EQ(ErrorOf(std::string(kTailscaleIdentity) + R"(listeners:
  - name: a
    address: 127.0.0.1:1
    routes:
      - match: /a.B/
        upstream: up
        allow: {tags: []}
)" + kUpstreams),
            "sepal.yaml:8: listeners[0].routes[0].allow: needs at least one of tags, users, "
            "nodes, capability");
}

TEST(ConfigErrorTest, AllowWithoutIdentityIsAnError) {
  EXPECT_EQ(ErrorOf(R"(
listeners:
  - name: a
    address: 127.0.0.1:1
    routes:
      - match: /a.B/
        upstream: up
        allow: {users: [alice@example.com]}
)" + std::string(kUpstreams)),
            "sepal.yaml:7: listeners[0].routes[0].allow: allow rules need an identity "
            "section (identity.provider)");
}

TEST(ConfigErrorTest, AllowTagsNeedTagPrefix) {
  EXPECT_EQ(ErrorOf(std::string(kTailscaleIdentity) + R"(listeners:
  - name: a
    address: 127.0.0.1:1
    routes:
      - match: /a.B/
        upstream: up
        allow:
          tags:
            - tag:ok
            - supernode
)" + kUpstreams),
            "sepal.yaml:11: listeners[0].routes[0].allow.tags[1]: tag \"supernode\" must "
            "start with \"tag:\"");
}

TEST(ConfigErrorTest, StaticProviderNeedsEntries) {
  EXPECT_EQ(ErrorOf(R"(
identity:
  provider: static
listeners: [{name: a, address: "127.0.0.1:1"}]
)"),
            "sepal.yaml:1: identity.static: provider static needs at least one entry in "
            "identity.static");
  EXPECT_EQ(ErrorOf(R"(
identity:
  provider: static
  static: []
listeners: [{name: a, address: "127.0.0.1:1"}]
)"),
            "sepal.yaml:3: identity.static: provider static needs at least one entry in "
            "identity.static");
}

TEST(ConfigErrorTest, IdentityProviderRequiredAndKnown) {
  EXPECT_EQ(ErrorOf(R"(
identity:
  tailscale: {socket: /tmp/ts.sock}
listeners: [{name: a, address: "127.0.0.1:1"}]
)"),
            "sepal.yaml:1: identity.provider: required");
  EXPECT_EQ(ErrorOf(R"(
identity:
  provider: ldap
listeners: [{name: a, address: "127.0.0.1:1"}]
)"),
            "sepal.yaml:2: identity.provider: unknown value \"ldap\" (expected one of "
            "tailscale, static)");
}

TEST(ConfigErrorTest, StaticIdentityTagsNeedTagPrefix) {
  EXPECT_EQ(ErrorOf(R"(
identity:
  provider: static
  static:
    - match: 127.0.0.0/8
      tags: [supernode]
listeners: [{name: a, address: "127.0.0.1:1"}]
)"),
            "sepal.yaml:5: identity.static[0].tags[0]: tag \"supernode\" must start with "
            "\"tag:\"");
}

class ConfigBadCidrTest : public testing::TestWithParam<std::pair<const char*, const char*>> {};

TEST_P(ConfigBadCidrTest, IsRejected) {
  std::string text =
      absl::StrCat("identity:\n  provider: static\n  static:\n    - match: \"", GetParam().first,
                   "\"\nlisteners: [{name: a, address: \"127.0.0.1:1\"}]\n");
  EXPECT_EQ(ErrorOf(text),
            absl::StrCat("sepal.yaml:4: identity.static[0].match: ", GetParam().second));
}

INSTANTIATE_TEST_SUITE_P(
    Cidrs, ConfigBadCidrTest,
    testing::Values(
        std::pair{"127.0.0.1", "expected a CIDR such as 100.64.0.0/10, got \"127.0.0.1\""},
        std::pair{"10.0.0.0/33", "prefix length of \"10.0.0.0/33\" must be between 0 and 32"},
        std::pair{"fd7a::/129", "prefix length of \"fd7a::/129\" must be between 0 and 128"},
        std::pair{"10.0.0.0/-1", "prefix length of \"10.0.0.0/-1\" must be between 0 and 32"},
        std::pair{"10.0.0.0/", "prefix length of \"10.0.0.0/\" must be between 0 and 32"},
        std::pair{"300.0.0.0/8", "bad IP address \"300.0.0.0\" in CIDR"},
        std::pair{"host/8", "bad IP address \"host\" in CIDR"}),
    [](const auto& case_info) { return CaseName(case_info.param.first, case_info.index); });

TEST(ConfigTest, CidrEdgesAccepted) {
  absl::StatusOr<Config> config = Parse(R"(
identity:
  provider: static
  static:
    - {match: 0.0.0.0/0}
    - {match: 100.64.0.0/10}
    - {match: "::1/128"}
    - {match: "fd7a:115c:a1e0::/48"}
listeners: [{name: a, address: "127.0.0.1:1"}]
)");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->identity.static_identities[2].match, "::1/128");
}

// --- capabilities as JSON ---------------------------------------------------------------------

std::string CapabilityJson(const std::string& values) {
  absl::StatusOr<Config> config = ParseConfig(
      absl::StrCat("identity:\n  provider: static\n  static:\n    - match: 127.0.0.0/8\n"
                   "      capabilities:\n        cap: ",
                   values, "\nlisteners: [{name: a, address: \"127.0.0.1:1\"}]\n"),
      "sepal.yaml");
  if (!config.ok()) return std::string(config.status().message());
  return config->identity.static_identities[0].capabilities.at("cap");
}

TEST(ConfigCapabilityJsonTest, ScalarsBecomeTypedJson) {
  EXPECT_EQ(CapabilityJson(R"([1, -2.5, 1e3, true, false, null, ~, "7", 'yes', text])"),
            R"([1,-2.5,1e3,true,false,null,null,"7","yes","text"])");
}

TEST(ConfigCapabilityJsonTest, NonJsonNumbersStayStrings) {
  EXPECT_EQ(CapabilityJson("[0x1F, 007, .5, 1_000, +1, .inf]"),
            R"(["0x1F","007",".5","1_000","+1",".inf"])");
}

TEST(ConfigCapabilityJsonTest, NestedMapsKeepOrderAndEscape) {
  EXPECT_EQ(CapabilityJson(R"([{z: 1, a: {b: [x]}}, {}, "quote\" back\\ tab\t nl\n ctl\x01"])"),
            R"([{"z":1,"a":{"b":["x"]}},{},"quote\" back\\ tab\t nl\n ctl\u0001"])");
}

TEST(ConfigCapabilityJsonTest, EmptyListAllowed) { EXPECT_EQ(CapabilityJson("[]"), "[]"); }

TEST(ConfigCapabilityJsonTest, ValueMustBeAList) {
  EXPECT_EQ(CapabilityJson("{methods: [x]}"),
            "sepal.yaml:6: identity.static[0].capabilities.cap: expected a list of values, got "
            "a map");
}

TEST(ConfigCapabilityJsonTest, DuplicateKeyInValueRejected) {
  EXPECT_EQ(CapabilityJson("[{a: 1, a: 2}]"),
            "sepal.yaml:6: identity.static[0].capabilities.cap[0].a: duplicate key \"a\"");
}

TEST(ConfigCapabilityJsonTest, AliasBombIsBounded) {
  // Each level doubles through aliases; 30 levels would be 2^30 elements as JSON.
  std::string text =
      "identity:\n  provider: static\n  static:\n    - match: 127.0.0.0/8\n"
      "      capabilities:\n";
  text += "        c0: &l0 [xxxxxxxxxxxxxxxx, xxxxxxxxxxxxxxxx]\n";
  for (int i = 1; i < 30; ++i) {
    text += absl::StrCat("        c", i, ": &l", i, " [*l", i - 1, ", *l", i - 1, "]\n");
  }
  text += "listeners: [{name: a, address: \"127.0.0.1:1\"}]\n";
  absl::StatusOr<Config> config = ParseConfig(text, "sepal.yaml");
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(config.status().message(), HasSubstr("capability value is larger than"));
}

// --- numbers, windows, durations in the file --------------------------------------------------

TEST(ConfigErrorTest, WindowAndHeaderLimitsAreRangeChecked) {
  auto with_limit = [](const std::string& limit) {
    return ErrorOf(absl::StrCat(
        "listeners:\n  - name: a\n    address: 127.0.0.1:1\n    limits:\n      ", limit, "\n"));
  };
  EXPECT_EQ(with_limit("stream_window_bytes: 65534"),
            "sepal.yaml:5: listeners[0].limits.stream_window_bytes: must be between 65535 and "
            "2147483647, got 65534");
  EXPECT_EQ(with_limit("connection_window_bytes: 2147483648"),
            "sepal.yaml:5: listeners[0].limits.connection_window_bytes: must be between 65535 "
            "and 2147483647, got 2147483648");
  EXPECT_EQ(with_limit("max_header_list_bytes: 1023"),
            "sepal.yaml:5: listeners[0].limits.max_header_list_bytes: must be between 1024 and "
            "4294967295, got 1023");
  EXPECT_EQ(with_limit("max_concurrent_streams: 0"),
            "sepal.yaml:5: listeners[0].limits.max_concurrent_streams: must be between 1 and "
            "4294967295, got 0");
  EXPECT_EQ(with_limit("stream_reset_rate: 99999999999999999999999"),
            "sepal.yaml:5: listeners[0].limits.stream_reset_rate: must be between 1 and "
            "4294967295, got 99999999999999999999999");
  EXPECT_EQ(with_limit("max_streams: 5"),
            "sepal.yaml:5: listeners[0].limits.max_streams: unknown key \"max_streams\"");
}

TEST(ConfigErrorTest, DurationsInTheFile) {
  EXPECT_EQ(ErrorOf("drain_timeout: 30\n"),
            "sepal.yaml:1: drain_timeout: duration \"30\" is missing a unit (us, ms, s, m or "
            "h), e.g. 30s");
  EXPECT_EQ(ErrorOf("drain_timeout: 0s\n"),
            "sepal.yaml:1: drain_timeout: duration \"0s\" must be positive");
  EXPECT_EQ(ErrorOf(R"(
listeners: [{name: a, address: "127.0.0.1:1"}]
upstreams:
  - name: up
    address: 127.0.0.1:1
    connect_timeout: -5s
)"),
            "sepal.yaml:5: upstreams[0].connect_timeout: bad duration \"-5s\" (expected a "
            "number and a unit, e.g. 30s, 500ms, 1m30s)");
}

// --- TLS files --------------------------------------------------------------------------------

TEST(ConfigErrorTest, MissingTlsFileNamesPathAndReason) {
  TempDir dir;
  std::string cert = dir.Write("server.pem", "cert");
  std::string missing = dir.path() + "/nope.key";
  std::string text = absl::StrCat(R"(
listeners:
  - name: a
    address: 127.0.0.1:1
    tls:
      certificate: )",
                                  cert, "\n      private_key: ", missing, "\n");
  EXPECT_EQ(ErrorOf(text),
            absl::StrCat("sepal.yaml:6: listeners[0].tls.private_key: cannot read \"", missing,
                         "\": No such file or directory"));
}

TEST(ConfigErrorTest, TlsPathThatIsADirectory) {
  TempDir dir;
  std::string text = absl::StrCat(R"(
listeners: [{name: a, address: "127.0.0.1:1"}]
upstreams:
  - name: up
    address: 127.0.0.1:1
    tls:
      ca: )",
                                  dir.path(), "\n");
  EXPECT_EQ(ErrorOf(text), absl::StrCat("sepal.yaml:6: upstreams[0].tls.ca: cannot read \"",
                                        dir.path(), "\": Is a directory"));
}

TEST(ConfigErrorTest, ListenerTlsNeedsCertificateAndKey) {
  TempDir dir;
  std::string cert = dir.Write("server.pem", "cert");
  EXPECT_EQ(ErrorOf(absl::StrCat(R"(
listeners:
  - name: a
    address: 127.0.0.1:1
    tls:
      certificate: )",
                                 cert, "\n")),
            "sepal.yaml:4: listeners[0].tls.private_key: required");
}

TEST(ConfigTest, ListenerTlsDefaultsAndEveryKey) {
  TempDir dir;
  std::string cert = dir.Write("server.pem", "cert");
  std::string key = dir.Write("server.key", "key");
  absl::StatusOr<Config> config = Parse(absl::StrCat(R"(
listeners:
  - name: a
    address: 127.0.0.1:1
    tls: {certificate: )", cert, ", private_key: ", key, R"(}
  - name: b
    address: 127.0.0.1:2
    tls:
      source: files
      certificate: )", cert, "\n      private_key: ", key, R"(
      handshake_timeout: 2500ms
)"));
  ASSERT_TRUE(config.ok()) << config.status();
  const ListenerTlsConfig& a = *config->listeners[0].tls;
  EXPECT_EQ(a.source, ListenerTlsConfig::Source::kFiles);
  EXPECT_EQ(a.handshake_timeout, std::chrono::seconds(10));
  EXPECT_TRUE(a.client_ca.empty());
  EXPECT_EQ(config->listeners[1].tls->handshake_timeout, std::chrono::milliseconds(2500));
  // Equal settings compare equal (a reload keeps what is unchanged).
  EXPECT_EQ(a, ListenerTlsConfig(a));
  EXPECT_NE(a, *config->listeners[1].tls);
}

TEST(ConfigTest, TailscaleSourcedTlsNeedsNoFiles) {
  absl::StatusOr<Config> config = Parse(R"(
listeners:
  - name: a
    address: 127.0.0.1:1
    tls: {source: tailscale}
)");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->listeners[0].tls->source, ListenerTlsConfig::Source::kTailscale);
  EXPECT_TRUE(config->listeners[0].tls->certificate.empty());
  EXPECT_THAT(Summarize(*config), HasSubstr("tls (certificate from tailscaled)"));
}

TEST(ConfigErrorTest, TailscaleSourcedTlsRejectsFiles) {
  TempDir dir;
  std::string cert = dir.Write("server.pem", "cert");
  EXPECT_EQ(ErrorOf(absl::StrCat(R"(
listeners:
  - name: a
    address: 127.0.0.1:1
    tls:
      source: tailscale
      certificate: )",
                                 cert, "\n")),
            "sepal.yaml:6: listeners[0].tls.certificate: not used with source: tailscale "
            "(tailscaled supplies the pair)");
}

TEST(ConfigErrorTest, ListenerTlsSourceAndTimeoutAreChecked) {
  EXPECT_EQ(ErrorOf(R"(
listeners:
  - name: a
    address: 127.0.0.1:1
    tls: {source: acme}
)"),
            "sepal.yaml:4: listeners[0].tls.source: unknown value \"acme\" (expected one of "
            "files, tailscale)");
  EXPECT_EQ(ErrorOf(R"(
listeners:
  - name: a
    address: 127.0.0.1:1
    tls:
      source: tailscale
      handshake_timeout: 10
)"),
            "sepal.yaml:6: listeners[0].tls.handshake_timeout: duration \"10\" is missing a "
            "unit (us, ms, s, m or h), e.g. 10s");
}

TEST(ConfigTest, UpstreamTlsClientCertificate) {
  TempDir dir;
  std::string cert = dir.Write("client.pem", "cert");
  std::string key = dir.Write("client.key", "key");
  absl::StatusOr<Config> config = Parse(absl::StrCat(R"(
listeners: [{name: a, address: "127.0.0.1:1"}]
upstreams:
  - name: up
    address: 127.0.0.1:1
    tls: {certificate: )", cert, ", private_key: ", key, "}\n"));
  ASSERT_TRUE(config.ok()) << config.status();
  const UpstreamTlsConfig& tls = *config->upstreams[0].tls;
  EXPECT_TRUE(tls.ca.empty());  // the system trust store
  EXPECT_EQ(tls.certificate, cert);
  EXPECT_EQ(tls.private_key, key);
  EXPECT_THAT(Summarize(*config), HasSubstr(" tls client-cert"));
}

TEST(ConfigErrorTest, UpstreamClientCertificateNeedsItsKey) {
  TempDir dir;
  std::string cert = dir.Write("client.pem", "cert");
  EXPECT_EQ(ErrorOf(absl::StrCat(R"(
listeners: [{name: a, address: "127.0.0.1:1"}]
upstreams:
  - name: up
    address: 127.0.0.1:1
    tls:
      certificate: )",
                                 cert, "\n")),
            "sepal.yaml:6: upstreams[0].tls.private_key: required with a client certificate "
            "(certificate and private_key go together)");
}

TEST(ConfigErrorTest, UnixUpstreamTlsNeedsServerName) {
  EXPECT_EQ(ErrorOf(R"(
listeners: [{name: a, address: "127.0.0.1:1"}]
upstreams:
  - name: up
    address: unix:/run/flower.sock
    tls: {}
)"),
            "sepal.yaml:5: upstreams[0].tls.server_name: required for TLS over a unix socket "
            "(the name the SuperLink's certificate is checked against)");
}

TEST(ConfigTest, UpstreamTlsSettingsTakePartInEquality) {
  UpstreamConfig a;
  a.tls.emplace();
  UpstreamConfig b = a;
  EXPECT_EQ(a, b);
  b.tls->certificate = "/x.pem";
  EXPECT_NE(a, b);  // a reload gives this upstream a new pool
}

// --- ParseDuration ----------------------------------------------------------------------------

TEST(ConfigParseDurationTest, Units) {
  EXPECT_EQ(*ParseDuration("500ms"), std::chrono::milliseconds(500));
  EXPECT_EQ(*ParseDuration("30s"), std::chrono::seconds(30));
  EXPECT_EQ(*ParseDuration("2m"), std::chrono::minutes(2));
  EXPECT_EQ(*ParseDuration("1h"), std::chrono::hours(1));
  EXPECT_EQ(*ParseDuration("1m30s"), std::chrono::seconds(90));
  EXPECT_EQ(*ParseDuration("1h2m3s4ms"), std::chrono::milliseconds(3723004));
}

TEST(ConfigParseDurationTest, SubMillisecondRoundsUp) {
  EXPECT_EQ(*ParseDuration("250us"), std::chrono::milliseconds(1));
  EXPECT_EQ(*ParseDuration("1000us"), std::chrono::milliseconds(1));
  EXPECT_EQ(*ParseDuration("1001us"), std::chrono::milliseconds(2));
}

TEST(ConfigParseDurationTest, Errors) {
  EXPECT_THAT(ParseDuration("30").status().message(), HasSubstr("missing a unit"));
  EXPECT_THAT(ParseDuration("1m30").status().message(), HasSubstr("missing a unit"));
  EXPECT_THAT(ParseDuration("").status().message(), HasSubstr("empty duration"));
  EXPECT_THAT(ParseDuration("0ms").status().message(), HasSubstr("must be positive"));
  EXPECT_THAT(ParseDuration("5d").status().message(), HasSubstr("unknown unit \"d\""));
  EXPECT_THAT(ParseDuration("s").status().message(), HasSubstr("bad duration"));
  EXPECT_THAT(ParseDuration("1.5s").status().message(), HasSubstr("unknown unit \".\""));
  EXPECT_THAT(ParseDuration(" 5s").status().message(), HasSubstr("bad duration"));
  EXPECT_THAT(ParseDuration("169h").status().message(), HasSubstr("too long"));
  EXPECT_THAT(ParseDuration("99999999999999999999999s").status().message(), HasSubstr("too long"));
  EXPECT_TRUE(ParseDuration("168h").ok());
}

// --- ParseSocketAddress -----------------------------------------------------------------------

TEST(ConfigParseSocketAddressTest, TcpForms) {
  absl::StatusOr<SocketAddress> v4 = ParseSocketAddress("100.64.0.1:9092");
  ASSERT_TRUE(v4.ok()) << v4.status();
  EXPECT_EQ(v4->kind, SocketAddress::Kind::kTcp);
  EXPECT_EQ(v4->host, "100.64.0.1");
  EXPECT_EQ(v4->port, 9092);
  EXPECT_EQ(v4->text, "100.64.0.1:9092");

  absl::StatusOr<SocketAddress> v6 = ParseSocketAddress("[fd7a:115c:a1e0::1]:65535");
  ASSERT_TRUE(v6.ok()) << v6.status();
  EXPECT_EQ(v6->host, "fd7a:115c:a1e0::1");
  EXPECT_EQ(v6->port, 65535);
  EXPECT_EQ(v6->text, "[fd7a:115c:a1e0::1]:65535");

  absl::StatusOr<SocketAddress> name = ParseSocketAddress("superlink.tail1234.ts.net:9093");
  ASSERT_TRUE(name.ok()) << name.status();
  EXPECT_EQ(name->host, "superlink.tail1234.ts.net");
  EXPECT_EQ(name->port, 9093);

  EXPECT_EQ(ParseSocketAddress("localhost:0")->port, 0);
}

TEST(ConfigParseSocketAddressTest, Unix) {
  absl::StatusOr<SocketAddress> unix_address = ParseSocketAddress("unix:/run/flower/fleet.sock");
  ASSERT_TRUE(unix_address.ok()) << unix_address.status();
  EXPECT_EQ(unix_address->kind, SocketAddress::Kind::kUnix);
  EXPECT_EQ(unix_address->path, "/run/flower/fleet.sock");
  EXPECT_EQ(unix_address->text, "unix:/run/flower/fleet.sock");
  EXPECT_THAT(ParseSocketAddress("unix:").status().message(), HasSubstr("needs a path"));
  EXPECT_THAT(ParseSocketAddress("unix:/" + std::string(200, 'x')).status().message(),
              HasSubstr("longer than 107 bytes"));
}

class ConfigBadAddressTest : public testing::TestWithParam<std::pair<const char*, const char*>> {};

TEST_P(ConfigBadAddressTest, IsRejected) {
  absl::StatusOr<SocketAddress> address = ParseSocketAddress(GetParam().first);
  ASSERT_FALSE(address.ok()) << GetParam().first;
  EXPECT_THAT(address.status().message(), HasSubstr(GetParam().second)) << GetParam().first;
}

INSTANTIATE_TEST_SUITE_P(
    Addresses, ConfigBadAddressTest,
    testing::Values(std::pair{"", "empty address"}, std::pair{"127.0.0.1", "missing port"},
                    std::pair{"127.0.0.1:", "missing port"}, std::pair{":9092", "missing host"},
                    std::pair{"127.0.0.1:65536", "between 0 and 65535"},
                    std::pair{"127.0.0.1:-1", "between 0 and 65535"},
                    std::pair{"127.0.0.1:http", "between 0 and 65535"},
                    std::pair{"300.1.1.1:80", "bad IPv4 address"},
                    std::pair{"::1:80", "IPv6 addresses need brackets"},
                    std::pair{"[::1]", "missing port"}, std::pair{"[::1:80", "missing \"]\""},
                    std::pair{"[nope]:80", "bad IPv6 address"},
                    std::pair{"[127.0.0.1]:80", "bad IPv6 address"},
                    std::pair{"bad host:80", "bad host name"}),
    [](const auto& case_info) { return CaseName(case_info.param.first, case_info.index); });

TEST(ConfigErrorTest, AdminAddressMustBeTcp) {
  EXPECT_EQ(ErrorOf(R"(
admin:
  address: unix:/run/admin.sock
listeners: [{name: a, address: "127.0.0.1:1"}]
)"),
            "sepal.yaml:2: admin.address: the admin server needs a TCP address");
  EXPECT_EQ(ErrorOf(R"(
admin: {address: "[::1]"}
listeners: [{name: a, address: "127.0.0.1:1"}]
)"),
            "sepal.yaml:1: admin.address: missing port in \"[::1]\" (expected [addr]:port)");
}

// --- files and summary ------------------------------------------------------------------------

TEST(ConfigLoadFileTest, MissingFile) {
  absl::StatusOr<Config> config = LoadConfigFile("/nonexistent/sepal.yaml");
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().message(),
            "cannot read /nonexistent/sepal.yaml: No such file or directory");
}

TEST(ConfigLoadFileTest, ErrorsNameThePathAndSuccessSetsSourcePath) {
  TempDir dir;
  std::string bad = dir.Write("bad.yaml", "listeners:\n  - name: a\n    port: 1\n");
  absl::StatusOr<Config> failed = LoadConfigFile(bad);
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.status().message(),
            absl::StrCat(bad, ":3: listeners[0].port: unknown key \"port\""));

  std::string good = dir.Write("good.yaml", "listeners: [{name: a, address: \"127.0.0.1:1\"}]\n");
  absl::StatusOr<Config> loaded = LoadConfigFile(good);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->source_path, good);
}

TEST(ConfigSummarizeTest, MentionsEverySection) {
  absl::StatusOr<Config> config = Parse(R"(
admin: {address: "127.0.0.1:9901"}
workers: 2
drain_timeout: 90s
identity:
  provider: tailscale
listeners:
  - name: fleet
    address: 0.0.0.0:9092
    proxy_protocol: v2
    routes:
      - match: /flwr.proto.Fleet/
        upstream: superlink
        allow: {tags: [tag:supernode], capability: example.com/cap/flower}
      - {match: /flwr.proto.Exec/ListRuns, upstream: superlink}
  - name: closed
    address: 0.0.0.0:9094
upstreams:
  - {name: superlink, address: "unix:/run/flower.sock", connect_timeout: 1500ms}
)");
  ASSERT_TRUE(config.ok()) << config.status();
  std::string summary = Summarize(*config);
  EXPECT_THAT(summary, HasSubstr("workers: 2\n"));
  EXPECT_THAT(summary, HasSubstr("drain_timeout: 1m30s\n"));
  EXPECT_THAT(summary, HasSubstr("admin: 127.0.0.1:9901\n"));
  EXPECT_THAT(summary, HasSubstr("identity: tailscale (socket /var/run/tailscale/tailscaled.sock"));
  EXPECT_THAT(summary, HasSubstr("listener fleet on 0.0.0.0:9092 h2c proxy_protocol v2\n"));
  EXPECT_THAT(summary, HasSubstr("  /flwr.proto.Fleet/ -> superlink  allow: tags=tag:supernode | "
                                 "capability=example.com/cap/flower\n"));
  EXPECT_THAT(summary,
              HasSubstr("  /flwr.proto.Exec/ListRuns -> superlink  allow: any identified peer\n"));
  EXPECT_THAT(summary, HasSubstr("listener closed on 0.0.0.0:9094 h2c\n  (no routes"));
  EXPECT_THAT(summary,
              HasSubstr("upstream superlink at unix:/run/flower.sock, connect_timeout 1s500ms\n"));
}

// Without an identity provider nothing is identified: the summary must not say it is.
TEST(ConfigSummarizeTest, RoutesWithoutIdentitySayEveryPeer) {
  absl::StatusOr<Config> config = Parse(R"(
listeners:
  - name: fleet
    address: 127.0.0.1:9092
    routes: [{match: /flwr.proto.Fleet/, upstream: superlink}]
upstreams: [{name: superlink, address: "127.0.0.1:9091"}]
)");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_THAT(Summarize(*config),
              HasSubstr("  /flwr.proto.Fleet/ -> superlink  allow: every peer (no identity "
                        "provider: routing only)\n"));
}

std::string InspectRoute(const std::string& match, const std::string& inspect) {
  return R"(
listeners:
  - name: fleet
    address: 127.0.0.1:9092
    routes:
      - match: )" + match + R"(
        upstream: up
        inspect: )" + inspect + "\n" + std::string(kUpstreams);
}

TEST(ConfigTest, InspectGrpcAdapterOnlyOnTheAdapterMethod) {
  for (const char* match : {"/flwr.proto.GrpcAdapter/SendReceive", "/flwr.proto.GrpcAdapter/"}) {
    absl::StatusOr<Config> config = Parse(InspectRoute(match, "grpc_adapter"));
    ASSERT_TRUE(config.ok()) << config.status();
    EXPECT_EQ(config->listeners[0].routes[0].inspect, RouteConfig::Inspect::kGrpcAdapter);
  }
  absl::StatusOr<Config> none = Parse(InspectRoute("/flwr.proto.Fleet/", "none"));
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_EQ(none->listeners[0].routes[0].inspect, RouteConfig::Inspect::kNone);
  EXPECT_THAT(ErrorOf(InspectRoute("/flwr.proto.Fleet/", "grpc_adapter")),
              HasSubstr("listeners[0].routes[0].inspect: inspect: grpc_adapter needs match: "
                        "/flwr.proto.GrpcAdapter/SendReceive"));
  EXPECT_THAT(ErrorOf(InspectRoute("/flwr.proto.GrpcAdapter/SendReceive", "adapter")),
              HasSubstr("listeners[0].routes[0].inspect"));
}

}  // namespace
}  // namespace sepal::config

namespace sepal::config {
namespace {

TEST(ConfigTest, AccessLogAndMetricsOptions) {
  TempDir dir;
  std::string file = dir.path() + "/access.log";
  std::string base = std::string("listeners:\n  - name: a\n    address: 127.0.0.1:1\n");
  auto config = Parse("access_log: " + file + "\nmetrics:\n  peer_node_label: true\n" + base);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->access_log.output, AccessLogConfig::Output::kFile);
  EXPECT_EQ(config->access_log.path, file);
  EXPECT_TRUE(config->metrics.peer_node_label);
  EXPECT_THAT(Summarize(*config), HasSubstr("access_log: " + file));

  config = Parse("access_log: stdout\n" + base);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->access_log.output, AccessLogConfig::Output::kStdout);
  config = Parse(base);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->access_log.output, AccessLogConfig::Output::kOff);
  EXPECT_FALSE(config->metrics.peer_node_label);
}

TEST(ConfigErrorTest, AccessLogAndMetricsMistakes) {
  std::string base = "listeners:\n  - name: a\n    address: 127.0.0.1:1\n";
  EXPECT_EQ(ErrorOf("access_log: access.log\n" + base),
            "sepal.yaml:1: access_log: expected off, stdout, stderr or an absolute file path, "
            "got \"access.log\"");
  EXPECT_THAT(ErrorOf("access_log: /nonexistent-dir/access.log\n" + base),
              StartsWith("sepal.yaml:1: access_log: cannot open \"/nonexistent-dir/access.log\" "
                         "for appending: No such file or directory"));
  EXPECT_EQ(ErrorOf("metrics:\n  peer_node_label: yes\n" + base),
            "sepal.yaml:2: metrics.peer_node_label: expected true or false, got \"yes\"");
}

}  // namespace
}  // namespace sepal::config

namespace sepal::config {
namespace {

std::string ServiceListener(const std::string& service) {
  return absl::StrCat(R"(
listeners:
  - name: fleet
    address: 127.0.0.1:9092
    tailscale_service: )", service, "\n", kUpstreams);
}

TEST(ConfigTest, TailscaleServiceIsSvcAndADnsLabel) {
  absl::StatusOr<Config> config = Parse(ServiceListener("svc:superlink"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->listeners[0].tailscale_service, "svc:superlink");
  EXPECT_EQ(Parse(ServiceListener("svc:fl-2")).status(), absl::OkStatus());
  for (const char* bad : {"superlink", "\"svc:\"", "svc:Superlink", "svc:-x", "svc:x-", "svc:a.b",
                          "\"svc:a b\""}) {
    EXPECT_THAT(ErrorOf(ServiceListener(bad)),
                HasSubstr("sepal.yaml:4: listeners[0].tailscale_service: tailscale_service must "
                          "be svc:NAME"))
        << bad;
  }
  // Absent: empty, WhoIs then scopes by the destination address.
  absl::StatusOr<Config> plain = Parse(R"(
listeners:
  - name: fleet
    address: 127.0.0.1:9092
)" + std::string(kUpstreams));
  ASSERT_TRUE(plain.ok());
  EXPECT_TRUE(plain->listeners[0].tailscale_service.empty());
}

}  // namespace
}  // namespace sepal::config

// --- protocol: http1 (Flower's Fleet REST transport) ------------------------------------------

namespace sepal::config {
namespace {

// An h2 upstream "up" (kUpstreams) and an http1 one "rest".
constexpr const char* kRestUpstreams = R"(
upstreams:
  - name: up
    address: 127.0.0.2:9092
  - name: rest
    address: 127.0.0.2:9095
    protocol: http1
)";

// A protocol: http1 listener (file lines 1-4) followed by `extra` (from line 5) and
// kRestUpstreams.
std::string RestListener(const std::string& extra) {
  return absl::StrCat(R"(
listeners:
  - name: fleet-rest
    address: 127.0.0.1:9096
    protocol: http1
)",
                      extra, kRestUpstreams);
}

TEST(ConfigHttp1Test, ListenerAndUpstreamProtocolsParse) {
  absl::StatusOr<Config> config = Parse(R"(
upstreams:
  - name: rest
    address: 127.0.0.1:9095
    protocol: http1
  - name: grpc
    address: 127.0.0.1:9092
    protocol: h2
  - name: grpc-default
    address: 127.0.0.1:9093
listeners:
  - name: fleet-rest
    address: 127.0.0.1:9096
    protocol: http1
    routes: [{match: /api/v0/fleet/, upstream: rest}]
  - name: fleet
    address: 127.0.0.1:9094
    protocol: h2
    routes: [{match: /flwr.proto.Fleet/, upstream: grpc}]
  - name: fleet-default
    address: 127.0.0.1:9097
    routes: [{match: /flwr.proto.Fleet/, upstream: grpc-default}]
)");
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_EQ(config->upstreams.size(), 3u);
  EXPECT_EQ(config->upstreams[0].protocol, Protocol::kHttp1);
  EXPECT_EQ(config->upstreams[1].protocol, Protocol::kHttp2);
  EXPECT_EQ(config->upstreams[2].protocol, Protocol::kHttp2);
  ASSERT_EQ(config->listeners.size(), 3u);
  const ListenerConfig& rest = config->listeners[0];
  EXPECT_EQ(rest.protocol, Protocol::kHttp1);
  ASSERT_EQ(rest.routes.size(), 1u);
  EXPECT_EQ(rest.routes[0].match, "/api/v0/fleet/");
  EXPECT_EQ(rest.routes[0].upstream, "rest");
  EXPECT_EQ(rest.http1, Http1Limits());  // no http1: section, the defaults
  EXPECT_FALSE(rest.tls.has_value());
  EXPECT_EQ(config->listeners[1].protocol, Protocol::kHttp2);
  EXPECT_EQ(config->listeners[2].protocol, Protocol::kHttp2);
  EXPECT_EQ(ProtocolName(Protocol::kHttp1), "http1");
  EXPECT_EQ(ProtocolName(Protocol::kHttp2), "h2");
  // The upstream's protocol takes part in equality (a reload rebuilds its pool).
  UpstreamConfig other = config->upstreams[0];
  other.protocol = Protocol::kHttp2;
  EXPECT_NE(other, config->upstreams[0]);
}

TEST(ConfigHttp1Test, Http1LimitDefaults) {
  Http1Limits limits;
  EXPECT_EQ(limits.max_request_line_bytes, 8u * 1024);
  EXPECT_EQ(limits.max_header_bytes, 16u * 1024);
  EXPECT_EQ(limits.max_headers, 64u);
  EXPECT_EQ(limits.header_timeout, std::chrono::seconds(10));
  EXPECT_EQ(limits.idle_timeout, std::chrono::seconds(75));
  EXPECT_EQ(limits.body_timeout, std::chrono::seconds(30));
  EXPECT_EQ(limits.max_body_bytes, 2214592512u);  // 2 GiB + 64 MiB
  EXPECT_EQ(limits.upstream_timeout, std::chrono::seconds(300));
  // An empty-ish http1: section changes only what it names.
  absl::StatusOr<Config> config = Parse(RestListener("    http1: {max_headers: 10}\n"));
  ASSERT_TRUE(config.ok()) << config.status();
  Http1Limits expected;
  expected.max_headers = 10;
  EXPECT_EQ(config->listeners[0].http1, expected);
}

TEST(ConfigHttp1Test, Http1LimitsParseEveryKey) {
  absl::StatusOr<Config> config = Parse(RestListener(R"(    http1:
      max_request_line_bytes: 4096
      max_header_bytes: 32768
      max_headers: 100
      header_timeout: 5s
      idle_timeout: 2m
      body_timeout: 1500ms
      max_body_bytes: 1073741824
      upstream_timeout: 1h
)"));
  ASSERT_TRUE(config.ok()) << config.status();
  const Http1Limits& limits = config->listeners[0].http1;
  EXPECT_EQ(limits.max_request_line_bytes, 4096u);
  EXPECT_EQ(limits.max_header_bytes, 32768u);
  EXPECT_EQ(limits.max_headers, 100u);
  EXPECT_EQ(limits.header_timeout, std::chrono::seconds(5));
  EXPECT_EQ(limits.idle_timeout, std::chrono::minutes(2));
  EXPECT_EQ(limits.body_timeout, std::chrono::milliseconds(1500));
  EXPECT_EQ(limits.max_body_bytes, uint64_t{1} << 30);
  EXPECT_EQ(limits.upstream_timeout, std::chrono::hours(1));
  // The range edges.
  config = Parse(RestListener(R"(    http1:
      max_request_line_bytes: 64
      max_header_bytes: 1048576
      max_headers: 1
      max_body_bytes: 0
)"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->listeners[0].http1.max_request_line_bytes, 64u);
  EXPECT_EQ(config->listeners[0].http1.max_header_bytes, 1048576u);
  EXPECT_EQ(config->listeners[0].http1.max_headers, 1u);
  EXPECT_EQ(config->listeners[0].http1.max_body_bytes, 0u);
  config = Parse(RestListener("    http1: {max_body_bytes: 18446744073709551615}\n"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->listeners[0].http1.max_body_bytes, 18446744073709551615u);
}

TEST(ConfigHttp1ErrorTest, Http1LimitsAreRangeCheckedAndNamed) {
  auto with_limit = [](const std::string& limit) {
    return ErrorOf(RestListener(absl::StrCat("    http1:\n      ", limit, "\n")));
  };
  EXPECT_EQ(with_limit("max_request_line_bytes: 63"),
            "sepal.yaml:6: listeners[0].http1.max_request_line_bytes: must be between 64 and "
            "1048576, got 63");
  EXPECT_EQ(with_limit("max_request_line_bytes: 1048577"),
            "sepal.yaml:6: listeners[0].http1.max_request_line_bytes: must be between 64 and "
            "1048576, got 1048577");
  EXPECT_EQ(with_limit("max_header_bytes: 1023"),
            "sepal.yaml:6: listeners[0].http1.max_header_bytes: must be between 1024 and "
            "1048576, got 1023");
  EXPECT_EQ(with_limit("max_headers: 0"),
            "sepal.yaml:6: listeners[0].http1.max_headers: must be between 1 and 4294967295, "
            "got 0");
  EXPECT_EQ(with_limit("max_body_bytes: 2GiB"),
            "sepal.yaml:6: listeners[0].http1.max_body_bytes: expected a non-negative integer, "
            "got \"2GiB\"");
  EXPECT_EQ(with_limit("max_body_bytes: 18446744073709551616"),
            "sepal.yaml:6: listeners[0].http1.max_body_bytes: must be between 0 and "
            "18446744073709551615, got 18446744073709551616");
  EXPECT_EQ(with_limit("header_timeout: 10"),
            "sepal.yaml:6: listeners[0].http1.header_timeout: duration \"10\" is missing a unit "
            "(us, ms, s, m or h), e.g. 10s");
  EXPECT_EQ(with_limit("idle_timeout: 0s"),
            "sepal.yaml:6: listeners[0].http1.idle_timeout: duration \"0s\" must be positive");
  EXPECT_EQ(with_limit("body_timeout: -1s"),
            "sepal.yaml:6: listeners[0].http1.body_timeout: bad duration \"-1s\" (expected a "
            "number and a unit, e.g. 30s, 500ms, 1m30s)");
  EXPECT_EQ(with_limit("upstream_timeout: soon"),
            "sepal.yaml:6: listeners[0].http1.upstream_timeout: bad duration \"soon\" (expected "
            "a number and a unit, e.g. 30s, 500ms, 1m30s)");
  EXPECT_THAT(with_limit("max_header: 5"),
              StartsWith("sepal.yaml:6: listeners[0].http1.max_header: unknown key "
                         "\"max_header\""));
  EXPECT_EQ(ErrorOf(RestListener("    http1: 5\n")),
            "sepal.yaml:5: listeners[0].http1: expected a map, got \"5\"");
}

TEST(ConfigHttp1ErrorTest, UnknownProtocolIsABadChoice) {
  EXPECT_EQ(ErrorOf(R"(
listeners:
  - name: a
    address: 127.0.0.1:1
    protocol: http3
)"),
            "sepal.yaml:4: listeners[0].protocol: unknown value \"http3\" (expected one of h2, "
            "http1)");
  EXPECT_EQ(ErrorOf(R"(
listeners: [{name: a, address: "127.0.0.1:1"}]
upstreams:
  - name: up
    address: 127.0.0.1:1
    protocol: http3
)"),
            "sepal.yaml:5: upstreams[0].protocol: unknown value \"http3\" (expected one of h2, "
            "http1)");
}

TEST(ConfigHttp1ErrorTest, ListenerAndUpstreamMustSpeakTheSameProtocol) {
  // An http1 listener routing to an h2 upstream.
  EXPECT_EQ(ErrorOf(RestListener(R"(    routes:
      - match: /api/v0/fleet/
        upstream: up
)")),
            "sepal.yaml:7: listeners[0].routes[0].upstream: upstream \"up\" speaks h2, this "
            "listener http1 (set the same protocol on both; sepal does not translate between "
            "gRPC and REST)");
  // An h2 listener routing to an http1 upstream.
  EXPECT_EQ(ErrorOf(absl::StrCat(R"(
listeners:
  - name: fleet
    address: 127.0.0.1:9092
    routes:
      - match: /flwr.proto.Fleet/
        upstream: rest
)",
                                 kRestUpstreams)),
            "sepal.yaml:6: listeners[0].routes[0].upstream: upstream \"rest\" speaks http1, "
            "this listener h2 (set the same protocol on both; sepal does not translate between "
            "gRPC and REST)");
}

TEST(ConfigHttp1ErrorTest, Http1SectionNeedsAnHttp1Listener) {
  EXPECT_EQ(ErrorOf(R"(
listeners:
  - name: a
    address: 127.0.0.1:1
    http1:
      max_headers: 10
)"),
            "sepal.yaml:4: listeners[0].http1: http1: needs protocol: http1 on this listener");
  // Also with an explicit protocol: h2.
  EXPECT_EQ(ErrorOf(R"(
listeners:
  - name: a
    address: 127.0.0.1:1
    protocol: h2
    http1: {max_headers: 10}
)"),
            "sepal.yaml:5: listeners[0].http1: http1: needs protocol: http1 on this listener");
}

TEST(ConfigHttp1ErrorTest, LimitsSectionIsNotForHttp1Listeners) {
  EXPECT_EQ(ErrorOf(RestListener(R"(    limits:
      max_concurrent_streams: 10
)")),
            "sepal.yaml:5: listeners[0].limits: limits: are HTTP/2 limits; a protocol: http1 "
            "listener takes http1:");
  // Wherever protocol: appears in the listener.
  EXPECT_EQ(ErrorOf(R"(
listeners:
  - name: a
    address: 127.0.0.1:1
    limits: {max_concurrent_streams: 10}
    protocol: http1
)"),
            "sepal.yaml:4: listeners[0].limits: limits: are HTTP/2 limits; a protocol: http1 "
            "listener takes http1:");
}

TEST(ConfigHttp1ErrorTest, InspectGrpcAdapterIsNotForHttp1Listeners) {
  EXPECT_EQ(ErrorOf(RestListener(R"(    routes:
      - match: /flwr.proto.GrpcAdapter/SendReceive
        upstream: rest
        inspect: grpc_adapter
)")),
            "sepal.yaml:8: listeners[0].routes[0].inspect: inspect: grpc_adapter is for gRPC "
            "(protocol: h2) listeners");
  // inspect: none is fine there.
  absl::StatusOr<Config> config = Parse(RestListener(R"(    routes:
      - match: /api/v0/fleet/
        upstream: rest
        inspect: none
)"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->listeners[0].routes[0].inspect, RouteConfig::Inspect::kNone);
}

TEST(ConfigHttp1Test, RestRouteMatchesArePaths) {
  absl::StatusOr<Config> config = Parse(RestListener(R"(    routes:
      - {match: /api/v0/fleet/pull-messages, upstream: rest}
      - {match: /api/v0/fleet/, upstream: rest}
      - {match: /api/v1/fleet/push-messages, upstream: rest}
      - {match: /health, upstream: rest}
)"));
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_EQ(config->listeners[0].routes.size(), 4u);
  EXPECT_EQ(config->listeners[0].routes[0].match, "/api/v0/fleet/pull-messages");
  EXPECT_EQ(config->listeners[0].routes[1].match, "/api/v0/fleet/");
  EXPECT_EQ(config->listeners[0].routes[2].match, "/api/v1/fleet/push-messages");
  EXPECT_EQ(config->listeners[0].routes[3].match, "/health");
  // The same multi-segment path is not a gRPC method: an h2 listener refuses it.
  EXPECT_EQ(ErrorOf(absl::StrCat(R"(
listeners:
  - name: fleet
    address: 127.0.0.1:9092
    routes: [{match: /api/v0/fleet/pull-messages, upstream: up}]
)",
                                 kRestUpstreams)),
            "sepal.yaml:4: listeners[0].routes[0].match: route match "
            "\"/api/v0/fleet/pull-messages\" must be \"/pkg.Service/\" (whole service) or "
            "\"/pkg.Service/Method\"");
  // First match wins on http1 listeners too.
  EXPECT_EQ(ErrorOf(RestListener(R"(    routes:
      - {match: /api/v0/fleet/, upstream: rest}
      - {match: /api/v0/fleet/pull-messages, upstream: rest}
)")),
            "sepal.yaml:7: listeners[0].routes[1].match: route \"/api/v0/fleet/pull-messages\" "
            "can never match: listeners[0].routes[0] (\"/api/v0/fleet/\") comes first and wins");
}

std::string RestRouteMatchError(const std::string& match) {
  return ErrorOf(RestListener(absl::StrCat("    routes:\n      - upstream: rest\n        match: \"",
                                           match, "\"\n")));
}

TEST(ConfigHttp1ErrorTest, RestRouteMatchShapes) {
  EXPECT_EQ(RestRouteMatchError("api/v0"),
            "sepal.yaml:7: listeners[0].routes[0].match: route match \"api/v0\" must start with "
            "\"/\"");
  EXPECT_EQ(RestRouteMatchError("/api/v0/fleet/*"),
            "sepal.yaml:7: listeners[0].routes[0].match: route match \"/api/v0/fleet/*\" has a "
            "wildcard; use \"/api/v0/fleet/\" for every path under it or an exact path such as "
            "\"/api/v0/fleet/pull-messages\"");
  for (const char* match : {"/api//v0", "/a?b", "/a%20b", "/a/../b", "/a/./b", "/a b", "/a#b",
                            "//api/v0/fleet/"}) {
    EXPECT_EQ(RestRouteMatchError(match),
              absl::StrCat("sepal.yaml:7: listeners[0].routes[0].match: route match \"", match,
                           "\" must be a plain path (no \"//\", \"?\", \"%\", \"#\", dot "
                           "segments or spaces)"));
  }
  EXPECT_EQ(RestRouteMatchError(""),
            "sepal.yaml:7: listeners[0].routes[0].match: route match \"\" must start with \"/\"");
}

// A match ending in a dot segment ("/api/v0/fleet/..") could never match: NormalizeTarget
// refuses every such request target (400). (It used to be accepted.)
TEST(ConfigHttp1ErrorTest, TrailingDotSegmentRouteMatchIsRefused) {
  for (const char* match : {"/api/v0/fleet/..", "/api/v0/fleet/.", "/..", "/."}) {
    EXPECT_EQ(RestRouteMatchError(match),
              absl::StrCat("sepal.yaml:7: listeners[0].routes[0].match: route match \"", match,
                           "\" must be a plain path (no \"//\", \"?\", \"%\", \"#\", dot "
                           "segments or spaces)"));
  }
}

TEST(ConfigHttp1Test, TlsHttp1ListenerNegotiatesHttp11) {
  TempDir dir;
  std::string cert = dir.Write("server.pem", "cert");
  std::string key = dir.Write("server.key", "key");
  absl::StatusOr<Config> config = Parse(absl::StrCat(R"(
listeners:
  - name: rest-tls
    address: 127.0.0.1:1
    tls: {certificate: )", cert, ", private_key: ", key, R"(}
    protocol: http1
  - name: grpc-tls
    address: 127.0.0.1:2
    tls: {certificate: )", cert, ", private_key: ", key, R"(}
  - name: rest-tls-first
    address: 127.0.0.1:3
    protocol: http1
    tls: {certificate: )", cert, ", private_key: ", key, "}\n"));
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_TRUE(config->listeners[0].tls.has_value());
  EXPECT_EQ(config->listeners[0].tls->alpn, Protocol::kHttp1);
  ASSERT_TRUE(config->listeners[1].tls.has_value());
  EXPECT_EQ(config->listeners[1].tls->alpn, Protocol::kHttp2);
  ASSERT_TRUE(config->listeners[2].tls.has_value());
  EXPECT_EQ(config->listeners[2].tls->alpn, Protocol::kHttp1);
  // ALPN takes part in equality: a reload that changes the protocol rebuilds the context.
  EXPECT_NE(*config->listeners[0].tls, *config->listeners[1].tls);
  EXPECT_THAT(Summarize(*config), HasSubstr("listener rest-tls on 127.0.0.1:1 tls protocol http1\n"));
  EXPECT_THAT(Summarize(*config), HasSubstr("listener grpc-tls on 127.0.0.1:2 tls\n"));
}

TEST(ConfigSummarizeTest, MentionsProtocolHttp1) {
  absl::StatusOr<Config> config = Parse(absl::StrCat(R"(
listeners:
  - name: fleet-rest
    address: 127.0.0.1:9096
    protocol: http1
    routes: [{match: /api/v0/fleet/, upstream: rest}]
  - name: rest-closed
    address: 127.0.0.1:9097
    protocol: http1
  - name: fleet
    address: 127.0.0.1:9092
    routes: [{match: /flwr.proto.Fleet/, upstream: up}]
)",
                                                     kRestUpstreams));
  ASSERT_TRUE(config.ok()) << config.status();
  std::string summary = Summarize(*config);
  EXPECT_THAT(summary, HasSubstr("listener fleet-rest on 127.0.0.1:9096 cleartext protocol http1\n"
                                 "  /api/v0/fleet/ -> rest  allow: every peer"));
  EXPECT_THAT(summary, HasSubstr("listener rest-closed on 127.0.0.1:9097 cleartext protocol "
                                 "http1\n  (no routes: every request 404)\n"));
  EXPECT_THAT(summary, HasSubstr("listener fleet on 127.0.0.1:9092 h2c\n"));
  EXPECT_THAT(summary, HasSubstr("upstream rest at 127.0.0.2:9095 protocol http1, connect_timeout "
                                 "5s\n"));
  EXPECT_THAT(summary, HasSubstr("upstream up at 127.0.0.2:9092, connect_timeout 5s\n"));
}

}  // namespace
}  // namespace sepal::config
