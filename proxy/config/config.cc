// Loads sepal's YAML configuration into the Config model, validating every key as it goes.
#include "proxy/config/config.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <exception>
#include <initializer_list>
#include <limits>
#include <optional>
#include <set>
#include <span>
#include <sstream>
#include <string_view>
#include <type_traits>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "yaml-cpp/eventhandler.h"
#include "yaml-cpp/yaml.h"

namespace sepal::config {
namespace {

// Errors are values here; this keeps the call chains of the loader readable.
#define SEPAL_CONFIG_TRY(expr)                                   \
  do {                                                           \
    absl::Status sepal_config_status_ = (expr);                  \
    if (!sepal_config_status_.ok()) return sepal_config_status_; \
  } while (false)

#define SEPAL_CONFIG_ASSIGN(lhs, expr)                                    \
  do {                                                                    \
    auto sepal_config_result_ = (expr);                                   \
    if (!sepal_config_result_.ok()) return sepal_config_result_.status(); \
    lhs = *std::move(sepal_config_result_);                               \
  } while (false)

constexpr uint64_t kMaxWorkers = 1024;
constexpr uint64_t kMinWindowBytes = 65535;       // RFC 9113 initial window
constexpr uint64_t kMaxWindowBytes = 2147483647;  // RFC 9113 2^31-1
constexpr uint64_t kMinHeaderListBytes = 1024;
constexpr size_t kMaxCapabilityJsonBytes = 1 << 20;  // aliases can make YAML expand exponentially
constexpr size_t kMaxUnixPathBytes = sizeof(sockaddr_un{}.sun_path) - 1;

// The keys of each kind of map in the file. OpenMap accepts exactly these (anything else is an
// "unknown key" error with a "did you mean" hint) and KnownConfigKeyPaths() lists them, so the
// documentation is checked against what the loader really accepts.
enum class Section {
  kRoot,
  kAdmin,
  kMetrics,
  kIdentity,
  kIdentityTailscale,
  kStaticIdentity,
  kUpstream,
  kUpstreamTls,
  kListener,
  kListenerTls,
  kRoute,
  kAllow,
  kLimits,
  kPeerLimits,
  kPeerLimitOverride,
  kCircuitBreaker,
  kMemory,
  kHttp1,
};

constexpr std::string_view kRootKeys[] = {"admin",    "metrics",    "memory",    "workers",
                                          "drain_timeout", "identity", "access_log",
                                          "listeners", "upstreams"};
constexpr std::string_view kAdminKeys[] = {"address"};
constexpr std::string_view kMetricsKeys[] = {"peer_node_label"};
constexpr std::string_view kIdentityKeys[] = {"provider", "tailscale", "static"};
constexpr std::string_view kIdentityTailscaleKeys[] = {"socket", "cache_ttl", "lookup_timeout"};
constexpr std::string_view kStaticIdentityKeys[] = {"match", "node", "user", "tags",
                                                    "capabilities"};
constexpr std::string_view kUpstreamKeys[] = {"name", "address", "tls", "connect_timeout",
                                              "circuit_breaker", "protocol"};
constexpr std::string_view kUpstreamTlsKeys[] = {"ca", "server_name", "certificate", "private_key"};
constexpr std::string_view kListenerKeys[] = {"name",   "address", "proxy_protocol", "tls",
                                              "routes", "limits",  "peer_limits",
                                              "tailscale_service", "protocol", "http1"};
constexpr std::string_view kListenerTlsKeys[] = {"source", "certificate", "private_key",
                                                 "client_ca", "handshake_timeout"};
constexpr std::string_view kRouteKeys[] = {"match", "upstream", "allow", "mode", "inspect"};
constexpr const char* kGrpcAdapterService = "/flwr.proto.GrpcAdapter/";
constexpr const char* kGrpcAdapterMethod = "/flwr.proto.GrpcAdapter/SendReceive";
constexpr std::string_view kAllowKeys[] = {"tags", "users", "nodes", "capability"};
constexpr std::string_view kLimitsKeys[] = {"max_concurrent_streams", "max_header_list_bytes",
                                            "stream_window_bytes",    "connection_window_bytes",
                                            "stream_reset_burst",     "stream_reset_rate",
                                            "max_continuations",      "request_progress_timeout",
                                            "glitch_burst",           "glitch_rate"};
constexpr std::string_view kPeerLimitsKeys[] = {"connections", "concurrent_calls",
                                                "calls_per_second", "calls_burst", "overrides"};
constexpr std::string_view kPeerLimitOverrideKeys[] = {
    "tags", "users", "nodes", "connections", "concurrent_calls", "calls_per_second",
    "calls_burst"};
constexpr std::string_view kCircuitBreakerKeys[] = {
    "max_concurrent_streams", "max_pending_streams", "max_new_streams_per_second"};
constexpr std::string_view kMemoryKeys[] = {"high_watermark_bytes", "low_watermark_bytes"};
constexpr std::string_view kHttp1Keys[] = {
    "max_request_line_bytes", "max_header_bytes", "max_headers", "header_timeout",
    "idle_timeout", "body_timeout", "max_body_bytes", "upstream_timeout"};

struct SectionKeys {
  Section section;
  // Where this kind of map sits, as KnownConfigKeyPaths() spells it ("" = the top level,
  // "[]" = every item of a list). Keep it in step with the Read* function that opens it.
  std::string_view path;
  std::span<const std::string_view> keys;
};

// Indexed by Section.
constexpr SectionKeys kSections[] = {
    {Section::kRoot, "", kRootKeys},
    {Section::kAdmin, "admin", kAdminKeys},
    {Section::kMetrics, "metrics", kMetricsKeys},
    {Section::kIdentity, "identity", kIdentityKeys},
    {Section::kIdentityTailscale, "identity.tailscale", kIdentityTailscaleKeys},
    {Section::kStaticIdentity, "identity.static[]", kStaticIdentityKeys},
    {Section::kUpstream, "upstreams[]", kUpstreamKeys},
    {Section::kUpstreamTls, "upstreams[].tls", kUpstreamTlsKeys},
    {Section::kListener, "listeners[]", kListenerKeys},
    {Section::kListenerTls, "listeners[].tls", kListenerTlsKeys},
    {Section::kRoute, "listeners[].routes[]", kRouteKeys},
    {Section::kAllow, "listeners[].routes[].allow", kAllowKeys},
    {Section::kLimits, "listeners[].limits", kLimitsKeys},
    {Section::kPeerLimits, "listeners[].peer_limits", kPeerLimitsKeys},
    {Section::kPeerLimitOverride, "listeners[].peer_limits.overrides[]", kPeerLimitOverrideKeys},
    {Section::kCircuitBreaker, "upstreams[].circuit_breaker", kCircuitBreakerKeys},
    {Section::kMemory, "memory", kMemoryKeys},
    {Section::kHttp1, "listeners[].http1", kHttp1Keys},
};

constexpr bool SectionsInOrder() {
  for (size_t i = 0; i < std::size(kSections); ++i) {
    if (static_cast<size_t>(kSections[i].section) != i) return false;
  }
  return std::size(kSections) == static_cast<size_t>(Section::kHttp1) + 1;
}
static_assert(SectionsInOrder(), "kSections must list every Section once, in enum order");

const SectionKeys& KeysOf(Section section) { return kSections[static_cast<size_t>(section)]; }

// Edit distance, for "did you mean" hints on misspelled keys and values.
size_t EditDistance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

std::string Suggestion(std::string_view word, std::span<const std::string_view> choices) {
  std::string_view best;
  size_t best_distance = 3;
  for (std::string_view choice : choices) {
    size_t distance = EditDistance(word, choice);
    if (distance < best_distance) {
      best = choice;
      best_distance = distance;
    }
  }
  if (best.empty()) return "";
  return absl::StrCat(" (did you mean \"", std::string(best), "\"?)");
}

std::string Quoted(const std::string& text) { return absl::StrCat("\"", text, "\""); }

bool AllDigits(std::string_view text) {
  return !text.empty() &&
         std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// Parses a decimal number of at most `max`; rejects signs, spaces and other bases.
std::optional<uint64_t> ParseDecimal(std::string_view text, uint64_t max) {
  if (!AllDigits(text)) return std::nullopt;
  uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value > max) return std::nullopt;
  return value;
}

bool IsIPv4(const std::string& text) {
  in_addr address;
  return inet_pton(AF_INET, text.c_str(), &address) == 1;
}

bool IsIPv6(const std::string& text) {
  in6_addr address;
  return inet_pton(AF_INET6, text.c_str(), &address) == 1;
}

// Host names are kept as written and resolved by whoever dials or binds; this only rejects
// text that could never resolve, so typos surface at load time.
absl::Status CheckHostName(const std::string& host) {
  if (host.empty()) return absl::InvalidArgumentError("missing host");
  bool dotted_digits = std::all_of(host.begin(), host.end(),
                                   [](char c) { return (c >= '0' && c <= '9') || c == '.'; });
  if (dotted_digits) {
    if (!IsIPv4(host))
      return absl::InvalidArgumentError(absl::StrCat("bad IPv4 address ", Quoted(host)));
    return absl::OkStatus();
  }
  if (host.find(':') != std::string::npos) {
    return absl::InvalidArgumentError("IPv6 addresses need brackets: [addr]:port");
  }
  for (char c : host) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.' || c == '_';
    if (!ok) return absl::InvalidArgumentError(absl::StrCat("bad host name ", Quoted(host)));
  }
  return absl::OkStatus();
}

std::string FormatDuration(Duration duration) {
  int64_t ms = duration.count();
  if (ms == 0) return "0s";
  std::string out;
  for (auto [unit, size] :
       {std::pair<const char*, int64_t>{"h", 3600000}, {"m", 60000}, {"s", 1000}, {"ms", 1}}) {
    if (ms >= size) {
      absl::StrAppend(&out, ms / size, unit);
      ms %= size;
    }
  }
  return out;
}

std::string FormatAddress(const SocketAddress& address) {
  if (address.kind == SocketAddress::Kind::kUnix) return absl::StrCat("unix:", address.path);
  if (address.host.find(':') != std::string::npos) {
    return absl::StrCat("[", address.host, "]:", address.port);
  }
  return absl::StrCat(address.host, ":", address.port);
}

// ---------------------------------------------------------------------------------------------
// JSON text for capability values (Tailscale hands capabilities to upstreams as JSON).

void AppendJsonString(std::string_view text, std::string* out) {
  out->push_back('"');
  for (char c : text) {
    if (c == '"' || c == '\\') {
      out->push_back('\\');
      out->push_back(c);
    } else if (c == '\n') {
      out->append("\\n");
    } else if (c == '\t') {
      out->append("\\t");
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char escaped[8];
      std::snprintf(escaped, sizeof(escaped), "\\u%04x", c);
      out->append(escaped);
    } else {
      out->push_back(c);  // UTF-8 passes through: JSON text is UTF-8
    }
  }
  out->push_back('"');
}

// True for text that is a number in JSON's own grammar, so it can be emitted unchanged.
bool IsJsonNumber(std::string_view text) {
  size_t i = 0;
  auto digits = [&] {
    size_t start = i;
    while (i < text.size() && text[i] >= '0' && text[i] <= '9') ++i;
    return i - start;
  };
  if (i < text.size() && text[i] == '-') ++i;
  size_t start = i;
  size_t integer_digits = digits();
  if (integer_digits == 0 || (integer_digits > 1 && text[start] == '0')) return false;
  if (i < text.size() && text[i] == '.') {
    ++i;
    if (digits() == 0) return false;
  }
  if (i < text.size() && (text[i] == 'e' || text[i] == 'E')) {
    ++i;
    if (i < text.size() && (text[i] == '+' || text[i] == '-')) ++i;
    if (digits() == 0) return false;
  }
  return i == text.size();
}

// ---------------------------------------------------------------------------------------------
// The loader proper.

// A YAML node together with its key path and line, so every error can say where it is.
struct Value {
  YAML::Node node;
  std::string path;
  int line = 1;
};

int LineOf(const YAML::Node& node, int fallback) {
  YAML::Mark mark = node.Mark();
  return mark.is_null() ? fallback : mark.line + 1;
}

// Errors about a whole collection ("expected a list", "required") read best at its key's
// line; yaml-cpp marks a block collection at its first entry and a null value at whatever
// token follows, often on the next line. Scalars keep their own mark.
int ValueLine(const YAML::Node& key, const YAML::Node& value, int fallback) {
  int key_line = LineOf(key, fallback);
  return value.IsScalar() ? LineOf(value, key_line) : key_line;
}

std::string ChildPath(const std::string& parent, const std::string& key) {
  return parent.empty() ? key : absl::StrCat(parent, ".", key);
}

std::string DisplayPath(const std::string& path) { return path.empty() ? "(top level)" : path; }

std::string Describe(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Scalar:
      return Quoted(node.Scalar());
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Map:
      return "a map";
    default:
      return "nothing";
  }
}

