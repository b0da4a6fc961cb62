// The front of every client connection, whatever protocol follows: the PROXY protocol header
// (bounded in time), then on a TLS listener the sniff of the first bytes, the handshake
// (bounded) and the ALPN check. It hands the connection on with the bytes already read.
//
//   accept → [PROXY header] → [TLS: sniff → handshake → ALPN] → protocol (HTTP/2 or HTTP/1.1)
//
// Owned by the connection, which owns the Transport it runs on.
#pragma once

#include <boost/asio/ip/address.hpp>
#include <boost/asio/steady_timer.hpp>
#include <memory>
#include <string>
#include <string_view>

#include "proxy/config/config.h"
#include "proxy/http2/transport.h"
#include "proxy/identity/identity.h"
#include "proxy/tls/tls_context.h"
#include "proxy/worker/generation.h"

namespace sepal {

class Listener;
class Worker;

class ConnectionFront {
 public:
  // What the front needs of its connection.
  class Owner {
   public:
    // The front is done: speak the listener's protocol, starting with `initial_bytes`.
    virtual void OnFrontDone(std::string_view initial_bytes) = 0;
    virtual void CloseConnection(std::string_view reason) = 0;
    virtual void WriteRawAndCloseConnection(std::string bytes, std::string reason) = 0;
    virtual bool connection_closed() const = 0;
    // Keeps the connection alive across the front's asynchronous steps.
    virtual std::shared_ptr<void> KeepAlive() = 0;

   protected:
    ~Owner() = default;
  };

  // What the connection is, as the front may revise it (a PROXY header names the real client
  // and the address it dialled).
  struct Endpoints {
    identity::PeerAddress peer;
    std::string peer_text;  // peer as text, for logs and messages
    // The address the peer connected to, sent to tailscaled to scope its capabilities.
    boost::asio::ip::address destination;
  };

  ConnectionFront(Owner& owner, Worker& worker, Listener& listener, const ListenerRoutes& routes,
                  Transport& transport, Endpoints* endpoints);
  ConnectionFront(const ConnectionFront&) = delete;
  ConnectionFront& operator=(const ConnectionFront&) = delete;

  void Start();
  // The connection closed: stop the timers (their handlers hold the connection).
  void Cancel();
  // The protocol starts later than accept (after a PROXY header or a handshake): the
  // connection may have missed a drain's GOAWAY.
  bool started_late() const;

 private:
  // Appends up to 512 bytes read from the socket itself (before any TLS) to `*buffer`,
  // then calls then(ec) unless the connection was closed meanwhile.
  template <typename Then>
  void ReadMoreRaw(std::string* buffer, Then then);
  void ReadProxyHeader();
  void StartTransport(std::string_view initial_bytes);
  void StartTls(std::string_view initial_bytes);
  // Reads until the first bytes tell a TLS ClientHello from cleartext HTTP/2, HTTP/1.x or
  // garbage (which are refused without a handshake).
  void SniffTls();
  void RefuseNonTls();
  void Handshake();
  void OnHandshake(const boost::system::error_code& ec);
  // Logs, counts sepal_tls_handshake_errors_total{reason} and closes.
  void FailTls(std::string_view reason, std::string_view detail);
  void CountProtocolError(std::string_view kind);

  Owner& owner_;
  Worker& worker_;
  Listener& listener_;
  const ListenerRoutes& routes_;
  Transport& transport_;
  Endpoints& endpoints_;

  std::string proxy_header_buffer_;
  std::unique_ptr<boost::asio::steady_timer> proxy_header_timer_;
  bool proxy_header_done_ = false;
  // TLS: the context this connection's handshake uses (the listener's latest at the start),
  // the bytes read before the handshake (fed to it) and its deadline.
  std::shared_ptr<const tls::ServerContext> tls_context_;
  tls::HandshakeNotes handshake_notes_;
  std::string tls_first_bytes_;
  std::unique_ptr<boost::asio::steady_timer> handshake_timer_;
  bool handshake_done_ = false;
};

// "GET / HTTP/1.1", "POST ...": the first bytes of an HTTP/1.x request (HTTP/2's own preface
// starts "PRI * HTTP/2.0").
bool LooksLikeHttp1(const uint8_t* data, size_t length);

}  // namespace sepal
