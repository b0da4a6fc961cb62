// sepal-flower-client: makes one Fleet/Control/Exec call the way Flower does and prints one line.
#include <arpa/inet.h>
#include <grpcpp/create_channel_posix.h>
#include <grpcpp/generic/generic_stub.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <grpcpp/grpcpp.h>

#include <array>
#include <charconv>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "tests/proto/control.grpc.pb.h"
#include "tests/proto/fleet.grpc.pb.h"
#include "tests/proto/grpcadapter.grpc.pb.h"
#include "tests/support/fake_superlink.h"

namespace {

using flwr::proto::ControlRequest;
using flwr::proto::ControlResponse;
using flwr::proto::FleetRequest;
using flwr::proto::FleetResponse;
using Clock = std::chrono::steady_clock;

constexpr int kExitOk = 0;
constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;

// Indexed by grpc::StatusCode (0..16).
constexpr std::array<std::string_view, 17> kCodeNames = {
    "OK",        "CANCELLED",      "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
    "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED",   "OUT_OF_RANGE",   "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
    "DATA_LOSS", "UNAUTHENTICATED"};

struct Options {
  std::string target = "127.0.0.1:19092";
  std::string bind_ip;  // connect from this local address (another loopback peer)
  std::chrono::milliseconds timeout{5000};
  std::vector<std::pair<std::string, std::string>> metadata;
  std::size_t payload_bytes = 0;
  uint32_t lines = 3;
  uint64_t run_id = 0;
  std::optional<grpc::StatusCode> expect;
  bool show_metadata = false;
  bool grpc_adapter = false;  // Fleet calls wrapped in GrpcAdapter.SendReceive
  uint32_t repeat = 1;
  std::chrono::milliseconds interval{0};
  std::vector<std::string> methods;  // called in this order on one connection
};

// What one call produced, for the summary line.
struct Outcome {
  grpc::Status status;
  std::vector<std::string> details;  // "node_id=1", "12 bytes back", ...
  std::vector<std::string> seen_metadata;
};

int Usage(std::string_view error) {
  if (!error.empty()) {
    std::fprintf(stderr, "sepal-flower-client: %s (see --help)\n", std::string(error).c_str());
    return kExitUsage;
  }
  std::printf(
      "usage: sepal-flower-client [options] METHOD [METHOD...]\n"
      "  METHOD            full gRPC path, e.g. /flwr.proto.Fleet/RegisterNode,\n"
      "                    /flwr.proto.Control/ListRuns, /flwr.proto.Control/StreamLogs,\n"
      "                    /flwr.proto.Exec/ListRuns; other paths are sent as an opaque\n"
      "                    message holding the payload bytes. Several METHODs are called\n"
      "                    in order on one connection, as a SuperNode does\n"
      "  --target ADDR     sepal (or SuperLink) address: HOST:PORT or unix:/path\n"
      "                    (default 127.0.0.1:19092)\n"
      "  --bind IP         connect from this local IPv4 address, e.g. 127.0.0.2 to be\n"
      "                    another peer on loopback (TCP targets only)\n"
      "  --timeout D       deadline of the call: 5s, 500ms, 1m (default 5s)\n"
      "  --metadata K=V    request metadata, repeatable (SuperNode auth headers pass as is)\n"
      "  --payload-bytes N request payload size; suffixes KiB and MiB allowed (default 0)\n"
      "  --run-id N        run_id of Control/Exec requests (default 0)\n"
      "  --lines N         StreamLogs: log lines the stand-in SuperLink sends, 50 ms apart\n"
      "                    (default 3)\n"
      "  --repeat N        call the METHODs N times over (default 1), on the same connection\n"
      "  --interval D      pause between two rounds of --repeat (default 0)\n"
      "  --show-metadata   also print the metadata the upstream reports it received\n"
      "  --grpc-adapter    send Fleet METHODs as a SuperNode on --grpc-adapter does: wrapped\n"
      "                    in /flwr.proto.GrpcAdapter/SendReceive (grpc_message_name\n"
      "                    PullMessagesRequest, ...)\n"
      "  --expect CODE     exit 0 iff every call ends with CODE (name like UNIMPLEMENTED, or\n"
      "                    number); without it, exit 0 iff every call returned OK\n"
      "prints one line per call; exit status: 0 as above, 1 otherwise, 2 on a usage error\n");
  return kExitOk;
}

std::string_view CodeName(grpc::StatusCode code) {
  const auto index = static_cast<std::size_t>(code);
  return index < kCodeNames.size() ? kCodeNames[index] : "UNKNOWN_CODE";
}

std::optional<grpc::StatusCode> ParseCode(std::string_view text) {
  std::string upper(text);
  for (char& c : upper) {
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  }
  for (std::size_t i = 0; i < kCodeNames.size(); ++i) {
    if (upper == kCodeNames[i] || upper == std::to_string(i)) {
      return static_cast<grpc::StatusCode>(i);
    }
  }
  return std::nullopt;
}

template <typename Int>
std::optional<Int> ParseUnsigned(std::string_view text, std::string_view* rest = nullptr) {
  Int value{};
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end == text.data()) return std::nullopt;
  const std::string_view tail(end, static_cast<std::size_t>(text.data() + text.size() - end));
  if (rest != nullptr) {
    *rest = tail;
  } else if (!tail.empty()) {
    return std::nullopt;
  }
  return value;
}

