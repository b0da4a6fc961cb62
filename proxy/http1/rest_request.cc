// REST request normalization and status mapping.
#include "proxy/http1/rest_request.h"

#include "proxy/common/strings.h"

namespace sepal::http1 {

bool NormalizeTarget(std::string_view target, std::string* path, std::string* query,
                     std::string* error) {
  path->clear();
  query->clear();
  if (target.empty() || target[0] != '/') {
    *error = "the request target must be a path starting with \"/\"";
    return false;
  }
  size_t question = target.find('?');
  std::string_view raw = target.substr(0, question);
  if (question != std::string_view::npos) query->assign(target.substr(question + 1));
  for (unsigned char c : target) {
    if (c <= ' ' || c == 0x7f || c == '#') {
      *error = "the request target has a control byte, space or \"#\"";
      return false;
    }
  }
  if (raw.find('%') != std::string_view::npos) {
    // An escape could spell a path the routes do not see ("pull%2Dmessages"): refused
    // rather than decoded, as no Flower path needs one.
    *error = "percent-escapes in the path are not accepted";
    return false;
  }
  path->reserve(raw.size());
  for (char c : raw) {
    if (c == '/' && !path->empty() && path->back() == '/') continue;
    path->push_back(c);
  }
  // Dot segments: "/." or "/.." as a whole segment.
  for (size_t start = 1; start <= path->size();) {
    size_t end = path->find('/', start);
    if (end == std::string::npos) end = path->size();
    std::string_view segment = std::string_view(*path).substr(start, end - start);
    if (segment == "." || segment == "..") {
      *error = "dot segments (\"/./\", \"/../\") in the path are not accepted";
      return false;
    }
    start = end + 1;
  }
  return true;
}

std::string MetricsPath(std::string_view path) {
  size_t slash = path.rfind('/');
  std::string_view last = slash == std::string_view::npos ? path : path.substr(slash + 1);
  if (last.empty()) last = "other";
  return StrCat("/rest/", last);
}

grpc::StatusCode CodeForHttpStatus(int status) {
  using grpc::StatusCode;
  if (status >= 200 && status < 400) return StatusCode::kOk;
  switch (status) {
    case 400: return StatusCode::kInvalidArgument;
    case 401: return StatusCode::kUnauthenticated;
    case 403: return StatusCode::kPermissionDenied;
    case 404:
    case 405:
    case 501: return StatusCode::kUnimplemented;
    case 408:
    case 504: return StatusCode::kDeadlineExceeded;
    case 413:
    case 414:
    case 429:
    case 431: return StatusCode::kResourceExhausted;
    case 499: return StatusCode::kCancelled;
    case 500: return StatusCode::kInternal;
    case 502:
    case 503: return StatusCode::kUnavailable;
    default: break;
  }
  return status >= 400 && status < 500 ? StatusCode::kInvalidArgument : StatusCode::kUnknown;
}

int HttpStatusForCode(grpc::StatusCode code) {
  using grpc::StatusCode;
  switch (code) {
    case StatusCode::kUnauthenticated: return 401;
    case StatusCode::kPermissionDenied: return 403;
    case StatusCode::kUnimplemented: return 404;
    case StatusCode::kUnavailable:
    case StatusCode::kResourceExhausted: return 503;
    case StatusCode::kDeadlineExceeded: return 504;
    case StatusCode::kInvalidArgument: return 400;
    default: return 500;
  }
}

std::string_view ReasonPhrase(int status) {
  switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 417: return "Expectation Failed";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Error";
  }
}

std::string LocalResponse(int status, std::string_view message, bool close) {
  return StrCat("HTTP/1.1 ", status, " ", ReasonPhrase(status),
                "\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ",
                message.size() + 1, close ? "\r\nConnection: close" : "", "\r\n\r\n", message,
                "\n");
}

}  // namespace sepal::http1