class Loader {
 public:
  explicit Loader(std::string source) : source_(std::move(source)) {}

  absl::Status ErrorAt(int line, const std::string& path, const std::string& what) const {
    return absl::InvalidArgumentError(
        absl::StrCat(source_, ":", line, ": ", DisplayPath(path), ": ", what));
  }
  absl::Status Error(const Value& at, const std::string& what) const {
    return ErrorAt(at.line, at.path, what);
  }

  absl::Status LoadRoot(const YAML::Node& root, Config* config);

 private:
  // A validated map: known keys only, no duplicates; entries keep their own paths and lines.
  class Map {
   public:
    const Value& self() const { return self_; }
    std::optional<Value> Get(std::string_view key) const {
      for (const auto& [name, value] : entries_) {
        if (name == key) return value;
      }
      return std::nullopt;
    }
    absl::StatusOr<Value> Require(const Loader& loader, const std::string& key) const {
      std::optional<Value> value = Get(key);
      if (!value) return loader.ErrorAt(self_.line, ChildPath(self_.path, key), "required");
      return *value;
    }

   private:
    friend class Loader;
    Value self_;
    std::vector<std::pair<std::string, Value>> entries_;
  };

  absl::StatusOr<Map> OpenMap(const Value& value, Section section) const;
  absl::StatusOr<std::vector<Value>> ReadList(const Value& value) const;
  absl::StatusOr<std::string> ReadString(const Value& value) const;
  absl::StatusOr<std::string> ReadNonEmptyString(const Value& value) const;
  absl::StatusOr<std::vector<std::string>> ReadStringList(const Value& value) const;
  absl::StatusOr<std::vector<std::string>> ReadTagList(const Value& value) const;
  absl::StatusOr<uint64_t> ReadInteger(const Value& value, uint64_t min, uint64_t max) const;
  absl::StatusOr<Duration> ReadDuration(const Value& value) const;
  absl::StatusOr<bool> ReadBool(const Value& value) const;
  absl::StatusOr<size_t> ReadChoice(const Value& value,
                                    std::initializer_list<std::string_view> choices) const;
  absl::StatusOr<SocketAddress> ReadAddress(const Value& value) const;
  absl::StatusOr<std::string> ReadReadableFile(const Value& value) const;

  // Each Read* below returns InvalidArgument with file:line and key path on bad input.
  absl::Status ReadAdmin(const Value& value, AdminConfig* admin) const;
  absl::Status ReadAccessLog(const Value& value, AccessLogConfig* access_log) const;
  absl::Status ReadIdentity(const Value& value, IdentityConfig* identity) const;
  absl::Status ReadStaticIdentity(const Value& value, StaticIdentity* entry) const;
  absl::Status ReadCapabilities(const Value& value,
                                std::map<std::string, std::string>* capabilities) const;
  absl::Status AppendJson(const Value& value, std::string* out) const;
  absl::Status ReadUpstreams(const Value& value, std::vector<UpstreamConfig>* upstreams) const;
  absl::Status ReadUpstream(const Value& value, UpstreamConfig* upstream) const;
  absl::Status ReadListeners(const Value& value, const Config& config,
                             std::vector<ListenerConfig>* listeners) const;
  absl::Status ReadListener(const Value& value, const Config& config,
                            ListenerConfig* listener) const;
  absl::Status ReadListenerTls(const Value& value, ListenerTlsConfig* tls) const;
  absl::Status ReadUpstreamTls(const Value& value, UpstreamTlsConfig* tls) const;
  absl::Status ReadRoutes(const Value& value, const Config& config, Protocol protocol,
                          std::vector<RouteConfig>* routes) const;
  absl::Status ReadRoute(const Value& value, const Config& config, Protocol protocol,
                         RouteConfig* route) const;
  absl::Status ReadProtocol(const Map& map, Protocol* protocol) const;
  absl::Status ReadHttp1(const Value& value, Http1Limits* limits) const;
  absl::Status ReadAllow(const Value& value, AllowRules* allow) const;
  absl::Status ReadLimits(const Value& value, Http2Limits* limits) const;
  // Reads an unsigned integer key of `map`, if present, into *field.
  template <typename Field>
  absl::Status ReadOptionalInteger(const Map& map, std::string_view key, uint64_t min,
                                   uint64_t max, Field* field) const {
    std::optional<Value> field_value = map.Get(key);
    if (!field_value) return absl::OkStatus();
    uint64_t number = 0;
    SEPAL_CONFIG_ASSIGN(number, ReadInteger(*field_value, min, max));
    *field = static_cast<Field>(number);
    return absl::OkStatus();
  }
  absl::Status ReadPeerLimits(const Value& value, PeerLimitsConfig* peer_limits) const;
  // The cap keys shared by peer_limits and its overrides, read from `map` into `values`.
  absl::Status ReadPeerLimitValues(const Map& map, PeerLimitValues* values) const;
  absl::Status ReadCircuitBreaker(const Value& value, CircuitBreakerConfig* breaker) const;
  absl::Status ReadMemory(const Value& value, MemoryConfig* memory) const;

  std::string source_;
};

absl::StatusOr<Loader::Map> Loader::OpenMap(const Value& value, Section section) const {
  std::span<const std::string_view> known = KeysOf(section).keys;
  Map map;
  map.self_ = value;
  // An empty document or a bare `key:` reads as null; only the top level may be empty.
  if (value.node.IsNull() && value.path.empty()) return map;
  if (!value.node.IsMap()) {
    return Error(value, absl::StrCat("expected a map, got ", Describe(value.node)));
  }
  for (const auto& entry : value.node) {
    int key_line = LineOf(entry.first, value.line);
    if (!entry.first.IsScalar()) {
      return ErrorAt(key_line, value.path, "keys must be plain names");
    }
    const std::string& key = entry.first.Scalar();
    std::string path = ChildPath(value.path, key);
    if (std::find(known.begin(), known.end(), key) == known.end()) {
      return ErrorAt(key_line, path,
                     absl::StrCat("unknown key ", Quoted(key), Suggestion(key, known)));
    }
    if (map.Get(key)) return ErrorAt(key_line, path, absl::StrCat("duplicate key ", Quoted(key)));
    map.entries_.emplace_back(
        key, Value{entry.second, path, ValueLine(entry.first, entry.second, value.line)});
  }
  return map;
}

absl::StatusOr<std::vector<Value>> Loader::ReadList(const Value& value) const {
  if (!value.node.IsSequence()) {
    return Error(value, absl::StrCat("expected a list, got ", Describe(value.node)));
  }
  std::vector<Value> items;
  size_t index = 0;
  for (const auto& item : value.node) {
    items.push_back(
        Value{item, absl::StrCat(value.path, "[", index, "]"), LineOf(item, value.line)});
    ++index;
  }
  return items;
}

absl::StatusOr<std::string> Loader::ReadString(const Value& value) const {
  if (!value.node.IsScalar()) {
    return Error(value, absl::StrCat("expected a string, got ", Describe(value.node)));
  }
  return value.node.Scalar();
}

