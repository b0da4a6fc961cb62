// Immutable configuration model of sepal and its YAML loader (schema in docs/configuration.md).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace sepal::config {

using Duration = std::chrono::milliseconds;

// An address a listener binds or an upstream dials.
struct SocketAddress {
  enum class Kind { kTcp, kUnix };
  Kind kind = Kind::kTcp;
  std::string host;    // kTcp: numeric IPv4/IPv6 (no brackets) or a host name, kept as written
  uint16_t port = 0;   // kTcp
  std::string path;    // kUnix: filesystem path ("unix:" prefix stripped)
  std::string text;    // as written in the file, for logs and /config

  bool operator==(const SocketAddress&) const = default;
};

struct AdminConfig {
  std::optional<SocketAddress> address;  // absent = no admin server
};

// One static identity entry: peers whose address falls into `match` get this identity.
struct StaticIdentity {
  std::string match;  // CIDR as written, e.g. "127.0.0.0/8" or "fd7a:115c:a1e0::/48"
  std::string node;
  std::string user;
  std::vector<std::string> tags;
  // Capability name -> JSON array text of its values, e.g.
  // {"example.com/cap/flower": "[{\"methods\":[\"/flwr.proto.Fleet/*\"]}]"}.
  std::map<std::string, std::string> capabilities;

  bool operator==(const StaticIdentity&) const = default;
};

struct TailscaleIdentityConfig {
  std::string socket = "/var/run/tailscale/tailscaled.sock";
  Duration cache_ttl = std::chrono::seconds(60);
  Duration lookup_timeout = std::chrono::seconds(2);

  bool operator==(const TailscaleIdentityConfig&) const = default;
};

struct IdentityConfig {
  enum class Provider { kNone, kTailscale, kStatic };
  Provider provider = Provider::kNone;  // no `identity` section = kNone
  TailscaleIdentityConfig tailscale;
  std::vector<StaticIdentity> static_identities;

  // A reload keeps the running identity provider (and its cache) when this is unchanged.
  bool operator==(const IdentityConfig&) const = default;
};

// One JSON line per finished call (`access_log:` in the file).
struct AccessLogConfig {
  enum class Output { kOff, kStdout, kStderr, kFile };
  Output output = Output::kOff;
  std::string path;  // kFile only

  bool operator==(const AccessLogConfig&) const = default;
};

// What a listener speaks to clients, or an upstream to the SuperLink: HTTP/2 (gRPC, the
// default) or HTTP/1.1 (Flower's Fleet REST transport, `protocol: http1`).
enum class Protocol { kHttp2, kHttp1 };
std::string_view ProtocolName(Protocol protocol);

struct ListenerTlsConfig {
  // Where the certificate and key come from: PEM files, or tailscaled's LocalAPI (the
  // node's MagicDNS certificate, fetched over identity.tailscale.socket).
  enum class Source { kFiles, kTailscale };
  std::string certificate;  // PEM file paths (source files; empty with tailscale)
  std::string private_key;
  std::string client_ca;    // empty = no client certificates requested
  Source source = Source::kFiles;
  // From accept (or the end of the PROXY header) to a finished handshake.
  std::chrono::milliseconds handshake_timeout = std::chrono::seconds(10);
  // ALPN: "h2" only, or on a `protocol: http1` listener "http/1.1" (or none offered).
  Protocol alpn = Protocol::kHttp2;

  bool operator==(const ListenerTlsConfig&) const = default;
};

struct AllowRules {
  std::vector<std::string> tags;
  std::vector<std::string> users;
  std::vector<std::string> nodes;
  std::string capability;  // empty = no capability rule
};

struct RouteConfig {
  // "/pkg.Service/" (trailing slash: whole service) or "/pkg.Service/Method" (exact).
  std::string match;
  std::string upstream;               // name of an UpstreamConfig
  std::optional<AllowRules> allow;    // absent = every identified peer
  // mode: audit — a call the allow rules deny is forwarded anyway, logged and counted as
  // decision="audit_deny" (identity failures are still refused). Default: enforce.
  bool audit = false;
  // inspect: grpc_adapter — the route carries Flower's gRPC adapter transport
  // (/flwr.proto.GrpcAdapter/SendReceive): sepal reads the wrapped Fleet request's name from
  // the first message and authorizes, counts and logs the call as that Fleet method.
  enum class Inspect { kNone, kGrpcAdapter };
  Inspect inspect = Inspect::kNone;
};

