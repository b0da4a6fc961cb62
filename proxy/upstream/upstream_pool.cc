// UpstreamPool: picks the least loaded usable connection, opens new ones on demand.
#include "proxy/upstream/upstream_pool.h"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>

#include "proxy/common/log.h"
#include "proxy/common/strings.h"
#include "proxy/stats/proxy_metrics.h"
#include "proxy/stream/proxy_stream.h"
#include "proxy/tls/tls_context.h"
#include "proxy/upstream/upstream_connection.h"
#include "proxy/upstream_http1/http1_upstream_pool.h"
#include "proxy/worker/worker.h"

namespace sepal {

namespace asio = boost::asio;

UpstreamPool::UpstreamPool(Worker& worker, const config::UpstreamConfig& config)
    : worker_(worker),
      config_(config),
      name_(config.name),
      address_text_(config.address.text),
      address_(config.address),
      connect_timeout_(config.connect_timeout) {}

UpstreamPool::~UpstreamPool() = default;

void UpstreamPool::CountConnectFailure() { connect_failures_.Increment(worker_.index()); }

absl::Status UpstreamPool::Init() {
  connect_failures_ = stats::GetFamilies().upstream_connect_failures->WithLabels({name_});
  if (config_.protocol == config::Protocol::kHttp1) {
    http1_ = std::make_unique<Http1UpstreamPool>(worker_, *this);
  }
  if (config_.tls) {
    auto context = tls::MakeClientContext(*config_.tls);
    if (!context.ok()) {
      init_error_ = StrCat("upstream ", name_, ": tls: ", context.status().message());
      return absl::UnavailableError(init_error_);
    }
    tls_context_ = *std::move(context);
    server_name_ = tls::UpstreamServerName(config_);
  }
  if (address_.kind == config::SocketAddress::Kind::kUnix) {
    endpoint_ = asio::generic::stream_protocol::endpoint(
        asio::local::stream_protocol::endpoint(address_.path));
    return absl::OkStatus();
  }
  boost::system::error_code ec;
  asio::ip::tcp::resolver resolver(worker_.io());
  auto results = resolver.resolve(address_.host, std::to_string(address_.port),
                                  asio::ip::tcp::resolver::numeric_service, ec);
  if (ec || results.empty()) {
    init_error_ = StrCat("upstream ", name_, ": cannot resolve ", address_.host, ": ",
                         ec ? ec.message() : std::string("no addresses"));
    return absl::UnavailableError(init_error_);
  }
  endpoint_ = asio::generic::stream_protocol::endpoint(results.begin()->endpoint());
  return absl::OkStatus();
}

void UpstreamPool::Dispatch(ProxyStream* stream) {
  if (!init_error_.empty()) {
    stream->OnUpstreamFailed(init_error_, /*refused=*/false);
    return;
  }
  UpstreamConnection* best = nullptr;
  for (const auto& connection : connections_) {
    if (connection->closed() || connection->draining()) continue;
    if (connection->load() >= connection->max_streams()) continue;
    if (best == nullptr || connection->load() < best->load()) best = connection.get();
  }
  if (best == nullptr) {
    UpstreamConnection::Socket socket(worker_.io());
    auto connection = std::make_shared<UpstreamConnection>(worker_, *this, std::move(socket));
    connections_.push_back(connection);
    best = connection.get();
    best->Add(stream);
    connection->Connect(endpoint_, connect_timeout_);
    return;
  }
  best->Add(stream);
}

bool UpstreamPool::HasReadyCapacity() const {
  for (const auto& connection : connections_) {
    if (connection->ready() && !connection->closed() && !connection->draining() &&
        connection->load() < connection->max_streams()) {
      return true;
    }
  }
  return false;
}

void UpstreamPool::OnConnectionClosed(UpstreamConnection* connection) {
  // Deferred: the connection may be deep in its own call stack right now.
  asio::post(worker_.io(), [this, connection] {
    std::erase_if(connections_, [connection](const auto& c) { return c.get() == connection; });
  });
}

void UpstreamPool::Shutdown() {
  if (http1_) http1_->Shutdown();
  for (const auto& connection : connections_) connection->Shutdown();
}

}  // namespace sepal