absl::StatusOr<std::string> Loader::ReadNonEmptyString(const Value& value) const {
  std::string text;
  SEPAL_CONFIG_ASSIGN(text, ReadString(value));
  if (text.empty()) return Error(value, "must not be empty");
  return text;
}

absl::StatusOr<std::vector<std::string>> Loader::ReadStringList(const Value& value) const {
  std::vector<Value> items;
  SEPAL_CONFIG_ASSIGN(items, ReadList(value));
  std::vector<std::string> strings;
  for (const Value& item : items) {
    std::string text;
    SEPAL_CONFIG_ASSIGN(text, ReadNonEmptyString(item));
    strings.push_back(std::move(text));
  }
  return strings;
}

absl::StatusOr<std::vector<std::string>> Loader::ReadTagList(const Value& value) const {
  std::vector<Value> items;
  SEPAL_CONFIG_ASSIGN(items, ReadList(value));
  std::vector<std::string> tags;
  for (const Value& item : items) {
    std::string tag;
    SEPAL_CONFIG_ASSIGN(tag, ReadString(item));
    // Tailscale spells tags "tag:name"; a bare "supernode" would silently never match.
    if (tag.size() <= 4 || tag.compare(0, 4, "tag:") != 0) {
      return Error(item, absl::StrCat("tag ", Quoted(tag), " must start with \"tag:\""));
    }
    tags.push_back(std::move(tag));
  }
  return tags;
}

absl::StatusOr<uint64_t> Loader::ReadInteger(const Value& value, uint64_t min, uint64_t max) const {
  if (!value.node.IsScalar() || !AllDigits(value.node.Scalar())) {
    return Error(value,
                 absl::StrCat("expected a non-negative integer, got ", Describe(value.node)));
  }
  std::optional<uint64_t> number = ParseDecimal(value.node.Scalar(), max);
  if (!number || *number < min) {
    return Error(
        value, absl::StrCat("must be between ", min, " and ", max, ", got ", value.node.Scalar()));
  }
  return *number;
}

absl::StatusOr<bool> Loader::ReadBool(const Value& value) const {
  std::string text;
  SEPAL_CONFIG_ASSIGN(text, ReadString(value));
  if (text == "true") return true;
  if (text == "false") return false;
  return Error(value, absl::StrCat("expected true or false, got ", Quoted(text)));
}

absl::StatusOr<Duration> Loader::ReadDuration(const Value& value) const {
  std::string text;
  SEPAL_CONFIG_ASSIGN(text, ReadString(value));
  absl::StatusOr<Duration> duration = ParseDuration(text);
  if (!duration.ok()) return Error(value, std::string(duration.status().message()));
  return *duration;
}

absl::StatusOr<size_t> Loader::ReadChoice(const Value& value,
                                          std::initializer_list<std::string_view> choices) const {
  std::string text;
  SEPAL_CONFIG_ASSIGN(text, ReadString(value));
  for (size_t i = 0; i < choices.size(); ++i) {
    if (choices.begin()[i] == text) return i;
  }
  std::vector<std::string> names(choices.begin(), choices.end());
  return Error(value, absl::StrCat("unknown value ", Quoted(text), " (expected one of ",
                                   absl::StrJoin(names, ", "), ")"));
}

absl::StatusOr<SocketAddress> Loader::ReadAddress(const Value& value) const {
  std::string text;
  SEPAL_CONFIG_ASSIGN(text, ReadString(value));
  absl::StatusOr<SocketAddress> address = ParseSocketAddress(text);
  if (!address.ok()) return Error(value, std::string(address.status().message()));
  return *std::move(address);
}

absl::StatusOr<std::string> Loader::ReadReadableFile(const Value& value) const {
  std::string path;
  SEPAL_CONFIG_ASSIGN(path, ReadNonEmptyString(value));
  // Checked now so a typo fails `--check` and a SIGHUP, not the first TLS handshake.
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int error = errno;
    return Error(value, absl::StrCat("cannot read ", Quoted(path), ": ", std::strerror(error)));
  }
  struct stat info;
  int stat_result = fstat(fd, &info);
  int error = errno;
  close(fd);
  if (stat_result != 0) {
    return Error(value, absl::StrCat("cannot read ", Quoted(path), ": ", std::strerror(error)));
  }
  if (!S_ISREG(info.st_mode)) {
    int reason = S_ISDIR(info.st_mode) ? EISDIR : EINVAL;
    return Error(value, absl::StrCat("cannot read ", Quoted(path), ": ", std::strerror(reason)));
  }
  return path;
}

absl::Status Loader::LoadRoot(const YAML::Node& root, Config* config) {
  Map map;
  SEPAL_CONFIG_ASSIGN(map, OpenMap(Value{root, "", LineOf(root, 1)}, Section::kRoot));
  if (auto value = map.Get("admin")) SEPAL_CONFIG_TRY(ReadAdmin(*value, &config->admin));
  if (auto value = map.Get("metrics")) {
    Map metrics;
    SEPAL_CONFIG_ASSIGN(metrics, OpenMap(*value, Section::kMetrics));
    if (auto label = metrics.Get("peer_node_label")) {
      SEPAL_CONFIG_ASSIGN(config->metrics.peer_node_label, ReadBool(*label));
    }
  }
  if (auto value = map.Get("memory")) SEPAL_CONFIG_TRY(ReadMemory(*value, &config->memory));
  if (auto value = map.Get("workers")) {
    SEPAL_CONFIG_ASSIGN(config->workers, ReadInteger(*value, 0, kMaxWorkers));
  }
  if (auto value = map.Get("drain_timeout")) {
    SEPAL_CONFIG_ASSIGN(config->drain_timeout, ReadDuration(*value));
  }
  if (auto value = map.Get("identity")) SEPAL_CONFIG_TRY(ReadIdentity(*value, &config->identity));
  if (auto value = map.Get("access_log")) {
    SEPAL_CONFIG_TRY(ReadAccessLog(*value, &config->access_log));
  }
  // Upstreams first, so routes can be checked against them wherever they appear in the file.
  if (auto value = map.Get("upstreams")) {
    SEPAL_CONFIG_TRY(ReadUpstreams(*value, &config->upstreams));
  }
  std::optional<Value> listeners = map.Get("listeners");
  if (!listeners) return ErrorAt(map.self().line, "listeners", "at least one listener is required");
  SEPAL_CONFIG_TRY(ReadListeners(*listeners, *config, &config->listeners));
  return absl::OkStatus();
}

absl::Status Loader::ReadAdmin(const Value& value, AdminConfig* admin) const {
  Map map;
  SEPAL_CONFIG_ASSIGN(map, OpenMap(value, Section::kAdmin));
  if (auto address_value = map.Get("address")) {
    SocketAddress address;
    SEPAL_CONFIG_ASSIGN(address, ReadAddress(*address_value));
    if (address.kind != SocketAddress::Kind::kTcp) {
      return Error(*address_value, "the admin server needs a TCP address");
    }
    // Port 0 (ephemeral) is accepted as for listeners: the admin server listens too.
    admin->address = std::move(address);
  }
  return absl::OkStatus();
}

// `access_log: off | stdout | stderr | /absolute/path.log`. A file must be creatable now, so
// a typo fails `--check` and a reload rather than silently logging nowhere.
absl::Status Loader::ReadAccessLog(const Value& value, AccessLogConfig* access_log) const {
  std::string text;
  SEPAL_CONFIG_ASSIGN(text, ReadNonEmptyString(value));
  if (text == "off") {
    access_log->output = AccessLogConfig::Output::kOff;
  } else if (text == "stdout") {
    access_log->output = AccessLogConfig::Output::kStdout;
  } else if (text == "stderr") {
    access_log->output = AccessLogConfig::Output::kStderr;
  } else if (text.front() == '/') {
    int fd = open(text.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0) {
      int error = errno;
      return Error(value, absl::StrCat("cannot open ", Quoted(text), " for appending: ",
                                       std::strerror(error)));
    }
    close(fd);
    access_log->output = AccessLogConfig::Output::kFile;
    access_log->path = text;
  } else {
    return Error(value, absl::StrCat("expected off, stdout, stderr or an absolute file path, got ",
                                     Quoted(text)));
  }
  return absl::OkStatus();
}

absl::Status Loader::ReadIdentity(const Value& value, IdentityConfig* identity) const {
  Map map;
  SEPAL_CONFIG_ASSIGN(map, OpenMap(value, Section::kIdentity));
  Value provider;
  SEPAL_CONFIG_ASSIGN(provider, map.Require(*this, "provider"));
  size_t choice = 0;
  SEPAL_CONFIG_ASSIGN(choice, ReadChoice(provider, {"tailscale", "static"}));
  identity->provider =
      choice == 0 ? IdentityConfig::Provider::kTailscale : IdentityConfig::Provider::kStatic;

  if (auto tailscale_value = map.Get("tailscale")) {
    Map tailscale;
    SEPAL_CONFIG_ASSIGN(tailscale, OpenMap(*tailscale_value, Section::kIdentityTailscale));
    if (auto socket = tailscale.Get("socket")) {
      // Not checked for existence: tailscaled may start after sepal.
      SEPAL_CONFIG_ASSIGN(identity->tailscale.socket, ReadNonEmptyString(*socket));
    }
    if (auto ttl = tailscale.Get("cache_ttl")) {
      SEPAL_CONFIG_ASSIGN(identity->tailscale.cache_ttl, ReadDuration(*ttl));
    }
    if (auto timeout = tailscale.Get("lookup_timeout")) {
      SEPAL_CONFIG_ASSIGN(identity->tailscale.lookup_timeout, ReadDuration(*timeout));
    }
  }

  std::optional<Value> static_value = map.Get("static");
  if (static_value) {
    std::vector<Value> entries;
    SEPAL_CONFIG_ASSIGN(entries, ReadList(*static_value));
    for (const Value& entry : entries) {
      StaticIdentity identity_entry;
      SEPAL_CONFIG_TRY(ReadStaticIdentity(entry, &identity_entry));
      identity->static_identities.push_back(std::move(identity_entry));
    }
  }
  if (identity->provider == IdentityConfig::Provider::kStatic &&
      identity->static_identities.empty()) {
    const Value& at = static_value ? *static_value : map.self();
    return ErrorAt(at.line, ChildPath(value.path, "static"),
                   "provider static needs at least one entry in identity.static");
  }
  return absl::OkStatus();
}

