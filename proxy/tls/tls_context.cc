// TLS context construction (OpenSSL 3 via Asio SSL) and handshake error naming.
#include "proxy/tls/tls_context.h"

#include <ctime>

#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <boost/asio/error.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ssl/error.hpp>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "proxy/common/strings.h"

namespace sepal::tls {

namespace ssl = boost::asio::ssl;

namespace {

// TLS 1.2 suites: forward secrecy and AEAD only. (TLS 1.3 suites are all AEAD; OpenSSL's
// default list is kept.)
constexpr const char* kTls12Ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

// ALPN wire format: length-prefixed protocol names.
constexpr unsigned char kAlpnH2[] = {2, 'h', '2'};

// The most recent OpenSSL error's reason, and an empty queue afterwards.
std::string TakeOpenSslError() {
  unsigned long code = 0;
  unsigned long last = 0;
  while ((code = ERR_get_error()) != 0) last = code;
  if (last == 0) return "unknown OpenSSL error";
  char text[256];
  ERR_error_string_n(last, text, sizeof(text));
  const char* reason = ERR_reason_error_string(last);
  return reason != nullptr ? std::string(reason) : std::string(text);
}

// OpenSSL refuses a key that does not belong to the loaded certificate with this error.
bool IsKeyMismatch(const boost::system::error_code& ec) {
  auto code = static_cast<unsigned long>(ec.value());
  return ec.category() == boost::asio::error::get_ssl_category() &&
         ERR_GET_LIB(code) == ERR_LIB_X509 && ERR_GET_REASON(code) == X509_R_KEY_VALUES_MISMATCH;
}

std::string Quoted(const std::string& text) { return StrCat("\"", text, "\""); }

int HandshakeNotesIndex() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

HandshakeNotes* NotesOf(SSL* ssl) {
  return static_cast<HandshakeNotes*>(SSL_get_ex_data(ssl, HandshakeNotesIndex()));
}

// A client that sends no ALPN extension at all cannot speak gRPC: refuse it in the
// ClientHello with the no_application_protocol alert (the ALPN callback never runs then).
// An HTTP/1.1 listener (`arg` set) takes it: no ALPN means HTTP/1.1.
int OnClientHello(SSL* ssl, int* alert, void* arg) {
  if (arg != nullptr) return SSL_CLIENT_HELLO_SUCCESS;
  const unsigned char* ignored = nullptr;
  size_t ignored_length = 0;
  if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_application_layer_protocol_negotiation,
                                &ignored, &ignored_length) == 1) {
    return SSL_CLIENT_HELLO_SUCCESS;
  }
  if (HandshakeNotes* notes = NotesOf(ssl)) notes->offered_h2 = false;
  *alert = SSL_AD_NO_APPLICATION_PROTOCOL;
  return SSL_CLIENT_HELLO_ERROR;
}

// Selects "h2" (or, on an HTTP/1.1 listener, `arg` set, "http/1.1") from the client's
// list; anything else ends the handshake with the no_application_protocol alert.
int OnAlpnSelect(SSL* ssl, const unsigned char** out, unsigned char* out_length,
                 const unsigned char* in, unsigned int in_length, void* arg) {
  std::string_view wanted = arg != nullptr ? "http/1.1" : "h2";
  for (unsigned int i = 0; i < in_length;) {
    unsigned int length = in[i];
    if (i + 1 + length > in_length) break;
    if (length == wanted.size() && std::memcmp(in + i + 1, wanted.data(), length) == 0) {
      *out = in + i + 1;
      *out_length = static_cast<unsigned char>(length);
      return SSL_TLSEXT_ERR_OK;
    }
    i += 1 + length;
  }
  if (HandshakeNotes* notes = NotesOf(ssl)) notes->offered_h2 = false;
  return SSL_TLSEXT_ERR_ALERT_FATAL;
}

// Protocol versions, ciphers and options both sides share.
absl::Status ApplyCommonSettings(ssl::context& context) {
  SSL_CTX* ctx = context.native_handle();
  if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
      SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1 ||
      SSL_CTX_set_cipher_list(ctx, kTls12Ciphers) != 1) {
    return absl::InternalError(StrCat("cannot set TLS versions/ciphers: ", TakeOpenSslError()));
  }
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                               SSL_OP_CIPHER_SERVER_PREFERENCE);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  return absl::OkStatus();
}

