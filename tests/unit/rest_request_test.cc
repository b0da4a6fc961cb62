// Unit tests for proxy/http1/rest_request: request-target normalization, the metric path of a
// REST request, HTTP status <-> gRPC code mapping, and the bytes of a local answer.
#include "proxy/http1/rest_request.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <boost/asio/buffer.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/http.hpp>
#include <cctype>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "proxy/grpc/grpc_status.h"

namespace sepal::http1 {
namespace {

namespace http = boost::beast::http;
using grpc::StatusCode;
using ::testing::HasSubstr;

// --- NormalizeTarget --------------------------------------------------------------------------

struct Normalized {
  bool ok = false;
  std::string path;
  std::string query;
  std::string error;
};

Normalized Normalize(std::string_view target) {
  Normalized out;
  out.ok = NormalizeTarget(target, &out.path, &out.query, &out.error);
  return out;
}

// A printable name for a target in failure messages (control bytes spelled \xNN).
std::string Printable(std::string_view target) {
  std::string out;
  for (unsigned char c : target) {
    if (c >= 0x21 && c < 0x7f) {
      out.push_back(static_cast<char>(c));
    } else {
      constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0xf]);
    }
  }
  return out;
}

constexpr const char* kNeedsSlash = "the request target must be a path starting with \"/\"";
constexpr const char* kControlSpaceHash = "the request target has a control byte, space or \"#\"";
constexpr const char* kPercent = "percent-escapes in the path are not accepted";
constexpr const char* kDotSegments = "dot segments (\"/./\", \"/../\") in the path are not accepted";

TEST(NormalizeTargetTest, FlowerDoubleSlashIsMerged) {
  Normalized n = Normalize("//api/v0/fleet/pull-messages");
  ASSERT_TRUE(n.ok) << n.error;
  EXPECT_EQ(n.path, "/api/v0/fleet/pull-messages");
  EXPECT_EQ(n.query, "");
}

TEST(NormalizeTargetTest, PlainPathIsUnchanged) {
  for (const char* target : {"/", "/api/v0/fleet/pull-messages", "/api/v0/fleet/",
                             "/api/v0/fleet/create-node", "/.well-known/x", "/a.b/c-d_e~f"}) {
    Normalized n = Normalize(target);
    ASSERT_TRUE(n.ok) << target << ": " << n.error;
    EXPECT_EQ(n.path, target);
    EXPECT_EQ(n.query, "") << target;
  }
}

TEST(NormalizeTargetTest, EveryRunOfSlashesIsMerged) {
  const std::pair<const char*, const char*> kCases[] = {
      {"///a//b", "/a/b"},
      {"//", "/"},
      {"////", "/"},
      {"/a//", "/a/"},
      {"//api//v0///fleet////pull-messages", "/api/v0/fleet/pull-messages"},
      {"/a/b//", "/a/b/"},
  };
  for (const auto& [target, path] : kCases) {
    Normalized n = Normalize(target);
    ASSERT_TRUE(n.ok) << target << ": " << n.error;
    EXPECT_EQ(n.path, path) << target;
    EXPECT_EQ(n.query, "") << target;
  }
}

TEST(NormalizeTargetTest, QueryIsKeptApartAndUntouched) {
  Normalized n = Normalize("//api/v0/fleet/pull-messages?a=1&b=2");
  ASSERT_TRUE(n.ok) << n.error;
  EXPECT_EQ(n.path, "/api/v0/fleet/pull-messages");
  EXPECT_EQ(n.query, "a=1&b=2");

  // Slashes, dot segments and a second '?' in the query are the query's business.
  n = Normalize("/a?x=//y///z");
  ASSERT_TRUE(n.ok) << n.error;
  EXPECT_EQ(n.path, "/a");
  EXPECT_EQ(n.query, "x=//y///z");
  n = Normalize("//a//b?redirect=/../etc/./passwd?again");
  ASSERT_TRUE(n.ok) << n.error;
  EXPECT_EQ(n.path, "/a/b");
  EXPECT_EQ(n.query, "redirect=/../etc/./passwd?again");

  // An empty query: nothing after the '?'.
  n = Normalize("/a?");
  ASSERT_TRUE(n.ok) << n.error;
  EXPECT_EQ(n.path, "/a");
  EXPECT_EQ(n.query, "");
}