absl::Status CheckCidr(const std::string& cidr) {
  size_t slash = cidr.find('/');
  if (slash == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected a CIDR such as 100.64.0.0/10, got ", Quoted(cidr)));
  }
  std::string ip = cidr.substr(0, slash);
  uint64_t max_prefix = 0;
  if (IsIPv4(ip)) {
    max_prefix = 32;
  } else if (IsIPv6(ip)) {
    max_prefix = 128;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("bad IP address ", Quoted(ip), " in CIDR"));
  }
  if (!ParseDecimal(std::string_view(cidr).substr(slash + 1), max_prefix)) {
    return absl::InvalidArgumentError(
        absl::StrCat("prefix length of ", Quoted(cidr), " must be between 0 and ", max_prefix));
  }
  return absl::OkStatus();
}

absl::Status Loader::ReadStaticIdentity(const Value& value, StaticIdentity* entry) const {
  Map map;
  SEPAL_CONFIG_ASSIGN(map, OpenMap(value, Section::kStaticIdentity));
  Value match;
  SEPAL_CONFIG_ASSIGN(match, map.Require(*this, "match"));
  SEPAL_CONFIG_ASSIGN(entry->match, ReadString(match));
  if (absl::Status status = CheckCidr(entry->match); !status.ok()) {
    return Error(match, std::string(status.message()));
  }
  if (auto node = map.Get("node")) SEPAL_CONFIG_ASSIGN(entry->node, ReadNonEmptyString(*node));
  if (auto user = map.Get("user")) SEPAL_CONFIG_ASSIGN(entry->user, ReadNonEmptyString(*user));
  if (auto tags = map.Get("tags")) SEPAL_CONFIG_ASSIGN(entry->tags, ReadTagList(*tags));
  if (auto capabilities = map.Get("capabilities")) {
    SEPAL_CONFIG_TRY(ReadCapabilities(*capabilities, &entry->capabilities));
  }
  return absl::OkStatus();
}

absl::Status Loader::ReadCapabilities(const Value& value,
                                      std::map<std::string, std::string>* capabilities) const {
  if (!value.node.IsMap()) {
    return Error(value, absl::StrCat("expected a map of capability name to a list of values, got ",
                                     Describe(value.node)));
  }
  for (const auto& entry : value.node) {
    int key_line = LineOf(entry.first, value.line);
    if (!entry.first.IsScalar() || entry.first.Scalar().empty()) {
      return ErrorAt(key_line, value.path, "capability names must be non-empty strings");
    }
    const std::string& name = entry.first.Scalar();
    Value values{entry.second, ChildPath(value.path, name),
                 ValueLine(entry.first, entry.second, value.line)};
    if (capabilities->count(name) != 0) {
      return Error(values, absl::StrCat("duplicate capability ", Quoted(name)));
    }
    if (!values.node.IsSequence()) {
      return Error(values, absl::StrCat("expected a list of values, got ", Describe(values.node)));
    }
    std::string json;
    SEPAL_CONFIG_TRY(AppendJson(values, &json));
    (*capabilities)[name] = std::move(json);
  }
  return absl::OkStatus();
}

absl::Status Loader::AppendJson(const Value& value, std::string* out) const {
  if (out->size() > kMaxCapabilityJsonBytes) {
    return Error(value, absl::StrCat("capability value is larger than ", kMaxCapabilityJsonBytes,
                                     " bytes as JSON"));
  }
  const YAML::Node& node = value.node;
  switch (node.Type()) {
    case YAML::NodeType::Sequence: {
      out->push_back('[');
      size_t index = 0;
      for (const auto& item : node) {
        if (index > 0) out->push_back(',');
        SEPAL_CONFIG_TRY(AppendJson(
            Value{item, absl::StrCat(value.path, "[", index, "]"), LineOf(item, value.line)}, out));
        ++index;
      }
      out->push_back(']');
      return absl::OkStatus();
    }
    case YAML::NodeType::Map: {
      out->push_back('{');
      std::set<std::string> seen;
      for (const auto& entry : node) {
        int key_line = LineOf(entry.first, value.line);
        if (!entry.first.IsScalar()) {
          return ErrorAt(key_line, value.path, "JSON object keys must be strings");
        }
        const std::string& key = entry.first.Scalar();
        std::string path = ChildPath(value.path, key);
        if (!seen.insert(key).second) {
          return ErrorAt(key_line, path, absl::StrCat("duplicate key ", Quoted(key)));
        }
        if (seen.size() > 1) out->push_back(',');
        AppendJsonString(key, out);
        out->push_back(':');
        SEPAL_CONFIG_TRY(AppendJson(
            Value{entry.second, path, ValueLine(entry.first, entry.second, value.line)}, out));
      }
      out->push_back('}');
      return absl::OkStatus();
    }
    case YAML::NodeType::Scalar: {
      const std::string& text = node.Scalar();
      // yaml-cpp tags plain scalars "?" and quoted ones "!": quoting forces a string.
      if (node.Tag() != "!") {
        if (text == "true" || text == "True" || text == "TRUE") {
          out->append("true");
          return absl::OkStatus();
        }
        if (text == "false" || text == "False" || text == "FALSE") {
          out->append("false");
          return absl::OkStatus();
        }
        if (IsJsonNumber(text)) {
          out->append(text);
          return absl::OkStatus();
        }
      }
      AppendJsonString(text, out);
      return absl::OkStatus();
    }
    default:
      out->append("null");
      return absl::OkStatus();
  }
}

absl::Status Loader::ReadUpstreams(const Value& value,
                                   std::vector<UpstreamConfig>* upstreams) const {
  std::vector<Value> items;
  SEPAL_CONFIG_ASSIGN(items, ReadList(value));
  for (const Value& item : items) {
    UpstreamConfig upstream;
    SEPAL_CONFIG_TRY(ReadUpstream(item, &upstream));
    for (size_t i = 0; i < upstreams->size(); ++i) {
      if ((*upstreams)[i].name == upstream.name) {
        return ErrorAt(item.line, ChildPath(item.path, "name"),
                       absl::StrCat("duplicate upstream name ", Quoted(upstream.name),
                                    " (also upstreams[", i, "])"));
      }
    }
    upstreams->push_back(std::move(upstream));
  }
  return absl::OkStatus();
}

absl::Status Loader::ReadUpstream(const Value& value, UpstreamConfig* upstream) const {
  Map map;
  SEPAL_CONFIG_ASSIGN(map, OpenMap(value, Section::kUpstream));
  Value name;
  SEPAL_CONFIG_ASSIGN(name, map.Require(*this, "name"));
  SEPAL_CONFIG_ASSIGN(upstream->name, ReadNonEmptyString(name));
  Value address;
  SEPAL_CONFIG_ASSIGN(address, map.Require(*this, "address"));
  SEPAL_CONFIG_ASSIGN(upstream->address, ReadAddress(address));
  if (upstream->address.kind == SocketAddress::Kind::kTcp && upstream->address.port == 0) {
    return Error(address, "upstream port must be between 1 and 65535");
  }
  if (auto tls_value = map.Get("tls")) {
    UpstreamTlsConfig tls;
    SEPAL_CONFIG_TRY(ReadUpstreamTls(*tls_value, &tls));
    // The certificate is checked against server_name, or else the host of `address`; a
    // unix socket has none.
    if (tls.server_name.empty() && upstream->address.kind == SocketAddress::Kind::kUnix) {
      return ErrorAt(tls_value->line, ChildPath(tls_value->path, "server_name"),
                     "required for TLS over a unix socket (the name the SuperLink's "
                     "certificate is checked against)");
    }
    upstream->tls = std::move(tls);
  }
  if (auto timeout = map.Get("connect_timeout")) {
    SEPAL_CONFIG_ASSIGN(upstream->connect_timeout, ReadDuration(*timeout));
  }
  if (auto breaker = map.Get("circuit_breaker")) {
    SEPAL_CONFIG_TRY(ReadCircuitBreaker(*breaker, &upstream->circuit_breaker));
  }
  SEPAL_CONFIG_TRY(ReadProtocol(map, &upstream->protocol));
  if (upstream->protocol == Protocol::kHttp1 && upstream->tls) {
    return Error(*map.Get("tls"), "TLS to a protocol: http1 upstream is not supported; keep the "
                                  "SuperLink's REST listener on loopback or a unix socket");
  }
  return absl::OkStatus();
}

absl::Status Loader::ReadProtocol(const Map& map, Protocol* protocol) const {
  if (auto value = map.Get("protocol")) {
    size_t choice = 0;
    SEPAL_CONFIG_ASSIGN(choice, ReadChoice(*value, {"h2", "http1"}));
    *protocol = choice == 0 ? Protocol::kHttp2 : Protocol::kHttp1;
  }
  return absl::OkStatus();
}

absl::Status Loader::ReadHttp1(const Value& value, Http1Limits* limits) const {
  Map map;
  SEPAL_CONFIG_ASSIGN(map, OpenMap(value, Section::kHttp1));
  constexpr uint64_t kMaxUint32 = std::numeric_limits<uint32_t>::max();
  SEPAL_CONFIG_TRY(ReadOptionalInteger(map, "max_request_line_bytes", 64, 1 << 20,
                                       &limits->max_request_line_bytes));
  SEPAL_CONFIG_TRY(ReadOptionalInteger(map, "max_header_bytes", 1024, 1 << 20,
                                       &limits->max_header_bytes));
  SEPAL_CONFIG_TRY(ReadOptionalInteger(map, "max_headers", 1, kMaxUint32, &limits->max_headers));
  SEPAL_CONFIG_TRY(ReadOptionalInteger(map, "max_body_bytes", 0,
                                       std::numeric_limits<uint64_t>::max(),
                                       &limits->max_body_bytes));
  for (auto [key, field] : {std::pair{"header_timeout", &limits->header_timeout},
                            std::pair{"idle_timeout", &limits->idle_timeout},
                            std::pair{"body_timeout", &limits->body_timeout},
                            std::pair{"upstream_timeout", &limits->upstream_timeout}}) {
    if (auto timeout = map.Get(key)) SEPAL_CONFIG_ASSIGN(*field, ReadDuration(*timeout));
  }
  return absl::OkStatus();
}