std::string LeafDescription(SSL_CTX* ctx) {
  X509* leaf = SSL_CTX_get0_certificate(ctx);
  if (leaf == nullptr) return "(no certificate)";
  char subject[256] = "";
  X509_NAME_oneline(X509_get_subject_name(leaf), subject, sizeof(subject));
  std::string serial = "?";
  if (BIGNUM* bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(leaf), nullptr)) {
    if (char* hex = BN_bn2hex(bn)) {
      serial = hex;
      OPENSSL_free(hex);
    }
    BN_free(bn);
  }
  std::string expires = "?";
  if (BIO* bio = BIO_new(BIO_s_mem())) {
    if (ASN1_TIME_print(bio, X509_get0_notAfter(leaf)) == 1) {
      char* data = nullptr;
      long length = BIO_get_mem_data(bio, &data);
      expires.assign(data, static_cast<size_t>(length));
    }
    BIO_free(bio);
  }
  return StrCat(subject, ", serial ", serial, ", expires ", expires);
}

bool LeafExpired(SSL_CTX* ctx) {
  X509* leaf = SSL_CTX_get0_certificate(ctx);
  return leaf != nullptr && (X509_cmp_current_time(X509_get0_notAfter(leaf)) < 0 ||
                             X509_cmp_current_time(X509_get0_notBefore(leaf)) > 0);
}

std::chrono::system_clock::time_point LeafNotAfter(SSL_CTX* ctx) {
  X509* leaf = SSL_CTX_get0_certificate(ctx);
  std::tm tm{};
  if (leaf == nullptr || ASN1_TIME_to_tm(X509_get0_notAfter(leaf), &tm) != 1) return {};
  return std::chrono::system_clock::from_time_t(timegm(&tm));
}

// Client-certificate policy and ALPN for a listener context whose pair is loaded.
absl::StatusOr<std::shared_ptr<const ServerContext>> FinishServerContext(
    std::shared_ptr<ssl::context> context, const config::ListenerTlsConfig& config,
    const std::string& pair_description) {
  SSL_CTX* ctx = context->native_handle();
  if (SSL_CTX_check_private_key(ctx) != 1) {
    return absl::InvalidArgumentError(StrCat(pair_description, ": the private key does not "
                                             "match the certificate: ",
                                             TakeOpenSslError()));
  }
  if (!config.client_ca.empty()) {
    boost::system::error_code ec;
    context->load_verify_file(config.client_ca, ec);
    STACK_OF(X509_NAME)* names = ec ? nullptr : SSL_load_client_CA_file(config.client_ca.c_str());
    if (ec || names == nullptr) {
      std::string why = ec ? ec.message() : TakeOpenSslError();
      return absl::InvalidArgumentError(
          StrCat("client_ca ", Quoted(config.client_ca), ": cannot load: ", why));
    }
    SSL_CTX_set_client_CA_list(ctx, names);  // what the client is asked to present
    context->set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert);
  } else {
    context->set_verify_mode(ssl::verify_none);
  }
  // A non-null argument marks an HTTP/1.1 listener for the callbacks.
  static char http1_marker;
  void* alpn_arg = config.alpn == config::Protocol::kHttp1 ? &http1_marker : nullptr;
  SSL_CTX_set_client_hello_cb(ctx, &OnClientHello, alpn_arg);
  SSL_CTX_set_alpn_select_cb(ctx, &OnAlpnSelect, alpn_arg);
  auto result = std::make_shared<ServerContext>();
  result->context = std::move(context);
  result->certificate_subject = LeafDescription(ctx);
  result->expired = LeafExpired(ctx);
  result->not_after = LeafNotAfter(ctx);
  return std::shared_ptr<const ServerContext>(std::move(result));
}

absl::StatusOr<std::shared_ptr<ssl::context>> NewServerContext() {
  auto context = std::make_shared<ssl::context>(ssl::context::tls_server);
  if (absl::Status status = ApplyCommonSettings(*context); !status.ok()) return status;
  return context;
}

}  // namespace

