// Client-side connection: an HTTP/2 server session that turns each incoming stream into a
// ProxyStream and routes it.
#pragma once

#include <algorithm>
#include <chrono>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include <boost/asio/steady_timer.hpp>

#include "filters/identity_headers/identity_headers.h"
#include "proxy/config/config.h"
#include "proxy/front/client_connection.h"
#include "proxy/front/connection_front.h"
#include "proxy/front/connection_peer.h"
#include "proxy/http2/http2_connection.h"
#include "proxy/identity/identity.h"
#include "proxy/limits/glitch_counter.h"
#include "proxy/limits/peer_limits.h"
#include "proxy/tls/tls_context.h"
#include "proxy/worker/generation.h"

namespace sepal {

class ProxyStream;
class Listener;

class DownstreamConnection final : public Http2Connection,
                                   public ClientConnection,
                                   private ConnectionFront::Owner {
 public:
  // `local_ip`: the address the peer connected to (the PROXY header's destination replaces
  // it), sent to tailscaled to scope the peer's capabilities.
  DownstreamConnection(Worker& worker, Listener& listener, Socket socket,
                       identity::PeerAddress peer, boost::asio::ip::address local_ip = {});
  ~DownstreamConnection() override;

  void Start();
  // Graceful shutdown: GOAWAY; the connection closes once its streams are done.
  void BeginShutdown(bool final_goaway) override;
  void ForceClose(std::string_view reason) override { Close(reason); }

  Listener& listener() const override { return listener_; }
  const std::string& peer() const { return endpoints_.peer_text; }

  // Called by nghttp2 when a stream is finished; destroys the ProxyStream.
  void DestroyStream(int32_t stream_id);

  // --- Peer identity, looked up once per connection before its first stream is routed.
  bool identity_pending() const { return peer_session_.pending(); }
  // The lookup result; null when no identity provider is configured.
  const identity::LookupResult* lookup() const { return peer_session_.lookup(); }
  // Metadata to add to every request; null unless the peer was identified.
  const filters::IdentityHeaders* identity_headers() const {
    return peer_session_.identity_headers();
  }
  // Parks a stream until the lookup completes (bounded by max_concurrent_streams).
  void WaitForIdentity(int32_t stream_id) { waiting_for_identity_.push_back(stream_id); }
  // A stream whose request headers completed in the bytes being processed now: it is
  // authorized and dispatched once the whole read is processed (OnReceivedBatch), so a
  // stream the same read also resets never reaches the upstream (rapid reset).
  void QueueAdmission(int32_t stream_id) { admissions_.push_back(stream_id); }

  // --- Per-peer limits (proxy/limits), taken once the peer's identity is known.
  // Admits an authorized call: an empty view, with *slot holding the peer's call slot
  // (Peer::EndCall when the call ends, if set); or the limit that refuses it (counted in
  // sepal_limit_rejections_total) and the grpc-message in *message.
  std::string_view AdmitCall(std::chrono::steady_clock::time_point now,
                             std::shared_ptr<limits::Peer>* slot, std::string* message);
  // Records a finished call in the activity of the peer this connection counts against
  // (/peers; see ConnectionPeer::RecordCall).
  void RecordCall(std::string_view path, int grpc_status, uint64_t request_bytes,
                  uint64_t response_bytes, std::string_view reason) {
    peer_session_.RecordCall(path, grpc_status, request_bytes, response_bytes, reason);
  }
  // Counts a glitch (limits::glitch); a connection out of glitch tokens gets GOAWAY
  // ENHANCE_YOUR_CALM and closes.
  void Glitch(std::string_view kind);
  // Once a second (from the worker): ends calls whose request stopped arriving.
  void Tick() override;
  // Calls whose buffers hold at least `min_bytes`, for the memory budget's shedding.
  void CollectLargeStreams(size_t min_bytes,
                           std::vector<std::pair<size_t, ProxyStream*>>* out) override;

 private:
  // ConnectionFront::Owner: after the PROXY header and TLS, HTTP/2.
  void OnFrontDone(std::string_view initial_bytes) override { StartHttp2(initial_bytes); }
  void CloseConnection(std::string_view reason) override { Close(reason); }
  void WriteRawAndCloseConnection(std::string bytes, std::string reason) override {
    WriteRawAndClose(std::move(bytes), std::move(reason));
  }
  bool connection_closed() const override { return closed(); }
  std::shared_ptr<void> KeepAlive() override { return shared_from_this(); }
  void StartHttp2(std::string_view initial_bytes);
  // The identity is known: the streams that waited for it go on.
  void OnIdentity();
  bool OnFirstBytes(const uint8_t* data, size_t length) override;
  void OnClose(std::string_view reason) override;
  std::string Describe() const override { return "downstream " + endpoints_.peer_text; }
  void CountProtocolError(std::string_view kind) override;
  void OnReceivedBatch() override;
  // GOAWAY (NO_ERROR) for a connection over its peer's connection cap, once.
  void SendCapGoAway();

  static int OnBeginHeaders(nghttp2_session*, const nghttp2_frame*, void*);
  static int OnHeader(nghttp2_session*, const nghttp2_frame*, nghttp2_rcbuf*, nghttp2_rcbuf*,
                      uint8_t, void*);
  static int OnFrameRecv(nghttp2_session*, const nghttp2_frame*, void*);
  static int OnDataChunk(nghttp2_session*, uint8_t, int32_t, const uint8_t*, size_t, void*);
  static int OnStreamClose(nghttp2_session*, int32_t, uint32_t, void*);
  static int OnFrameSend(nghttp2_session*, const nghttp2_frame*, void*);
  static int OnInvalidFrame(nghttp2_session*, const nghttp2_frame*, int, void*);
  static int OnSendData(nghttp2_session*, nghttp2_frame*, const uint8_t*, size_t,
                        nghttp2_data_source*, void*);

  Listener& listener_;
  // The listener's routes when this connection was accepted: its HTTP/2 limits, PROXY
  // protocol mode and identity provider. (Each stream takes the then-current routes.)
  ListenerRoutesPtr routes_;
  ConnectionFront::Endpoints endpoints_;
  ConnectionFront front_;
  ConnectionPeer peer_session_;
  std::vector<int32_t> waiting_for_identity_;
  std::unordered_map<int32_t, std::unique_ptr<ProxyStream>> streams_;
  static constexpr unsigned kIdleTicksBeforeRelease = 4;  // > a 3 s poll period
  unsigned idle_ticks_ = 0;  // worker ticks in a row without a stream
  std::vector<int32_t> admissions_;

  bool cap_goaway_sent_ = false;
  int idle_ticks_over_cap_ = 0;
  limits::GlitchCounter glitches_;
  bool calming_ = false;  // out of glitch tokens: GOAWAY ENHANCE_YOUR_CALM sent
  bool seen_settings_ = false;
  // WINDOW_UPDATEs the client may send before they count as glitches.
  uint32_t window_update_allowance_ = 16;
  void EarnWindowUpdates() {
    window_update_allowance_ = std::min<uint32_t>(window_update_allowance_ + 2, 1024);
  }
};

}  // namespace sepal
