// TailscaleIdentityProvider: address triage, the cache and its invalidation, WhoIs answers.
#include "proxy/identity/tailscale_provider.h"

#include <algorithm>
#include <boost/asio/post.hpp>
#include <boost/json.hpp>
#include <utility>

#include "proxy/common/strings.h"
#include "proxy/identity/whois_parser.h"

namespace sepal::identity {
namespace {

namespace net = boost::asio;
using Kind = LookupResult::Kind;

LookupResult Result(Kind kind, std::string detail) {
  LookupResult result;
  result.kind = kind;
  result.detail = std::move(detail);
  return result;
}

net::ip::address Unmapped(const net::ip::address& ip) {
  if (ip.is_v6() && ip.to_v6().is_v4_mapped()) {
    return net::ip::make_address_v4(net::ip::v4_mapped, ip.to_v6());
  }
  return ip;
}

// tailscaled's error bodies are one line of text plus "\n"; keep them short and on one line
// since they end up in grpc-message and logs.
std::string ErrorText(std::string_view body) {
  constexpr size_t kMaxChars = 200;
  std::string text(body.substr(0, kMaxChars));
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ')) {
    text.pop_back();
  }
  for (char& c : text) {
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
  }
  if (body.size() > kMaxChars) text += "...";
  return text;
}

// Whether a watch-ipn-bus notification may change what WhoIs answers. Go marshals every
// pointer field of ipn.Notify, so "NetMap":null is in every line: only non-null values
// count. A line that does not parse (or was cut at the size limit) counts too.
bool NotificationChangesPeers(std::string_view line) {
  boost::system::error_code ec;
  boost::json::value parsed =
      boost::json::parse(boost::json::string_view(line.data(), line.size()), ec);
  const boost::json::object* notify = ec ? nullptr : parsed.if_object();
  if (notify == nullptr) return true;
  for (std::string_view key :
       {"NetMap", "PeersChanged", "PeersRemoved", "SelfChange", "State", "LoginFinished"}) {
    const boost::json::value* value = notify->if_contains(key);
    if (value != nullptr && !value->is_null()) return true;
  }
  return false;
}

}  // namespace

TailscaleIdentityProvider::TailscaleIdentityProvider(const config::TailscaleIdentityConfig& config)
    : TailscaleIdentityProvider(config, Options{}) {}

TailscaleIdentityProvider::TailscaleIdentityProvider(const config::TailscaleIdentityConfig& config,
                                                     Options options)
    : config_(config),
      options_(options),
      work_(io_context_.get_executor()),
      client_(io_context_.get_executor(), config.socket),
      watch_backoff_(options.watch_initial_backoff),
      watch_retry_(io_context_) {
  net::post(io_context_, [this] { StartWatch(); });
  thread_ = std::thread([this] { io_context_.run(); });
}

TailscaleIdentityProvider::~TailscaleIdentityProvider() { Shutdown(); }

bool TailscaleIdentityProvider::IsTailscaleAddress(const net::ip::address& address) {
  net::ip::address ip = Unmapped(address);
  if (ip.is_v4()) {
    uint32_t bits = ip.to_v4().to_uint();
    bool cgnat = (bits & 0xFFC00000u) == 0x64400000u;     // 100.64.0.0/10
    bool chromeos = (bits & 0xFFFFFE00u) == 0x64735C00u;  // 100.115.92.0/23
    return cgnat && !chromeos;
  }
  net::ip::address_v6::bytes_type bytes = ip.to_v6().to_bytes();
  static constexpr unsigned char kUla[6] = {0xfd, 0x7a, 0x11, 0x5c, 0xa1, 0xe0};  // /48
  return std::equal(std::begin(kUla), std::end(kUla), bytes.begin());
}

void TailscaleIdentityProvider::Lookup(const PeerAddress& peer, net::any_io_executor reply_to,
                                       LookupCallback done) {
  LookupToward(peer, LookupDestination{}, std::move(reply_to), std::move(done));
}