// The header says '%' escapes are refused and "a query string is kept apart and forwarded
// unchanged"; the code refuses '%' in the path only (the check runs on the part before '?'),
// so an escaped query is accepted and passed through as written.
TEST(NormalizeTargetTest, PercentInTheQueryIsForwardedAsWritten) {
  Normalized n = Normalize("/api/v0/fleet/pull-messages?node=%2F%2e%2E&x=%");
  ASSERT_TRUE(n.ok) << n.error;
  EXPECT_EQ(n.path, "/api/v0/fleet/pull-messages");
  EXPECT_EQ(n.query, "node=%2F%2e%2E&x=%");
}

TEST(NormalizeTargetTest, OutputsAreReplacedNotAppended) {
  std::string path = "stale";
  std::string query = "stale";
  std::string error;
  ASSERT_TRUE(NormalizeTarget("//x?q", &path, &query, &error)) << error;
  EXPECT_EQ(path, "/x");
  EXPECT_EQ(query, "q");
  ASSERT_TRUE(NormalizeTarget("/y", &path, &query, &error)) << error;
  EXPECT_EQ(path, "/y");
  EXPECT_EQ(query, "");
}

struct Refusal {
  std::string target;
  const char* error;
};

class NormalizeTargetRefusalTest : public testing::TestWithParam<Refusal> {};

TEST_P(NormalizeTargetRefusalTest, IsRefusedWithItsReason) {
  const Refusal& refusal = GetParam();
  Normalized n = Normalize(refusal.target);
  EXPECT_FALSE(n.ok) << Printable(refusal.target) << " -> path " << n.path;
  EXPECT_EQ(n.error, refusal.error) << Printable(refusal.target);
}

std::string RefusalName(const testing::TestParamInfo<Refusal>& info) {
  std::string name = absl::StrCat("Case", info.index, "_");
  for (unsigned char c : info.param.target) {
    name.push_back(std::isalnum(c) ? static_cast<char>(c) : '_');
  }
  return name;
}

INSTANTIATE_TEST_SUITE_P(
    NotAPath, NormalizeTargetRefusalTest,
    testing::Values(Refusal{"", kNeedsSlash},
                    Refusal{"api/v0/fleet/pull-messages", kNeedsSlash},
                    Refusal{"http://h/x", kNeedsSlash},                   // absolute form
                    Refusal{"https://superlink:9095/api/v0/fleet/x", kNeedsSlash},
                    Refusal{"superlink:9095", kNeedsSlash},              // authority form
                    Refusal{"*", kNeedsSlash},                           // asterisk form
                    Refusal{"?a=b", kNeedsSlash}),
    RefusalName);

INSTANTIATE_TEST_SUITE_P(
    PercentEscapes, NormalizeTargetRefusalTest,
    testing::Values(Refusal{"/api/v0/fleet/pull%2Dmessages", kPercent},
                    Refusal{"/%2e%2e/x", kPercent},
                    Refusal{"/a%2Fb", kPercent},
                    Refusal{"/a%", kPercent},
                    Refusal{"//a%20b?q=%20", kPercent}),
    RefusalName);

INSTANTIATE_TEST_SUITE_P(
    DotSegments, NormalizeTargetRefusalTest,
    testing::Values(Refusal{"/./", kDotSegments},
                    Refusal{"/a/./b", kDotSegments},
                    Refusal{"/../", kDotSegments},
                    Refusal{"/a/../b", kDotSegments},
                    Refusal{"/api/v0/fleet/..", kDotSegments},  // trailing "/.."
                    Refusal{"/api/v0/fleet/.", kDotSegments},   // trailing "/."
                    Refusal{"/..", kDotSegments},               // a bare ".." segment
                    Refusal{"/.", kDotSegments},
                    Refusal{"//..//x", kDotSegments},           // found after merging
                    Refusal{"/a//.//b", kDotSegments},
                    Refusal{"/a/..?q", kDotSegments}),
    RefusalName);