std::optional<std::chrono::milliseconds> ParseDuration(std::string_view text) {
  std::string_view unit;
  const auto number = ParseUnsigned<uint64_t>(text, &unit);
  if (!number) return std::nullopt;
  uint64_t scale = 0;
  if (unit == "ms") {
    scale = 1;
  } else if (unit == "s" || unit.empty()) {
    scale = 1000;
  } else if (unit == "m") {
    scale = 60'000;
  } else {
    return std::nullopt;
  }
  if (*number > 24ULL * 3600 * 1000 / scale) return std::nullopt;  // at most a day
  return std::chrono::milliseconds(*number * scale);
}

std::optional<std::size_t> ParseSize(std::string_view text) {
  std::string_view unit;
  const auto number = ParseUnsigned<std::size_t>(text, &unit);
  if (!number) return std::nullopt;
  std::size_t scale = 0;
  if (unit.empty()) {
    scale = 1;
  } else if (unit == "KiB" || unit == "k" || unit == "K") {
    scale = 1024;
  } else if (unit == "MiB" || unit == "M") {
    scale = 1024 * 1024;
  } else {
    return std::nullopt;
  }
  const auto limit = static_cast<std::size_t>(sepal::test::FakeSuperLink::kMaxMessageBytes) - 64;
  if (*number > limit / scale) return std::nullopt;
  return *number * scale;
}

// gRPC metadata keys are lowercase [a-z0-9-_.]; uppercase is folded so `X-Token=1` works.
bool NormalizeMetadataKey(std::string* key) {
  if (key->empty()) return false;
  for (char& c : *key) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    const bool allowed =
        (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
    if (!allowed) return false;
  }
  return !key->starts_with("grpc-");
}

bool IsValueOption(std::string_view arg) {
  for (std::string_view known : {"--target", "--bind", "--timeout", "--metadata", "--payload-bytes",
                                 "--run-id", "--lines", "--expect", "--repeat", "--interval"}) {
    if (arg == known) return true;
  }
  return false;
}

