// AccessLog: per-worker pending buffers (a mutex each, contended only by the writer's
// swap) and one writer thread that drains them every 100 ms or when one grows large.
#include "filters/access_log/access_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "proxy/common/log.h"
#include "proxy/common/strings.h"
#include "proxy/common/time_format.h"

namespace sepal::filters {

namespace {

void AppendJsonString(std::string_view text, std::string* out) {
  static constexpr char kHex[] = "0123456789abcdef";
  out->push_back('"');
  for (unsigned char c : text) {
    switch (c) {
      case '"': out->append("\\\""); break;
      case '\\': out->append("\\\\"); break;
      case '\n': out->append("\\n"); break;
      case '\r': out->append("\\r"); break;
      case '\t': out->append("\\t"); break;
      default:
        if (c < 0x20 || c >= 0x7f) {
          // Bytes outside printable ASCII become \u00XX: the line stays valid JSON (and
          // valid UTF-8) whatever a client put in its :path.
          out->append("\\u00");
          out->push_back(kHex[c >> 4]);
          out->push_back(kHex[c & 0xf]);
        } else {
          out->push_back(static_cast<char>(c));
        }
    }
  }
  out->push_back('"');
}

}  // namespace

void AppendAccessLogLine(const AccessLogEntry& entry, std::string* out) {
  out->append("{\"time\":\"");
  out->append(FormatRfc3339(entry.time, /*microseconds=*/true));
  out->push_back('"');
  out->append(",\"listener\":");
  AppendJsonString(entry.listener, out);
  out->append(",\"peer\":");
  AppendJsonString(entry.peer, out);
  if (entry.identity != nullptr) {
    out->append(",\"node\":");
    AppendJsonString(entry.identity->node_name.empty() ? entry.identity->node_fqdn
                                                        : entry.identity->node_name,
                     out);
    out->append(",\"user\":");
    AppendJsonString(entry.identity->user_login, out);
    out->append(",\"tags\":[");
    for (size_t i = 0; i < entry.identity->tags.size(); ++i) {
      if (i > 0) out->push_back(',');
      AppendJsonString(entry.identity->tags[i], out);
    }
    out->push_back(']');
  } else {
    out->append(",\"node\":null,\"user\":null,\"tags\":[]");
  }
  out->append(",\"method\":");
  AppendJsonString(entry.method, out);
  out->append(",\"grpc_status\":");
  if (entry.grpc_status >= 0) {
    out->append(StrCat(entry.grpc_status));
  } else {
    out->append("null");
  }
  // Only on HTTP/1.1 (REST) listeners: the status the client got.
  if (entry.http_status > 0) out->append(StrCat(",\"http_status\":", entry.http_status));
  out->append(",\"decision\":");
  if (entry.decision.empty()) {
    out->append("null");
  } else {
    AppendJsonString(entry.decision, out);
  }
  out->append(",\"reason\":");
  AppendJsonString(entry.reason, out);
  char duration[32];
  int n = std::snprintf(duration, sizeof(duration), "%.6f", entry.duration_seconds);
  out->append(",\"duration_s\":").append(duration, static_cast<size_t>(n));
  out->append(StrCat(",\"request_bytes\":", entry.request_bytes,
                     ",\"response_bytes\":", entry.response_bytes));
  out->append(",\"upstream\":");
  if (entry.upstream.empty()) {
    out->append("null");
  } else {
    AppendJsonString(entry.upstream, out);
  }
  out->append("}\n");
}

struct AccessLog::State {
  struct alignas(64) Shard {
    std::mutex mutex;
    std::string pending;
    uint64_t pending_lines = 0;
  };

  int fd = -1;
  bool owns_fd = false;
  std::string description;
  std::vector<std::unique_ptr<Shard>> shards;
  std::mutex wake_mutex;
  std::condition_variable wake;
  bool stop = false;      // under wake_mutex
  bool kicked = false;    // under wake_mutex: a shard grew past the batch size
  std::atomic<bool> writer_done{false};
  std::atomic<uint64_t> written{0};
  std::atomic<uint64_t> dropped{0};
  metrics::Counter written_counter;
  metrics::Counter dropped_counter;
  std::chrono::steady_clock::time_point last_error_log{};

  ~State() {
    if (owns_fd && fd >= 0) close(fd);
  }

  void Drop(uint64_t lines) {
    dropped.fetch_add(lines, std::memory_order_relaxed);
    dropped_counter.Increment(metrics::kSharedShard, lines);
  }

