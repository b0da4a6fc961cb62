// Fuzz target: YAML text → ParseConfig → Config or a "file:line: key: what" error.
//
// Invariants: an error names the source, and a syntax or validation error (InvalidArgument)
// carries a line inside the text; a Config passes the loader's own promises (at least one
// listener, every route's upstream exists, route matches start with '/', a unix or TCP
// address with a port) and summarizes; parsing is deterministic.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <yaml-cpp/yaml.h>

#include "proxy/config/config.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

using sepal::config::Config;
using sepal::config::SocketAddress;

constexpr std::string_view kSource = "fuzz.yaml";

// The loader creates an `access_log` file and opens every certificate/key path it is given;
// inputs that would make it touch files outside this process's scratch space are skipped
// (an absolute access_log path, or any value naming /dev, /proc, /sys or /run).
bool TouchesFiles(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Scalar: {
      std::string_view value = node.Scalar();
      for (std::string_view root : {"/dev", "/proc", "/sys", "/run"}) {
        if (value.starts_with(root)) return true;
      }
      return false;
    }
    case YAML::NodeType::Sequence:
      for (const YAML::Node& item : node) {
        if (TouchesFiles(item)) return true;
      }
      return false;
    case YAML::NodeType::Map:
      for (const auto& entry : node) {
        if (entry.first.IsScalar() && entry.first.Scalar() == "access_log" &&
            entry.second.IsScalar() && entry.second.Scalar().starts_with("/")) {
          return true;
        }
        if (TouchesFiles(entry.first) || TouchesFiles(entry.second)) return true;
      }
      return false;
    default:
      return false;
  }
}

bool Unsafe(const std::string& text) {
  try {
    // The first document only: ParseConfig refuses a second one before touching files
    // (and YAML::LoadAll can loop forever, see reproducers/config).
    return TouchesFiles(YAML::Load(text));
  } catch (const std::exception&) {
    // Not loadable: ParseConfig fails the same way, before touching any file.
  }
  return false;
}

void CheckError(const std::string& text, const absl::Status& status) {
  const std::string message(status.message());
  FUZZ_CHECK(!message.empty(), "an error has a message");
  FUZZ_CHECK(message.starts_with(kSource) && message.size() > kSource.size() &&
                 message[kSource.size()] == ':',
             message);
  if (status.code() != absl::StatusCode::kInvalidArgument) return;
  // "<source>:<line>: ..." with 1 <= line <= the text's last line.
  std::string_view rest = std::string_view(message).substr(kSource.size() + 1);
  size_t digits = 0;
  while (digits < rest.size() && rest[digits] >= '0' && rest[digits] <= '9') ++digits;
  FUZZ_CHECK(digits > 0 && digits < 10 && digits < rest.size() && rest[digits] == ':', message);
  unsigned long line = std::stoul(std::string(rest.substr(0, digits)));
  size_t line_breaks = 0;
  for (char c : text) line_breaks += (c == '\n' || c == '\r') ? 1 : 0;
  FUZZ_CHECK(line >= 1 && line <= line_breaks + 1, message);
}

void CheckAddress(const SocketAddress& address) {
  if (address.kind == SocketAddress::Kind::kUnix) {
    FUZZ_CHECK(!address.path.empty(), address.text);
  } else {
    FUZZ_CHECK(!address.host.empty(), address.text);
  }
  FUZZ_CHECK(!address.text.empty(), "an address keeps its text");
}

void CheckConfig(const Config& config) {
  FUZZ_CHECK(!config.listeners.empty(), "at least one listener");
  for (const auto& listener : config.listeners) {
    FUZZ_CHECK(!listener.name.empty(), "a listener has a name");
    CheckAddress(listener.address);
    FUZZ_CHECK(listener.address.kind == SocketAddress::Kind::kTcp, listener.name);
    for (const auto& route : listener.routes) {
      FUZZ_CHECK(route.match.starts_with("/"), route.match);
      FUZZ_CHECK(config.FindUpstream(route.upstream) != nullptr, route.upstream);
    }
    FUZZ_CHECK(listener.limits.max_concurrent_streams > 0, listener.name);
    FUZZ_CHECK(listener.limits.stream_window_bytes > 0, listener.name);
  }
  for (const auto& upstream : config.upstreams) {
    CheckAddress(upstream.address);
    FUZZ_CHECK(upstream.address.kind == SocketAddress::Kind::kUnix || upstream.address.port > 0,
               upstream.name);
  }
  if (config.admin.address) CheckAddress(*config.admin.address);
  FUZZ_CHECK(!sepal::config::Summarize(config).empty(), "a summary");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  if (Unsafe(text)) return 0;
  const std::string source(kSource);
  absl::StatusOr<Config> config = sepal::config::ParseConfig(text, source);
  if (!config.ok()) {
    CheckError(text, config.status());
    absl::StatusOr<Config> again = sepal::config::ParseConfig(text, source);
    FUZZ_CHECK(!again.ok() && again.status() == config.status(), "the same error twice");
    return 0;
  }
  CheckConfig(*config);
  absl::StatusOr<Config> again = sepal::config::ParseConfig(text, source);
  FUZZ_CHECK(again.ok() && sepal::config::Summarize(*again) == sepal::config::Summarize(*config),
             "the same config twice");
  return 0;
}