INSTANTIATE_TEST_SUITE_P(
    ControlBytesSpaceHash, NormalizeTargetRefusalTest,
    testing::Values(Refusal{"/a b", kControlSpaceHash},
                    Refusal{"/a\tb", kControlSpaceHash},
                    Refusal{"/a\r\nHost: x", kControlSpaceHash},
                    Refusal{std::string("/a\0b", 4), kControlSpaceHash},
                    Refusal{"/a\x01", kControlSpaceHash},
                    Refusal{"/a\x1f", kControlSpaceHash},
                    Refusal{"/a\x7f", kControlSpaceHash},
                    Refusal{"/a#frag", kControlSpaceHash},
                    Refusal{"/a?q#frag", kControlSpaceHash},  // '#' in the query too
                    Refusal{"/a?q=1 2", kControlSpaceHash},   // space in the query
                    Refusal{"/a?q=\x01", kControlSpaceHash}),
    RefusalName);

TEST(NormalizeTargetTest, SegmentsThatOnlyStartWithDotsAreFine) {
  for (const char* target : {"/..a", "/a/..a", "/a/.b", "/a/...", "/a/b..", "/..a/", "/a./b",
                             "/api/v0/fleet/.hidden"}) {
    Normalized n = Normalize(target);
    ASSERT_TRUE(n.ok) << target << ": " << n.error;
    EXPECT_EQ(n.path, target);
  }
  Normalized merged = Normalize("//..a//b");
  ASSERT_TRUE(merged.ok) << merged.error;
  EXPECT_EQ(merged.path, "/..a/b");
}

// --- MetricsPath ------------------------------------------------------------------------------

TEST(MetricsPathTest, LastSegmentUnderRest) {
  EXPECT_EQ(MetricsPath("/api/v0/fleet/pull-messages"), "/rest/pull-messages");
  EXPECT_EQ(MetricsPath("/api/v0/fleet/create-node"), "/rest/create-node");
  EXPECT_EQ(MetricsPath("/health"), "/rest/health");
  EXPECT_EQ(MetricsPath("bare"), "/rest/bare");
}

TEST(MetricsPathTest, NoLastSegmentIsOther) {
  EXPECT_EQ(MetricsPath("/api/v0/fleet/"), "/rest/other");
  EXPECT_EQ(MetricsPath("/"), "/rest/other");
  EXPECT_EQ(MetricsPath(""), "/rest/other");
}

// ListenerStats::ForPath splits the metric path as a gRPC path: service "rest", method = the
// last segment.
TEST(MetricsPathTest, SplitsAsAGrpcPath) {
  for (const char* path : {"/api/v0/fleet/pull-messages", "/api/v0/fleet/", "/"}) {
    std::string metrics_path = MetricsPath(path);
    std::string_view service;
    std::string_view method;
    ASSERT_TRUE(grpc::SplitGrpcPath(metrics_path, &service, &method)) << metrics_path;
    EXPECT_EQ(service, "rest");
    EXPECT_EQ(method, std::string(path) == "/api/v0/fleet/pull-messages" ? "pull-messages"
                                                                          : "other");
  }
}

// --- CodeForHttpStatus ------------------------------------------------------------------------

TEST(CodeForHttpStatusTest, SuccessAndRedirectsAreOk) {
  for (int status : {200, 201, 202, 204, 206, 299, 300, 301, 302, 304, 307, 308, 399}) {
    EXPECT_EQ(CodeForHttpStatus(status), StatusCode::kOk) << status;
  }
}

TEST(CodeForHttpStatusTest, EveryDocumentedStatus) {
  const std::pair<int, StatusCode> kCases[] = {
      {400, StatusCode::kInvalidArgument},   {401, StatusCode::kUnauthenticated},
      {403, StatusCode::kPermissionDenied},  {404, StatusCode::kUnimplemented},
      {405, StatusCode::kUnimplemented},     {501, StatusCode::kUnimplemented},
      {408, StatusCode::kDeadlineExceeded},  {504, StatusCode::kDeadlineExceeded},
      {413, StatusCode::kResourceExhausted}, {414, StatusCode::kResourceExhausted},
      {429, StatusCode::kResourceExhausted}, {431, StatusCode::kResourceExhausted},
      {499, StatusCode::kCancelled},         {500, StatusCode::kInternal},
      {502, StatusCode::kUnavailable},       {503, StatusCode::kUnavailable},
  };
  for (const auto& [status, code] : kCases) {
    EXPECT_EQ(CodeForHttpStatus(status), code)
        << status << " -> " << grpc::StatusCodeName(CodeForHttpStatus(status));
  }
}

