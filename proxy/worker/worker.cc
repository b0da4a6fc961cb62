// Worker thread lifecycle and connection registry.
#include "proxy/worker/worker.h"

#include <boost/asio/post.hpp>
#include <future>

#include "proxy/common/log.h"
#include "proxy/downstream/downstream_connection.h"
#include "proxy/listener/listener.h"
#include "proxy/upstream/upstream_pool.h"

namespace sepal {

Worker::Worker(unsigned index, config::ConfigSnapshot config,
               identity::IdentityProvider* identity)
    : index_(index),
      config_(std::move(config)),
      identity_(identity),
      work_guard_(io_.get_executor()) {}

Worker::~Worker() { Stop(); }

absl::Status Worker::Init() {
  for (const config::UpstreamConfig& upstream : config_->upstreams) {
    auto pool = std::make_unique<UpstreamPool>(*this, upstream);
    if (absl::Status status = pool->Init(); !status.ok()) return status;
    pools_.push_back(std::move(pool));
  }
  return absl::OkStatus();
}

void Worker::AddListener(std::unique_ptr<Listener> listener) {
  listeners_.push_back(std::move(listener));
}

void Worker::Start() {
  for (auto& listener : listeners_) listener->Start();
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
    std::vector<DownstreamConnection*> snapshot(connections_.begin(), connections_.end());
    for (DownstreamConnection* connection : snapshot) connection->BeginShutdown(false);
    auto timer = std::make_shared<boost::asio::steady_timer>(io_, std::chrono::milliseconds(200));
    timer->async_wait([this, timer](boost::system::error_code) {
      std::vector<DownstreamConnection*> again(connections_.begin(), connections_.end());
      for (DownstreamConnection* connection : again) connection->BeginShutdown(true);
    });
  });
}

void Worker::Stop() {
  if (!thread_.joinable()) return;
  boost::asio::post(io_, [this] {
    std::vector<DownstreamConnection*> snapshot(connections_.begin(), connections_.end());
    for (DownstreamConnection* connection : snapshot) connection->ForceClose("worker stopping");
    for (auto& listener : listeners_) listener->Stop();
    for (auto& pool : pools_) pool->Shutdown();
    work_guard_.reset();
    io_.stop();
  });
  thread_.join();
}

void Worker::Register(DownstreamConnection* connection) {
  connections_.insert(connection);
  connection_count_.store(connections_.size(), std::memory_order_relaxed);
}

void Worker::Unregister(DownstreamConnection* connection) {
  connections_.erase(connection);
  connection_count_.store(connections_.size(), std::memory_order_relaxed);
}

}  // namespace sepal
