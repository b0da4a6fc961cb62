// The process-wide limit state: one PeerTable per listener and one UpstreamBreaker per
// upstream, by name, shared by every worker and kept across reloads (so counts of calls in
// flight stay right while old and new generations overlap). The caps themselves come from
// the configuration each call runs under.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "proxy/limits/peer_limits.h"
#include "proxy/limits/upstream_breaker.h"

namespace sepal::limits {

class Registry {
 public:
  std::shared_ptr<PeerTable> PeerTableFor(const std::string& listener);
  std::shared_ptr<UpstreamBreaker> BreakerFor(const std::string& upstream);

 private:
  std::mutex mutex_;
  std::map<std::string, std::shared_ptr<PeerTable>> peer_tables_;
  std::map<std::string, std::shared_ptr<UpstreamBreaker>> breakers_;
};

}  // namespace sepal::limits