enum class ProxyProtocol { kNone, kV1, kV2, kAny };
// "none", "v1", "v2", "any": the config's spelling.
std::string_view ProxyProtocolName(ProxyProtocol protocol);

// HTTP/2 limits with safe defaults; all settable per listener under `limits:`.
struct Http2Limits {
  uint32_t max_concurrent_streams = 256;
  uint32_t max_header_list_bytes = 16 * 1024;
  uint32_t stream_window_bytes = 1024 * 1024;          // per-stream receive window
  uint32_t connection_window_bytes = 16 * 1024 * 1024;  // per-connection receive window
  // Rapid-reset protection: token bucket of RST_STREAMs a peer may send.
  uint64_t stream_reset_burst = 1000;
  uint64_t stream_reset_rate = 33;  // per second
  size_t max_continuations = 8;     // CONTINUATION frames per header block
  // Slow request bodies: a call whose request stops arriving (while sepal waits for it and
  // before the upstream answered) for this long is ended with UNAVAILABLE.
  Duration request_progress_timeout = std::chrono::seconds(30);
  // Glitch accounting: a token bucket of frames no well-behaved client needs (empty DATA,
  // PING/SETTINGS/PRIORITY floods, streams reset before their answer, ...). Empty: GOAWAY
  // ENHANCE_YOUR_CALM.
  uint32_t glitch_burst = 200;
  uint32_t glitch_rate = 10;  // per second

  bool operator==(const Http2Limits&) const = default;
};

// HTTP/1.1 limits with safe defaults (listeners[].http1, on `protocol: http1` listeners).
struct Http1Limits {
  uint32_t max_request_line_bytes = 8 * 1024;  // method, target and version: else 414
  uint32_t max_header_bytes = 16 * 1024;       // request line and header fields: else 431
  uint32_t max_headers = 64;                   // header fields: else 431
  // Slow headers: from a request's first byte to its last header line; else 408 and close.
  Duration header_timeout = std::chrono::seconds(10);
  // Keep-alive: a connection with no request for this long is closed.
  Duration idle_timeout = std::chrono::seconds(75);
  // Slow bodies: no request body byte for this long while sepal waits for one: 408, close.
  Duration body_timeout = std::chrono::seconds(30);
  // Request bodies larger than this are refused with 413 (Flower objects go up to 2 GiB).
  uint64_t max_body_bytes = (uint64_t{2} << 30) + (uint64_t{64} << 20);
  // From the request's end to the upstream's response headers; else 504.
  Duration upstream_timeout = std::chrono::seconds(300);

  bool operator==(const Http1Limits&) const = default;
};

// Per-peer fairness caps (listeners[].peer_limits); 0 = no cap. A peer is a tailnet node, or
// an address when no identity provider is configured.
struct PeerLimitValues {
  uint32_t connections = 16;       // open connections per peer on this listener
  uint32_t concurrent_calls = 32;  // calls in flight per peer, over all its connections
  uint32_t calls_per_second = 100;  // token bucket refill ...
  uint32_t calls_burst = 200;       // ... and size

  bool operator==(const PeerLimitValues&) const = default;
};

// Different caps for some peers: the first override naming one of the peer's tags, its user
// or its node applies.
struct PeerLimitOverride {
  std::vector<std::string> tags;
  std::vector<std::string> users;
  std::vector<std::string> nodes;
  PeerLimitValues limits;  // the listener's caps with this override's keys applied

  bool operator==(const PeerLimitOverride&) const = default;
};

struct PeerLimitsConfig {
  PeerLimitValues limits;
  std::vector<PeerLimitOverride> overrides;

  bool operator==(const PeerLimitsConfig&) const = default;
};

struct ListenerConfig {
  std::string name;
  SocketAddress address;
  ProxyProtocol proxy_protocol = ProxyProtocol::kNone;
  // "svc:NAME" when the listener serves a Tailscale Service: WhoIs asks for the CapMap toward
  // it (svc_name). Empty: toward the address the connection reached (dst_ip), if a tailnet one.
  std::string tailscale_service;
  std::optional<ListenerTlsConfig> tls;
  std::vector<RouteConfig> routes;
  Protocol protocol = Protocol::kHttp2;
  Http2Limits limits;  // protocol h2
  Http1Limits http1;   // protocol http1
  PeerLimitsConfig peer_limits;
};

