// Unit tests for ConfigToJson: every config field, parsed back with Boost.JSON.
#include "proxy/admin/config_json.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <chrono>
#include <string>

namespace sepal::admin {
namespace {

namespace json = boost::json;
using std::chrono::milliseconds;
using std::chrono::seconds;

// 2024-02-29T12:34:56.789Z: a leap day, so the calendar arithmetic is exercised.
std::chrono::system_clock::time_point LoadedAt() {
  return std::chrono::system_clock::time_point(milliseconds(1709210096789));
}

json::object Render(const config::Config& config, uint64_t generation = 7) {
  std::string text = ConfigToJson(config, generation, LoadedAt());
  EXPECT_FALSE(text.empty());
  EXPECT_EQ(text.back(), '\n');
  boost::system::error_code ec;
  json::value value = json::parse(text, ec);
  EXPECT_FALSE(ec) << ec.message() << "\n" << text;
  EXPECT_TRUE(value.is_object()) << text;
  return value.is_object() ? value.as_object() : json::object{};
}

std::string Str(const json::value& value) {
  EXPECT_TRUE(value.is_string()) << json::serialize(value);
  if (!value.is_string()) return "<not a string>";
  return std::string(value.as_string().c_str());
}

config::SocketAddress Address(const std::string& text) {
  absl::StatusOr<config::SocketAddress> address = config::ParseSocketAddress(text);
  EXPECT_TRUE(address.ok()) << address.status();
  return address.ok() ? *address : config::SocketAddress{};
}

// A config touching every field with non-default values.
config::Config FullConfig() {
  config::Config config;
  config.source_path = "/etc/sepal/sepal.yaml";
  config.admin.address = Address("127.0.0.1:9901");
  config.workers = 3;
  config.drain_timeout = seconds(90);
  config.identity.provider = config::IdentityConfig::Provider::kStatic;
  config::StaticIdentity dev;
  dev.match = "127.0.0.0/8";
  dev.node = "dev-node";
  dev.user = "alice@example.com";
  dev.tags = {"tag:supernode", "tag:dev"};
  dev.capabilities["example.com/cap/flower"] = R"([{"methods":["/flwr.proto.Fleet/*"]}])";
  dev.capabilities["example.com/cap/empty"] = "[{}]";
  config.identity.static_identities.push_back(dev);

  config::ListenerConfig fleet;
  fleet.name = "fleet";
  fleet.address = Address("0.0.0.0:9092");
  fleet.proxy_protocol = config::ProxyProtocol::kV2;
  fleet.tls.emplace();
  fleet.tls->certificate = "/etc/sepal/server.pem";
  fleet.tls->private_key = "/etc/sepal/server.key";
  fleet.tls->client_ca = "/etc/sepal/ca.pem";
  fleet.tls->handshake_timeout = milliseconds(2500);
  config::RouteConfig open_route{"/flwr.proto.Fleet/Ping", "superlink-fleet", std::nullopt};
  config::AllowRules rules;
  rules.tags = {"tag:supernode"};
  rules.users = {"alice@example.com"};
  rules.nodes = {"supernode-a"};
  rules.capability = "example.com/cap/flower";
  config::RouteConfig guarded{"/flwr.proto.Fleet/", "superlink-fleet", rules};
  fleet.routes = {open_route, guarded};
  fleet.limits.max_concurrent_streams = 100;
  fleet.limits.max_header_list_bytes = 32768;
  fleet.limits.stream_window_bytes = 65535;
  fleet.limits.connection_window_bytes = 1 << 20;
  fleet.limits.stream_reset_burst = 50;
  fleet.limits.stream_reset_rate = 5;
  fleet.limits.max_continuations = 2;
  config.listeners.push_back(fleet);

  config::ListenerConfig exec;
  exec.name = "exec";
  exec.address = Address("[::1]:9093");
  exec.routes = {{"/flwr.proto.Exec/", "superlink-exec", config::AllowRules{}}};
  config.listeners.push_back(exec);

  config::UpstreamConfig fleet_upstream;
  fleet_upstream.name = "superlink-fleet";
  fleet_upstream.address = Address("unix:/run/flower/fleet.sock");
  fleet_upstream.connect_timeout = milliseconds(1500);
  config.upstreams.push_back(fleet_upstream);
  config::UpstreamConfig exec_upstream;
  exec_upstream.name = "superlink-exec";
  exec_upstream.address = Address("127.0.0.2:9093");
  exec_upstream.tls.emplace();
  exec_upstream.tls->ca = "/etc/sepal/superlink-ca.pem";
  exec_upstream.tls->server_name = "superlink";
  config.upstreams.push_back(exec_upstream);
  return config;
}

TEST(ConfigJsonTest, TopLevelFields) {
  json::object root = Render(FullConfig(), 42);
  EXPECT_EQ(root.at("generation").to_number<uint64_t>(), 42u);
  EXPECT_EQ(Str(root.at("loaded_at")), "2024-02-29T12:34:56.789Z");
  EXPECT_EQ(Str(root.at("source_path")), "/etc/sepal/sepal.yaml");
  EXPECT_EQ(Str(root.at("admin").at("address")), "127.0.0.1:9901");
  EXPECT_EQ(root.at("workers").to_number<int64_t>(), 3);
  EXPECT_EQ(Str(root.at("drain_timeout")), "1m30s");
}

TEST(ConfigJsonTest, StaticIdentityWithCapabilitiesEmbeddedAsJson) {
  json::object root = Render(FullConfig());
  const json::object& identity = root.at("identity").as_object();
  EXPECT_EQ(Str(identity.at("provider")), "static");
  EXPECT_FALSE(identity.contains("tailscale"));  // only the active provider's settings
  const json::array& entries = identity.at("static").as_array();
  ASSERT_EQ(entries.size(), 1u);
  const json::object& entry = entries[0].as_object();
  EXPECT_EQ(Str(entry.at("match")), "127.0.0.0/8");
  EXPECT_EQ(Str(entry.at("node")), "dev-node");
  EXPECT_EQ(Str(entry.at("user")), "alice@example.com");
  EXPECT_EQ(entry.at("tags"), json::parse(R"(["tag:supernode","tag:dev"])"));
  // Parsed structure, not a string holding JSON text.
  const json::object& capabilities = entry.at("capabilities").as_object();
  ASSERT_TRUE(capabilities.at("example.com/cap/flower").is_array());
  EXPECT_EQ(capabilities.at("example.com/cap/flower"),
            json::parse(R"([{"methods":["/flwr.proto.Fleet/*"]}])"));
  EXPECT_EQ(capabilities.at("example.com/cap/empty"), json::parse("[{}]"));
}

TEST(ConfigJsonTest, TailscaleIdentityDurations) {
  config::Config config = FullConfig();
  config.identity = {};
  config.identity.provider = config::IdentityConfig::Provider::kTailscale;
  config.identity.tailscale.socket = "/tmp/tailscaled.sock";
  config.identity.tailscale.cache_ttl = seconds(3600 + 120 + 5);
  config.identity.tailscale.lookup_timeout = milliseconds(250);
  json::object root = Render(config);
  const json::object& identity = root.at("identity").as_object();
  EXPECT_EQ(Str(identity.at("provider")), "tailscale");
  EXPECT_FALSE(identity.contains("static"));
  EXPECT_EQ(Str(identity.at("tailscale").at("socket")), "/tmp/tailscaled.sock");
  EXPECT_EQ(Str(identity.at("tailscale").at("cache_ttl")), "1h2m5s");
  EXPECT_EQ(Str(identity.at("tailscale").at("lookup_timeout")), "250ms");
}

TEST(ConfigJsonTest, DurationsRoundTripThroughTheLoader) {
  config::Config config = FullConfig();
  config.drain_timeout = milliseconds(61001);
  json::object root = Render(config);
  std::string text = Str(root.at("drain_timeout"));
  EXPECT_EQ(text, "1m1s1ms");
  absl::StatusOr<config::Duration> parsed = config::ParseDuration(text);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(*parsed, config.drain_timeout);
}

TEST(ConfigJsonTest, NoIdentityAndNoAdmin) {
  config::Config config = FullConfig();
  config.identity = {};
  config.admin.address.reset();
  json::object root = Render(config);
  EXPECT_EQ(root.at("identity"), json::parse(R"({"provider":"none"})"));
  EXPECT_TRUE(root.at("admin").at("address").is_null());
}

TEST(ConfigJsonTest, Listeners) {
  json::object root = Render(FullConfig());
  const json::array& listeners = root.at("listeners").as_array();
  ASSERT_EQ(listeners.size(), 2u);

  const json::object& fleet = listeners[0].as_object();
  EXPECT_EQ(Str(fleet.at("name")), "fleet");
  EXPECT_EQ(Str(fleet.at("address")), "0.0.0.0:9092");
  EXPECT_EQ(Str(fleet.at("proxy_protocol")), "v2");
  EXPECT_EQ(fleet.at("tls"), json::parse(R"({"source":"files",
      "certificate":"/etc/sepal/server.pem","private_key":"/etc/sepal/server.key",
      "client_ca":"/etc/sepal/ca.pem","handshake_timeout":"2s500ms"})"));
  const json::array& routes = fleet.at("routes").as_array();
  ASSERT_EQ(routes.size(), 2u);
  EXPECT_EQ(routes[0], json::parse(R"({"match":"/flwr.proto.Fleet/Ping",
      "upstream":"superlink-fleet","allow":null,"mode":"enforce","inspect":"none"})"));
  EXPECT_EQ(routes[1], json::parse(R"({"match":"/flwr.proto.Fleet/",
      "upstream":"superlink-fleet","allow":{"tags":["tag:supernode"],
      "users":["alice@example.com"],"nodes":["supernode-a"],
      "capability":"example.com/cap/flower"},"mode":"enforce","inspect":"none"})"));
  EXPECT_EQ(fleet.at("limits"), json::parse(R"({"max_concurrent_streams":100,
      "max_header_list_bytes":32768,"stream_window_bytes":65535,
      "connection_window_bytes":1048576,"stream_reset_burst":50,"stream_reset_rate":5,
      "max_continuations":2})"));

  const json::object& exec = listeners[1].as_object();
  EXPECT_EQ(Str(exec.at("address")), "[::1]:9093");
  EXPECT_EQ(Str(exec.at("proxy_protocol")), "none");
  EXPECT_TRUE(exec.at("tls").is_null());
  // An allow block with no rules is distinct from no allow block.
  EXPECT_EQ(exec.at("routes").at(0).at("allow"),
            json::parse(R"({"tags":[],"users":[],"nodes":[],"capability":null})"));
  EXPECT_EQ(exec.at("limits").at("max_concurrent_streams").to_number<uint64_t>(),
            config::Http2Limits{}.max_concurrent_streams);
}

TEST(ConfigJsonTest, Upstreams) {
  json::object root = Render(FullConfig());
  const json::array& upstreams = root.at("upstreams").as_array();
  ASSERT_EQ(upstreams.size(), 2u);
  EXPECT_EQ(upstreams[0], json::parse(R"({"name":"superlink-fleet",
      "address":"unix:/run/flower/fleet.sock","tls":null,"connect_timeout":"1s500ms","protocol":"h2"})"));
  EXPECT_EQ(upstreams[1], json::parse(R"({"name":"superlink-exec","address":"127.0.0.2:9093",
      "tls":{"ca":"/etc/sepal/superlink-ca.pem","server_name":"superlink",
             "certificate":null,"private_key":null},
      "connect_timeout":"5s","protocol":"h2"})"));
}

TEST(ConfigJsonTest, StringsAreEscaped) {
  config::Config config = FullConfig();
  config.source_path = "/tmp/we\"ird\\dir\n/sepal.yaml";
  json::object root = Render(config);
  EXPECT_EQ(Str(root.at("source_path")), config.source_path);
}

TEST(ConfigJsonTest, AddressWithoutTextIsFormatted) {
  config::Config config = FullConfig();
  config.admin.address =
      config::SocketAddress{config::SocketAddress::Kind::kTcp, "::1", 9901, "", ""};
  json::object root = Render(config);
  EXPECT_EQ(Str(root.at("admin").at("address")), "[::1]:9901");
}

TEST(ConfigJsonTest, LoadedAtBeforeTheEpochAndAtWholeSeconds) {
  config::Config config = FullConfig();
  auto epoch = std::chrono::system_clock::time_point{};
  json::value early = json::parse(ConfigToJson(config, 0, epoch - milliseconds(1)));
  EXPECT_EQ(Str(early.at("loaded_at")), "1969-12-31T23:59:59.999Z");
  json::value whole = json::parse(ConfigToJson(config, 0, epoch + seconds(86400)));
  EXPECT_EQ(Str(whole.at("loaded_at")), "1970-01-02T00:00:00.000Z");
}

// The loader's own capability text (from YAML flow syntax) embeds as the same structure.
TEST(ConfigJsonTest, ParsedYamlConfig) {
  absl::StatusOr<config::Config> config = config::ParseConfig(R"(
admin:
  address: 127.0.0.1:0
drain_timeout: 45s
identity:
  provider: static
  static:
    - match: 127.0.0.0/8
      node: dev-node
      user: alice@example.com
      tags: [tag:supernode]
      capabilities: {example.com/cap/flower: [{methods: ["/flwr.proto.Fleet/*"]}]}
listeners:
  - name: fleet
    address: 127.0.0.1:9092
    routes:
      - match: /flwr.proto.Fleet/
        upstream: up
        allow:
          capability: example.com/cap/flower
upstreams:
  - name: up
    address: 127.0.0.2:9092
)",
                                                              "sepal.yaml");
  ASSERT_TRUE(config.ok()) << config.status();
  json::object root = Render(*config, 1);
  EXPECT_EQ(Str(root.at("drain_timeout")), "45s");
  EXPECT_EQ(Str(root.at("admin").at("address")), "127.0.0.1:0");
  EXPECT_EQ(root.at("identity").at("static").at(0).at("capabilities"),
            json::parse(R"({"example.com/cap/flower":[{"methods":["/flwr.proto.Fleet/*"]}]})"));
  EXPECT_EQ(Str(root.at("upstreams").at(0).at("connect_timeout")), "5s");
}

}  // namespace
}  // namespace sepal::admin

namespace sepal::admin {
namespace {

TEST(ConfigJsonTest, RestListenerShowsProtocolAndHttp1Limits) {
  config::Config config = FullConfig();
  config.listeners[1].protocol = config::Protocol::kHttp1;
  config.listeners[1].http1.header_timeout = milliseconds(1500);
  config.upstreams[1].protocol = config::Protocol::kHttp1;
  json::object root = Render(config);
  const json::object& fleet = root.at("listeners").at(0).as_object();
  EXPECT_EQ(Str(fleet.at("protocol")), "h2");
  EXPECT_FALSE(fleet.contains("http1"));
  const json::object& rest = root.at("listeners").at(1).as_object();
  EXPECT_EQ(Str(rest.at("protocol")), "http1");
  EXPECT_FALSE(rest.contains("limits"));  // HTTP/2 limits do not apply
  EXPECT_EQ(Str(rest.at("http1").at("header_timeout")), "1s500ms");
  EXPECT_EQ(rest.at("http1").at("max_headers").to_number<uint64_t>(),
            config::Http1Limits{}.max_headers);
  EXPECT_EQ(Str(root.at("upstreams").at(0).at("protocol")), "h2");
  EXPECT_EQ(Str(root.at("upstreams").at(1).at("protocol")), "http1");
}

}  // namespace
}  // namespace sepal::admin