void TailscaleIdentityProvider::LookupToward(const PeerAddress& peer,
                                             const LookupDestination& destination,
                                             net::any_io_executor reply_to,
                                             LookupCallback done) {
  PeerAddress address{Unmapped(peer.ip), peer.port};
  bool loopback = address.ip.is_loopback();
  if (!loopback && !IsTailscaleAddress(address.ip)) {
    Reply(reply_to, std::move(done),
          Result(Kind::kNotInTailnet, "address is not a Tailscale address"));
    return;
  }
  std::unique_lock lock(post_mutex_);
  if (stopping_) {
    lock.unlock();
    Reply(reply_to, std::move(done), Result(Kind::kFailed, "shutting down"));
    return;
  }
  net::post(io_context_, [this, address, destination, loopback,
                          waiter = Waiter{std::move(reply_to), std::move(done)}]() mutable {
    StartLookup(address, destination, loopback, std::move(waiter));
  });
}

void TailscaleIdentityProvider::Reply(const net::any_io_executor& reply_to, LookupCallback done,
                                      LookupResult result) {
  switch (result.kind) {
    case Kind::kFound:
      found_.fetch_add(1);
      break;
    case Kind::kNotInTailnet:
      not_in_tailnet_.fetch_add(1);
      break;
    case Kind::kFailed:
      failed_.fetch_add(1);
      break;
  }
  net::post(reply_to, [done = std::move(done), result = std::move(result)]() mutable {
    done(std::move(result));
  });
}

void TailscaleIdentityProvider::StartLookup(const PeerAddress& peer,
                                            const LookupDestination& destination, bool loopback,
                                            Waiter waiter) {
  if (shutting_down_) {
    Reply(waiter.reply_to, std::move(waiter.done), Result(Kind::kFailed, "shutting down"));
    return;
  }
  std::string addr = peer.ToString();
  // Tailnet addresses are one node whatever the port; a loopback ip:port is one connection.
  // A destination scopes the CapMap: its answer is another entry.
  std::string key = (loopback ? addr : peer.ip.to_string()) + destination.Key();
  if (!loopback) {
    auto cached = cache_.find(key);
    if (cached != cache_.end()) {
      if (std::chrono::steady_clock::now() < cached->second.expires) {
        cache_hits_.fetch_add(1);
        Reply(waiter.reply_to, std::move(waiter.done), cached->second.result);
        return;
      }
      cache_.erase(cached);
    }
  }
  auto [pending, inserted] = pending_.try_emplace(key);
  pending->second.waiters.push_back(std::move(waiter));
  if (!inserted) return;  // joins the request already on its way
  pending->second.cacheable = !loopback;
  pending->second.generation = generation_;
  whois_requests_sent_.fetch_add(1);
  client_.WhoIs(addr, destination, config_.lookup_timeout,
                [this, key, addr](LocalApiResponse response) {
    OnWhoIsResponse(key, addr, std::move(response));
  });
}

void TailscaleIdentityProvider::OnWhoIsResponse(const std::string& key, const std::string& addr,
                                                LocalApiResponse response) {
  auto it = pending_.find(key);
  if (it == pending_.end()) return;
  PendingLookup pending = std::move(it->second);
  pending_.erase(it);
  LookupResult result = Interpret(addr, response);
  // A flush while the request was out means the answer may predate the change.
  if (pending.cacheable && pending.generation == generation_) Store(key, result);
  for (Waiter& waiter : pending.waiters) {
    Reply(waiter.reply_to, std::move(waiter.done), result);
  }
}

LookupResult TailscaleIdentityProvider::Interpret(const std::string& addr,
                                                  const LocalApiResponse& response) const {
  switch (response.failure) {
    case LocalApiResponse::Failure::kConnect:
      return Result(Kind::kFailed,
                    StrCat("tailscaled unreachable at ", config_.socket, ": ", response.error));
    case LocalApiResponse::Failure::kTimeout:
      return Result(Kind::kFailed, StrCat("tailscaled WhoIs timed out after ",
                                          config_.lookup_timeout.count(), " ms"));
    case LocalApiResponse::Failure::kIo:
      return Result(Kind::kFailed, StrCat("tailscaled WhoIs failed: ", response.error));
    case LocalApiResponse::Failure::kNone:
      break;
  }
  if (response.status == 200) {
    absl::StatusOr<PeerIdentity> identity = ParseWhoIsResponse(response.body);
    if (!identity.ok()) {
      return Result(Kind::kFailed, StrCat("tailscaled WhoIs answer for ", addr,
                                          " is unusable: ", identity.status().message()));
    }
    LookupResult result;
    result.kind = Kind::kFound;
    result.identity = std::make_shared<const PeerIdentity>(*std::move(identity));
    return result;
  }
  if (response.status == 404) {
    return Result(Kind::kNotInTailnet,
                  StrCat("tailscaled does not know ", addr, " (", ErrorText(response.body), ")"));
  }
  return Result(Kind::kFailed, StrCat("tailscaled WhoIs returned ", response.status, ": ",
                                      ErrorText(response.body)));
}