absl::StatusOr<std::shared_ptr<const ServerContext>> MakeServerContext(
    const config::ListenerTlsConfig& config) {
  auto context = NewServerContext();
  if (!context.ok()) return context.status();
  boost::system::error_code ec;
  (*context)->use_certificate_chain_file(config.certificate, ec);
  if (ec) {
    return absl::InvalidArgumentError(StrCat("certificate ", Quoted(config.certificate),
                                             ": cannot load: ", ec.message()));
  }
  (*context)->use_private_key_file(config.private_key, ssl::context::pem, ec);
  if (ec) {
    if (IsKeyMismatch(ec)) {
      return absl::InvalidArgumentError(StrCat("private_key ", Quoted(config.private_key),
                                               " does not match certificate ",
                                               Quoted(config.certificate)));
    }
    return absl::InvalidArgumentError(StrCat("private_key ", Quoted(config.private_key),
                                             ": cannot load: ", ec.message()));
  }
  return FinishServerContext(*std::move(context), config,
                             StrCat("certificate ", Quoted(config.certificate), " and private_key ",
                                    Quoted(config.private_key)));
}

absl::StatusOr<std::shared_ptr<const ServerContext>> MakeServerContextFromPem(
    const config::ListenerTlsConfig& config, std::string_view certificate_chain_pem,
    std::string_view private_key_pem) {
  auto context = NewServerContext();
  if (!context.ok()) return context.status();
  boost::system::error_code ec;
  (*context)->use_certificate_chain(
      boost::asio::buffer(certificate_chain_pem.data(), certificate_chain_pem.size()), ec);
  if (ec) return absl::InvalidArgumentError(StrCat("certificate (PEM): cannot load: ", ec.message()));
  (*context)->use_private_key(boost::asio::buffer(private_key_pem.data(), private_key_pem.size()),
                              ssl::context::pem, ec);
  if (ec) {
    return absl::InvalidArgumentError(IsKeyMismatch(ec)
                                          ? "the private key does not match the certificate"
                                          : StrCat("private key (PEM): cannot load: ",
                                                   ec.message()));
  }
  return FinishServerContext(*std::move(context), config, "certificate and key (PEM)");
}

void AttachHandshakeNotes(SSL* ssl, HandshakeNotes* notes) {
  SSL_set_ex_data(ssl, HandshakeNotesIndex(), notes);
}

std::string_view ClassifyHandshakeError(const boost::system::error_code& ec,
                                        const HandshakeNotes& notes) {
  if (!notes.offered_h2) return reason::kNoAlpnH2;
  if (ec == boost::asio::error::eof || ec == boost::asio::ssl::error::stream_truncated ||
      ec == boost::asio::error::connection_reset || ec == boost::asio::error::broken_pipe) {
    return reason::kClientClosed;
  }
  if (ec.category() != boost::asio::error::get_ssl_category()) return reason::kOther;
  int why = ERR_GET_REASON(static_cast<unsigned long>(ec.value()));
  switch (why) {
    case SSL_R_UNSUPPORTED_PROTOCOL:
    case SSL_R_NO_PROTOCOLS_AVAILABLE:
    case SSL_R_WRONG_VERSION_NUMBER:
    case SSL_R_UNKNOWN_PROTOCOL:
    case SSL_R_VERSION_TOO_LOW:
      return reason::kProtocolVersion;
    case SSL_R_NO_SHARED_CIPHER:
      return reason::kNoSharedCipher;
    case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
    case SSL_R_CERTIFICATE_VERIFY_FAILED:
    case SSL_R_NO_CERTIFICATES_RETURNED:
      return reason::kClientCert;
    default:
      break;
  }
  // Alerts the peer sent arrive as reasons SSL_AD_REASON_OFFSET + alert number.
  if (why > SSL_AD_REASON_OFFSET && why < SSL_AD_REASON_OFFSET + 256) return reason::kPeerAlert;
  return reason::kOther;
}

std::string DescribeTlsError(const boost::system::error_code& ec, const SSL* ssl) {
  std::string text = ec.message();
  if (ec.category() == boost::asio::error::get_ssl_category()) {
    // Asio appends "(SSL routines)"; the reason alone reads better in a gRPC message.
    if (const char* reason = ERR_reason_error_string(static_cast<unsigned long>(ec.value()))) {
      text = reason;
    }
  } else if (ec == ssl::error::stream_truncated || ec == boost::asio::error::eof) {
    text = "the peer closed the connection during the handshake";
  }
  if (ssl != nullptr) {
    long verify = SSL_get_verify_result(ssl);
    if (verify != X509_V_OK) text = StrCat(text, ": ", X509_verify_cert_error_string(verify));
  }
  return text;
}

