// Http1UpstreamPool: idle keep-alive connections, watched; new ones connected on demand.
#include "proxy/upstream_http1/http1_upstream_pool.h"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>

#include "proxy/common/log.h"
#include "proxy/common/log_rate_limit.h"
#include "proxy/common/strings.h"
#include "proxy/upstream/upstream_pool.h"
#include "proxy/worker/worker.h"

namespace sepal {

namespace {
LogRateLimit g_log_connect("upstream connect failures");
}  // namespace

Http1Upstream::Http1Upstream(boost::asio::io_context& io) : transport_(Transport::Socket(io)) {}

Http1UpstreamPool::Http1UpstreamPool(Worker& worker, UpstreamPool& base)
    : worker_(worker), base_(base) {}

Http1UpstreamPool::~Http1UpstreamPool() { Shutdown(); }

void Http1UpstreamPool::Shutdown() {
  for (const auto& connection : idle_) connection->Close();
  idle_.clear();
}

void Http1UpstreamPool::Acquire(Ready ready) {
  auto now = std::chrono::steady_clock::now();
  while (!idle_.empty()) {
    std::shared_ptr<Http1Upstream> connection = std::move(idle_.back());
    idle_.pop_back();
    if (now - connection->idle_since_ >= kIdleTimeout) {
      connection->Close();
      continue;
    }
    boost::system::error_code ignored;
    connection->transport().socket().cancel(ignored);  // the idle watch
    boost::asio::post(worker_.io(), [ready = std::move(ready), connection]() mutable {
      ready(std::move(connection), {});
    });
    return;
  }
  Connect(std::move(ready));
}

void Http1UpstreamPool::Connect(Ready ready) {
  if (!base_.init_error().empty()) {
    boost::asio::post(worker_.io(), [ready = std::move(ready), why = base_.init_error()] {
      ready(nullptr, why);
    });
    return;
  }
  auto connection = std::make_shared<Http1Upstream>(worker_.io());
  auto timer = std::make_shared<boost::asio::steady_timer>(worker_.io(), base_.connect_timeout());
  auto timed_out = std::make_shared<bool>(false);
  timer->async_wait([connection, timed_out](boost::system::error_code ec) {
    if (ec) return;
    *timed_out = true;
    connection->Close();
  });
  Transport::Socket& socket = connection->transport().socket();
  socket.async_connect(
      base_.endpoint(), [this, alive = liveness_.Watch(), connection, timer, timed_out,
                         ready = std::move(ready)](boost::system::error_code ec) mutable {
        timer->cancel();
        if (alive.expired()) {
          ready(nullptr, "upstream pool gone (reload)");
          return;
        }
        if (ec || *timed_out) {
          base_.CountConnectFailure();
          std::string why =
              StrCat("cannot connect to upstream ", base_.name(), " (", base_.address_text(),
                     "): ", *timed_out ? std::string("timed out") : ec.message());
          if (g_log_connect.Allow()) LogWarning(why);
          connection->Close();
          ready(nullptr, std::move(why));
          return;
        }
        if (base_.config().address.kind == config::SocketAddress::Kind::kTcp) {
          int one = 1;
          ::setsockopt(connection->transport().socket().native_handle(), IPPROTO_TCP,
                       TCP_NODELAY, &one, sizeof(one));
        }
        ready(std::move(connection), {});
      });
}

void Http1UpstreamPool::Release(std::shared_ptr<Http1Upstream> connection) {
  if (connection->buffer().size() > 0 || idle_.size() >= kMaxIdle) {
    connection->Close();  // bytes nobody asked for: the connection is out of step
    return;
  }
  connection->buffer().shrink_to_fit();  // an idle connection keeps no read buffer
  connection->idle_since_ = std::chrono::steady_clock::now();
  WatchIdle(connection);
  idle_.push_back(std::move(connection));
}

void Http1UpstreamPool::WatchIdle(const std::shared_ptr<Http1Upstream>& connection) {
  std::weak_ptr<Http1Upstream> weak = connection;
  connection->transport().socket().async_wait(
      Transport::Socket::wait_read,
      [this, alive = liveness_.Watch(), weak](boost::system::error_code ec) {
        if (ec || alive.expired()) return;  // cancelled: taken for a request
        // Readable while idle: the upstream closed it (or sent bytes nobody asked for).
        if (auto watched = weak.lock()) Forget(watched.get());
      });
}

void Http1UpstreamPool::Forget(Http1Upstream* connection) {
  std::erase_if(idle_, [connection](const std::shared_ptr<Http1Upstream>& c) {
    if (c.get() != connection) return false;
    c->Close();
    return true;
  });
}

}  // namespace sepal
