// What sepal reads off an HTTP/1.1 (Fleet REST) request before it routes it, and how a REST
// answer is counted: pure functions, no I/O.
#pragma once

#include <string>
#include <string_view>

#include "proxy/grpc/grpc_status.h"

namespace sepal::http1 {

// The request target as routed and forwarded. Flower's REST client sends
// "//api/v0/fleet/<method>" (its base URL ends in "/" and every path starts with one), so
// runs of slashes are merged. Refused (false, *error says why): no leading "/" (absolute
// and authority forms included), "%" escapes, dot segments, control bytes, "#". A query
// string is kept apart and forwarded unchanged.
bool NormalizeTarget(std::string_view target, std::string* path, std::string* query,
                     std::string* error);

// The metric labels of a REST request: grpc_service="rest", grpc_method = the path's last
// segment ("pull-messages"), as ListenerStats::ForPath splits "/rest/pull-messages".
std::string MetricsPath(std::string_view path);

// The gRPC code a REST answer is counted under in sepal_requests_total{grpc_code} (so one
// error-rate query covers both transports): 2xx/3xx OK, 400 INVALID_ARGUMENT,
// 401 UNAUTHENTICATED, 403 PERMISSION_DENIED, 404/405/501 UNIMPLEMENTED, 408/504
// DEADLINE_EXCEEDED, 413/414/429/431 RESOURCE_EXHAUSTED, 499 (the client left) CANCELLED,
// 500 INTERNAL, 502/503 UNAVAILABLE, other 4xx INVALID_ARGUMENT, other 5xx UNKNOWN.
grpc::StatusCode CodeForHttpStatus(int status);

// The status a refused call is answered with, from the gRPC code sepal's filters use:
// UNAUTHENTICATED 401, PERMISSION_DENIED 403, UNIMPLEMENTED 404, UNAVAILABLE 503,
// DEADLINE_EXCEEDED 504, RESOURCE_EXHAUSTED 503, INVALID_ARGUMENT 400, else 500.
int HttpStatusForCode(grpc::StatusCode code);

// "403 Forbidden": the reason phrase sepal sends.
std::string_view ReasonPhrase(int status);

// A local answer: status line, text/plain body of one line (`message` and a newline),
// Content-Length, and Connection: close when `close`.
std::string LocalResponse(int status, std::string_view message, bool close);

}  // namespace sepal::http1
