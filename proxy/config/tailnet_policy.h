// The tailnet policy that agrees with a sepal configuration (`sepal policy`): tagOwners for
// every tag it names, an `ip` grant per listener port for the peers its allow rules admit, and
// an `app` grant per capability rule carrying the methods of the routes that use it. JSON,
// which the admin console's HuJSON editor accepts as it is.
#pragma once

#include <string>
#include <vector>

#include "proxy/config/config.h"

namespace sepal::config {

struct PolicyOptions {
  // The tag of the node sepal runs on: the grants' destination.
  std::string superlink_tag = "tag:superlink";
  // Who owns the tags in tagOwners.
  std::string tag_owner = "autogroup:admin";
};

struct TailnetPolicy {
  std::string json;  // pretty-printed, ends with a newline
  // What the policy cannot say and the operator must do by hand (e.g. `nodes` rules: a grant
  // cannot name a node).
  std::vector<std::string> notes;
};

TailnetPolicy MakeTailnetPolicy(const Config& config, const PolicyOptions& options);

}  // namespace sepal::config