void TailscaleIdentityProvider::Store(const std::string& key, const LookupResult& result) {
  if (result.kind == Kind::kFailed) return;  // retried on the next connection
  std::chrono::milliseconds ttl = result.kind == Kind::kFound
                                      ? config_.cache_ttl
                                      : std::min(config_.cache_ttl, options_.negative_ttl);
  if (ttl.count() <= 0) return;
  auto now = std::chrono::steady_clock::now();
  if (cache_.size() >= options_.max_cache_entries) {
    std::erase_if(cache_, [now](const auto& entry) { return entry.second.expires <= now; });
    if (cache_.size() >= options_.max_cache_entries) FlushCache();
  }
  cache_[key] = CacheEntry{result, now + ttl};
}

void TailscaleIdentityProvider::FlushCache() {
  cache_.clear();
  ++generation_;
  cache_flushes_.fetch_add(1);
}

void TailscaleIdentityProvider::StartWatch() {
  if (shutting_down_) return;
  watch_established_ = false;
  watch_ = client_.WatchIpnBus(
      kWatchMask, [this](std::string_view line) { OnWatchLine(line); },
      [this](std::string_view reason) { OnWatchDisconnect(reason); });
}

void TailscaleIdentityProvider::OnWatchLine(std::string_view line) {
  if (!watch_established_) {
    // tailscaled sends a first notification at once. Whatever changed while no stream was
    // open went unseen, so start from an empty cache.
    watch_established_ = true;
    watch_backoff_ = options_.watch_initial_backoff;
    FlushCache();
    // After the flush, so whoever sees the count also sees the flush.
    watch_connects_.fetch_add(1);
    return;
  }
  if (NotificationChangesPeers(line)) FlushCache();
}

void TailscaleIdentityProvider::OnWatchDisconnect(std::string_view reason) {
  (void)reason;  // the next WhoIs reports tailscaled's state to whoever looks
  watch_.reset();
  watch_established_ = false;
  watch_retry_.expires_after(watch_backoff_);
  watch_retry_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec) StartWatch();
  });
  watch_backoff_ = std::min(watch_backoff_ * 2, options_.watch_max_backoff);
}

void TailscaleIdentityProvider::Shutdown() {
  {
    std::lock_guard lock(post_mutex_);
    if (stopping_) return;
    stopping_ = true;
    net::post(io_context_, [this] { StopOnThread(); });
  }
  if (thread_.joinable()) thread_.join();
}

void TailscaleIdentityProvider::StopOnThread() {
  shutting_down_ = true;
  if (watch_) watch_->Cancel();
  watch_.reset();
  watch_retry_.cancel();
  for (auto& [key, pending] : pending_) {
    for (Waiter& waiter : pending.waiters) {
      Reply(waiter.reply_to, std::move(waiter.done), Result(Kind::kFailed, "shutting down"));
    }
  }
  pending_.clear();
  work_.reset();
  // WhoIs exchanges still out are dropped with the io_context; their callbacks never run.
  io_context_.stop();
}

TailscaleIdentityProvider::Stats TailscaleIdentityProvider::stats() const {
  Stats stats;
  stats.found = found_.load();
  stats.not_in_tailnet = not_in_tailnet_.load();
  stats.failed = failed_.load();
  stats.cache_hits = cache_hits_.load();
  stats.whois_requests_sent = whois_requests_sent_.load();
  stats.cache_flushes = cache_flushes_.load();
  stats.watch_connects = watch_connects_.load();
  return stats;
}

}  // namespace sepal::identity
