// gRPC wire helpers: grpc-timeout units and limits, grpc-message encoding, path splitting.
#include "proxy/grpc/grpc_status.h"

#include <gtest/gtest.h>

namespace sepal::grpc {
namespace {

using namespace std::chrono_literals;

TEST(GrpcTimeoutTest, ParsesEveryUnit) {
  EXPECT_EQ(ParseGrpcTimeout("1H"), 1h);
  EXPECT_EQ(ParseGrpcTimeout("2M"), 2min);
  EXPECT_EQ(ParseGrpcTimeout("3S"), 3s);
  EXPECT_EQ(ParseGrpcTimeout("100m"), 100ms);
  EXPECT_EQ(ParseGrpcTimeout("250u"), 250us);
  EXPECT_EQ(ParseGrpcTimeout("99999999n"), 99999999ns);
}

TEST(GrpcTimeoutTest, RejectsMalformedValues) {
  EXPECT_FALSE(ParseGrpcTimeout(""));
  EXPECT_FALSE(ParseGrpcTimeout("m"));
  EXPECT_FALSE(ParseGrpcTimeout("10"));
  EXPECT_FALSE(ParseGrpcTimeout("10x"));
  EXPECT_FALSE(ParseGrpcTimeout("-5S"));
  EXPECT_FALSE(ParseGrpcTimeout("123456789S"));  // more than 8 digits
}

TEST(GrpcMessageTest, PercentEncodesNonPrintableAndPercent) {
  EXPECT_EQ(EncodeGrpcMessage("plain text"), "plain text");
  EXPECT_EQ(EncodeGrpcMessage("100%"), "100%25");
  EXPECT_EQ(EncodeGrpcMessage("a\nb"), "a%0Ab");
  EXPECT_EQ(EncodeGrpcMessage("\xc3\xa9"), "%C3%A9");
}

TEST(GrpcPathTest, SplitsServiceAndMethod) {
  std::string_view service, method;
  ASSERT_TRUE(SplitGrpcPath("/flwr.proto.Fleet/PullMessages", &service, &method));
  EXPECT_EQ(service, "flwr.proto.Fleet");
  EXPECT_EQ(method, "PullMessages");
  EXPECT_FALSE(SplitGrpcPath("/flwr.proto.Fleet/", &service, &method));
  EXPECT_FALSE(SplitGrpcPath("flwr.proto.Fleet/X", &service, &method));
  EXPECT_FALSE(SplitGrpcPath("/a/b/c", &service, &method));
  EXPECT_FALSE(SplitGrpcPath("//X", &service, &method));
}

TEST(GrpcStatusTest, NamesFollowGrpcConventions) {
  EXPECT_EQ(StatusCodeName(StatusCode::kOk), "OK");
  EXPECT_EQ(StatusCodeName(StatusCode::kPermissionDenied), "PERMISSION_DENIED");
  EXPECT_EQ(StatusCodeName(StatusCode::kUnauthenticated), "UNAUTHENTICATED");
  EXPECT_EQ(StatusCodeName(static_cast<StatusCode>(99)), "UNKNOWN");
}

}  // namespace
}  // namespace sepal::grpc
