// Route matching: exact method or service prefix, first match wins, as in the config file.
#include "proxy/router/router.h"

namespace sepal {

Router::Router(const config::ListenerConfig& listener, const config::Config& config) {
  routes_.reserve(listener.routes.size());
  for (const config::RouteConfig& rc : listener.routes) {
    Route route;
    route.match = rc.match;
    route.is_prefix = !rc.match.empty() && rc.match.back() == '/';
    route.config = &rc;
    for (size_t i = 0; i < config.upstreams.size(); ++i) {
      if (config.upstreams[i].name == rc.upstream) route.upstream_index = i;
    }
    routes_.push_back(std::move(route));
  }
}

const Route* Router::Match(std::string_view path) const {
  for (const Route& route : routes_) {
    if (route.is_prefix ? path.starts_with(route.match) : path == route.match) return &route;
  }
  return nullptr;
}

}  // namespace sepal
