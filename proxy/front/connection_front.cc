// ConnectionFront: PROXY header → TLS sniff → handshake → ALPN, then the listener's protocol.
#include "proxy/front/connection_front.h"

#include <cstring>

#include "proxy/common/log.h"
#include "proxy/common/log_rate_limit.h"
#include "proxy/common/strings.h"
#include "proxy/listener/listener.h"
#include "proxy/listener/proxy_protocol.h"
#include "proxy/worker/worker.h"

namespace sepal {

namespace {

constexpr std::string_view kClientPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

// Lines a peer can cause, each kind rate-limited (the metrics count every event).
LogRateLimit g_log_bad_input("bad client input before the protocol");
LogRateLimit g_log_tls("TLS handshake failures");

bool IsHttp1(const config::ListenerConfig& listener) {
  return listener.protocol == config::Protocol::kHttp1;
}

}  // namespace

bool LooksLikeHttp1(const uint8_t* data, size_t length) {
  size_t i = 0;
  while (i < length && i < 8 && data[i] >= 'A' && data[i] <= 'Z') ++i;
  return i >= 3 && i < length && data[i] == ' ';
}

ConnectionFront::ConnectionFront(Owner& owner, Worker& worker, Listener& listener,
                                 const ListenerRoutes& routes, Transport& transport,
                                 Endpoints* endpoints)
    : owner_(owner),
      worker_(worker),
      listener_(listener),
      routes_(routes),
      transport_(transport),
      endpoints_(*endpoints) {}

void ConnectionFront::Start() {
  if (routes_.config.proxy_protocol != config::ProxyProtocol::kNone) {
    ReadProxyHeader();
    return;
  }
  StartTransport({});
}

void ConnectionFront::Cancel() {
  if (handshake_timer_) handshake_timer_->cancel();
  // Its handler holds the connection: without the cancel a connection closed during its
  // PROXY header (bad header, client gone) and its buffers stayed alive for the full 5 s.
  if (proxy_header_timer_) proxy_header_timer_->cancel();
}

bool ConnectionFront::started_late() const {
  return routes_.config.tls || routes_.config.proxy_protocol != config::ProxyProtocol::kNone;
}

void ConnectionFront::CountProtocolError(std::string_view kind) {
  listener_.stats().ProtocolError(kind);
}

void ConnectionFront::StartTransport(std::string_view initial_bytes) {
  if (routes_.config.tls) {
    StartTls(initial_bytes);
  } else {
    owner_.OnFrontDone(initial_bytes);
  }
}

void ConnectionFront::StartTls(std::string_view initial_bytes) {
  tls_context_ = routes_.tls_slot ? routes_.tls_slot->Current() : nullptr;
  if (!tls_context_) {
    FailTls(tls::reason::kNoCertificate, "no certificate yet (waiting for tailscaled)");
    return;
  }
  // The deadline covers sniffing and the handshake. The timer may fire after the connection
  // is gone: it holds only a weak reference.
  handshake_timer_ = std::make_unique<boost::asio::steady_timer>(
      worker_.io(), routes_.config.tls->handshake_timeout);
  std::weak_ptr<void> weak = owner_.KeepAlive();
  handshake_timer_->async_wait([this, weak](boost::system::error_code ec) {
    auto alive = weak.lock();
    if (ec || !alive || owner_.connection_closed() || handshake_done_) return;
    FailTls(tls::reason::kTimeout, StrCat("no TLS handshake within ",
                                          routes_.config.tls->handshake_timeout.count(), " ms"));
  });
  tls_first_bytes_.assign(initial_bytes);
  SniffTls();
}

void ConnectionFront::SniffTls() {
  // A TLS record starts 0x16 (handshake) 0x03 (major version); two bytes decide.
  const auto& bytes = tls_first_bytes_;
  if (bytes.size() >= 2 || (bytes.size() == 1 && static_cast<uint8_t>(bytes[0]) != 0x16)) {
    if (static_cast<uint8_t>(bytes[0]) == 0x16 && static_cast<uint8_t>(bytes[1]) == 0x03) {
      Handshake();
    } else {
      RefuseNonTls();
    }
    return;
  }
  ReadMoreRaw(&tls_first_bytes_, [this](boost::system::error_code ec) {
    if (ec) {
      // Connected and left without a byte (port probes): nothing to count.
      owner_.CloseConnection("closed before the TLS handshake");
      return;
    }
    SniffTls();
  });
}

void ConnectionFront::RefuseNonTls() {
  const auto* data = reinterpret_cast<const uint8_t*>(tls_first_bytes_.data());
  size_t length = tls_first_bytes_.size();
  if (LooksLikeHttp1(data, length)) {
    std::string_view body =
        IsHttp1(routes_.config)
            ? "sepal: this port accepts TLS (HTTPS) only; use an https:// URL\n"
            : "sepal: this port accepts TLS (HTTP/2, gRPC) only; use https / a TLS gRPC channel\n";
    if (g_log_bad_input.Allow()) {
      LogWarning("listener ", listener_.name(), ": ", endpoints_.peer_text,
                 " sent a cleartext HTTP/1.x request on a TLS port; closing");
    }
    listener_.stats().TlsHandshakeError(tls::reason::kNotTls);
    owner_.WriteRawAndCloseConnection(
        StrCat("HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n"
               "Connection: close\r\nContent-Length: ",
               body.size(), "\r\n\r\n", body),
        "HTTP/1.x request on a TLS port");
    return;
  }
  size_t n = std::min(length, kClientPreface.size());
  FailTls(tls::reason::kNotTls, std::memcmp(data, kClientPreface.data(), n) == 0
                                    ? "cleartext HTTP/2 (h2c) on a TLS port"
                                    : "the first bytes are not a TLS ClientHello");
}

void ConnectionFront::Handshake() {
  Transport::TlsStream& stream = transport_.StartTls(tls_context_->context);
  tls::AttachHandshakeNotes(stream.native_handle(), &handshake_notes_);
  std::shared_ptr<void> keep = owner_.KeepAlive();
  // The bytes already read are the start of the ClientHello; the handshake consumes them
  // (tls_first_bytes_ stays untouched until it completes).
  stream.async_handshake(boost::asio::ssl::stream_base::server,
                         boost::asio::buffer(tls_first_bytes_),
                         [this, keep](boost::system::error_code ec, size_t) {
                           if (owner_.connection_closed()) return;
                           OnHandshake(ec);
                         });
}

void ConnectionFront::OnHandshake(const boost::system::error_code& ec) {
  SSL* ssl = transport_.tls()->native_handle();
  if (ec) {
    FailTls(tls::ClassifyHandshakeError(ec, handshake_notes_), tls::DescribeTlsError(ec, ssl));
    return;
  }
  // The ALPN callbacks refuse a wrong protocol already; belt and braces.
  if (IsHttp1(routes_.config) ? tls::NegotiatedH2(ssl) : !tls::NegotiatedH2(ssl)) {
    FailTls(tls::reason::kNoAlpnH2, IsHttp1(routes_.config)
                                        ? "the client negotiated h2 on an HTTP/1.1 listener"
                                        : "the client did not negotiate h2");
    return;
  }
  handshake_done_ = true;
  handshake_timer_->cancel();
  tls_first_bytes_.clear();
  tls_first_bytes_.shrink_to_fit();
  LogDebug("listener ", listener_.name(), ": ", endpoints_.peer_text, ": TLS ",
           SSL_get_version(ssl), " ", SSL_get_cipher_name(ssl));
  owner_.OnFrontDone({});
}

void ConnectionFront::FailTls(std::string_view reason, std::string_view detail) {
  if (g_log_tls.Allow()) {
    LogWarning("listener ", listener_.name(), ": ", endpoints_.peer_text,
               ": TLS handshake failed (", reason, "): ", detail, "; closing");
  }
  listener_.stats().TlsHandshakeError(reason);
  owner_.CloseConnection(StrCat("TLS handshake failed: ", detail));
}

template <typename Then>
void ConnectionFront::ReadMoreRaw(std::string* buffer, Then then) {
  std::shared_ptr<void> keep = owner_.KeepAlive();
  size_t old_size = buffer->size();
  buffer->resize(old_size + 512);
  transport_.socket().async_read_some(
      boost::asio::buffer(buffer->data() + old_size, 512),
      [this, keep, buffer, old_size, then = std::move(then)](boost::system::error_code ec,
                                                             size_t n) mutable {
        if (owner_.connection_closed()) return;
        buffer->resize(old_size + n);
        then(ec);
      });
}

void ConnectionFront::ReadProxyHeader() {
  if (!proxy_header_timer_) {
    proxy_header_timer_ =
        std::make_unique<boost::asio::steady_timer>(worker_.io(), std::chrono::seconds(5));
    std::shared_ptr<void> keep = owner_.KeepAlive();
    proxy_header_timer_->async_wait([this, keep](boost::system::error_code ec) {
      if (ec || owner_.connection_closed() || proxy_header_done_) return;
      if (g_log_bad_input.Allow()) {
        LogWarning("listener ", listener_.name(), ": ", endpoints_.peer_text,
                   ": no complete PROXY protocol header within 5 s; closing");
      }
      CountProtocolError("proxy_header");
      owner_.CloseConnection("PROXY header timeout");
    });
  }
  ReadMoreRaw(&proxy_header_buffer_, [this](boost::system::error_code ec) {
    if (ec) {
      owner_.CloseConnection("closed before the PROXY header");
      return;
    }
    const auto* data = reinterpret_cast<const uint8_t*>(proxy_header_buffer_.data());
    ProxyParseResult parsed =
        ParseProxyHeader(data, proxy_header_buffer_.size(), routes_.config.proxy_protocol);
    switch (parsed.status) {
      case ProxyParseStatus::kNeedMore:
        ReadProxyHeader();
        return;
      case ProxyParseStatus::kError:
        if (g_log_bad_input.Allow()) {
          LogWarning("listener ", listener_.name(), ": ", endpoints_.peer_text,
                     ": bad PROXY protocol header: ", parsed.error, "; closing");
        }
        CountProtocolError("proxy_header");
        owner_.CloseConnection("bad PROXY header");
        return;
      case ProxyParseStatus::kDone:
        break;
    }
    proxy_header_done_ = true;
    proxy_header_timer_->cancel();
    if (!parsed.header.local) {
      endpoints_.peer = {parsed.header.source_ip, parsed.header.source_port};
      endpoints_.peer_text = endpoints_.peer.ToString();
      endpoints_.destination = parsed.header.destination_ip;
    }
    std::string rest = proxy_header_buffer_.substr(parsed.header.header_length);
    proxy_header_buffer_.clear();
    proxy_header_buffer_.shrink_to_fit();
    StartTransport(rest);
  });
}

}  // namespace sepal
