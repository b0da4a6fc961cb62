// Registry.
#include "proxy/limits/limits_registry.h"

namespace sepal::limits {

std::shared_ptr<PeerTable> Registry::PeerTableFor(const std::string& listener) {
  std::lock_guard lock(mutex_);
  auto& table = peer_tables_[listener];
  if (!table) table = std::make_shared<PeerTable>();
  return table;
}

std::shared_ptr<UpstreamBreaker> Registry::BreakerFor(const std::string& upstream) {
  std::lock_guard lock(mutex_);
  auto& breaker = breakers_[upstream];
  if (!breaker) breaker = std::make_shared<UpstreamBreaker>();
  return breaker;
}

}  // namespace sepal::limits
