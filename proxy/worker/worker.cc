// Worker thread lifecycle, configuration generations and connection registry.
#include "proxy/worker/worker.h"

#include "proxy/http2/http2_connection.h"

#include <boost/asio/post.hpp>
#include <algorithm>
#include <future>

#include "proxy/common/log.h"
#include "proxy/common/log_rate_limit.h"
#include "proxy/front/client_connection.h"
#include "proxy/stats/proxy_metrics.h"
#include "proxy/stream/proxy_stream.h"
#include "proxy/listener/listener.h"
#include "proxy/upstream/upstream_pool.h"

namespace sepal {

Worker::Worker(unsigned index)
    : index_(index),
      work_guard_(io_.get_executor()),
      connections_gauge_(
          stats::GetFamilies().worker_connections->WithLabels({std::to_string(index)})) {}

Worker::~Worker() {
  Stop();
  // Before io_ goes: sockets and timers must not outlive their io_context.
  retired_listeners_.clear();
  listeners_.clear();
  retired_pools_.clear();
  generation_.reset();
}

void Worker::Apply(WorkerPlan plan) {
  auto generation = std::make_shared<Generation>();
  static_cast<GenerationSettings&>(*generation) = std::move(plan.settings);

  // Pools: an upstream whose config is unchanged keeps its pool (and warm connections).
  std::vector<std::shared_ptr<UpstreamPool>> old_pools;
  if (generation_) old_pools = generation_->pools;
  for (const config::UpstreamConfig& upstream : generation->config->upstreams) {
    std::shared_ptr<UpstreamPool> pool;
    for (auto& old : old_pools) {
      if (old && old->config() == upstream) {
        pool = std::move(old);
        break;
      }
    }
    if (!pool) {
      pool = std::make_shared<UpstreamPool>(*this, upstream);
      // The Server resolved every address before planning; a failure here (DNS changed in
      // between) leaves the pool answering UNAVAILABLE with the reason.
      if (absl::Status status = pool->Init(); !status.ok()) LogError(status.message());
    }
    generation->pools.push_back(std::move(pool));
  }
  for (auto& old : old_pools) {
    if (old) retired_pools_.push_back(std::move(old));
  }
  generation_ = generation;

  // Listeners: same name and socket → new routes; new socket → new listener (the old one
  // of that name, if any, retires); absent from the config → retire.
  std::vector<std::unique_ptr<Listener>> kept;
  for (const config::ListenerConfig& listener_config : generation->config->listeners) {
    auto routes = std::make_shared<const ListenerRoutes>(generation, listener_config);
    auto acceptor = plan.new_acceptors.find(listener_config.name);
    auto existing = std::find_if(listeners_.begin(), listeners_.end(), [&](const auto& l) {
      return l && l->name() == listener_config.name;
    });
    if (acceptor == plan.new_acceptors.end() && existing != listeners_.end()) {
      (*existing)->Update(std::move(routes));
      kept.push_back(std::move(*existing));
      continue;
    }
    if (acceptor == plan.new_acceptors.end()) {
      LogError("worker ", index_, ": no socket for listener ", listener_config.name);
      continue;
    }
    if (existing != listeners_.end()) RetireListener(std::move(*existing));
    auto listener = std::make_unique<Listener>(*this, listener_config.name,
                                               std::move(acceptor->second), std::move(routes));
    if (running_ && !draining_) listener->Start();
    kept.push_back(std::move(listener));
  }
  for (auto& listener : listeners_) {
    if (listener) RetireListener(std::move(listener));
  }
  listeners_ = std::move(kept);
  SweepRetiredPools();
}

void Worker::ApplyAndWait(WorkerPlan plan) {
  std::promise<void> applied;
  auto shared_plan = std::make_shared<WorkerPlan>(std::move(plan));
  boost::asio::post(io_, [this, shared_plan, &applied] {
    Apply(std::move(*shared_plan));
    applied.set_value();
  });
  applied.get_future().wait();
}

void Worker::RetireListener(std::unique_ptr<Listener> listener) {
  listener->Retire();
  if (listener->open_connections() == 0) return;  // nothing to drain: destroyed now
  // Its connections get the same two-step GOAWAY as a drain; what is still open after
  // drain_timeout is closed.
  // The timers name the listener by id: it may be gone (and its address reused) by then.
  uint64_t id = listener->id();
  auto connections_of = [this](uint64_t listener_id) {
    std::vector<ClientConnection*> found;
    for (ClientConnection* connection : connections_) {
      if (connection->listener().id() == listener_id) found.push_back(connection);
    }
    return found;
  };
  for (ClientConnection* connection : connections_of(id)) connection->BeginShutdown(false);
  auto final_goaway =
      std::make_shared<boost::asio::steady_timer>(io_, std::chrono::milliseconds(200));
  final_goaway->async_wait([id, connections_of, final_goaway](boost::system::error_code) {
    for (ClientConnection* connection : connections_of(id)) connection->BeginShutdown(true);
  });
  auto deadline = std::make_shared<boost::asio::steady_timer>(
      io_, generation_ ? generation_->config->drain_timeout : std::chrono::seconds(30));
  deadline->async_wait([id, connections_of, deadline](boost::system::error_code) {
    std::vector<ClientConnection*> left = connections_of(id);
    if (!left.empty()) {
      LogWarning("listener ", left.front()->listener().name(),
                 " (removed by reload): closing ", left.size(),
                 " connections still open after drain_timeout");
    }
    for (ClientConnection* connection : left) connection->ForceClose("listener removed");
  });
  retired_listeners_.push_back(std::move(listener));
}

void Worker::ReleaseRetiredListener(Listener* listener) {
  // Deferred: called from inside the listener's last connection's close path.
  boost::asio::post(io_, [this, listener] {
    std::erase_if(retired_listeners_, [listener](const auto& l) { return l.get() == listener; });
  });
}

void Worker::SweepRetiredPools() {
  // A retired pool is only referenced here once every stream (via its ListenerRoutes) that
  // could dispatch to it is gone; then its connections are idle and can be closed. It is
  // destroyed once they have all closed.
  std::erase_if(retired_pools_, [](const std::shared_ptr<UpstreamPool>& pool) {
    if (pool.use_count() > 1) return false;
    if (pool->connection_count() == 0) return true;
    pool->Shutdown();
    return false;
  });
  if (retired_pools_.empty() || sweep_timer_) return;
  sweep_timer_ = std::make_unique<boost::asio::steady_timer>(io_, std::chrono::seconds(1));
  sweep_timer_->async_wait([this](boost::system::error_code ec) {
    sweep_timer_.reset();
    if (!ec) SweepRetiredPools();
  });
}

void Worker::ScheduleTick() {
  tick_timer_->expires_after(std::chrono::seconds(1));
  tick_timer_->async_wait([this](boost::system::error_code ec) {
    if (ec) return;
    ++ticks_;
    idle_releases_left_ = kIdleReleasesPerTick;
    chunk_pool_.Tick();  // what a burst left in the pool goes back within seconds
    // "N similar lines suppressed" even when no further line of that kind comes.
    if (index_ == 0) LogRateLimit::FlushAll();
    // The memory budget asks for shedding by bumping its epoch (at most once a second).
    if (generation_ && generation_->memory) {
      uint64_t epoch = generation_->memory->shed_epoch();
      if (epoch != seen_shed_epoch_) {
        seen_shed_epoch_ = epoch;
        ShedLargestStreams();
      }
    }
    // Connections may close (and unregister) while ticking.
    std::vector<ClientConnection*> snapshot(connections_.begin(), connections_.end());
    for (ClientConnection* connection : snapshot) {
      if (connections_.contains(connection)) connection->Tick();
    }
    ScheduleTick();
  });
}

void Worker::ShedLargestStreams() {
  constexpr size_t kMinBytes = 64 * 1024;  // below that a call is not worth ending
  constexpr size_t kMaxPerTick = 32;
  std::vector<std::pair<size_t, ProxyStream*>> large;
  for (ClientConnection* connection : connections_) {
    connection->CollectLargeStreams(kMinBytes, &large);
  }
  if (large.empty()) return;
  std::sort(large.begin(), large.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  size_t total = 0;
  for (const auto& [bytes, stream] : large) total += bytes;
  // The largest first, until half of what these calls hold is released.
  size_t shed = 0;
  size_t count = 0;
  for (const auto& [bytes, stream] : large) {
    if (shed >= total / 2 || count == kMaxPerTick) break;
    stream->Shed();
    shed += bytes;
    ++count;
  }
  chunk_pool_.Release();  // the freed chunks go back to the allocator, not the pool
  LogWarning("worker ", index_, ": over the memory budget: ended the ", count,
             " calls holding the most memory (", shed >> 10, " KiB)");
}

void Worker::Start() {
  running_ = true;
  for (auto& listener : listeners_) listener->Start();
  tick_timer_ = std::make_unique<boost::asio::steady_timer>(io_);
  ScheduleTick();
  thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), ("sepal-w" + std::to_string(index_)).c_str());
    io_.run();
  });
}