absl::Status Loader::ReadListeners(const Value& value, const Config& config,
                                   std::vector<ListenerConfig>* listeners) const {
  std::vector<Value> items;
  SEPAL_CONFIG_ASSIGN(items, ReadList(value));
  if (items.empty()) return Error(value, "at least one listener is required");
  for (const Value& item : items) {
    ListenerConfig listener;
    SEPAL_CONFIG_TRY(ReadListener(item, config, &listener));
    for (size_t i = 0; i < listeners->size(); ++i) {
      const ListenerConfig& other = (*listeners)[i];
      if (other.name == listener.name) {
        return ErrorAt(item.line, ChildPath(item.path, "name"),
                       absl::StrCat("duplicate listener name ", Quoted(listener.name),
                                    " (also listeners[", i, "])"));
      }
      // Port 0 asks the kernel for a fresh port each time, so those never collide.
      if (listener.address.port != 0 && other.address.host == listener.address.host &&
          other.address.port == listener.address.port) {
        return ErrorAt(item.line, ChildPath(item.path, "address"),
                       absl::StrCat("duplicate listener address ", Quoted(listener.address.text),
                                    " (also listeners[", i, "])"));
      }
    }
    listeners->push_back(std::move(listener));
  }
  return absl::OkStatus();
}

absl::Status Loader::ReadListener(const Value& value, const Config& config,
                                  ListenerConfig* listener) const {
  Map map;
  SEPAL_CONFIG_ASSIGN(map, OpenMap(value, Section::kListener));
  Value name;
  SEPAL_CONFIG_ASSIGN(name, map.Require(*this, "name"));
  SEPAL_CONFIG_ASSIGN(listener->name, ReadNonEmptyString(name));
  Value address;
  SEPAL_CONFIG_ASSIGN(address, map.Require(*this, "address"));
  SEPAL_CONFIG_ASSIGN(listener->address, ReadAddress(address));
  if (listener->address.kind != SocketAddress::Kind::kTcp) {
    return Error(address, "unix listeners are not supported; use host:port");
  }
  if (auto proxy_protocol = map.Get("proxy_protocol")) {
    size_t choice = 0;
    SEPAL_CONFIG_ASSIGN(choice, ReadChoice(*proxy_protocol, {"none", "v1", "v2", "any"}));
    static constexpr ProxyProtocol kByChoice[] = {ProxyProtocol::kNone, ProxyProtocol::kV1,
                                                  ProxyProtocol::kV2, ProxyProtocol::kAny};
    listener->proxy_protocol = kByChoice[choice];
  }
  if (auto service = map.Get("tailscale_service")) {
    SEPAL_CONFIG_ASSIGN(listener->tailscale_service, ReadString(*service));
    // svc:NAME, NAME a DNS label (what `tailscale serve --service` accepts).
    std::string_view service_name = listener->tailscale_service;
    bool valid = service_name.starts_with("svc:") && service_name.size() > 4 &&
                 service_name.size() <= 4 + 63 && service_name[4] != '-' &&
                 service_name.back() != '-';
    for (char c : service_name.substr(std::min<size_t>(4, service_name.size()))) {
      valid = valid && ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-');
    }
    if (!valid) {
      return Error(*service, "tailscale_service must be svc:NAME, NAME a lowercase DNS label "
                             "(letters, digits, '-'), e.g. svc:superlink");
    }
  }
  if (auto tls = map.Get("tls")) {
    ListenerTlsConfig tls_config;
    SEPAL_CONFIG_TRY(ReadListenerTls(*tls, &tls_config));
    listener->tls = std::move(tls_config);
  }
  SEPAL_CONFIG_TRY(ReadProtocol(map, &listener->protocol));
  if (listener->tls) listener->tls->alpn = listener->protocol;
  if (auto routes = map.Get("routes"))
    SEPAL_CONFIG_TRY(ReadRoutes(*routes, config, listener->protocol, &listener->routes));
  if (auto limits = map.Get("limits")) {
    if (listener->protocol == Protocol::kHttp1) {
      return Error(*limits, "limits: are HTTP/2 limits; a protocol: http1 listener takes http1:");
    }
    SEPAL_CONFIG_TRY(ReadLimits(*limits, &listener->limits));
  }
  if (auto http1 = map.Get("http1")) {
    SEPAL_CONFIG_TRY(ReadHttp1(*http1, &listener->http1));
    if (listener->protocol != Protocol::kHttp1) {
      return Error(*http1, "http1: needs protocol: http1 on this listener");
    }
  }
  if (auto peer_limits = map.Get("peer_limits")) {
    SEPAL_CONFIG_TRY(ReadPeerLimits(*peer_limits, &listener->peer_limits));
  }
  return absl::OkStatus();
}

absl::Status Loader::ReadListenerTls(const Value& value, ListenerTlsConfig* tls) const {
  Map map;
  SEPAL_CONFIG_ASSIGN(map, OpenMap(value, Section::kListenerTls));
  if (auto source = map.Get("source")) {
    size_t choice = 0;
    SEPAL_CONFIG_ASSIGN(choice, ReadChoice(*source, {"files", "tailscale"}));
    tls->source = choice == 0 ? ListenerTlsConfig::Source::kFiles
                              : ListenerTlsConfig::Source::kTailscale;
  }
  if (tls->source == ListenerTlsConfig::Source::kFiles) {
    Value certificate;
    SEPAL_CONFIG_ASSIGN(certificate, map.Require(*this, "certificate"));
    SEPAL_CONFIG_ASSIGN(tls->certificate, ReadReadableFile(certificate));
    Value private_key;
    SEPAL_CONFIG_ASSIGN(private_key, map.Require(*this, "private_key"));
    SEPAL_CONFIG_ASSIGN(tls->private_key, ReadReadableFile(private_key));
  } else {
    // tailscaled supplies both; a file given as well would silently be ignored.
    for (const char* key : {"certificate", "private_key"}) {
      if (auto given = map.Get(key)) {
        return Error(*given, "not used with source: tailscale (tailscaled supplies the pair)");
      }
    }
  }
  if (auto client_ca = map.Get("client_ca")) {
    SEPAL_CONFIG_ASSIGN(tls->client_ca, ReadReadableFile(*client_ca));
  }
  if (auto timeout = map.Get("handshake_timeout")) {
    SEPAL_CONFIG_ASSIGN(tls->handshake_timeout, ReadDuration(*timeout));
  }
  return absl::OkStatus();
}

absl::Status Loader::ReadUpstreamTls(const Value& value, UpstreamTlsConfig* tls) const {
  Map map;
  SEPAL_CONFIG_ASSIGN(map, OpenMap(value, Section::kUpstreamTls));
  if (auto ca = map.Get("ca")) SEPAL_CONFIG_ASSIGN(tls->ca, ReadReadableFile(*ca));
  if (auto server_name = map.Get("server_name")) {
    SEPAL_CONFIG_ASSIGN(tls->server_name, ReadNonEmptyString(*server_name));
  }
  std::optional<Value> certificate = map.Get("certificate");
  std::optional<Value> private_key = map.Get("private_key");
  if (certificate.has_value() != private_key.has_value()) {
    const Value& given = certificate ? *certificate : *private_key;
    return ErrorAt(given.line, ChildPath(value.path, certificate ? "private_key" : "certificate"),
                   "required with a client certificate (certificate and private_key go together)");
  }
  if (certificate) {
    SEPAL_CONFIG_ASSIGN(tls->certificate, ReadReadableFile(*certificate));
    SEPAL_CONFIG_ASSIGN(tls->private_key, ReadReadableFile(*private_key));
  }
  return absl::OkStatus();
}

// "/svc/" and "/svc/Method" are the only shapes the router matches; anything else is a typo
// that would otherwise turn into UNIMPLEMENTED at run time.
absl::Status CheckRouteMatch(const std::string& match) {
  if (match.empty() || match[0] != '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("route match ", Quoted(match), " must start with \"/\""));
  }
  if (match.find('*') != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "route match ", Quoted(match),
        " has a wildcard; use \"/pkg.Service/\" for a whole service or \"/pkg.Service/Method\""));
  }
  size_t second_slash = match.find('/', 1);
  bool ok = second_slash != std::string::npos && second_slash > 1 &&
            match.find('/', second_slash + 1) == std::string::npos &&
            std::none_of(match.begin(), match.end(), [](char c) { return c <= ' ' || c == 0x7f; });
  if (!ok) {
    return absl::InvalidArgumentError(
        absl::StrCat("route match ", Quoted(match),
                     " must be \"/pkg.Service/\" (whole service) or \"/pkg.Service/Method\""));
  }
  return absl::OkStatus();
}

// An HTTP/1.1 (REST) route: "/api/v0/fleet/" (every path under it) or an exact path.
absl::Status CheckHttpPathMatch(const std::string& match) {
  if (match.empty() || match[0] != '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("route match ", Quoted(match), " must start with \"/\""));
  }
  if (match.find('*') != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("route match ", Quoted(match),
                     " has a wildcard; use \"/api/v0/fleet/\" for every path under it or an "
                     "exact path such as \"/api/v0/fleet/pull-messages\""));
  }
  std::string_view view = match;
  bool dot_segment = view.find("/../") != std::string_view::npos ||
                     view.find("/./") != std::string_view::npos || view.ends_with("/..") ||
                     view.ends_with("/.");
  bool ok = match.find("//") == std::string::npos && match.find('?') == std::string::npos &&
            !dot_segment &&
            std::none_of(match.begin(), match.end(), [](char c) {
              return c <= ' ' || c == 0x7f || c == '%' || c == '#';
            });
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        "route match ", Quoted(match),
        " must be a plain path (no \"//\", \"?\", \"%\", \"#\", dot segments or spaces)"));
  }
  return absl::OkStatus();
}

