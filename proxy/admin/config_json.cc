// ConfigToJson: config::Config → Boost.JSON document for the admin /config endpoint.
#include "proxy/admin/config_json.h"

#include <boost/json.hpp>
#include <cstdio>
#include <exception>
#include <string_view>

#include "proxy/common/strings.h"
#include "proxy/common/time_format.h"

namespace sepal::admin {
namespace {

namespace json = boost::json;
using config::Duration;

json::string_view View(std::string_view text) { return {text.data(), text.size()}; }

// Same notation the loader parses ("1m30s", "500ms"), so /config can be pasted back into a file.
std::string FormatDuration(Duration duration) {
  int64_t ms = duration.count();
  if (ms <= 0) return StrCat(ms, "ms");
  std::string out;
  constexpr std::pair<const char*, int64_t> kUnits[] = {
      {"h", 3600000}, {"m", 60000}, {"s", 1000}, {"ms", 1}};
  for (const auto& [unit, size] : kUnits) {
    if (ms >= size) {
      out += StrCat(ms / size, unit);
      ms %= size;
    }
  }
  return out;
}

// Addresses as the operator wrote them; models built in code may lack the text.
std::string AddressText(const config::SocketAddress& address) {
  if (!address.text.empty()) return address.text;
  if (address.kind == config::SocketAddress::Kind::kUnix) return StrCat("unix:", address.path);
  if (address.host.find(':') != std::string::npos) {
    return StrCat("[", address.host, "]:", address.port);
  }
  return StrCat(address.host, ":", address.port);
}

// Optional settings stored as "" when absent show as null, so "not set" cannot be mistaken
// for a value.
json::value StringOrNull(const std::string& text) {
  if (text.empty()) return nullptr;
  return json::value(View(text));
}

json::array Strings(const std::vector<std::string>& items) {
  json::array out;
  out.reserve(items.size());
  for (const std::string& item : items) out.emplace_back(View(item));
  return out;
}

const char* ProviderName(config::IdentityConfig::Provider provider) {
  switch (provider) {
    case config::IdentityConfig::Provider::kTailscale:
      return "tailscale";
    case config::IdentityConfig::Provider::kStatic:
      return "static";
    case config::IdentityConfig::Provider::kNone:
      break;
  }
  return "none";
}

// The loader stores capability values as JSON text; embedding them parsed shows operators
// the structure upstreams receive. Text that somehow fails to parse is shown as a string
// rather than dropped, so the endpoint never hides configuration.
json::value CapabilityValue(const std::string& text) {
  boost::system::error_code ec;
  json::value parsed = json::parse(View(text), ec);
  if (ec) return json::value(View(text));
  return parsed;
}

json::value Identity(const config::IdentityConfig& identity) {
  json::object out;
  out["provider"] = ProviderName(identity.provider);
  // Only the active provider's settings: the other's defaults would suggest they matter.
  if (identity.provider == config::IdentityConfig::Provider::kTailscale) {
    json::object tailscale;
    tailscale["socket"] = View(identity.tailscale.socket);
    tailscale["cache_ttl"] = View(FormatDuration(identity.tailscale.cache_ttl));
    tailscale["lookup_timeout"] = View(FormatDuration(identity.tailscale.lookup_timeout));
    out["tailscale"] = std::move(tailscale);
  } else if (identity.provider == config::IdentityConfig::Provider::kStatic) {
    json::array entries;
    for (const config::StaticIdentity& entry : identity.static_identities) {
      json::object item;
      item["match"] = View(entry.match);
      item["node"] = View(entry.node);
      item["user"] = View(entry.user);
      item["tags"] = Strings(entry.tags);
      json::object capabilities;
      for (const auto& [name, values] : entry.capabilities) {
        capabilities[View(name)] = CapabilityValue(values);
      }
      item["capabilities"] = std::move(capabilities);
      entries.emplace_back(std::move(item));
    }
    out["static"] = std::move(entries);
  }
  return out;
}

json::value Limits(const config::Http2Limits& limits) {
  json::object out;
  out["max_concurrent_streams"] = limits.max_concurrent_streams;
  out["max_header_list_bytes"] = limits.max_header_list_bytes;
  out["stream_window_bytes"] = limits.stream_window_bytes;
  out["connection_window_bytes"] = limits.connection_window_bytes;
  out["stream_reset_burst"] = limits.stream_reset_burst;
  out["stream_reset_rate"] = limits.stream_reset_rate;
  out["max_continuations"] = static_cast<uint64_t>(limits.max_continuations);
  return out;
}

json::value Route(const config::RouteConfig& route) {
  json::object out;
  out["match"] = View(route.match);
  out["upstream"] = View(route.upstream);
  if (route.allow) {
    json::object allow;
    allow["tags"] = Strings(route.allow->tags);
    allow["users"] = Strings(route.allow->users);
    allow["nodes"] = Strings(route.allow->nodes);
    allow["capability"] = StringOrNull(route.allow->capability);
    out["allow"] = std::move(allow);
  } else {
    out["allow"] = nullptr;  // every identified peer
  }
  out["mode"] = route.audit ? "audit" : "enforce";
  out["inspect"] = route.inspect == config::RouteConfig::Inspect::kGrpcAdapter ? "grpc_adapter"
                                                                              : "none";
  return out;
}

json::value Listener(const config::ListenerConfig& listener) {
  json::object out;
  out["name"] = View(listener.name);
  out["address"] = View(AddressText(listener.address));
  out["proxy_protocol"] = View(config::ProxyProtocolName(listener.proxy_protocol));
  out["protocol"] = View(config::ProtocolName(listener.protocol));
  if (listener.tls) {
    json::object tls;
    bool tailscale = listener.tls->source == config::ListenerTlsConfig::Source::kTailscale;
    tls["source"] = tailscale ? "tailscale" : "files";
    // Paths only, never key material (with tailscale there are no files: null).
    tls["certificate"] = StringOrNull(listener.tls->certificate);
    tls["private_key"] = StringOrNull(listener.tls->private_key);
    tls["client_ca"] = StringOrNull(listener.tls->client_ca);
    tls["handshake_timeout"] = View(FormatDuration(listener.tls->handshake_timeout));
    out["tls"] = std::move(tls);
  } else {
    out["tls"] = nullptr;
  }
  json::array routes;
  for (const config::RouteConfig& route : listener.routes) routes.emplace_back(Route(route));
  out["routes"] = std::move(routes);
  if (listener.protocol == config::Protocol::kHttp1) {
    const config::Http1Limits& limits = listener.http1;
    json::object http1;
    http1["max_request_line_bytes"] = limits.max_request_line_bytes;
    http1["max_header_bytes"] = limits.max_header_bytes;
    http1["max_headers"] = limits.max_headers;
    http1["header_timeout"] = View(FormatDuration(limits.header_timeout));
    http1["idle_timeout"] = View(FormatDuration(limits.idle_timeout));
    http1["body_timeout"] = View(FormatDuration(limits.body_timeout));
    http1["max_body_bytes"] = limits.max_body_bytes;
    http1["upstream_timeout"] = View(FormatDuration(limits.upstream_timeout));
    out["http1"] = std::move(http1);
  } else {
    out["limits"] = Limits(listener.limits);
  }
  return out;
}

json::value Upstream(const config::UpstreamConfig& upstream) {
  json::object out;
  out["name"] = View(upstream.name);
  out["address"] = View(AddressText(upstream.address));
  if (upstream.tls) {
    json::object tls;
    tls["ca"] = StringOrNull(upstream.tls->ca);  // null: the system trust store
    tls["server_name"] = StringOrNull(upstream.tls->server_name);  // null: the address's host
    tls["certificate"] = StringOrNull(upstream.tls->certificate);
    tls["private_key"] = StringOrNull(upstream.tls->private_key);  // a path, never the key
    out["tls"] = std::move(tls);
  } else {
    out["tls"] = nullptr;
  }
  out["connect_timeout"] = View(FormatDuration(upstream.connect_timeout));
  out["protocol"] = View(config::ProtocolName(upstream.protocol));
  return out;
}

std::string Render(const config::Config& config, uint64_t generation,
                   std::chrono::system_clock::time_point loaded_at) {
  json::object root;
  root["generation"] = generation;
  root["loaded_at"] = View(FormatRfc3339(loaded_at));
  root["source_path"] = View(config.source_path);
  json::object admin;
  if (config.admin.address) {
    admin["address"] = View(AddressText(*config.admin.address));
  } else {
    admin["address"] = nullptr;
  }
  root["admin"] = std::move(admin);
  json::object metrics;
  metrics["peer_node_label"] = config.metrics.peer_node_label;
  root["metrics"] = std::move(metrics);
  root["workers"] = config.workers;
  root["drain_timeout"] = View(FormatDuration(config.drain_timeout));
  root["identity"] = Identity(config.identity);
  switch (config.access_log.output) {
    case config::AccessLogConfig::Output::kOff: root["access_log"] = "off"; break;
    case config::AccessLogConfig::Output::kStdout: root["access_log"] = "stdout"; break;
    case config::AccessLogConfig::Output::kStderr: root["access_log"] = "stderr"; break;
    case config::AccessLogConfig::Output::kFile:
      root["access_log"] = View(config.access_log.path);
      break;
  }
  json::array listeners;
  for (const config::ListenerConfig& listener : config.listeners) {
    listeners.emplace_back(Listener(listener));
  }
  root["listeners"] = std::move(listeners);
  json::array upstreams;
  for (const config::UpstreamConfig& upstream : config.upstreams) {
    upstreams.emplace_back(Upstream(upstream));
  }
  root["upstreams"] = std::move(upstreams);
  std::string text = json::serialize(root);
  text.push_back('\n');
  return text;
}

}  // namespace

std::string ConfigToJson(const config::Config& config, uint64_t generation,
                         std::chrono::system_clock::time_point loaded_at) {
  // Boost.JSON reports allocation failure by throwing; the admin thread must not unwind.
  try {
    return Render(config, generation, loaded_at);
  } catch (const std::exception& e) {
    std::string text = "{\"error\":";
    text += json::serialize(json::value(View(e.what())));
    text += "}\n";
    return text;
  }
}

}  // namespace sepal::admin
