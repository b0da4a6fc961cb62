// Identity from the local tailscaled: cached, coalesced WhoIs lookups on a background
// thread, flushed when the netmap changes.
#pragma once

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "proxy/config/config.h"
#include "proxy/identity/identity.h"
#include "proxy/identity/localapi_client.h"

namespace sepal::identity {

// Threading: one background thread owns an io_context, the LocalAPI client, the cache and
// the watch stream; nothing of it is shared, so it needs no locks. Lookup() may be called
// from any thread: it posts there, and each answer is posted back to the caller's
// `reply_to` executor.
//
// Rules, in order, for a peer address (IPv4-mapped IPv6 is treated as the IPv4):
//  - outside 100.64.0.0/10 (minus 100.115.92.0/23) and fd7a:115c:a1e0::/48 and not
//    loopback: kNotInTailnet at once, tailscaled is not asked;
//  - loopback (userspace networking: tailscaled forwards tailnet connections from
//    127.0.0.1:<ephemeral>): WhoIs of that exact ip:port, never cached, since the port is
//    reused by other peers later;
//  - tailnet address: cached by IP; found for `cache_ttl`, not-in-tailnet (404) for
//    min(cache_ttl, negative_ttl); failures are never cached;
//  - concurrent lookups of one key share one WhoIs request;
//  - 200 -> parsed identity (a parse error is kFailed), 404 -> kNotInTailnet, anything else
//    (other status, timeout, tailscaled unreachable) -> kFailed, which callers turn into
//    UNAVAILABLE: fail closed.
//
// Invalidation: a watch-ipn-bus stream (mask kWatchMask) flushes the whole cache whenever
// a notification carries a peer or netmap change, and whenever the stream (re)connects,
// since notifications may have been missed. It reconnects with exponential backoff while
// tailscaled is down; lookups never wait for it. The TTL is the backstop.
class TailscaleIdentityProvider final : public IdentityProvider {
 public:
  // watch-ipn-bus mask (ipn.NotifyWatchOpt bits):
  //  - NotifyNoPrivateKeys (1<<4): required when sepal does not run as root/operator;
  //  - NotifyPeerChanges (1<<12) | NotifyPeerPatches (1<<15): tailscaled 1.10x on Linux no
  //    longer puts NetMap on the bus after the first message; these bits bring peer
  //    additions, removals and full-node replacements (tags, CapMap, addresses) as
  //    PeersChanged / PeersRemoved, while Online/LastSeen churn rides as PeerChangedPatch,
  //    which does not flush. Older tailscaled ignores unknown bits and sends NetMap.
  static constexpr uint64_t kWatchMask = (1u << 4) | (1u << 12) | (1u << 15);

  struct Options {
    std::chrono::milliseconds negative_ttl{5000};
    std::chrono::milliseconds watch_initial_backoff{1000};
    std::chrono::milliseconds watch_max_backoff{10000};
    // Entries beyond this trigger a sweep of expired ones, then a full flush if needed.
    size_t max_cache_entries = 65536;
  };

  // Monotonic counters, readable from any thread.
  struct Stats {
    uint64_t found = 0;  // answers by kind, cache hits included
    uint64_t not_in_tailnet = 0;
    uint64_t failed = 0;
    uint64_t cache_hits = 0;
    uint64_t whois_requests_sent = 0;
    uint64_t cache_flushes = 0;
    uint64_t watch_connects = 0;  // watch-ipn-bus streams that delivered their first line
  };

  explicit TailscaleIdentityProvider(const config::TailscaleIdentityConfig& config);
  TailscaleIdentityProvider(const config::TailscaleIdentityConfig& config, Options options);
  ~TailscaleIdentityProvider() override;

  void Lookup(const PeerAddress& peer, boost::asio::any_io_executor reply_to,
              LookupCallback done) override;
  // With a destination: WhoIs carries dst_ip / svc_name, and the answer is cached per
  // (peer, destination), since the CapMap differs by destination.
  void LookupToward(const PeerAddress& peer, const LookupDestination& destination,
                    boost::asio::any_io_executor reply_to, LookupCallback done) override;
  // Stops the watch and the thread; lookups still pending or arriving later complete with
  // kFailed "shutting down". Idempotent; not to be called from the provider's own thread.
  void Shutdown() override;
  std::string_view name() const override { return "tailscale"; }

  Stats stats() const;

  // In 100.64.0.0/10 (but not 100.115.92.0/23) or fd7a:115c:a1e0::/48, after unmapping
  // IPv4-mapped IPv6.
  static bool IsTailscaleAddress(const boost::asio::ip::address& ip);

 private:
  struct Waiter {
    boost::asio::any_io_executor reply_to;
    LookupCallback done;
  };
  struct PendingLookup {
    std::vector<Waiter> waiters;
    bool cacheable = false;
    uint64_t generation = 0;  // cache generation when the request was sent
  };
  struct CacheEntry {
    LookupResult result;
    std::chrono::steady_clock::time_point expires;
  };

  // Everything below runs on the provider thread.
  void StartLookup(const PeerAddress& peer, const LookupDestination& destination, bool loopback,
                   Waiter waiter);
  void OnWhoIsResponse(const std::string& key, const std::string& addr, LocalApiResponse response);
  LookupResult Interpret(const std::string& addr, const LocalApiResponse& response) const;
  void Store(const std::string& key, const LookupResult& result);
  void FlushCache();
  void StartWatch();
  void OnWatchLine(std::string_view line);
  void OnWatchDisconnect(std::string_view reason);
  void StopOnThread();

  // Any thread.
  void Reply(const boost::asio::any_io_executor& reply_to, LookupCallback done,
             LookupResult result);

  const config::TailscaleIdentityConfig config_;
  const Options options_;

  // Declared first so it is destroyed last: handlers it still holds own sockets and timers.
  boost::asio::io_context io_context_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_;
  LocalApiClient client_;

  // Provider thread state.
  std::unordered_map<std::string, CacheEntry> cache_;
  std::unordered_map<std::string, PendingLookup> pending_;
  uint64_t generation_ = 0;
  std::shared_ptr<LocalApiClient::Watch> watch_;
  bool watch_established_ = false;
  std::chrono::milliseconds watch_backoff_;
  boost::asio::steady_timer watch_retry_;
  bool shutting_down_ = false;

  // Guards only the hand-over to the thread, so no lookup is posted after the shutdown
  // task (it would never run and its callback would be lost).
  std::mutex post_mutex_;
  bool stopping_ = false;

  std::atomic<uint64_t> found_{0};
  std::atomic<uint64_t> not_in_tailnet_{0};
  std::atomic<uint64_t> failed_{0};
  std::atomic<uint64_t> cache_hits_{0};
  std::atomic<uint64_t> whois_requests_sent_{0};
  std::atomic<uint64_t> cache_flushes_{0};
  std::atomic<uint64_t> watch_connects_{0};

  std::thread thread_;  // last: started once everything above exists
};

}  // namespace sepal::identity
