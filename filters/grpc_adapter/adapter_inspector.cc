// The bounded protobuf reader behind grpc_adapter inspection. It decodes only the wire format
// of MessageContainer's leading fields (varint tags and lengths, length-delimited values),
// which is all a prefix holds; a protobuf library would need the whole message.
#include "filters/grpc_adapter/adapter_inspector.h"

#include <algorithm>
#include <optional>

#include "proxy/common/strings.h"

namespace sepal::filters::grpc_adapter {

namespace {

constexpr std::string_view kRequestSuffix = "Request";
constexpr std::string_view kFleetPrefix = "/flwr.proto.Fleet/";

// Protobuf wire types used by MessageContainer and any field a later Flower might add.
enum WireType : uint32_t { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5 };

// Reads the message's fields from `bytes` (the part of the message present so far).
class FieldReader {
 public:
  explicit FieldReader(std::span<const uint8_t> bytes) : bytes_(bytes) {}

  size_t position() const { return position_; }
  bool at_end() const { return position_ == bytes_.size(); }

  // Nullopt when the varint runs past the bytes present; sets `bad` for one over 10 bytes.
  std::optional<uint64_t> Varint(bool* bad) {
    uint64_t value = 0;
    for (size_t i = 0; i < 10; ++i) {
      if (position_ + i >= bytes_.size()) return std::nullopt;
      uint8_t byte = bytes_[position_ + i];
      value |= static_cast<uint64_t>(byte & 0x7f) << (7 * i);
      if ((byte & 0x80) == 0) {
        position_ += i + 1;
        return value;
      }
    }
    *bad = true;
    return std::nullopt;
  }
  // True if `n` more bytes are present; then skips them.
  bool Skip(uint64_t n) {
    if (n > bytes_.size() - position_) return false;
    position_ += static_cast<size_t>(n);
    return true;
  }
  std::string_view Text(size_t n) const {
    return {reinterpret_cast<const char*>(bytes_.data() + position_), n};
  }

