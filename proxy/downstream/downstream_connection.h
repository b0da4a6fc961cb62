// Client-side connection: an HTTP/2 server session that turns each incoming stream into a
// ProxyStream and routes it.
#pragma once

#include <memory>
#include <string>
#include <unordered_map>

#include "proxy/config/config.h"
#include "proxy/http2/http2_connection.h"

namespace sepal {

class ProxyStream;
class Listener;

class DownstreamConnection final : public Http2Connection {
 public:
  DownstreamConnection(Worker& worker, Listener& listener, Socket socket, std::string peer);
  ~DownstreamConnection() override;

  void Start();
  // Graceful shutdown: GOAWAY; the connection closes once its streams are done.
  void BeginShutdown(bool final_goaway);
  void ForceClose(std::string_view reason) { Close(reason); }

  Listener& listener() const { return listener_; }
  const std::string& peer() const { return peer_; }
  // Keeps the config (routes, allow rules) of this connection alive while it lives.
  const config::ConfigSnapshot& config() const { return config_; }

  // Called by nghttp2 when a stream is finished; destroys the ProxyStream.
  void DestroyStream(int32_t stream_id);

 private:
  bool OnFirstBytes(const uint8_t* data, size_t length) override;
  void OnClose(std::string_view reason) override;
  std::string Describe() const override { return "downstream " + peer_; }

  static int OnBeginHeaders(nghttp2_session*, const nghttp2_frame*, void*);
  static int OnHeader(nghttp2_session*, const nghttp2_frame*, nghttp2_rcbuf*, nghttp2_rcbuf*,
                      uint8_t, void*);
  static int OnFrameRecv(nghttp2_session*, const nghttp2_frame*, void*);
  static int OnDataChunk(nghttp2_session*, uint8_t, int32_t, const uint8_t*, size_t, void*);
  static int OnStreamClose(nghttp2_session*, int32_t, uint32_t, void*);
  static int OnInvalidFrame(nghttp2_session*, const nghttp2_frame*, int, void*);

  Listener& listener_;
  config::ConfigSnapshot config_;
  std::string peer_;
  std::unordered_map<int32_t, std::unique_ptr<ProxyStream>> streams_;
};

}  // namespace sepal