// Returns kExitOk to go on, kExitUsage (after printing why) otherwise. A return of -1 means
// --help was printed.
int ParseArgs(int argc, char** argv, Options* options) {
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      Usage({});
      return -1;
    }
    if (arg == "--show-metadata") {
      options->show_metadata = true;
      continue;
    }
    if (arg == "--grpc-adapter") {
      options->grpc_adapter = true;
      continue;
    }
    if (!arg.starts_with("--")) {
      options->methods.emplace_back(arg);
      continue;
    }
    // --name value or --name=value
    std::string_view value;
    const auto eq = arg.find('=');
    if (eq != std::string_view::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
    }
    if (!IsValueOption(arg)) return Usage("unknown option " + std::string(arg));
    if (eq == std::string_view::npos) {
      if (i + 1 >= argc) return Usage("missing value after " + std::string(arg));
      value = argv[++i];
    }
    if (arg == "--target") {
      if (value.empty()) return Usage("empty --target");
      options->target = std::string(value);
    } else if (arg == "--bind") {
      in_addr parsed{};
      if (inet_pton(AF_INET, std::string(value).c_str(), &parsed) != 1) {
        return Usage("--bind wants an IPv4 address, got " + std::string(value));
      }
      options->bind_ip = std::string(value);
    } else if (arg == "--timeout") {
      const auto timeout = ParseDuration(value);
      if (!timeout || timeout->count() == 0) return Usage("bad --timeout " + std::string(value));
      options->timeout = *timeout;
    } else if (arg == "--metadata") {
      const auto split = value.find('=');
      if (split == std::string_view::npos) return Usage("--metadata wants KEY=VALUE");
      std::string key(value.substr(0, split));
      if (!NormalizeMetadataKey(&key)) {
        return Usage("bad metadata key '" + std::string(value.substr(0, split)) + "'");
      }
      options->metadata.emplace_back(std::move(key), std::string(value.substr(split + 1)));
    } else if (arg == "--payload-bytes") {
      const auto size = ParseSize(value);
      if (!size) return Usage("bad --payload-bytes " + std::string(value));
      options->payload_bytes = *size;
    } else if (arg == "--run-id") {
      const auto run_id = ParseUnsigned<uint64_t>(value);
      if (!run_id) return Usage("bad --run-id " + std::string(value));
      options->run_id = *run_id;
    } else if (arg == "--repeat") {
      const auto repeat = ParseUnsigned<uint32_t>(value);
      if (!repeat || *repeat == 0 || *repeat > 1'000'000) {
        return Usage("bad --repeat " + std::string(value));
      }
      options->repeat = *repeat;
    } else if (arg == "--interval") {
      const auto interval = ParseDuration(value);
      if (!interval) return Usage("bad --interval " + std::string(value));
      options->interval = *interval;
    } else if (arg == "--lines") {
      const auto lines = ParseUnsigned<uint32_t>(value);
      if (!lines || *lines > 1'000'000) return Usage("bad --lines " + std::string(value));
      options->lines = *lines;
    } else {  // --expect
      const auto code = ParseCode(value);
      if (!code) return Usage("unknown status code " + std::string(value));
      options->expect = *code;
    }
  }
  if (options->methods.empty()) return Usage("METHOD is required");
  for (const std::string_view method : options->methods) {
    const auto slash = method.find('/', 1);
    if (!method.starts_with('/') || slash == std::string_view::npos || slash + 1 == method.size()) {
      return Usage("METHOD must be a full path like /flwr.proto.Fleet/RegisterNode, got " +
                   std::string(method));
    }
  }
  return kExitOk;
}

// Notes the request payload size when there was one.
void AddBytesSent(const Options& options, Outcome* outcome) {
  if (options.payload_bytes > 0) {
    outcome->details.push_back(std::to_string(options.payload_bytes) + " payload bytes sent");
  }
}

std::string BytesBack(std::size_t bytes) { return std::to_string(bytes) + " bytes back"; }

template <typename Response>
void KeepSeenMetadata(const Response& response, Outcome* outcome) {
  for (const auto& line : response.seen_metadata()) outcome->seen_metadata.push_back(line);
}

// flwr.proto.Fleet: every method is unary with the same message types.
using FleetMethod = grpc::Status (flwr::proto::Fleet::Stub::*)(grpc::ClientContext*,
                                                               const FleetRequest&, FleetResponse*);