  // Writes `data` fully, or gives up on the first error (the lines are counted as dropped).
  bool WriteAll(std::string_view data) {
    while (!data.empty()) {
      ssize_t n = ::write(fd, data.data(), data.size());
      if (n > 0) {
        data.remove_prefix(static_cast<size_t>(n));
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      int error = n < 0 ? errno : EIO;
      auto now = std::chrono::steady_clock::now();
      if (now - last_error_log > std::chrono::seconds(60)) {
        last_error_log = now;
        LogError("access log ", description, ": write failed: ", std::strerror(error),
                 " (lines are dropped and counted in sepal_access_log_lines_total)");
      }
      return false;
    }
    return true;
  }

  // One pass over the shards: swap each one's pending lines out and write them.
  void DrainOnce() {
    std::string batch;
    for (auto& shard : shards) {
      uint64_t lines = 0;
      {
        std::lock_guard lock(shard->mutex);
        if (shard->pending.empty()) continue;
        batch.swap(shard->pending);
        lines = shard->pending_lines;
        shard->pending_lines = 0;
      }
      if (WriteAll(batch)) {
        written.fetch_add(lines, std::memory_order_relaxed);
        written_counter.Increment(metrics::kSharedShard, lines);
      } else {
        Drop(lines);
      }
      batch.clear();
    }
  }

  static void Run(std::shared_ptr<State> self) {
    pthread_setname_np(pthread_self(), "sepal-accesslog");
    for (;;) {
      bool stopping;
      {
        std::unique_lock lock(self->wake_mutex);
        self->wake.wait_for(lock, std::chrono::milliseconds(100),
                            [&] { return self->stop || self->kicked; });
        self->kicked = false;
        stopping = self->stop;
      }
      self->DrainOnce();
      if (stopping) break;
    }
    self->writer_done.store(true, std::memory_order_release);
    self->wake.notify_all();
  }
};

absl::StatusOr<std::shared_ptr<AccessLog>> AccessLog::Open(const config::AccessLogConfig& config,
                                                           unsigned shards,
                                                           metrics::Counter written,
                                                           metrics::Counter dropped) {
  auto state = std::make_shared<State>();
  switch (config.output) {
    case config::AccessLogConfig::Output::kOff:
      return absl::InvalidArgumentError("access log is off");
    case config::AccessLogConfig::Output::kStdout:
      state->fd = STDOUT_FILENO;
      state->description = "stdout";
      break;
    case config::AccessLogConfig::Output::kStderr:
      state->fd = STDERR_FILENO;
      state->description = "stderr";
      break;
    case config::AccessLogConfig::Output::kFile:
      state->fd = ::open(config.path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
      if (state->fd < 0) {
        return absl::UnavailableError(StrCat("access log: cannot open ", config.path, ": ",
                                             std::strerror(errno)));
      }
      state->owns_fd = true;
      state->description = config.path;
      break;
  }
  state->written_counter = written;
  state->dropped_counter = dropped;
  for (unsigned i = 0; i < std::max(1u, shards); ++i) {
    state->shards.push_back(std::make_unique<State::Shard>());
  }
  std::string description = state->description;
  std::thread(State::Run, state).detach();
  return std::shared_ptr<AccessLog>(new AccessLog(std::move(state), std::move(description)));
}

AccessLog::AccessLog(std::shared_ptr<State> state, std::string description)
    : state_(std::move(state)), description_(std::move(description)) {}

AccessLog::~AccessLog() {
  std::unique_lock lock(state_->wake_mutex);
  state_->stop = true;
  state_->wake.notify_all();
  // The writer holds its own reference to the state: if it is stuck in write() (a pipe
  // nobody reads), it finishes whenever it can and nothing here waits for it.
  state_->wake.wait_for(lock, std::chrono::seconds(1), [&] {
    return state_->writer_done.load(std::memory_order_acquire);
  });
}

void AccessLog::Append(unsigned shard, const AccessLogEntry& entry) {
  State::Shard& target = *state_->shards[shard % state_->shards.size()];
  bool kick = false;
  {
    std::lock_guard lock(target.mutex);
    if (target.pending.size() >= kMaxPendingBytes) {
      state_->Drop(1);
      return;
    }
    AppendAccessLogLine(entry, &target.pending);
    ++target.pending_lines;
    kick = target.pending.size() >= 64 * 1024 && target.pending.size() < 80 * 1024;
  }
  if (kick) {
    std::lock_guard lock(state_->wake_mutex);
    state_->kicked = true;
    state_->wake.notify_one();
  }
}

uint64_t AccessLog::written_lines() const {
  return state_->written.load(std::memory_order_relaxed);
}
uint64_t AccessLog::dropped_lines() const {
  return state_->dropped.load(std::memory_order_relaxed);
}

}  // namespace sepal::filters
