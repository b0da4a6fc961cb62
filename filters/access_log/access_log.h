// Access log: one JSON line per finished call, formatted on the worker that served it and
// written by a background thread, so a slow disk, a full disk or a closed stdout never
// blocks proxying: past a bound, lines are dropped and counted instead.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "proxy/config/config.h"
#include "proxy/identity/identity.h"
#include "proxy/metrics/metrics.h"

namespace sepal::filters {

// What one finished call looked like.
struct AccessLogEntry {
  std::chrono::system_clock::time_point time;  // when the call ended
  std::string_view listener;
  std::string_view peer;                       // "100.64.0.2:41000"
  const identity::PeerIdentity* identity = nullptr;  // null: not identified
  std::string_view method;                     // the request's :path
  int grpc_status = -1;                        // -1: the call ended without one
  int http_status = 0;                         // REST (HTTP/1.1) requests only
  std::string_view decision;                   // "allow", "deny", or "" (never authorized)
  std::string_view reason;                     // authz reason or local-reply reason
  double duration_seconds = 0;
  uint64_t request_bytes = 0;                  // DATA bytes from the client
  uint64_t response_bytes = 0;                 // DATA bytes to the client
  std::string_view upstream;                   // "" when the call never had one
};

// Appends the entry as one JSON object and a newline. Strings a client controls (the
// method) are escaped, so a line can never be split or forged.
void AppendAccessLogLine(const AccessLogEntry& entry, std::string* out);

class AccessLog {
 public:
  // Pending bytes per worker before new lines are dropped (the writer is stuck).
  static constexpr size_t kMaxPendingBytes = 4 * 1024 * 1024;

  // Opens the output (stdout, stderr or a file in append mode) and starts the writer.
  // `shards` is the number of workers; each appends to its own shard. The counters count
  // lines written and lines dropped (output failing or stuck).
  static absl::StatusOr<std::shared_ptr<AccessLog>> Open(const config::AccessLogConfig& config,
                                                         unsigned shards,
                                                         metrics::Counter written,
                                                         metrics::Counter dropped);
  // Flushes what is pending for up to a second; a writer stuck in write() is left to
  // finish on its own rather than block the caller.
  ~AccessLog();
  AccessLog(const AccessLog&) = delete;
  AccessLog& operator=(const AccessLog&) = delete;

  // From worker `shard` only. Never blocks on I/O.
  void Append(unsigned shard, const AccessLogEntry& entry);

  uint64_t written_lines() const;
  uint64_t dropped_lines() const;
  const std::string& description() const { return description_; }

  struct State;  // shared with the writer thread

 private:
  AccessLog(std::shared_ptr<State> state, std::string description);

  std::shared_ptr<State> state_;
  std::string description_;
};

}  // namespace sepal::filters
