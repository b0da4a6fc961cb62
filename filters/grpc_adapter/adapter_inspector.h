// Looks inside Flower's gRPC adapter transport (`/flwr.proto.GrpcAdapter/SendReceive`): each
// call carries one MessageContainer
//
//   message MessageContainer {
//     map<string, string> metadata = 1;
//     string grpc_message_name = 2;     // "PullMessagesRequest", ...
//     bytes grpc_message_content = 3;   // the serialized Fleet request
//   }
//
// and the wrapped message's name says which Fleet method is really called. Inspect() reads
// the leading bytes of the request body (the 5-byte gRPC message header and at most
// kMaxPrefixBytes of the message), finds the name and maps it to the Fleet method path
// ("/flwr.proto.Fleet/PullMessages"), which the call is then authorized, counted and logged
// as. The content itself is never read: it streams on unchanged.
//
// Only the canonical serialization (fields in number order, as every protobuf library writes
// them) is accepted, so that what sepal authorizes is what the SuperLink decodes: protobuf
// lets a later copy of a field replace an earlier one, so a name is only trusted when nothing
// can follow it but the content, and the content runs to the message's last byte.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace sepal::filters::grpc_adapter {

// Bytes of the message (after its 5-byte gRPC header) read to find the name: the metadata
// Flower sends (five short entries) and the name fit many times over.
inline constexpr size_t kMaxPrefixBytes = 4096;
inline constexpr size_t kGrpcHeaderBytes = 5;
// The most Inspect() looks at: pass at most this many leading body bytes.
inline constexpr size_t kMaxInspectedBytes = kGrpcHeaderBytes + kMaxPrefixBytes;
// Longest grpc_message_name accepted (Flower's are under 40 characters).
inline constexpr size_t kMaxNameBytes = 128;

// Labels of sepal_grpc_adapter_inspections_total{result}.
namespace result {
inline constexpr std::string_view kOk = "ok";
inline constexpr std::string_view kMalformed = "malformed";        // not a canonical container
inline constexpr std::string_view kTooLarge = "too_large";         // name not in the prefix
inline constexpr std::string_view kCompressed = "compressed";      // gRPC compressed flag set
inline constexpr std::string_view kUnknownMessage = "unknown_message";  // name is no Request
inline constexpr std::string_view kExtraMessage = "extra_message";  // a second gRPC message
}  // namespace result

struct Inspection {
  enum class Outcome { kNeedMore, kFound, kRefused };
  Outcome outcome = Outcome::kNeedMore;
  // kFound: the Fleet method path, e.g. "/flwr.proto.Fleet/PullMessages".
  std::string method;
  // kFound and kRefused: one of result::* (kOk when found).
  std::string_view result;
  // kRefused: why, for grpc-message.
  std::string message;
  // Known once the gRPC header is read: the first message's length with its header; body
  // bytes past it are a second message, which a unary call must not carry.
  uint64_t message_end = 0;
};

// `body`: the request body's first bytes (at most kMaxInspectedBytes are looked at);
// `body_ended`: no more will come (the client half-closed).
Inspection Inspect(std::span<const uint8_t> body, bool body_ended);

// "PullMessagesRequest" -> "/flwr.proto.Fleet/PullMessages"; empty if `name` is not an
// identifier ending in "Request".
std::string FleetMethodFor(std::string_view name);

}  // namespace sepal::filters::grpc_adapter
