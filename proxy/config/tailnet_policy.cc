// MakeTailnetPolicy: sepal's allow rules, turned into the grants the tailnet needs for them.
#include "proxy/config/tailnet_policy.h"

#include <boost/json.hpp>

#include <map>
#include <set>
#include <string_view>

namespace sepal::config {

namespace {

namespace json = boost::json;

// The capability value that allows a route: its service ("/pkg.Svc/*") or its method.
std::string MethodPattern(const RouteConfig& route) {
  return route.match.ends_with('/') ? route.match + "*" : route.match;
}

json::array Strings(const std::set<std::string>& values) {
  json::array out;
  for (const auto& value : values) out.emplace_back(value);
  return out;
}

// Pretty-prints with two-space indentation; arrays of strings stay on one line.
void Print(const json::value& value, int indent, std::string& out) {
  const std::string pad(static_cast<size_t>(indent), ' ');
  const std::string inner(static_cast<size_t>(indent + 2), ' ');
  if (value.is_object()) {
    const auto& object = value.get_object();
    if (object.empty()) {
      out += "{}";
      return;
    }
    out += "{\n";
    bool first = true;
    for (const auto& [key, item] : object) {
      if (!first) out += ",\n";
      first = false;
      out += inner + json::serialize(json::string(key)) + ": ";
      Print(item, indent + 2, out);
    }
    out += "\n" + pad + "}";
  } else if (value.is_array()) {
    const auto& array = value.get_array();
    bool flat = true;
    for (const auto& item : array) flat = flat && item.is_string();
    if (flat) {
      out += "[";
      for (size_t i = 0; i < array.size(); ++i) {
        out += (i == 0 ? "" : ", ") + json::serialize(array[i]);
      }
      out += "]";
      return;
    }
    out += "[\n";
    bool first = true;
    for (const auto& item : array) {
      if (!first) out += ",\n";
      first = false;
      out += inner;
      Print(item, indent + 2, out);
    }
    out += "\n" + pad + "]";
  } else {
    out += json::serialize(value);
  }
}

}  // namespace

TailnetPolicy MakeTailnetPolicy(const Config& config, const PolicyOptions& options) {
  TailnetPolicy policy;
  std::set<std::string> tags{options.superlink_tag};
  // Listener ports by the set of principals that may reach them.
  std::map<std::set<std::string>, std::set<uint16_t>> ports_by_src;
  // Capability name -> (principals, method patterns).
  std::map<std::string, std::pair<std::set<std::string>, std::set<std::string>>> capabilities;

  for (const auto& listener : config.listeners) {
    if (listener.address.kind != SocketAddress::Kind::kTcp) continue;
    std::set<std::string> src;
    bool open_route = false;
    for (const auto& route : listener.routes) {
      if (!route.allow) {
        open_route = true;  // every identified peer
        continue;
      }
      if (route.audit) {
        policy.notes.push_back("listener " + listener.name + ", route " + route.match +
                               " is in audit mode: the grants below admit only the peers its "
                               "rules allow; others reach sepal (and are audited) only if the "
                               "tailnet lets them reach tcp:" +
                               std::to_string(listener.address.port));
      }
      std::set<std::string> principals(route.allow->users.begin(), route.allow->users.end());
      principals.insert(route.allow->tags.begin(), route.allow->tags.end());
      tags.insert(route.allow->tags.begin(), route.allow->tags.end());
      if (!route.allow->nodes.empty()) {
        std::string names;
        for (const auto& node : route.allow->nodes) names += (names.empty() ? "" : ", ") + node;
        policy.notes.push_back("listener " + listener.name + ", route " + route.match +
                               ": nodes [" + names + "] need a grant to tcp:" +
                               std::to_string(listener.address.port) +
                               " by their tag or owner (a grant cannot name a node)");
      }
      if (!route.allow->capability.empty()) {
        auto& [holders, methods] = capabilities[route.allow->capability];
        // Whoever the route admits by tag or user holds it; with a capability alone, the
        // operator picks the holders (every tailnet member until then).
        const std::set<std::string> who = principals.empty()
                                              ? std::set<std::string>{"autogroup:member"}
                                              : principals;
        holders.insert(who.begin(), who.end());
        methods.insert(MethodPattern(route));
        if (principals.empty()) {
          policy.notes.push_back("listener " + listener.name + ", route " + route.match +
                                 ": capability " + route.allow->capability +
                                 " is granted to autogroup:member; narrow its src to the "
                                 "nodes that should hold it");
        }
        src.insert(who.begin(), who.end());  // the holders reach the port too
      } else {
        src.insert(principals.begin(), principals.end());
      }
    }
    if (open_route) {
      src = {"*"};
      policy.notes.push_back("listener " + listener.name +
                             " has a route without allow rules: every tailnet peer may reach tcp:" +
                             std::to_string(listener.address.port));
    }
    if (!src.empty()) ports_by_src[src].insert(listener.address.port);
  }

  json::object tag_owners;
  for (const auto& tag : tags) tag_owners[tag] = json::array{json::string(options.tag_owner)};
  json::array grants;
  for (const auto& [src, ports] : ports_by_src) {
    json::array ip;
    for (uint16_t port : ports) ip.emplace_back("tcp:" + std::to_string(port));
    grants.push_back(json::object{
        {"src", Strings(src)}, {"dst", json::array{json::string(options.superlink_tag)}},
        {"ip", ip}});
  }
  for (const auto& [name, entry] : capabilities) {
    const auto& [holders, methods] = entry;
    json::object value{{"methods", Strings(methods)}};
    json::object app;
    app[name] = json::array{value};
    grants.push_back(json::object{{"src", Strings(holders)},
                                  {"dst", json::array{json::string(options.superlink_tag)}},
                                  {"app", app}});
  }
  json::object root{{"tagOwners", tag_owners}, {"grants", grants}};
  Print(root, 0, policy.json);
  policy.json += "\n";
  return policy;
}

}  // namespace sepal::config