// True when every path `later` matches was already claimed by `earlier` (first match wins).
bool Shadows(const std::string& earlier, const std::string& later) {
  if (earlier.back() == '/') return later.compare(0, earlier.size(), earlier) == 0;
  return earlier == later;
}

absl::Status Loader::ReadRoutes(const Value& value, const Config& config, Protocol protocol,
                                std::vector<RouteConfig>* routes) const {
  std::vector<Value> items;
  SEPAL_CONFIG_ASSIGN(items, ReadList(value));
  for (const Value& item : items) {
    RouteConfig route;
    SEPAL_CONFIG_TRY(ReadRoute(item, config, protocol, &route));
    for (size_t i = 0; i < routes->size(); ++i) {
      if (Shadows((*routes)[i].match, route.match)) {
        return ErrorAt(
            item.line, ChildPath(item.path, "match"),
            absl::StrCat("route ", Quoted(route.match), " can never match: ", value.path, "[", i,
                         "] (", Quoted((*routes)[i].match), ") comes first and wins"));
      }
    }
    routes->push_back(std::move(route));
  }
  return absl::OkStatus();
}

absl::Status Loader::ReadRoute(const Value& value, const Config& config, Protocol protocol,
                               RouteConfig* route) const {
  Map map;
  SEPAL_CONFIG_ASSIGN(map, OpenMap(value, Section::kRoute));
  Value match;
  SEPAL_CONFIG_ASSIGN(match, map.Require(*this, "match"));
  SEPAL_CONFIG_ASSIGN(route->match, ReadString(match));
  if (absl::Status status = protocol == Protocol::kHttp1 ? CheckHttpPathMatch(route->match)
                                                          : CheckRouteMatch(route->match);
      !status.ok()) {
    return Error(match, std::string(status.message()));
  }
  Value upstream;
  SEPAL_CONFIG_ASSIGN(upstream, map.Require(*this, "upstream"));
  SEPAL_CONFIG_ASSIGN(route->upstream, ReadNonEmptyString(upstream));
  if (config.FindUpstream(route->upstream) == nullptr) {
    std::vector<std::string> known;
    for (const UpstreamConfig& candidate : config.upstreams) known.push_back(candidate.name);
    std::string hint = known.empty() ? "no upstreams are defined"
                                     : absl::StrCat("known: ", absl::StrJoin(known, ", "));
    return Error(upstream,
                 absl::StrCat("unknown upstream ", Quoted(route->upstream), " (", hint, ")"));
  }
  if (const UpstreamConfig* target = config.FindUpstream(route->upstream);
      target->protocol != protocol) {
    return Error(upstream, absl::StrCat("upstream ", Quoted(route->upstream), " speaks ",
                                        std::string(ProtocolName(target->protocol)),
                                        ", this listener ", std::string(ProtocolName(protocol)),
                                        " (set the same protocol on both; sepal does not "
                                        "translate between gRPC and REST)"));
  }
  if (auto allow_value = map.Get("allow")) {
    // Without an identity provider nobody is identified, so an allow rule could only ever
    // deny everyone: almost certainly a forgotten `identity` section.
    if (config.identity.provider == IdentityConfig::Provider::kNone) {
      return Error(*allow_value, "allow rules need an identity section (identity.provider)");
    }
    AllowRules allow;
    SEPAL_CONFIG_TRY(ReadAllow(*allow_value, &allow));
    route->allow = std::move(allow);
  }
  if (auto mode = map.Get("mode")) {
    size_t choice = 0;
    SEPAL_CONFIG_ASSIGN(choice, ReadChoice(*mode, {"enforce", "audit"}));
    route->audit = choice == 1;
    if (route->audit && !route->allow) {
      return Error(*mode, "mode: audit needs allow rules to audit (without them every "
                          "identified peer is allowed)");
    }
  }
  if (auto inspect = map.Get("inspect")) {
    size_t choice = 0;
    SEPAL_CONFIG_ASSIGN(choice, ReadChoice(*inspect, {"none", "grpc_adapter"}));
    if (choice == 1 && protocol == Protocol::kHttp1) {
      return Error(*inspect, "inspect: grpc_adapter is for gRPC (protocol: h2) listeners");
    }
    if (choice == 1) {
      if (route->match != kGrpcAdapterService && route->match != kGrpcAdapterMethod) {
        return Error(*inspect, absl::StrCat("inspect: grpc_adapter needs match: ",
                                            kGrpcAdapterMethod, " (or the whole service, ",
                                            kGrpcAdapterService, "), not ",
                                            Quoted(route->match)));
      }
      route->inspect = RouteConfig::Inspect::kGrpcAdapter;
    }
  }
  return absl::OkStatus();
}

absl::Status Loader::ReadAllow(const Value& value, AllowRules* allow) const {
  Map map;
  SEPAL_CONFIG_ASSIGN(map, OpenMap(value, Section::kAllow));
  if (auto tags = map.Get("tags")) SEPAL_CONFIG_ASSIGN(allow->tags, ReadTagList(*tags));
  if (auto users = map.Get("users")) SEPAL_CONFIG_ASSIGN(allow->users, ReadStringList(*users));
  if (auto nodes = map.Get("nodes")) SEPAL_CONFIG_ASSIGN(allow->nodes, ReadStringList(*nodes));
  if (auto capability = map.Get("capability")) {
    SEPAL_CONFIG_ASSIGN(allow->capability, ReadNonEmptyString(*capability));
  }
  if (allow->tags.empty() && allow->users.empty() && allow->nodes.empty() &&
      allow->capability.empty()) {
    return Error(value, "needs at least one of tags, users, nodes, capability");
  }
  return absl::OkStatus();
}

absl::Status Loader::ReadLimits(const Value& value, Http2Limits* limits) const {
  Map map;
  SEPAL_CONFIG_ASSIGN(map, OpenMap(value, Section::kLimits));
  constexpr uint64_t kMaxUint32 = std::numeric_limits<uint32_t>::max();
  SEPAL_CONFIG_TRY(ReadOptionalInteger(map, "max_concurrent_streams", 1, kMaxUint32,
                                       &limits->max_concurrent_streams));
  SEPAL_CONFIG_TRY(ReadOptionalInteger(map, "max_header_list_bytes", kMinHeaderListBytes,
                                       kMaxUint32, &limits->max_header_list_bytes));
  SEPAL_CONFIG_TRY(ReadOptionalInteger(map, "stream_window_bytes", kMinWindowBytes,
                                       kMaxWindowBytes, &limits->stream_window_bytes));
  SEPAL_CONFIG_TRY(ReadOptionalInteger(map, "connection_window_bytes", kMinWindowBytes,
                                       kMaxWindowBytes, &limits->connection_window_bytes));
  SEPAL_CONFIG_TRY(ReadOptionalInteger(map, "stream_reset_burst", 1, kMaxUint32,
                                       &limits->stream_reset_burst));
  SEPAL_CONFIG_TRY(ReadOptionalInteger(map, "stream_reset_rate", 1, kMaxUint32,
                                       &limits->stream_reset_rate));
  // Zero is meaningful here: header blocks must then fit in a single HEADERS frame.
  SEPAL_CONFIG_TRY(
      ReadOptionalInteger(map, "max_continuations", 0, 1024, &limits->max_continuations));
  if (auto timeout = map.Get("request_progress_timeout")) {
    SEPAL_CONFIG_ASSIGN(limits->request_progress_timeout, ReadDuration(*timeout));
  }
  SEPAL_CONFIG_TRY(ReadOptionalInteger(map, "glitch_burst", 1, kMaxUint32, &limits->glitch_burst));
  SEPAL_CONFIG_TRY(ReadOptionalInteger(map, "glitch_rate", 0, kMaxUint32, &limits->glitch_rate));
  return absl::OkStatus();
}

absl::Status Loader::ReadPeerLimitValues(const Map& map, PeerLimitValues* values) const {
  constexpr uint64_t kMaxUint32 = std::numeric_limits<uint32_t>::max();
  SEPAL_CONFIG_TRY(
      ReadOptionalInteger(map, "connections", 0, kMaxUint32, &values->connections));
  SEPAL_CONFIG_TRY(ReadOptionalInteger(map, "concurrent_calls", 0, kMaxUint32,
                                       &values->concurrent_calls));
  SEPAL_CONFIG_TRY(ReadOptionalInteger(map, "calls_per_second", 0, kMaxUint32,
                                       &values->calls_per_second));
  SEPAL_CONFIG_TRY(
      ReadOptionalInteger(map, "calls_burst", 0, kMaxUint32, &values->calls_burst));
  return absl::OkStatus();
}

absl::Status Loader::ReadPeerLimits(const Value& value, PeerLimitsConfig* peer_limits) const {
  Map map;
  SEPAL_CONFIG_ASSIGN(map, OpenMap(value, Section::kPeerLimits));
  SEPAL_CONFIG_TRY(ReadPeerLimitValues(map, &peer_limits->limits));
  std::optional<Value> overrides = map.Get("overrides");
  if (!overrides) return absl::OkStatus();
  std::vector<Value> items;
  SEPAL_CONFIG_ASSIGN(items, ReadList(*overrides));
  for (const Value& item : items) {
    Map entry;
    SEPAL_CONFIG_ASSIGN(entry, OpenMap(item, Section::kPeerLimitOverride));
    PeerLimitOverride override_entry;
    if (auto tags = entry.Get("tags")) SEPAL_CONFIG_ASSIGN(override_entry.tags, ReadTagList(*tags));
    if (auto users = entry.Get("users")) {
      SEPAL_CONFIG_ASSIGN(override_entry.users, ReadStringList(*users));
    }
    if (auto nodes = entry.Get("nodes")) {
      SEPAL_CONFIG_ASSIGN(override_entry.nodes, ReadStringList(*nodes));
    }
    if (override_entry.tags.empty() && override_entry.users.empty() &&
        override_entry.nodes.empty()) {
      return Error(item, "needs at least one of tags, users, nodes (whom the override is for)");
    }
    override_entry.limits = peer_limits->limits;
    SEPAL_CONFIG_TRY(ReadPeerLimitValues(entry, &override_entry.limits));
    peer_limits->overrides.push_back(std::move(override_entry));
  }
  return absl::OkStatus();
}