absl::StatusOr<std::shared_ptr<ssl::context>> MakeClientContext(
    const config::UpstreamTlsConfig& config) {
  auto context = std::make_shared<ssl::context>(ssl::context::tls_client);
  if (absl::Status status = ApplyCommonSettings(*context); !status.ok()) return status;
  boost::system::error_code ec;
  if (config.ca.empty()) {
    context->set_default_verify_paths(ec);
    if (ec) return absl::InvalidArgumentError(StrCat("system trust store: ", ec.message()));
  } else {
    context->load_verify_file(config.ca, ec);
    if (ec) return absl::InvalidArgumentError(StrCat("ca ", Quoted(config.ca), ": cannot load: ",
                                                     ec.message()));
  }
  context->set_verify_mode(ssl::verify_peer);
  if (!config.certificate.empty()) {
    context->use_certificate_chain_file(config.certificate, ec);
    if (ec) {
      return absl::InvalidArgumentError(StrCat("certificate ", Quoted(config.certificate),
                                               ": cannot load: ", ec.message()));
    }
    context->use_private_key_file(config.private_key, ssl::context::pem, ec);
    if (ec || SSL_CTX_check_private_key(context->native_handle()) != 1) {
      std::string why = ec ? ec.message() : TakeOpenSslError();
      return absl::InvalidArgumentError(StrCat("private_key ", Quoted(config.private_key),
                                               ": cannot use with certificate ",
                                               Quoted(config.certificate), ": ", why));
    }
  }
  if (SSL_CTX_set_alpn_protos(context->native_handle(), kAlpnH2, sizeof(kAlpnH2)) != 0) {
    return absl::InternalError(StrCat("cannot set ALPN: ", TakeOpenSslError()));
  }
  return context;
}

std::string UpstreamServerName(const config::UpstreamConfig& upstream) {
  if (upstream.tls && !upstream.tls->server_name.empty()) return upstream.tls->server_name;
  return upstream.address.host;
}

absl::Status PrepareClientSession(SSL* ssl, const std::string& server_name) {
  boost::system::error_code ec;
  boost::asio::ip::make_address(server_name, ec);
  bool is_ip = !ec;
  X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
  int ok = 1;
  if (is_ip) {
    // SNI carries DNS names only (RFC 6066); an address is checked against IP SANs.
    ok = X509_VERIFY_PARAM_set1_ip_asc(param, server_name.c_str());
  } else {
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    ok = SSL_set1_host(ssl, server_name.c_str()) == 1 &&
         SSL_set_tlsext_host_name(ssl, server_name.c_str()) == 1;
  }
  if (ok != 1) {
    return absl::InvalidArgumentError(
        StrCat("cannot use server name ", Quoted(server_name), ": ", TakeOpenSslError()));
  }
  return absl::OkStatus();
}

bool NegotiatedH2(const SSL* ssl) {
  const unsigned char* protocol = nullptr;
  unsigned int length = 0;
  SSL_get0_alpn_selected(ssl, &protocol, &length);
  return length == 2 && std::memcmp(protocol, "h2", 2) == 0;
}

absl::Status ValidateTlsFiles(const config::Config& config, std::string* summary) {
  for (const config::ListenerConfig& listener : config.listeners) {
    if (!listener.tls || listener.tls->source != config::ListenerTlsConfig::Source::kFiles) {
      continue;
    }
    auto context = MakeServerContext(*listener.tls);
    if (!context.ok()) {
      return absl::InvalidArgumentError(
          StrCat("listener ", listener.name, ": tls: ", context.status().message()));
    }
    if (summary != nullptr) {
      absl::StrAppend(summary, "listener ", listener.name, " certificate: ",
                      (*context)->certificate_subject,
                      (*context)->expired ? " (NOT VALID NOW: expired or not yet valid)" : "",
                      "\n");
    }
  }
  return ValidateUpstreamTls(config);
}

absl::Status ValidateUpstreamTls(const config::Config& config) {
  for (const config::UpstreamConfig& upstream : config.upstreams) {
    if (!upstream.tls) continue;
    auto context = MakeClientContext(*upstream.tls);
    if (!context.ok()) {
      return absl::InvalidArgumentError(
          StrCat("upstream ", upstream.name, ": tls: ", context.status().message()));
    }
  }
  return absl::OkStatus();
}

}  // namespace sepal::tls