const std::map<std::string_view, FleetMethod>& FleetMethods() {
  using Stub = flwr::proto::Fleet::Stub;
  static const auto* methods = new std::map<std::string_view, FleetMethod>{
      {"RegisterNode", &Stub::RegisterNode},
      {"ActivateNode", &Stub::ActivateNode},
      {"DeactivateNode", &Stub::DeactivateNode},
      {"UnregisterNode", &Stub::UnregisterNode},
      {"CreateNode", &Stub::CreateNode},
      {"DeleteNode", &Stub::DeleteNode},
      {"SendNodeHeartbeat", &Stub::SendNodeHeartbeat},
      {"Ping", &Stub::Ping},
      {"PullMessages", &Stub::PullMessages},
      {"PushMessages", &Stub::PushMessages},
      {"GetRun", &Stub::GetRun},
      {"GetFab", &Stub::GetFab},
      {"PullObject", &Stub::PullObject},
      {"PushObject", &Stub::PushObject},
      {"ConfirmMessageReceived", &Stub::ConfirmMessageReceived},
      {"PullTaskIns", &Stub::PullTaskIns},
      {"PushTaskRes", &Stub::PushTaskRes},
  };
  return *methods;
}

Outcome CallFleet(FleetMethod method, const std::shared_ptr<grpc::Channel>& channel,
                  grpc::ClientContext* context, const Options& options) {
  flwr::proto::Fleet::Stub stub(channel);
  FleetRequest request;
  request.set_payload(sepal::test::FakeSuperLink::MakePayload(options.payload_bytes));
  FleetResponse response;
  Outcome outcome;
  outcome.status = (stub.*method)(context, request, &response);
  if (outcome.status.ok()) {
    outcome.details.push_back("node_id=" + std::to_string(response.node().node_id()));
    AddBytesSent(options, &outcome);
    outcome.details.push_back(BytesBack(response.ByteSizeLong()));
    KeepSeenMetadata(response, &outcome);
  }
  return outcome;
}

// A Fleet call as the gRPC adapter transport carries it: the request wrapped in a
// MessageContainer with Flower's metadata, the reply unwrapped.
Outcome CallThroughAdapter(std::string_view name, const std::shared_ptr<grpc::Channel>& channel,
                           grpc::ClientContext* context, const Options& options) {
  flwr::proto::GrpcAdapter::Stub stub(channel);
  FleetRequest request;
  request.set_payload(sepal::test::FakeSuperLink::MakePayload(options.payload_bytes));
  const std::string message_name = std::string(name) + "Request";
  flwr::proto::MessageContainer container;
  auto& metadata = *container.mutable_metadata();
  metadata["flower-package-name"] = "flwr";
  metadata["grpc-message-module"] = "flwr.proto.fleet_pb2";
  metadata["grpc-message-qualname"] = message_name;
  container.set_grpc_message_name(message_name);
  container.set_grpc_message_content(request.SerializeAsString());
  flwr::proto::MessageContainer reply;
  Outcome outcome;
  outcome.status = stub.SendReceive(context, container, &reply);
  outcome.details.push_back("via GrpcAdapter");
  if (outcome.status.ok()) {
    FleetResponse response;
    response.ParseFromString(reply.grpc_message_content());
    outcome.details.push_back(reply.grpc_message_name());
    AddBytesSent(options, &outcome);
    outcome.details.push_back(BytesBack(reply.ByteSizeLong()));
    KeepSeenMetadata(response, &outcome);
  }
  return outcome;
}

