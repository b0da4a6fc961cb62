// TLS contexts for both sides of the proxy (OpenSSL 3 through Asio SSL), and the names
// sepal gives TLS failures.
//
// Both sides speak TLS 1.2 and 1.3 only, with forward-secret AEAD ciphers for 1.2
// (ECDHE + AES-GCM / ChaCha20-Poly1305) and OpenSSL's defaults for 1.3, and insist on ALPN
// "h2": gRPC is HTTP/2 and nothing else.
#pragma once

#include <openssl/ssl.h>

#include <boost/asio/ssl/context.hpp>
#include <chrono>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "proxy/config/config.h"

namespace sepal::tls {

// A listener's context: its certificate chain and key, client-certificate policy, h2 ALPN.
// Immutable once built; new handshakes take the listener's latest one (ServerContextStore)
// while connections already up keep theirs.
struct ServerContext {
  std::shared_ptr<boost::asio::ssl::context> context;
  // Of the leaf, for logs: "/CN=node.example.ts.net, serial 0A1B..., expires Dec  5 ...".
  std::string certificate_subject;
  bool expired = false;  // outside its validity period now (clients will refuse it)
  // The leaf's notAfter (epoch when it cannot be read).
  std::chrono::system_clock::time_point not_after{};
};

// From the listener's PEM files. Errors name the file and OpenSSL's reason (unreadable,
// not PEM, key does not match the certificate, ...).
absl::StatusOr<std::shared_ptr<const ServerContext>> MakeServerContext(
    const config::ListenerTlsConfig& config);
// From PEM text in memory (certificates fetched from tailscaled); `client_ca` etc. still
// come from `config`.
absl::StatusOr<std::shared_ptr<const ServerContext>> MakeServerContextFromPem(
    const config::ListenerTlsConfig& config, std::string_view certificate_chain_pem,
    std::string_view private_key_pem);

// What a handshake on a listener learned besides success or failure; attached to each
// server-side SSL object before the handshake (AttachHandshakeNotes).
struct HandshakeNotes {
  bool offered_h2 = true;  // false: the client offered no ALPN, or no "h2" in it
};
void AttachHandshakeNotes(SSL* ssl, HandshakeNotes* notes);

// Bounded label values of sepal_tls_handshake_errors_total{listener,reason}.
namespace reason {
inline constexpr std::string_view kTimeout = "timeout";
inline constexpr std::string_view kNotTls = "not_tls";           // h2c, HTTP/1.x, garbage
inline constexpr std::string_view kNoAlpnH2 = "no_alpn_h2";
inline constexpr std::string_view kProtocolVersion = "protocol_version";  // < TLS 1.2 etc.
inline constexpr std::string_view kNoSharedCipher = "no_shared_cipher";
inline constexpr std::string_view kClientCert = "client_cert";   // missing or not trusted
inline constexpr std::string_view kPeerAlert = "peer_alert";     // e.g. the client refused ours
// The client closed the connection during the handshake without an alert: what gRPC clients
// (a SuperNode) do when they do not trust sepal's certificate.
inline constexpr std::string_view kClientClosed = "client_closed";
inline constexpr std::string_view kNoCertificate = "no_certificate";  // none loaded yet
inline constexpr std::string_view kOther = "other";
}  // namespace reason

// Maps a failed server-side handshake to one of the reasons above.
std::string_view ClassifyHandshakeError(const boost::system::error_code& ec,
                                        const HandshakeNotes& notes);
// A readable account of a TLS failure: OpenSSL's reason, plus the certificate verification
// result when that was the cause (e.g. "certificate verify failed: Hostname mismatch").
std::string DescribeTlsError(const boost::system::error_code& ec, const SSL* ssl);

// A client context for one upstream: verifies the SuperLink's chain against `ca` (or the
// system store), offers h2, presents the optional client certificate. Hostname and SNI are
// per connection (PrepareClientSession).
absl::StatusOr<std::shared_ptr<boost::asio::ssl::context>> MakeClientContext(
    const config::UpstreamTlsConfig& config);
// The name an upstream's certificate must carry: server_name, or the host of its address.
std::string UpstreamServerName(const config::UpstreamConfig& upstream);
// Sets SNI (for DNS names), the hostname or IP check, and ALPN on a new client session.
absl::Status PrepareClientSession(SSL* ssl, const std::string& server_name);
// True when the handshake agreed on "h2".
bool NegotiatedH2(const SSL* ssl);

// Checks every TLS file of a config the way the server will load it (`sepal --check`,
// Server::Start): certificate/key pairs, client CAs, upstream CAs and client certificates.
// `summary`, if given, gets one line per TLS listener describing its certificate.
absl::Status ValidateTlsFiles(const config::Config& config, std::string* summary = nullptr);
// The upstream half of that (CA files, client certificates).
absl::Status ValidateUpstreamTls(const config::Config& config);

}  // namespace sepal::tls
