// Route table of one listener: maps a request's :path to the first matching route.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "proxy/config/config.h"

namespace sepal {

struct Route {
  std::string match;
  bool is_prefix = false;           // "/svc/" matches every method of the service
  size_t upstream_index = 0;        // index into Config::upstreams
  const config::RouteConfig* config = nullptr;  // allow rules etc.; lives in the snapshot
};

class Router {
 public:
  // `listener` and `config` must outlive the Router (they live in one ConfigSnapshot).
  Router(const config::ListenerConfig& listener, const config::Config& config);

  // First route whose match covers `path`, or nullptr (answered with UNIMPLEMENTED).
  const Route* Match(std::string_view path) const;
  const std::vector<Route>& routes() const { return routes_; }

 private:
  std::vector<Route> routes_;
};

}  // namespace sepal