// flwr.proto.Control and its older name flwr.proto.Exec share methods and messages.
template <typename Service>
std::optional<Outcome> CallControl(std::string_view name,
                                   const std::shared_ptr<grpc::Channel>& channel,
                                   grpc::ClientContext* context, const Options& options) {
  using Stub = typename Service::Stub;
  using UnaryMethod =
      grpc::Status (Stub::*)(grpc::ClientContext*, const ControlRequest&, ControlResponse*);
  static const auto* unary = new std::map<std::string_view, UnaryMethod>{
      {"StartRun", &Stub::StartRun},           {"StopRun", &Stub::StopRun},
      {"ListRuns", &Stub::ListRuns},           {"GetLoginDetails", &Stub::GetLoginDetails},
      {"GetAuthTokens", &Stub::GetAuthTokens},
  };

  Stub stub(channel);
  ControlRequest request;
  request.set_run_id(options.run_id);
  request.set_payload(sepal::test::FakeSuperLink::MakePayload(options.payload_bytes));
  Outcome outcome;
  if (name == "StreamLogs") {
    request.set_log_lines(options.lines);
    request.set_interval_ms(50);
    auto reader = stub.StreamLogs(context, request);
    ControlResponse response;
    std::size_t lines = 0;
    std::size_t bytes = 0;
    while (reader->Read(&response)) {
      ++lines;
      bytes += response.ByteSizeLong();
      std::printf("  [run %llu] %s\n", static_cast<unsigned long long>(response.run_id()),
                  response.log_output().c_str());
      std::fflush(stdout);
      KeepSeenMetadata(response, &outcome);
    }
    outcome.status = reader->Finish();
    outcome.details.push_back(std::to_string(lines) + " log line" + (lines == 1 ? "" : "s"));
    outcome.details.push_back(BytesBack(bytes));
    return outcome;
  }
  const auto it = unary->find(name);
  if (it == unary->end()) return std::nullopt;
  ControlResponse response;
  outcome.status = (stub.*(it->second))(context, request, &response);
  if (outcome.status.ok()) {
    outcome.details.push_back("run_id=" + std::to_string(response.run_id()));
    AddBytesSent(options, &outcome);
    outcome.details.push_back(BytesBack(response.ByteSizeLong()));
    KeepSeenMetadata(response, &outcome);
  }
  return outcome;
}

// Any other path: the payload bytes go as the whole message, the reply is counted, not parsed.
Outcome CallGeneric(const std::string& method, const std::shared_ptr<grpc::Channel>& channel,
                    grpc::ClientContext* context, const Options& options) {
  grpc::GenericStub stub(channel);
  grpc::CompletionQueue queue;
  grpc::Slice slice(sepal::test::FakeSuperLink::MakePayload(options.payload_bytes));
  grpc::ByteBuffer request(&slice, 1);
  grpc::ByteBuffer response;
  Outcome outcome;
  auto call = stub.PrepareUnaryCall(context, method, request, &queue);
  call->StartCall();
  int finished_tag = 0;
  call->Finish(&response, &outcome.status, &finished_tag);
  void* tag = nullptr;
  bool ok = false;
  // The deadline in `context` bounds this wait.
  while (queue.Next(&tag, &ok) && tag != &finished_tag) {
  }
  queue.Shutdown();
  while (queue.Next(&tag, &ok)) {
  }
  outcome.details.push_back("opaque message");
  if (outcome.status.ok()) outcome.details.push_back(BytesBack(response.Length()));
  return outcome;
}

// A TCP connection to `target` (IPv4 HOST:PORT) from `bind_ip`, for a channel made from it.
int ConnectFrom(const std::string& bind_ip, const std::string& target, std::string* error) {
  const auto colon = target.rfind(':');
  sockaddr_in local{}, remote{};
  local.sin_family = remote.sin_family = AF_INET;
  const auto port = colon == std::string::npos
                        ? std::nullopt
                        : ParseUnsigned<uint16_t>(std::string_view(target).substr(colon + 1));
  if (!port || inet_pton(AF_INET, target.substr(0, colon).c_str(), &remote.sin_addr) != 1) {
    *error = "--bind needs an IPv4 HOST:PORT target, got " + target;
    return -1;
  }
  remote.sin_port = htons(*port);
  inet_pton(AF_INET, bind_ip.c_str(), &local.sin_addr);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&local), sizeof(local)) != 0 ||
      connect(fd, reinterpret_cast<sockaddr*>(&remote), sizeof(remote)) != 0) {
    *error = "connect from " + bind_ip + " to " + target + ": " + std::strerror(errno);
    if (fd >= 0) close(fd);
    return -1;
  }
  return fd;
}

// The channel every call goes on: one HTTP/2 connection, from --bind's address if given.
// Null (with `error` set) if --bind's connection failed.
std::shared_ptr<grpc::Channel> MakeChannel(const Options& options, std::string* error) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(sepal::test::FakeSuperLink::kMaxMessageBytes);
  args.SetMaxSendMessageSize(sepal::test::FakeSuperLink::kMaxMessageBytes);
  // Show what the server said; a transparent retry would hide REFUSED_STREAM and GOAWAY.
  args.SetInt(GRPC_ARG_ENABLE_RETRIES, 0);
  if (options.bind_ip.empty()) {
    return grpc::CreateCustomChannel(options.target, grpc::InsecureChannelCredentials(), args);
  }
  int fd = ConnectFrom(options.bind_ip, options.target, error);
  if (fd < 0) return nullptr;
  return grpc::CreateCustomInsecureChannelFromFd(options.target, fd, args);
}