void Worker::BeginDrain() {
  boost::asio::post(io_, [this] {
    draining_ = true;
    for (auto& listener : listeners_) listener->Stop();
    // Two-step GOAWAY: first a notice that no new streams should be opened, then (after a
    // round trip's grace) the final GOAWAY with the last stream id we accepted.
    std::vector<ClientConnection*> snapshot(connections_.begin(), connections_.end());
    for (ClientConnection* connection : snapshot) connection->BeginShutdown(false);
    auto timer = std::make_shared<boost::asio::steady_timer>(io_, std::chrono::milliseconds(200));
    timer->async_wait([this, timer](boost::system::error_code) {
      std::vector<ClientConnection*> again(connections_.begin(), connections_.end());
      for (ClientConnection* connection : again) connection->BeginShutdown(true);
    });
  });
}

void Worker::Stop() {
  if (!thread_.joinable()) return;
  boost::asio::post(io_, [this] {
    std::vector<ClientConnection*> snapshot(connections_.begin(), connections_.end());
    for (ClientConnection* connection : snapshot) connection->ForceClose("worker stopping");
    for (auto& listener : listeners_) listener->Stop();
    if (generation_) {
      for (auto& pool : generation_->pools) pool->Shutdown();
    }
    for (auto& pool : retired_pools_) pool->Shutdown();
    if (sweep_timer_) sweep_timer_->cancel();
    if (tick_timer_) tick_timer_->cancel();
    work_guard_.reset();
    io_.stop();
  });
  thread_.join();
}

