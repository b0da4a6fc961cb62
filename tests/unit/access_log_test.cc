// Access log lines (JSON, escaping) and the writer's promise: a stuck output never blocks
// the worker that appends.
#include "filters/access_log/access_log.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <cstdlib>
#include <string>
#include <thread>

#include <gtest/gtest.h>

namespace sepal::filters {
namespace {

AccessLogEntry SampleEntry(const identity::PeerIdentity* identity) {
  AccessLogEntry entry;
  entry.time = std::chrono::system_clock::time_point(std::chrono::microseconds(1764067947096123));
  entry.listener = "fleet";
  entry.peer = "100.64.0.2:41000";
  entry.identity = identity;
  entry.method = "/flwr.proto.Fleet/PullMessages";
  entry.grpc_status = 0;
  entry.decision = "allow";
  entry.reason = "tag";
  entry.duration_seconds = 0.0012345;
  entry.request_bytes = 105;
  entry.response_bytes = 2048;
  entry.upstream = "superlink";
  return entry;
}

boost::json::object Parse(const std::string& line) {
  EXPECT_FALSE(line.empty());
  EXPECT_EQ(line.back(), '\n');
  EXPECT_EQ(line.find('\n'), line.size() - 1) << "one line per call";
  return boost::json::parse(line).as_object();
}

TEST(AccessLogLineTest, HasEveryFieldOfTheCall) {
  identity::PeerIdentity peer;
  peer.node_name = "supernode-a";
  peer.user_login = "tagged-devices";
  peer.tags = {"tag:supernode", "tag:eu"};
  std::string line;
  AppendAccessLogLine(SampleEntry(&peer), &line);
  boost::json::object json = Parse(line);
  EXPECT_EQ(json["time"], "2025-11-25T10:52:27.096123Z");
  EXPECT_EQ(json["listener"], "fleet");
  EXPECT_EQ(json["peer"], "100.64.0.2:41000");
  EXPECT_EQ(json["node"], "supernode-a");
  EXPECT_EQ(json["user"], "tagged-devices");
  EXPECT_EQ(json["tags"], boost::json::parse(R"(["tag:supernode","tag:eu"])"));
  EXPECT_EQ(json["method"], "/flwr.proto.Fleet/PullMessages");
  EXPECT_EQ(json["grpc_status"], 0);
  EXPECT_EQ(json["decision"], "allow");
  EXPECT_EQ(json["reason"], "tag");
  EXPECT_NEAR(json["duration_s"].to_number<double>(), 0.0012345, 1e-6);
  EXPECT_EQ(json["request_bytes"], 105);
  EXPECT_EQ(json["response_bytes"], 2048);
  EXPECT_EQ(json["upstream"], "superlink");
}

TEST(AccessLogLineTest, UnknownPeerAndUnfinishedCallAreNulls) {
  AccessLogEntry entry = SampleEntry(nullptr);
  entry.grpc_status = -1;
  entry.decision = "";
  entry.upstream = "";
  std::string line;
  AppendAccessLogLine(entry, &line);
  boost::json::object json = Parse(line);
  EXPECT_TRUE(json["node"].is_null());
  EXPECT_TRUE(json["user"].is_null());
  EXPECT_TRUE(json["tags"].as_array().empty());
  EXPECT_TRUE(json["grpc_status"].is_null());
  EXPECT_TRUE(json["decision"].is_null());
  EXPECT_TRUE(json["upstream"].is_null());
}

TEST(AccessLogLineTest, AHostileMethodCannotBreakOrForgeALine) {
  AccessLogEntry entry = SampleEntry(nullptr);
  std::string method = "/x\"}\n{\"forged\":1,\"a\":\"\\\x01\xff";
  entry.method = method;
  std::string line;
  AppendAccessLogLine(entry, &line);
  boost::json::object json = Parse(line);
  EXPECT_EQ(json.count("forged"), 0u);
  EXPECT_EQ(json["method"], "/x\"}\n{\"forged\":1,\"a\":\"\\\x01\xc3\xbf");
}

TEST(AccessLogTest, WritesLinesToAFile) {
  char path[] = "/tmp/sepal-access-log-XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  {
    auto log = AccessLog::Open({config::AccessLogConfig::Output::kFile, path}, 2, {}, {});
    ASSERT_TRUE(log.ok()) << log.status();
    for (int i = 0; i < 10; ++i) (*log)->Append(i % 2, SampleEntry(nullptr));
  }  // the destructor flushes
  struct stat info;
  ASSERT_EQ(stat(path, &info), 0);
  std::string one;
  AppendAccessLogLine(SampleEntry(nullptr), &one);
  EXPECT_EQ(static_cast<size_t>(info.st_size), 10 * one.size());
  unlink(path);
}

TEST(AccessLogTest, AStuckOutputDropsLinesInsteadOfBlocking) {
  char dir[] = "/tmp/sepal-access-fifo-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  std::string fifo = std::string(dir) + "/fifo";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  // A reader that never reads: the writer fills the pipe and blocks in write().
  signal(SIGPIPE, SIG_IGN);  // as sepal does: the writer sees EPIPE once the reader goes
  int reader = open(fifo.c_str(), O_RDONLY | O_NONBLOCK);
  ASSERT_GE(reader, 0);
  auto log = AccessLog::Open({config::AccessLogConfig::Output::kFile, fifo}, 1, {}, {});
  ASSERT_TRUE(log.ok()) << log.status();
  std::string one;
  AppendAccessLogLine(SampleEntry(nullptr), &one);
  size_t lines = 2 * AccessLog::kMaxPendingBytes / one.size();
  auto start = std::chrono::steady_clock::now();
  for (size_t i = 0; i < lines; ++i) (*log)->Append(0, SampleEntry(nullptr));
  auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_LT(elapsed, std::chrono::seconds(2)) << "Append must never wait for the output";
  EXPECT_GT((*log)->dropped_lines(), lines / 4);
  start = std::chrono::steady_clock::now();
  log->reset();  // gives the stuck writer a second, then leaves it
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(3));
  close(reader);  // the writer's write() fails with EPIPE and the thread ends
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  unlink(fifo.c_str());
  rmdir(dir);
}

}  // namespace
}  // namespace sepal::filters