Outcome Call(const std::string& method, const std::shared_ptr<grpc::Channel>& channel,
             const Options& options, grpc::ClientContext* context) {
  const std::string_view path = method;
  const auto slash = path.find('/', 1);
  const std::string_view service = path.substr(1, slash - 1);
  const std::string_view name = path.substr(slash + 1);
  if (service == "flwr.proto.Fleet" && options.grpc_adapter) {
    return CallThroughAdapter(name, channel, context, options);
  }
  if (service == "flwr.proto.Fleet") {
    const auto it = FleetMethods().find(name);
    if (it != FleetMethods().end()) return CallFleet(it->second, channel, context, options);
  } else if (service == "flwr.proto.Control") {
    if (auto outcome = CallControl<flwr::proto::Control>(name, channel, context, options)) {
      return std::move(*outcome);
    }
  } else if (service == "flwr.proto.Exec") {
    if (auto outcome = CallControl<flwr::proto::Exec>(name, channel, context, options)) {
      return std::move(*outcome);
    }
  }
  return CallGeneric(method, channel, context, options);
}

std::string FormatMilliseconds(Clock::duration elapsed) {
  const double ms = std::chrono::duration<double, std::milli>(elapsed).count();
  std::array<char, 32> text{};
  std::snprintf(text.data(), text.size(), "%.1f ms", ms);
  return text.data();
}

// Makes one call on `channel` and prints its line; true if it ended as expected.
bool CallAndReport(const std::string& method, const std::shared_ptr<grpc::Channel>& channel,
                   const Options& options) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + options.timeout);
  for (const auto& [key, value] : options.metadata) context.AddMetadata(key, value);

  const auto start = Clock::now();
  Outcome outcome = Call(method, channel, options, &context);
  outcome.details.push_back(FormatMilliseconds(Clock::now() - start));

  const grpc::StatusCode code = outcome.status.error_code();
  std::string line = method + " -> " + std::string(CodeName(code));
  if (!outcome.status.error_message().empty()) line += ": " + outcome.status.error_message();
  line += " (";
  for (std::size_t i = 0; i < outcome.details.size(); ++i) {
    line += (i == 0 ? "" : ", ") + outcome.details[i];
  }
  line += ")";
  const grpc::StatusCode wanted = options.expect.value_or(grpc::StatusCode::OK);
  if (options.expect) {
    line += code == wanted ? " [as expected]" : " [expected " + std::string(CodeName(wanted)) + "]";
  }
  std::printf("%s\n", line.c_str());
  if (options.show_metadata) {
    for (const auto& entry : outcome.seen_metadata)
      std::printf("  upstream saw %s\n", entry.c_str());
  }
  std::fflush(stdout);
  return code == wanted;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  if (const int parsed = ParseArgs(argc, argv, &options); parsed != kExitOk) {
    return parsed < 0 ? kExitOk : parsed;
  }
  std::string error;
  const auto channel = MakeChannel(options, &error);
  bool all_as_expected = true;
  for (uint32_t round = 0; round < options.repeat; ++round) {
    if (round > 0) std::this_thread::sleep_for(options.interval);
    for (const std::string& method : options.methods) {
      if (channel == nullptr) {
        const grpc::StatusCode wanted = options.expect.value_or(grpc::StatusCode::OK);
        std::printf("%s -> UNAVAILABLE: %s%s\n", method.c_str(), error.c_str(),
                    wanted == grpc::StatusCode::UNAVAILABLE ? " [as expected]" : "");
        return wanted == grpc::StatusCode::UNAVAILABLE ? kExitOk : kExitFailed;
      }
      all_as_expected = CallAndReport(method, channel, options) && all_as_expected;
    }
  }
  return all_as_expected ? kExitOk : kExitFailed;
}