void Worker::MarkForFlush(std::shared_ptr<Http2Connection> connection) {
  to_flush_.push_back(std::move(connection));
  if (batch_depth_ > 0 || flush_posted_) return;
  flush_posted_ = true;
  boost::asio::post(io_, [this] {
    flush_posted_ = false;
    FlushBatch batch(*this);
  });
}

void Worker::FlushMarked() {
  // A flush can mark more connections (acknowledging bytes opens the other side's window):
  // those go in the next round; the rounds end when nothing is marked.
  ++batch_depth_;  // what the flushes mark joins the next round, not a posted handler
  std::vector<std::shared_ptr<Http2Connection>> round;
  while (!to_flush_.empty()) {
    round.swap(to_flush_);
    for (const std::shared_ptr<Http2Connection>& connection : round) connection->FlushMarked();
    round.clear();
  }
  --batch_depth_;
}

void Worker::Register(ClientConnection* connection) {
  if (connections_.insert(connection).second) connections_gauge_.Add(index_, 1);
  connection_count_.store(connections_.size(), std::memory_order_relaxed);
}

void Worker::Unregister(ClientConnection* connection) {
  if (connections_.erase(connection) > 0) connections_gauge_.Add(index_, -1);
  connection_count_.store(connections_.size(), std::memory_order_relaxed);
}

}  // namespace sepal
