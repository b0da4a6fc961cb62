// gRPC wire helpers: status codes and names, grpc-timeout parsing, grpc-message encoding.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace sepal::grpc {

enum class StatusCode : int {
  kOk = 0,
  kCancelled = 1,
  kUnknown = 2,
  kInvalidArgument = 3,
  kDeadlineExceeded = 4,
  kNotFound = 5,
  kAlreadyExists = 6,
  kPermissionDenied = 7,
  kResourceExhausted = 8,
  kFailedPrecondition = 9,
  kAborted = 10,
  kOutOfRange = 11,
  kUnimplemented = 12,
  kInternal = 13,
  kUnavailable = 14,
  kDataLoss = 15,
  kUnauthenticated = 16,
};

// "OK", "PERMISSION_DENIED", ... (grpc-ecosystem label values).
std::string_view StatusCodeName(StatusCode code);

// Parses a grpc-timeout header value ("100m", "5S", "1H"; at most 8 digits). nullopt if
// malformed.
std::optional<std::chrono::nanoseconds> ParseGrpcTimeout(std::string_view value);

// Percent-encodes a grpc-message value as the gRPC HTTP/2 spec requires.
std::string EncodeGrpcMessage(std::string_view message);

// Splits "/pkg.Service/Method" into service and method; false if not of that shape.
bool SplitGrpcPath(std::string_view path, std::string_view* service, std::string_view* method);

}  // namespace sepal::grpc
