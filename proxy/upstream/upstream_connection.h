// Flower-side connection: an HTTP/2 client session (TCP or unix socket, optionally TLS)
// multiplexing the requests of many ProxyStreams of one worker.
#pragma once

#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/steady_timer.hpp>
#include <string>
#include <unordered_set>
#include <vector>

#include "proxy/http2/http2_connection.h"

namespace sepal {

class ProxyStream;
class UpstreamPool;

class UpstreamConnection final : public Http2Connection {
 public:
  UpstreamConnection(Worker& worker, UpstreamPool& pool, Socket socket);
  ~UpstreamConnection() override;

  void Connect(const boost::asio::generic::stream_protocol::endpoint& endpoint,
               std::chrono::milliseconds timeout);

  bool ready() const { return ready_; }
  bool connecting() const { return !ready_ && !closed(); }
  bool draining() const { return draining_; }
  size_t load() const { return active_.size() + pending_.size(); }
  size_t max_streams() const;

  // Queues until connected, or submits now.
  void Add(ProxyStream* stream);
  // Submits the request; returns the new stream id or a negative nghttp2 error.
  int32_t Submit(ProxyStream* stream, const std::vector<nghttp2_nv>& headers, bool has_body);
  // The stream no longer wants this connection: forget it, resetting its h2 stream with
  // `reset_code` if still open.
  void Detach(ProxyStream* stream, int32_t stream_id, uint32_t reset_code);
  void Shutdown();

 private:
  // TLS upstreams: handshake (SNI, hostname check, ALPN h2) within the connect timeout.
  void Handshake();
  void FailHandshake(std::string_view why);
  void OnConnected();
  void FailAll(std::string_view why, bool refused);
  void OnClose(std::string_view reason) override;
  std::string Describe() const override;
  void MaybeRetire();

  static int OnHeader(nghttp2_session*, const nghttp2_frame*, nghttp2_rcbuf*, nghttp2_rcbuf*,
                      uint8_t, void*);
  static int OnFrameRecv(nghttp2_session*, const nghttp2_frame*, void*);
  static int OnDataChunk(nghttp2_session*, uint8_t, int32_t, const uint8_t*, size_t, void*);
  static int OnStreamClose(nghttp2_session*, int32_t, uint32_t, void*);
  static int OnFrameNotSend(nghttp2_session*, const nghttp2_frame*, int, void*);
  static int OnSendData(nghttp2_session*, nghttp2_frame*, const uint8_t*, size_t,
                        nghttp2_data_source*, void*);

  UpstreamPool& pool_;
  boost::asio::steady_timer connect_timer_;
  bool ready_ = false;
  bool draining_ = false;
  std::vector<ProxyStream*> pending_;
  std::unordered_set<ProxyStream*> active_;
};

}  // namespace sepal
