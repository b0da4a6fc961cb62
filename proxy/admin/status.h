// What the admin server shows about the running proxy besides metrics: the peers connected
// now (/peers, JSON) and the status page (/, HTML), both rendered from these structs.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "proxy/peers/peer_activity.h"

namespace sepal::admin {

// One connected peer of one listener.
struct PeerEntry {
  std::string listener;
  std::string key;  // "node:<fqdn>" or "addr:<ip>" (what its peer_limits count against)
  uint32_t calls_in_flight = 0;
  peers::PeerSnapshot activity;
};

struct CertificateStatus {
  std::string listener;
  std::string source;  // "files" or "tailscale"
  bool installed = false;  // false: a tailscale listener still waiting for its first one
  std::string subject;
  std::chrono::system_clock::time_point not_after{};
  bool expired = false;
};

struct ListenerStatus {
  std::string name;
  std::string address;  // as configured
  uint16_t bound_port = 0;
  std::string tls;  // "none", "files", "files+client-certs" or "tailscale"
  std::string proxy_protocol;  // "none", "v1", "v2", "any"
  size_t routes = 0;
};

struct UpstreamStatus {
  std::string name;
  std::string address;
  std::string problem;  // empty: reachable (as /ready last saw it)
};

// Everything on the status page.
struct StatusInfo {
  std::string version;  // "0.4.0 (commit abc1234)"
  std::chrono::system_clock::time_point now{};
  std::chrono::system_clock::time_point started_at{};
  uint64_t generation = 0;
  std::chrono::system_clock::time_point loaded_at{};
  std::string config_path;
  bool ready = true;
  std::vector<std::string> problems;  // /ready's lines when something is wrong
  std::vector<ListenerStatus> listeners;
  std::vector<UpstreamStatus> upstreams;
  std::vector<CertificateStatus> certificates;
  std::vector<PeerEntry> peers;
};

// {"generated_at": ..., "peers": [...]}: one object per connected peer, sorted by listener
// and peer (the schema is in docs/reference.md). Ends with a newline.
std::string PeersToJson(const std::vector<PeerEntry>& peers,
                        std::chrono::system_clock::time_point now);

// The status page: one self-contained HTML document (inline CSS, no scripts) that reloads
// itself every `refresh_seconds`. Every value from the outside (node names, tags, method
// paths a client sent) is HTML-escaped.
std::string StatusPageHtml(const StatusInfo& info, int refresh_seconds = 5);

// "&lt;" etc. for &, <, >, " and '.
std::string HtmlEscape(std::string_view text);

}  // namespace sepal::admin