struct UpstreamTlsConfig {
  std::string ca;           // PEM file; empty = the system's default trust store
  std::string server_name;  // SNI and hostname check; empty = the host of `address`
  std::string certificate;  // optional client certificate (mTLS to the SuperLink) ...
  std::string private_key;  // ... and its key; both or neither

  bool operator==(const UpstreamTlsConfig&) const = default;
};

// Upstream protection (upstreams[].circuit_breaker), over all workers; 0 = no cap. A call
// over a cap is answered UNAVAILABLE at once (a SuperNode retries it).
struct CircuitBreakerConfig {
  // Calls in flight to the upstream. Flower's SuperLink serves at most 1000 at once
  // (grpcio maximum_concurrent_rpcs) and answers more RESOURCE_EXHAUSTED.
  uint32_t max_concurrent_streams = 900;
  // Calls waiting for an upstream connection to come up (a SuperLink restarting).
  uint32_t max_pending_streams = 1000;
  // New calls per second (token bucket, burst of one second's worth).
  uint32_t max_new_streams_per_second = 0;

  bool operator==(const CircuitBreakerConfig&) const = default;
};

struct UpstreamConfig {
  std::string name;
  SocketAddress address;
  std::optional<UpstreamTlsConfig> tls;
  Duration connect_timeout = std::chrono::seconds(5);
  CircuitBreakerConfig circuit_breaker;
  // h2: one HTTP/2 connection carries many calls; http1: a pool of keep-alive HTTP/1.1
  // connections, one request at a time each (the SuperLink's REST listener).
  Protocol protocol = Protocol::kHttp2;

  // A reload keeps the worker's connection pool of an upstream whose config is unchanged.
  bool operator==(const UpstreamConfig&) const = default;
};

struct MetricsConfig {
  // Adds sepal_peer_{request,response}_bytes_total{listener,peer_node}: one series per
  // tailnet node, so off by default.
  bool peer_node_label = false;
};

// The process-wide memory budget (`memory:`); 0 = off. Above the high watermark sepal refuses
// new streams (REFUSED_STREAM) and sheds the largest buffers; below the low one it resumes.
struct MemoryConfig {
  uint64_t high_watermark_bytes = uint64_t{1} << 30;
  uint64_t low_watermark_bytes = uint64_t{768} << 20;

  bool operator==(const MemoryConfig&) const = default;
};

struct Config {
  std::string source_path;  // the file this was loaded from
  AdminConfig admin;
  MetricsConfig metrics;
  MemoryConfig memory;
  unsigned workers = 0;  // 0 = one per core (resolved by the server, not the loader)
  Duration drain_timeout = std::chrono::seconds(30);
  IdentityConfig identity;
  AccessLogConfig access_log;
  std::vector<ListenerConfig> listeners;
  std::vector<UpstreamConfig> upstreams;

  const UpstreamConfig* FindUpstream(const std::string& name) const;
};

using ConfigSnapshot = std::shared_ptr<const Config>;

// Parses and validates YAML text. `source_name` is used in error messages, which have
// the form "<source_name>:<line>: <key.path>: <what is wrong>".
absl::StatusOr<Config> ParseConfig(const std::string& yaml_text, const std::string& source_name);

// Reads and parses a file; unreadable files are errors naming the path.
absl::StatusOr<Config> LoadConfigFile(const std::string& path);

// Every key the loader accepts, as a dotted path from the top of the file; "[]" stands for
// each item of a list: "workers", "listeners[].limits.max_concurrent_streams". Keys of maps
// whose keys are data (the capability names under identity.static[].capabilities) are not
// listed. The documentation test checks that each one is documented.
std::vector<std::string> KnownConfigKeyPaths();

// Human-readable summary printed by `sepal --check`.
std::string Summarize(const Config& config);

// Parses "30s", "500ms", "2m", "1h", "250us" (positive). Exposed for tests.
absl::StatusOr<Duration> ParseDuration(const std::string& text);

// Parses "host:port", "[v6]:port" or "unix:/path". Exposed for tests.
absl::StatusOr<SocketAddress> ParseSocketAddress(const std::string& text);

}  // namespace sepal::config