 private:
  std::span<const uint8_t> bytes_;
  size_t position_ = 0;
};

Inspection Refused(std::string_view result, std::string message, uint64_t message_end) {
  Inspection inspection;
  inspection.outcome = Inspection::Outcome::kRefused;
  inspection.result = result;
  inspection.message = StrCat("sepal: grpc_adapter: ", message);
  inspection.message_end = message_end;
  return inspection;
}

}  // namespace

std::string FleetMethodFor(std::string_view name) {
  if (name.size() <= kRequestSuffix.size() || !name.ends_with(kRequestSuffix)) return {};
  std::string_view stem = name.substr(0, name.size() - kRequestSuffix.size());
  bool first = true;
  for (char c : stem) {
    bool letter = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
    bool digit_or_underscore = (c >= '0' && c <= '9') || c == '_';
    if (!letter && !(digit_or_underscore && !first)) return {};
    first = false;
  }
  return StrCat(kFleetPrefix, stem);
}

Inspection Inspect(std::span<const uint8_t> body, bool body_ended) {
  Inspection need_more;
  if (body.size() < kGrpcHeaderBytes) {
    if (body_ended) {
      return Refused(result::kMalformed, "the request carries no gRPC message", 0);
    }
    return need_more;
  }
  uint64_t length = (uint64_t{body[1]} << 24) | (uint64_t{body[2]} << 16) |
                    (uint64_t{body[3]} << 8) | uint64_t{body[4]};
  uint64_t message_end = kGrpcHeaderBytes + length;
  need_more.message_end = message_end;
  if (body[0] == 1) {
    return Refused(result::kCompressed,
                   "the message is compressed (grpc-encoding); sepal can only inspect "
                   "uncompressed MessageContainers",
                   message_end);
  }
  if (body[0] != 0) {
    return Refused(result::kMalformed, "bad gRPC message flags", message_end);
  }
  // The part of the message present, within the inspection window.
  size_t present = body.size() - kGrpcHeaderBytes;
  present = static_cast<size_t>(std::min<uint64_t>({present, length, kMaxPrefixBytes}));
  bool whole_message = present == length;
  bool window_full = present == kMaxPrefixBytes;
  // What to answer when a field runs past the bytes present.
  auto truncated = [&]() -> Inspection {
    if (whole_message) {
      return Refused(result::kMalformed, "a field runs past the end of the MessageContainer",
                     message_end);
    }
    if (window_full) {
      return Refused(result::kTooLarge,
                     StrCat("grpc_message_name is not within the message's first ",
                                  kMaxPrefixBytes, " bytes"),
                     message_end);
    }
    if (body_ended) {
      return Refused(result::kMalformed, "the request ended inside its gRPC message",
                     message_end);
    }
    return need_more;
  };

  FieldReader reader(body.subspan(kGrpcHeaderBytes, present));
  std::string method;
  while (true) {
    if (reader.at_end()) {
      if (!whole_message) return truncated();
      if (method.empty()) {
        return Refused(result::kMalformed, "the MessageContainer has no grpc_message_name",
                       message_end);
      }
      break;  // name last, no content (an empty request)
    }
    bool bad = false;
    std::optional<uint64_t> tag = reader.Varint(&bad);
    if (!tag) {
      return bad ? Refused(result::kMalformed, "bad field tag", message_end) : truncated();
    }
    uint64_t field = *tag >> 3;
    auto wire_type = static_cast<uint32_t>(*tag & 7);
    if (field == 0) return Refused(result::kMalformed, "field number 0", message_end);
    if (field <= 3 && wire_type != kLengthDelimited) {
      return Refused(result::kMalformed,
                     StrCat("field ", field, " has the wrong wire type"), message_end);
    }
    if (!method.empty() && field != 3) {
      // Canonical order puts only the content after the name; anything else could carry a
      // second name that replaces the one authorized.
      return Refused(result::kMalformed,
                     "only grpc_message_content may follow grpc_message_name", message_end);
    }
    uint64_t value_length = 0;
    if (wire_type == kLengthDelimited) {
      std::optional<uint64_t> parsed = reader.Varint(&bad);
      if (!parsed) {
        return bad ? Refused(result::kMalformed, "bad field length", message_end) : truncated();
      }
      value_length = *parsed;
    }
    if (field == 3) {
      if (method.empty()) {
        return Refused(result::kMalformed,
                       "grpc_message_content comes before grpc_message_name", message_end);
      }
      // The content must be the message's last field: it runs to the last byte.
      uint64_t content_start = kGrpcHeaderBytes + reader.position();
      if (value_length != message_end - content_start) {
        return Refused(result::kMalformed,
                       "fields follow grpc_message_content (not a canonical MessageContainer)",
                       message_end);
      }
      break;
    }
    if (field == 2) {
      if (value_length == 0 || value_length > kMaxNameBytes) {
        return Refused(result::kUnknownMessage,
                       StrCat("grpc_message_name must be 1 to ", kMaxNameBytes, " bytes"),
                       message_end);
      }
      size_t n = static_cast<size_t>(value_length);
      std::string_view name = reader.Text(std::min(n, present - reader.position()));
      if (name.size() < n) return truncated();
      method = FleetMethodFor(name);
      if (method.empty()) {
        return Refused(result::kUnknownMessage,
                       StrCat("grpc_message_name \"", name,
                                    "\" names no Fleet request (expected e.g. "
                                    "PullMessagesRequest)"),
                       message_end);
      }
      reader.Skip(n);
      continue;
    }
    // Metadata entries (field 1) and fields unknown to this version are skipped.
    bool skipped = false;
    switch (wire_type) {
      case kVarint: {
        std::optional<uint64_t> ignored = reader.Varint(&bad);
        if (bad) return Refused(result::kMalformed, "bad varint", message_end);
        skipped = ignored.has_value();
        break;
      }
      case kFixed64: skipped = reader.Skip(8); break;
      case kFixed32: skipped = reader.Skip(4); break;
      case kLengthDelimited: skipped = reader.Skip(value_length); break;
      default:
        return Refused(result::kMalformed,
                       StrCat("unsupported wire type ", wire_type), message_end);
    }
    if (!skipped) return truncated();
  }
  Inspection found;
  found.outcome = Inspection::Outcome::kFound;
  found.method = std::move(method);
  found.result = result::kOk;
  found.message_end = message_end;
  return found;
}

}  // namespace sepal::filters::grpc_adapter
