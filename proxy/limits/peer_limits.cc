// PeerTable and the per-peer counters.
#include "proxy/limits/peer_limits.h"

#include <algorithm>

namespace sepal::limits {

bool Peer::TryIncrement(std::atomic<uint32_t>& counter, uint32_t cap) {
  uint32_t current = counter.load(std::memory_order_relaxed);
  do {
    if (cap != 0 && current >= cap) return false;
  } while (!counter.compare_exchange_weak(current, current + 1, std::memory_order_relaxed));
  return true;
}

bool Peer::TryTakeCallToken(TokenBucket::Clock::time_point now, uint32_t rate, uint32_t burst) {
  if (rate == 0) return true;
  std::lock_guard lock(bucket_mutex_);
  return bucket_.TryTake(now, rate, std::max(burst, 1u));
}

std::shared_ptr<Peer> PeerTable::Get(const std::string& key) {
  auto now = TokenBucket::Clock::now();
  std::lock_guard lock(mutex_);
  if (now - last_sweep_ > std::chrono::seconds(10)) SweepLocked(now);
  Entry& entry = peers_[key];
  if (!entry.peer) entry.peer = std::make_shared<Peer>(key);
  entry.last_used = now;
  return entry.peer;
}

size_t PeerTable::size() const {
  std::lock_guard lock(mutex_);
  return peers_.size();
}

std::vector<std::shared_ptr<Peer>> PeerTable::Connected() const {
  std::vector<std::shared_ptr<Peer>> connected;
  std::lock_guard lock(mutex_);
  for (const auto& [key, entry] : peers_) {
    if (entry.peer->connections() > 0) connected.push_back(entry.peer);
  }
  return connected;
}

size_t PeerTable::ConnectedCount() const {
  std::lock_guard lock(mutex_);
  return static_cast<size_t>(std::count_if(peers_.begin(), peers_.end(), [](const auto& item) {
    return item.second.peer->connections() > 0;
  }));
}

void PeerTable::SweepLocked(TokenBucket::Clock::time_point now) {
  last_sweep_ = now;
  // Only entries nobody holds (no open connection) and unused for a while go.
  std::erase_if(peers_, [now](const auto& item) {
    const Entry& entry = item.second;
    return entry.peer.use_count() == 1 && now - entry.last_used > kIdleExpiry;
  });
}

std::string PeerKey(const identity::PeerIdentity* identity, const identity::PeerAddress& address) {
  if (identity != nullptr) {
    return "node:" + (identity->node_fqdn.empty() ? identity->node_name : identity->node_fqdn);
  }
  return "addr:" + address.ip.to_string();
}

namespace {
bool Contains(const std::vector<std::string>& list, std::string_view value) {
  return !value.empty() && std::find(list.begin(), list.end(), value) != list.end();
}
}  // namespace

const config::PeerLimitValues& LimitsFor(const config::PeerLimitsConfig& config,
                                         const identity::PeerIdentity* identity) {
  if (identity == nullptr) return config.limits;
  for (const config::PeerLimitOverride& entry : config.overrides) {
    bool matches = Contains(entry.users, identity->user_login) ||
                   Contains(entry.nodes, identity->node_name) ||
                   Contains(entry.nodes, identity->node_fqdn) ||
                   std::any_of(identity->tags.begin(), identity->tags.end(),
                               [&](const std::string& tag) { return Contains(entry.tags, tag); });
    if (matches) return entry.limits;
  }
  return config.limits;
}

}  // namespace sepal::limits