absl::Status Loader::ReadCircuitBreaker(const Value& value, CircuitBreakerConfig* breaker) const {
  Map map;
  SEPAL_CONFIG_ASSIGN(map, OpenMap(value, Section::kCircuitBreaker));
  constexpr uint64_t kMaxUint32 = std::numeric_limits<uint32_t>::max();
  SEPAL_CONFIG_TRY(ReadOptionalInteger(map, "max_concurrent_streams", 0, kMaxUint32,
                                       &breaker->max_concurrent_streams));
  SEPAL_CONFIG_TRY(ReadOptionalInteger(map, "max_pending_streams", 0, kMaxUint32,
                                       &breaker->max_pending_streams));
  SEPAL_CONFIG_TRY(ReadOptionalInteger(map, "max_new_streams_per_second", 0, kMaxUint32,
                                       &breaker->max_new_streams_per_second));
  return absl::OkStatus();
}

absl::Status Loader::ReadMemory(const Value& value, MemoryConfig* memory) const {
  Map map;
  SEPAL_CONFIG_ASSIGN(map, OpenMap(value, Section::kMemory));
  constexpr uint64_t kMax = uint64_t{1} << 50;
  SEPAL_CONFIG_TRY(ReadOptionalInteger(map, "high_watermark_bytes", 0, kMax,
                                       &memory->high_watermark_bytes));
  bool low_given = map.Get("low_watermark_bytes").has_value();
  SEPAL_CONFIG_TRY(ReadOptionalInteger(map, "low_watermark_bytes", 0, kMax,
                                       &memory->low_watermark_bytes));
  if (!low_given) memory->low_watermark_bytes = memory->high_watermark_bytes / 4 * 3;
  if (memory->high_watermark_bytes != 0 &&
      memory->low_watermark_bytes >= memory->high_watermark_bytes) {
    return Error(low_given ? *map.Get("low_watermark_bytes") : value,
                 "low_watermark_bytes must be below high_watermark_bytes");
  }
  return absl::OkStatus();
}

std::string JoinOrDash(const std::vector<std::string>& items) {
  return items.empty() ? "-" : absl::StrJoin(items, ",");
}

}  // namespace

std::vector<std::string> KnownConfigKeyPaths() {
  std::vector<std::string> paths;
  for (const SectionKeys& section : kSections) {
    for (std::string_view key : section.keys) {
      std::string path(section.path);
      if (!path.empty()) path += '.';
      path += key;
      paths.push_back(std::move(path));
    }
  }
  return paths;
}

const UpstreamConfig* Config::FindUpstream(const std::string& name) const {
  for (const UpstreamConfig& upstream : upstreams) {
    if (upstream.name == name) return &upstream;
  }
  return nullptr;
}

// Where a second YAML document starts (its first token, and its first node), if the text
// holds more than one. Parses events only, and never more than two documents.
namespace {
struct SecondDocument {
  YAML::Mark start;
  std::optional<YAML::Mark> node;
};
std::optional<SecondDocument> FindSecondDocument(const std::string& yaml_text) {
  struct DocumentCounter final : YAML::EventHandler {
    void OnDocumentStart(const YAML::Mark& mark) override {
      if (++documents == 2) second = SecondDocument{mark, std::nullopt};
    }
    void Node(const YAML::Mark& mark) {
      if (second && !second->node) second->node = mark;
    }
    void OnDocumentEnd() override {}
    void OnNull(const YAML::Mark& mark, YAML::anchor_t) override { Node(mark); }
    void OnAlias(const YAML::Mark& mark, YAML::anchor_t) override { Node(mark); }
    void OnScalar(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                  const std::string&) override {
      Node(mark);
    }
    void OnSequenceStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                         YAML::EmitterStyle::value) override {
      Node(mark);
    }
    void OnSequenceEnd() override {}
    void OnMapStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                    YAML::EmitterStyle::value) override {
      Node(mark);
    }
    void OnMapEnd() override {}
    int documents = 0;
    std::optional<SecondDocument> second;
  };
  std::istringstream input(yaml_text);
  YAML::Parser parser(input);
  DocumentCounter counter;
  for (int i = 0; i < 2 && parser.HandleNextDocument(counter); ++i) {
  }
  return counter.second;
}
}  // namespace

absl::StatusOr<Config> ParseConfig(const std::string& yaml_text, const std::string& source_name) {
  Loader loader(source_name);
  try {
    // Not YAML::LoadAll: yaml-cpp 0.7 never consumes a ',' outside a flow collection (",",
    // "- a\n,", "\"x\","), so LoadAll returns an endless run of null documents, growing
    // memory until the process dies (tests/fuzz/reproducers/config). Count at most two
    // documents first, then load the one.
    if (std::optional<SecondDocument> second = FindSecondDocument(yaml_text)) {
      size_t pos = second->start.pos < 0 ? yaml_text.size() : second->start.pos;
      if (pos < yaml_text.size() && yaml_text[pos] == ',') {
        return loader.ErrorAt(second->start.line + 1, "",
                              "YAML syntax: unexpected ',' outside a [list] or {map}");
      }
      return loader.ErrorAt(second->node.value_or(second->start).line + 1, "",
                            "the file holds several YAML documents; expected one");
    }
    Config config;
    SEPAL_CONFIG_TRY(loader.LoadRoot(YAML::Load(yaml_text), &config));
    return config;
  } catch (const YAML::Exception& e) {
    // yaml-cpp's message already carries "line, column"; ours leads with file:line.
    int line = e.mark.is_null() ? 1 : e.mark.line + 1;
    std::string column = e.mark.is_null() ? "" : absl::StrCat(" (column ", e.mark.column + 1, ")");
    return absl::InvalidArgumentError(
        absl::StrCat(source_name, ":", line, ": YAML syntax: ", e.msg, column));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(source_name, ": cannot load config: ", e.what()));
  }
}

absl::StatusOr<Config> LoadConfigFile(const std::string& path) {
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) {
    int error = errno;
    return absl::InvalidArgumentError(
        absl::StrCat("cannot read ", path, ": ", std::strerror(error)));
  }
  std::string text;
  char buffer[8192];
  size_t count = 0;
  while ((count = std::fread(buffer, 1, sizeof(buffer), file)) > 0) text.append(buffer, count);
  int error = std::ferror(file) ? errno : 0;
  std::fclose(file);
  if (error != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot read ", path, ": ", std::strerror(error)));
  }
  absl::StatusOr<Config> config = ParseConfig(text, path);
  if (config.ok()) config->source_path = path;
  return config;
}

std::string_view ProtocolName(Protocol protocol) {
  return protocol == Protocol::kHttp1 ? "http1" : "h2";
}

std::string_view ProxyProtocolName(ProxyProtocol protocol) {
  static constexpr std::string_view kNames[] = {"none", "v1", "v2", "any"};
  return kNames[static_cast<int>(protocol)];
}