TEST(CodeForHttpStatusTest, Other4xxAreInvalidArgumentOther5xxUnknown) {
  for (int status : {402, 406, 407, 409, 410, 411, 412, 415, 416, 417, 418, 421, 422, 426, 428,
                     450, 451, 498}) {
    EXPECT_EQ(CodeForHttpStatus(status), StatusCode::kInvalidArgument) << status;
  }
  for (int status : {505, 506, 507, 508, 510, 511, 520, 599}) {
    EXPECT_EQ(CodeForHttpStatus(status), StatusCode::kUnknown) << status;
  }
}

// --- HttpStatusForCode ------------------------------------------------------------------------

TEST(HttpStatusForCodeTest, EveryDocumentedCode) {
  EXPECT_EQ(HttpStatusForCode(StatusCode::kUnauthenticated), 401);
  EXPECT_EQ(HttpStatusForCode(StatusCode::kPermissionDenied), 403);
  EXPECT_EQ(HttpStatusForCode(StatusCode::kUnimplemented), 404);
  EXPECT_EQ(HttpStatusForCode(StatusCode::kUnavailable), 503);
  EXPECT_EQ(HttpStatusForCode(StatusCode::kDeadlineExceeded), 504);
  EXPECT_EQ(HttpStatusForCode(StatusCode::kResourceExhausted), 503);
  EXPECT_EQ(HttpStatusForCode(StatusCode::kInvalidArgument), 400);
}

TEST(HttpStatusForCodeTest, EveryOtherCodeIs500) {
  for (StatusCode code :
       {StatusCode::kOk, StatusCode::kCancelled, StatusCode::kUnknown, StatusCode::kNotFound,
        StatusCode::kAlreadyExists, StatusCode::kFailedPrecondition, StatusCode::kAborted,
        StatusCode::kOutOfRange, StatusCode::kInternal, StatusCode::kDataLoss}) {
    EXPECT_EQ(HttpStatusForCode(code), 500) << grpc::StatusCodeName(code);
  }
}

// A refusal answered with HttpStatusForCode(code) is counted under the same code again, except
// RESOURCE_EXHAUSTED (answered 503, counted UNAVAILABLE) and the 500 fallback.
TEST(HttpStatusForCodeTest, RefusalsAreCountedUnderTheirCode) {
  for (StatusCode code : {StatusCode::kUnauthenticated, StatusCode::kPermissionDenied,
                          StatusCode::kUnimplemented, StatusCode::kUnavailable,
                          StatusCode::kDeadlineExceeded, StatusCode::kInvalidArgument,
                          StatusCode::kInternal}) {
    EXPECT_EQ(CodeForHttpStatus(HttpStatusForCode(code)), code) << grpc::StatusCodeName(code);
  }
  EXPECT_EQ(CodeForHttpStatus(HttpStatusForCode(StatusCode::kResourceExhausted)),
            StatusCode::kUnavailable);
}

// --- ReasonPhrase and LocalResponse -----------------------------------------------------------

TEST(ReasonPhraseTest, KnownAndUnknown) {
  EXPECT_EQ(ReasonPhrase(403), "Forbidden");
  EXPECT_EQ(ReasonPhrase(413), "Content Too Large");
  EXPECT_EQ(ReasonPhrase(431), "Request Header Fields Too Large");
  EXPECT_EQ(ReasonPhrase(504), "Gateway Timeout");
  EXPECT_EQ(ReasonPhrase(418), "Error");
}

TEST(LocalResponseTest, ExactBytesKeepAlive) {
  EXPECT_EQ(LocalResponse(403, "permission denied", false),
            "HTTP/1.1 403 Forbidden\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "Content-Length: 18\r\n"
            "\r\n"
            "permission denied\n");
}

TEST(LocalResponseTest, ExactBytesWithClose) {
  EXPECT_EQ(LocalResponse(408, "request header timeout", true),
            "HTTP/1.1 408 Request Timeout\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "Content-Length: 23\r\n"
            "Connection: close\r\n"
            "\r\n"
            "request header timeout\n");
}

