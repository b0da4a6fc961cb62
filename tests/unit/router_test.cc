// Router: service prefixes and exact methods, first match wins, misses.
#include "proxy/router/router.h"

#include <gtest/gtest.h>

namespace sepal {
namespace {

config::Config MakeConfig() {
  config::Config config;
  for (const char* name : {"fleet", "control"}) {
    config::UpstreamConfig upstream;
    upstream.name = name;
    config.upstreams.push_back(upstream);
  }
  config::ListenerConfig listener;
  listener.name = "main";
  auto add_route = [&](const char* match, const char* upstream) {
    config::RouteConfig route;
    route.match = match;
    route.upstream = upstream;
    listener.routes.push_back(route);
  };
  add_route("/flwr.proto.Fleet/DeleteNode", "control");
  add_route("/flwr.proto.Fleet/", "fleet");
  add_route("/flwr.proto.Control/StreamLogs", "control");
  config.listeners.push_back(listener);
  return config;
}

TEST(RouterTest, FirstMatchWinsAndPicksItsUpstream) {
  config::Config config = MakeConfig();
  Router router(config.listeners[0], config);
  const Route* exact = router.Match("/flwr.proto.Fleet/DeleteNode");
  ASSERT_NE(exact, nullptr);
  EXPECT_EQ(exact->upstream_index, 1u);
  const Route* prefix = router.Match("/flwr.proto.Fleet/PullMessages");
  ASSERT_NE(prefix, nullptr);
  EXPECT_TRUE(prefix->is_prefix);
  EXPECT_EQ(prefix->upstream_index, 0u);
}

TEST(RouterTest, ExactRouteDoesNotMatchOtherMethodsOrPrefixes) {
  config::Config config = MakeConfig();
  Router router(config.listeners[0], config);
  EXPECT_NE(router.Match("/flwr.proto.Control/StreamLogs"), nullptr);
  EXPECT_EQ(router.Match("/flwr.proto.Control/StreamLogsX"), nullptr);
  EXPECT_EQ(router.Match("/flwr.proto.Control/StartRun"), nullptr);
}

TEST(RouterTest, ServicePrefixNeedsTheSlash) {
  config::Config config = MakeConfig();
  Router router(config.listeners[0], config);
  EXPECT_EQ(router.Match("/flwr.proto.FleetX/PullMessages"), nullptr);
  EXPECT_EQ(router.Match("/flwr.proto.Fleet"), nullptr);
  EXPECT_EQ(router.Match(""), nullptr);
}

}  // namespace
}  // namespace sepal