std::string Summarize(const Config& config) {
  std::string out;
  if (!config.source_path.empty()) absl::StrAppend(&out, "config: ", config.source_path, "\n");
  absl::StrAppend(&out, "workers: ",
                  config.workers == 0 ? std::string("one per core") : absl::StrCat(config.workers),
                  "\n");
  absl::StrAppend(&out, "drain_timeout: ", FormatDuration(config.drain_timeout), "\n");
  absl::StrAppend(
      &out, "admin: ", config.admin.address ? FormatAddress(*config.admin.address) : "off", "\n");
  const IdentityConfig& identity = config.identity;
  switch (identity.provider) {
    case IdentityConfig::Provider::kNone:
      absl::StrAppend(&out, "identity: none (routing only)\n");
      break;
    case IdentityConfig::Provider::kTailscale:
      absl::StrAppend(&out, "identity: tailscale (socket ", identity.tailscale.socket,
                      ", cache_ttl ", FormatDuration(identity.tailscale.cache_ttl),
                      ", lookup_timeout ", FormatDuration(identity.tailscale.lookup_timeout),
                      ")\n");
      break;
    case IdentityConfig::Provider::kStatic:
      absl::StrAppend(&out, "identity: static (", identity.static_identities.size(), " entries)\n");
      for (const StaticIdentity& entry : identity.static_identities) {
        std::vector<std::string> capabilities;
        for (const auto& [name, values] : entry.capabilities) capabilities.push_back(name);
        absl::StrAppend(&out, "  ", entry.match, " -> node ", entry.node.empty() ? "-" : entry.node,
                        ", user ", entry.user.empty() ? "-" : entry.user, ", tags ",
                        JoinOrDash(entry.tags), ", capabilities ", JoinOrDash(capabilities), "\n");
      }
      break;
  }
  if (config.metrics.peer_node_label) absl::StrAppend(&out, "metrics: peer_node_label\n");
  switch (config.access_log.output) {
    case AccessLogConfig::Output::kOff: absl::StrAppend(&out, "access_log: off\n"); break;
    case AccessLogConfig::Output::kStdout: absl::StrAppend(&out, "access_log: stdout\n"); break;
    case AccessLogConfig::Output::kStderr: absl::StrAppend(&out, "access_log: stderr\n"); break;
    case AccessLogConfig::Output::kFile:
      absl::StrAppend(&out, "access_log: ", config.access_log.path, "\n");
      break;
  }
  for (const ListenerConfig& listener : config.listeners) {
    absl::StrAppend(&out, "listener ", listener.name, " on ", FormatAddress(listener.address));
    if (listener.tls) {
      absl::StrAppend(&out, listener.tls->client_ca.empty() ? " tls" : " tls+client-certs");
      if (listener.tls->source == ListenerTlsConfig::Source::kTailscale) {
        absl::StrAppend(&out, " (certificate from tailscaled)");
      }
    } else {
      absl::StrAppend(&out, listener.protocol == Protocol::kHttp1 ? " cleartext" : " h2c");
    }
    if (listener.protocol != Protocol::kHttp2) {
      absl::StrAppend(&out, " protocol ", std::string(ProtocolName(listener.protocol)));
    }
    if (listener.proxy_protocol != ProxyProtocol::kNone) {
      absl::StrAppend(&out, " proxy_protocol ", std::string(ProxyProtocolName(listener.proxy_protocol)));
    }
    if (!listener.tailscale_service.empty()) {
      absl::StrAppend(&out, " tailscale_service ", listener.tailscale_service);
    }
    absl::StrAppend(&out, "\n");
    if (listener.routes.empty()) {
      absl::StrAppend(&out, listener.protocol == Protocol::kHttp1
                                ? "  (no routes: every request 404)\n"
                                : "  (no routes: every call UNIMPLEMENTED)\n");
    }
    for (const RouteConfig& route : listener.routes) {
      absl::StrAppend(&out, "  ", route.match, " -> ", route.upstream);
      if (route.inspect == RouteConfig::Inspect::kGrpcAdapter) {
        absl::StrAppend(&out, "  inspect: grpc_adapter (rules see the wrapped Fleet method)");
      }
      if (!route.allow) {
        absl::StrAppend(&out, config.identity.provider == IdentityConfig::Provider::kNone
                                  ? "  allow: every peer (no identity provider: routing only)\n"
                                  : "  allow: any identified peer\n");
        continue;
      }
      std::vector<std::string> rules;
      if (!route.allow->tags.empty())
        rules.push_back(absl::StrCat("tags=", JoinOrDash(route.allow->tags)));
      if (!route.allow->users.empty()) {
        rules.push_back(absl::StrCat("users=", JoinOrDash(route.allow->users)));
      }
      if (!route.allow->nodes.empty()) {
        rules.push_back(absl::StrCat("nodes=", JoinOrDash(route.allow->nodes)));
      }
      if (!route.allow->capability.empty()) {
        rules.push_back(absl::StrCat("capability=", route.allow->capability));
      }
      absl::StrAppend(&out, "  allow: ", absl::StrJoin(rules, " | "),
                      route.audit ? "  (mode: audit: denials are only logged and counted)" : "",
                      "\n");
    }
    auto caps = [](const PeerLimitValues& v) {
      auto cap = [](uint32_t n) { return n == 0 ? std::string("off") : absl::StrCat(n); };
      return absl::StrCat("connections ", cap(v.connections), ", calls in flight ",
                          cap(v.concurrent_calls), ", calls/s ", cap(v.calls_per_second),
                          " (burst ", cap(v.calls_burst), ")");
    };
    absl::StrAppend(&out, "  per peer: ", caps(listener.peer_limits.limits), "\n");
    for (const PeerLimitOverride& entry : listener.peer_limits.overrides) {
      std::vector<std::string> who;
      if (!entry.tags.empty()) who.push_back(absl::StrCat("tags=", JoinOrDash(entry.tags)));
      if (!entry.users.empty()) who.push_back(absl::StrCat("users=", JoinOrDash(entry.users)));
      if (!entry.nodes.empty()) who.push_back(absl::StrCat("nodes=", JoinOrDash(entry.nodes)));
      absl::StrAppend(&out, "    ", absl::StrJoin(who, " | "), ": ", caps(entry.limits), "\n");
    }
  }
  if (config.memory.high_watermark_bytes != 0) {
    absl::StrAppend(&out, "memory: refuse new streams above ",
                    config.memory.high_watermark_bytes >> 20, " MiB, resume below ",
                    config.memory.low_watermark_bytes >> 20, " MiB\n");
  } else {
    absl::StrAppend(&out, "memory: no budget\n");
  }
  for (const UpstreamConfig& upstream : config.upstreams) {
    absl::StrAppend(&out, "upstream ", upstream.name, " at ", FormatAddress(upstream.address));
    if (upstream.tls) {
      absl::StrAppend(&out, " tls");
      if (!upstream.tls->server_name.empty()) {
        absl::StrAppend(&out, " server_name ", upstream.tls->server_name);
      }
      if (!upstream.tls->certificate.empty()) absl::StrAppend(&out, " client-cert");
    }
    if (upstream.protocol != Protocol::kHttp2) {
      absl::StrAppend(&out, " protocol ", std::string(ProtocolName(upstream.protocol)));
    }
    absl::StrAppend(&out, ", connect_timeout ", FormatDuration(upstream.connect_timeout), "\n");
    const CircuitBreakerConfig& breaker = upstream.circuit_breaker;
    auto cap = [](uint32_t n) { return n == 0 ? std::string("off") : absl::StrCat(n); };
    absl::StrAppend(&out, "  circuit breaker: calls in flight ", cap(breaker.max_concurrent_streams),
                    ", waiting ", cap(breaker.max_pending_streams), ", new calls/s ",
                    cap(breaker.max_new_streams_per_second), "\n");
  }
  return out;
}

absl::StatusOr<Duration> ParseDuration(const std::string& text) {
  if (text.empty()) return absl::InvalidArgumentError("empty duration");
  struct Unit {
    std::string_view name;
    uint64_t microseconds;
  };
  // Longest names first so "ms" is not read as "m" followed by garbage.
  static constexpr Unit kUnits[] = {
      {"us", 1}, {"ms", 1000}, {"h", 3600000000ULL}, {"m", 60000000ULL}, {"s", 1000000ULL}};
  // A week is far beyond any sensible timeout and keeps the arithmetic clear of overflow.
  constexpr uint64_t kMaxMicroseconds = 7ULL * 24 * 3600 * 1000000;
  std::string_view rest = text;
  uint64_t total = 0;
  while (!rest.empty()) {
    size_t digits = 0;
    while (digits < rest.size() && rest[digits] >= '0' && rest[digits] <= '9') ++digits;
    if (digits == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad duration ", Quoted(text),
                       " (expected a number and a unit, e.g. 30s, 500ms, 1m30s)"));
    }
    std::optional<uint64_t> number = ParseDecimal(rest.substr(0, digits), kMaxMicroseconds);
    rest.remove_prefix(digits);
    if (rest.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("duration ", Quoted(text), " is missing a unit (us, ms, s, m or h), e.g. ",
                       std::string(text), "s"));
    }
    const Unit* unit = nullptr;
    for (const Unit& candidate : kUnits) {
      if (rest.substr(0, candidate.name.size()) == candidate.name) {
        unit = &candidate;
        break;
      }
    }
    if (unit == nullptr) {
      size_t length = 0;
      while (length < rest.size() && !(rest[length] >= '0' && rest[length] <= '9')) ++length;
      return absl::InvalidArgumentError(
          absl::StrCat("unknown unit ", Quoted(std::string(rest.substr(0, length))),
                       " in duration ", Quoted(text), " (use us, ms, s, m or h)"));
    }
    rest.remove_prefix(unit->name.size());
    if (!number || *number > kMaxMicroseconds / unit->microseconds ||
        total + *number * unit->microseconds > kMaxMicroseconds) {
      return absl::InvalidArgumentError(
          absl::StrCat("duration ", Quoted(text), " is too long (at most 168h)"));
    }
    total += *number * unit->microseconds;
  }
  if (total == 0) {
    return absl::InvalidArgumentError(absl::StrCat("duration ", Quoted(text), " must be positive"));
  }
  // Sub-millisecond durations round up, so "250us" still means "wait", not "never wait".
  return Duration((total + 999) / 1000);
}

absl::StatusOr<SocketAddress> ParseSocketAddress(const std::string& text) {
  SocketAddress address;
  address.text = text;
  if (text.empty()) return absl::InvalidArgumentError("empty address");
  if (text.compare(0, 5, "unix:") == 0) {
    address.kind = SocketAddress::Kind::kUnix;
    address.path = text.substr(5);
    if (address.path.empty()) {
      return absl::InvalidArgumentError("unix address needs a path, e.g. unix:/run/flower.sock");
    }
    if (address.path.size() > kMaxUnixPathBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("unix socket path is longer than ", kMaxUnixPathBytes, " bytes"));
    }
    return address;
  }
  address.kind = SocketAddress::Kind::kTcp;
  std::string port;
  if (text[0] == '[') {
    size_t close = text.find(']');
    if (close == std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("missing \"]\" in ", Quoted(text)));
    }
    address.host = text.substr(1, close - 1);
    if (!IsIPv6(address.host)) {
      return absl::InvalidArgumentError(absl::StrCat("bad IPv6 address ", Quoted(address.host)));
    }
    if (close + 1 >= text.size() || text[close + 1] != ':') {
      return absl::InvalidArgumentError(
          absl::StrCat("missing port in ", Quoted(text), " (expected [addr]:port)"));
    }
    port = text.substr(close + 2);
  } else {
    size_t colon = text.rfind(':');
    if (colon == std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat(
          "missing port in ", Quoted(text), " (expected host:port, [addr]:port or unix:/path)"));
    }
    address.host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (absl::Status status = CheckHostName(address.host); !status.ok()) return status;
  }
  if (port.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("missing port in ", Quoted(text)));
  }
  std::optional<uint64_t> number = ParseDecimal(port, 65535);
  if (!number) {
    return absl::InvalidArgumentError(
        absl::StrCat("port ", Quoted(port), " must be a number between 0 and 65535"));
  }
  address.port = static_cast<uint16_t>(*number);
  return address;
}

}  // namespace sepal::config

#undef SEPAL_CONFIG_TRY
#undef SEPAL_CONFIG_ASSIGN