TEST(LocalResponseTest, EmptyMessageIsOneNewline) {
  EXPECT_EQ(LocalResponse(404, "", false),
            "HTTP/1.1 404 Not Found\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "Content-Length: 1\r\n"
            "\r\n"
            "\n");
}

struct Parsed {
  bool done = false;
  size_t consumed = 0;
  std::string error;
  http::response<http::string_body> response;
};

// Parses `bytes` as one response with Beast's parser, as a client would.
Parsed ParseResponse(const std::string& bytes) {
  Parsed out;
  http::response_parser<http::string_body> parser;
  parser.eager(true);
  boost::beast::error_code error;
  out.consumed = parser.put(boost::asio::buffer(bytes), error);
  if (error) out.error = error.message();
  out.done = parser.is_done();
  if (out.done) out.response = parser.release();
  return out;
}

// Every status sepal answers locally (Http1Connection's refusals and errors).
constexpr int kLocalStatuses[] = {400, 401, 403, 404, 408, 413, 414,
                                  417, 431, 500, 502, 503, 504};

TEST(LocalResponseTest, IsOneValidResponseForEveryLocalStatus) {
  for (bool close : {false, true}) {
    for (int status : kLocalStatuses) {
      std::string message = absl::StrCat("sepal: status ", status);
      std::string bytes = LocalResponse(status, message, close);
      Parsed parsed = ParseResponse(bytes);
      SCOPED_TRACE(absl::StrCat(status, close ? " close" : " keep-alive"));
      ASSERT_TRUE(parsed.done) << parsed.error;
      EXPECT_EQ(parsed.error, "");
      EXPECT_EQ(parsed.consumed, bytes.size());  // nothing after the body
      const auto& response = parsed.response;
      EXPECT_EQ(response.result_int(), static_cast<unsigned>(status));
      EXPECT_EQ(response.version(), 11u);
      EXPECT_EQ(std::string(response.reason()), std::string(ReasonPhrase(status)));
      EXPECT_EQ(std::string(response[http::field::content_type]), "text/plain; charset=utf-8");
      EXPECT_EQ(response.body(), message + "\n");
      EXPECT_EQ(std::string(response[http::field::content_length]),
                absl::StrCat(message.size() + 1));
      EXPECT_EQ(response.keep_alive(), !close);
      EXPECT_EQ(response.count(http::field::connection), close ? 1u : 0u);
      if (close) {
        EXPECT_EQ(std::string(response[http::field::connection]), "close");
      }
    }
  }
}

// Content-Length counts bytes (a UTF-8 message), newline included.
TEST(LocalResponseTest, ContentLengthCountsBytes) {
  std::string message = "r\xc3\xa9" "fus\xc3\xa9";  // "refusé" with two 2-byte letters
  std::string bytes = LocalResponse(403, message, false);
  EXPECT_THAT(bytes, HasSubstr("\r\nContent-Length: 9\r\n"));
  Parsed parsed = ParseResponse(bytes);
  ASSERT_TRUE(parsed.done) << parsed.error;
  EXPECT_EQ(parsed.response.body(), message + "\n");
  EXPECT_EQ(parsed.response.body().size(), 9u);
}

// Two answers written back to back on a kept-alive connection frame apart.
TEST(LocalResponseTest, BackToBackAnswersFrameApart) {
  std::string first = LocalResponse(404, "no route", false);
  std::string second = LocalResponse(503, "upstream unavailable", true);
  std::string both = first + second;
  http::response_parser<http::string_body> parser;
  parser.eager(true);
  boost::beast::error_code error;
  size_t consumed = parser.put(boost::asio::buffer(both), error);
  ASSERT_FALSE(error) << error.message();
  ASSERT_TRUE(parser.is_done());
  EXPECT_EQ(consumed, first.size());
  EXPECT_EQ(parser.get().body(), "no route\n");
  EXPECT_TRUE(parser.get().keep_alive());

  Parsed rest = ParseResponse(both.substr(consumed));
  ASSERT_TRUE(rest.done) << rest.error;
  EXPECT_EQ(rest.consumed, second.size());
  EXPECT_EQ(rest.response.result_int(), 503u);
  EXPECT_EQ(rest.response.body(), "upstream unavailable\n");
  EXPECT_FALSE(rest.response.keep_alive());
}

}  // namespace
}  // namespace sepal::http1
