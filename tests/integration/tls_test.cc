// TLS on both sides: grpc++ TLS clients through a TLS listener, client certificates,
// cleartext and non-h2 clients on a TLS port, handshake timeouts, certificate rotation on
// reload (and the in-memory pair API), and TLS to the upstream. Certificates are made at
// test time (tests/support/test_pki).
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <functional>
#include <thread>

#include "proxy/metrics/metrics.h"
#include "proxy/tls/tls_context.h"
#include "tests/integration/loopback.h"
#include "tests/integration/proxy_fixture.h"
#include "tests/integration/sepal_process.h"
#include "tests/support/test_pki.h"

// Shapes are written with designated initializers naming only what differs from the default.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

namespace sepal::test {
namespace {

// A client leaf (clientAuth only, no SANs) named `common_name`.
LeafOptions ClientLeaf(const std::string& common_name) {
  LeafOptions options;
  options.common_name = common_name;
  options.dns_names = {};
  options.ip_addresses = {};
  options.server_auth = false;
  options.client_auth = true;
  return options;
}

double MetricNow(const std::string& series) {
  return SeriesValue(metrics::DefaultRegistry().Serialize(), series);
}

std::string HandshakeErrors(const std::string& reason) {
  return "sepal_tls_handshake_errors_total{listener=\"fleet\",reason=\"" + reason + "\"}";
}

// Waits up to 3 s for a counter to reach `value` (workers count on their own thread).
bool WaitForMetric(const std::string& series, double value) {
  for (int i = 0; i < 300; ++i) {
    if (MetricNow(series) >= value) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

// What a raw OpenSSL client saw of sepal's TLS listener.
struct RawHandshake {
  bool ok = false;
  std::string error;   // OpenSSL's reason when !ok
  std::string serial;  // of the certificate presented
  std::string alpn;
};

struct RawOptions {
  std::string alpn = "h2";  // "" = no ALPN extension at all
  int max_version = TLS1_3_VERSION;
  std::string prefix;  // sent in cleartext before the ClientHello (a PROXY header)
  std::string verify_ca_pem;  // verify the server's chain against this CA ("" = no check)
};

// Handshakes over `fd` (connected, owned by the caller); `after` may use the session.
RawHandshake RawTlsHandshakeOn(int fd, const RawOptions& options,
                               const std::function<void(SSL*)>& after = {});

RawHandshake RawTlsHandshake(uint16_t port, const RawOptions& options = {}) {
  int fd = ConnectLoopback(port);
  if (fd < 0) return RawHandshake{.error = "connect failed"};
  RawHandshake result = RawTlsHandshakeOn(fd, options);
  close(fd);
  return result;
}

RawHandshake RawTlsHandshakeOn(int fd, const RawOptions& options,
                               const std::function<void(SSL*)>& after) {
  RawHandshake result;
  if (!options.prefix.empty() &&
      write(fd, options.prefix.data(), options.prefix.size()) !=
          static_cast<ssize_t>(options.prefix.size())) {
    result.error = "prefix not sent";
    return result;
  }
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_max_proto_version(ctx, options.max_version);
  if (options.max_version < TLS1_2_VERSION) {
    // Let this client really offer the old version (OpenSSL 3 refuses it by default).
    SSL_CTX_set_security_level(ctx, 0);
    SSL_CTX_set_min_proto_version(ctx, options.max_version);
    SSL_CTX_set_cipher_list(ctx, "DEFAULT:@SECLEVEL=0");
  }
  if (!options.alpn.empty()) {
    std::string wire = std::string(1, static_cast<char>(options.alpn.size())) + options.alpn;
    SSL_CTX_set_alpn_protos(ctx, reinterpret_cast<const unsigned char*>(wire.data()),
                            static_cast<unsigned>(wire.size()));
  }
  if (!options.verify_ca_pem.empty()) {
    BIO* bio = BIO_new_mem_buf(options.verify_ca_pem.data(),
                               static_cast<int>(options.verify_ca_pem.size()));
    X509* ca = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
    X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), ca);
    X509_free(ca);
    BIO_free(bio);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  }
  SSL* ssl = SSL_new(ctx);
  SSL_set_fd(ssl, fd);
  ERR_clear_error();
  if (SSL_connect(ssl) == 1) {
    result.ok = true;
    if (X509* peer = SSL_get1_peer_certificate(ssl)) {
      BIGNUM* bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(peer), nullptr);
      char* hex = BN_bn2hex(bn);
      result.serial = hex;
      OPENSSL_free(hex);
      BN_free(bn);
      X509_free(peer);
    }
    const unsigned char* protocol = nullptr;
    unsigned length = 0;
    SSL_get0_alpn_selected(ssl, &protocol, &length);
    result.alpn.assign(reinterpret_cast<const char*>(protocol), length);
    if (after) after(ssl);
  } else {
    const char* reason = ERR_reason_error_string(ERR_peek_last_error());
    result.error = reason != nullptr ? reason : "handshake failed";
  }
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  return result;
}

// Reads until the peer closes; true if it closed (EOF or reset) before the 5 s timeout.
bool ReadsUntilClosed(int fd, std::string* received = nullptr) {
  char buffer[4096];
  for (;;) {
    ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n == 0) return true;
    if (n < 0) return errno == ECONNRESET;
    if (received != nullptr) received->append(buffer, static_cast<size_t>(n));
  }
}

// A client connection preface followed by an empty SETTINGS frame.
constexpr char kH2Hello[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";

// The types of the HTTP/2 frames in `bytes` (a server's side of a connection).
std::vector<int> FrameTypes(const std::string& bytes) {
  std::vector<int> types;
  for (size_t at = 0; at + 9 <= bytes.size();) {
    size_t length = (static_cast<uint8_t>(bytes[at]) << 16) |
                    (static_cast<uint8_t>(bytes[at + 1]) << 8) | static_cast<uint8_t>(bytes[at + 2]);
    types.push_back(static_cast<uint8_t>(bytes[at + 3]));
    at += 9 + length;
  }
  return types;
}

struct TlsShape {
  bool client_ca = false;
  std::string proxy_protocol = "none";
  std::string handshake_timeout = "10s";
  bool tailscale_source = false;
  std::string upstream_tls;  // the upstream's `tls:` value, "" = cleartext
};

class TlsTest : public ProxyTest {
 protected:
  void SetUp() override {
    // Raw OpenSSL clients write to sockets sepal has already closed.
    signal(SIGPIPE, SIG_IGN);
    ProxyTest::SetUp();
    char dir_template[] = "/tmp/sepal-tls-test-XXXXXX";
    dir_ = mkdtemp(dir_template);
    server_cert_ = ca_.IssueLocalhost();
    WritePair(server_cert_);
    ASSERT_TRUE(WriteTextFile(Path("ca.pem"), ca_.certificate_pem()));
  }
  void TearDown() override {
    ProxyTest::TearDown();
    std::system(("rm -rf '" + dir_ + "'").c_str());
  }

  std::string Path(const std::string& name) const { return dir_ + "/" + name; }
  void WritePair(const CertifiedKey& pair) {
    ASSERT_TRUE(WriteTextFile(Path("server.pem"), pair.certificate_pem));
    ASSERT_TRUE(WriteTextFile(Path("server.key"), pair.private_key_pem));
  }

  std::string Yaml(const TlsShape& shape, const std::string& upstream_address) const {
    std::string tls = "    tls:\n";
    if (shape.tailscale_source) {
      tls += "      source: tailscale\n";
    } else {
      tls += "      certificate: " + Path("server.pem") + "\n      private_key: " +
             Path("server.key") + "\n";
    }
    if (shape.client_ca) tls += "      client_ca: " + Path("ca.pem") + "\n";
    tls += "      handshake_timeout: " + shape.handshake_timeout + "\n";
    std::string yaml = DefaultConfigYaml(upstream_address);
    tls += "    proxy_protocol: " + shape.proxy_protocol + "\n";
    yaml.replace(yaml.find("    routes:"), 0, tls);
    if (!shape.upstream_tls.empty()) yaml += "    tls: " + shape.upstream_tls + "\n";
    return yaml;
  }
  void StartTls(const TlsShape& shape = {}) { StartSepal(Yaml(shape, backend_->address())); }

  std::shared_ptr<grpc::Channel> TlsChannel(const std::string& name = "localhost",
                                            const CertifiedKey* client = nullptr,
                                            int channel_id = 0) const {
    grpc::SslCredentialsOptions options;
    options.pem_root_certs = ca_.certificate_pem();
    if (client != nullptr) {
      options.pem_cert_chain = client->certificate_pem;
      options.pem_private_key = client->private_key_pem;
    }
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(FakeSuperLink::kMaxMessageBytes);
    args.SetSslTargetNameOverride(name);
    args.SetInt("sepal.test.channel_id", channel_id);
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    return grpc::CreateCustomChannel(SepalAddress(), grpc::SslCredentials(options), args);
  }

  static grpc::Status Unary(const std::shared_ptr<grpc::Channel>& channel,
                            const std::string& payload = "hello") {
    auto stub = Echo::NewStub(channel);
    grpc::ClientContext context;
    context.set_deadline(In(std::chrono::seconds(5)));
    EchoRequest request;
    request.set_payload(payload);
    EchoResponse response;
    grpc::Status status = stub->Unary(&context, request, &response);
    if (status.ok() && response.payload() != payload) {
      return grpc::Status(grpc::StatusCode::DATA_LOSS, "wrong payload: " + response.payload());
    }
    return status;
  }

  TestCa ca_{"sepal test CA"};
  CertifiedKey server_cert_;
  std::string dir_;
};

TEST_F(TlsTest, GrpcClientsMakeUnaryAndStreamingCallsThroughATlsListener) {
  StartTls();
  auto channel = TlsChannel();
  grpc::Status status = Unary(channel);
  ASSERT_TRUE(status.ok()) << status.error_message();

  auto stub = Echo::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(In(std::chrono::seconds(10)));
  auto stream = stub->Bidi(&context);
  for (int i = 0; i < 50; ++i) {
    EchoRequest request;
    request.set_payload("ping-" + std::to_string(i) + std::string(static_cast<size_t>(i) * 1000, 'x'));
    ASSERT_TRUE(stream->Write(request));
    EchoResponse response;
    ASSERT_TRUE(stream->Read(&response));
    EXPECT_EQ(response.payload(), request.payload());
  }
  ASSERT_TRUE(stream->WritesDone());
  EXPECT_TRUE(stream->Finish().ok());

  // A large response crosses many TLS records and the flow-control windows.
  grpc::ClientContext big_context;
  EchoRequest big;
  big.set_response_size(8 * 1024 * 1024);
  EchoResponse big_response;
  ASSERT_TRUE(stub->Unary(&big_context, big, &big_response).ok());
  EXPECT_EQ(big_response.payload(), FakeSuperLink::MakePayload(8 * 1024 * 1024));

  // The client really negotiated TLS 1.2+ with h2 (a raw handshake shows what is offered).
  RawHandshake raw = RawTlsHandshake(port_);
  ASSERT_TRUE(raw.ok) << raw.error;
  EXPECT_EQ(raw.alpn, "h2");
  EXPECT_EQ(raw.serial, server_cert_.serial_hex);
}

TEST_F(TlsTest, CertificateWithoutTheDialedNameGivesTheClientUnavailable) {
  StartTls();
  double before = MetricNow(HandshakeErrors("peer_alert"));
  grpc::Status status = Unary(TlsChannel("superlink.example.org"));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
  EXPECT_FALSE(status.error_message().empty());
  // grpc++ checks the name after the handshake and just closes: nothing to count.
  EXPECT_EQ(MetricNow(HandshakeErrors("peer_alert")), before);
  // A client that does not trust sepal's CA aborts the handshake with an alert: counted.
  TestCa other_ca("another CA");
  RawHandshake untrusting = RawTlsHandshake(port_, {.verify_ca_pem = other_ca.certificate_pem()});
  EXPECT_FALSE(untrusting.ok);
  EXPECT_TRUE(WaitForMetric(HandshakeErrors("peer_alert"), before + 1));
  // The same listener keeps serving clients that dial a name on the certificate.
  EXPECT_TRUE(Unary(TlsChannel("localhost", nullptr, 1)).ok());
}

// A gRPC client (a SuperNode) that does not trust the certificate closes the connection in
// the middle of the handshake without sending an alert: counted as client_closed, apart from
// peer_alert (clients that say why) and other.
TEST_F(TlsTest, AClientThatClosesDuringTheHandshakeIsCountedAsClientClosed) {
  StartTls();
  const double closed = MetricNow(HandshakeErrors("client_closed"));
  const double alert = MetricNow(HandshakeErrors("peer_alert"));
  const double other = MetricNow(HandshakeErrors("other"));
  int fd = ConnectLoopback(port_);
  ASSERT_GE(fd, 0);
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  const unsigned char alpn[] = {2, 'h', '2'};
  SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn));
  SSL* ssl = SSL_new(ctx);
  // The ClientHello is made into a memory BIO and sent by hand, so the client never reads the
  // server's answer (a socket BIO might finish the handshake if the answer came fast).
  BIO* in = BIO_new(BIO_s_mem());
  BIO* out = BIO_new(BIO_s_mem());
  SSL_set_bio(ssl, in, out);
  SSL_set_connect_state(ssl);
  ASSERT_EQ(SSL_get_error(ssl, SSL_do_handshake(ssl)), SSL_ERROR_WANT_READ);
  char* hello = nullptr;
  const long hello_size = BIO_get_mem_data(out, &hello);
  ASSERT_GT(hello_size, 0);
  ASSERT_EQ(write(fd, hello, static_cast<size_t>(hello_size)), hello_size);
  pollfd readable{fd, POLLIN, 0};
  ASSERT_EQ(poll(&readable, 1, 5000), 1);  // the ServerHello and the certificate arrived
  close(fd);                               // and the client hangs up: no alert
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  EXPECT_TRUE(WaitForMetric(HandshakeErrors("client_closed"), closed + 1));
  EXPECT_EQ(MetricNow(HandshakeErrors("peer_alert")), alert);
  EXPECT_EQ(MetricNow(HandshakeErrors("other")), other);
}

TEST_F(TlsTest, ClientCertificateRequiredVerifiedAndRefusedWhenMissingOrForeign) {
  StartTls({.client_ca = true});
  LeafOptions client_options = ClientLeaf("supernode-a");
  CertifiedKey good = ca_.Issue(client_options);
  grpc::Status status = Unary(TlsChannel("localhost", &good));
  ASSERT_TRUE(status.ok()) << status.error_message();

  double before = MetricNow(HandshakeErrors("client_cert"));
  status = Unary(TlsChannel("localhost", nullptr, 1));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
  EXPECT_TRUE(WaitForMetric(HandshakeErrors("client_cert"), before + 1));

  TestCa other_ca("another CA");
  CertifiedKey foreign = other_ca.Issue(client_options);
  before = MetricNow(HandshakeErrors("client_cert"));
  status = Unary(TlsChannel("localhost", &foreign, 2));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
  EXPECT_TRUE(WaitForMetric(HandshakeErrors("client_cert"), before + 1));

  LeafOptions expired_options = client_options;
  expired_options.Expired();
  CertifiedKey expired = ca_.Issue(expired_options);
  status = Unary(TlsChannel("localhost", &expired, 3));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
}

TEST_F(TlsTest, CleartextH2Http1AndGarbageOnATlsPortAreCountedAndClosed) {
  StartTls();
  auto tls_channel = TlsChannel();
  ASSERT_TRUE(Unary(tls_channel).ok());
  double before = MetricNow(HandshakeErrors("not_tls"));

  // A grpc++ client speaking h2c.
  grpc::Status status = Unary(NewChannel(7));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
  EXPECT_TRUE(WaitForMetric(HandshakeErrors("not_tls"), before + 1));

  // HTTP/1.1: a short plaintext 400, then close.
  int fd = ConnectLoopback(port_);
  ASSERT_GE(fd, 0);
  std::string request = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  ASSERT_EQ(write(fd, request.data(), request.size()), static_cast<ssize_t>(request.size()));
  std::string answer;
  EXPECT_TRUE(ReadsUntilClosed(fd, &answer));
  close(fd);
  EXPECT_EQ(answer.rfind("HTTP/1.1 400", 0), 0u) << answer;
  EXPECT_NE(answer.find("TLS"), std::string::npos);
  EXPECT_TRUE(WaitForMetric(HandshakeErrors("not_tls"), before + 2));

  // Garbage: closed without an answer.
  fd = ConnectLoopback(port_);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(write(fd, "\x01\x02garbage!", 10), 10);
  answer.clear();
  EXPECT_TRUE(ReadsUntilClosed(fd, &answer));
  close(fd);
  EXPECT_TRUE(answer.empty());
  EXPECT_TRUE(WaitForMetric(HandshakeErrors("not_tls"), before + 3));

  // The TLS client's connection was not disturbed.
  EXPECT_TRUE(Unary(tls_channel).ok());
}

TEST_F(TlsTest, SilentOrStalledClientsAreClosedAtTheHandshakeTimeout) {
  StartTls({.handshake_timeout = "300ms"});
  double before = MetricNow(HandshakeErrors("timeout"));
  auto started = std::chrono::steady_clock::now();
  int silent = ConnectLoopback(port_);
  ASSERT_GE(silent, 0);
  int stalled = ConnectLoopback(port_);
  ASSERT_GE(stalled, 0);
  ASSERT_EQ(write(stalled, "\x16\x03\x01\x02\x00", 5), 5);  // a ClientHello that never ends
  EXPECT_TRUE(ReadsUntilClosed(silent));
  EXPECT_TRUE(ReadsUntilClosed(stalled));
  auto waited = std::chrono::steady_clock::now() - started;
  close(silent);
  close(stalled);
  EXPECT_GE(waited, std::chrono::milliseconds(250));
  EXPECT_LT(waited, std::chrono::seconds(3));
  EXPECT_TRUE(WaitForMetric(HandshakeErrors("timeout"), before + 2));
  EXPECT_TRUE(Unary(TlsChannel()).ok());
}

TEST_F(TlsTest, ClientsWithoutH2InAlpnAreRefusedWithTheAlert) {
  StartTls();
  double before = MetricNow(HandshakeErrors("no_alpn_h2"));
  RawHandshake http1 = RawTlsHandshake(port_, {.alpn = "http/1.1"});
  EXPECT_FALSE(http1.ok);
  EXPECT_NE(http1.error.find("no application protocol"), std::string::npos) << http1.error;
  RawHandshake none = RawTlsHandshake(port_, {.alpn = ""});
  EXPECT_FALSE(none.ok);
  EXPECT_NE(none.error.find("no application protocol"), std::string::npos) << none.error;
  EXPECT_TRUE(WaitForMetric(HandshakeErrors("no_alpn_h2"), before + 2));
}

TEST_F(TlsTest, Tls11IsRefused) {
  StartTls();
  double before = MetricNow(HandshakeErrors("protocol_version"));
  RawHandshake old = RawTlsHandshake(port_, {.max_version = TLS1_1_VERSION});
  EXPECT_FALSE(old.ok);
  EXPECT_NE(old.error.find("protocol version"), std::string::npos) << old.error;
  EXPECT_TRUE(WaitForMetric(HandshakeErrors("protocol_version"), before + 1));
  EXPECT_TRUE(RawTlsHandshake(port_, {.max_version = TLS1_2_VERSION}).ok);
}

TEST_F(TlsTest, ReloadSwapsTheCertificateForNewHandshakesWhileOldStreamsContinue) {
  StartTls();
  // A long server stream on the first certificate.
  auto stub = Echo::NewStub(TlsChannel());
  grpc::ClientContext context;
  context.set_deadline(In(std::chrono::seconds(20)));
  EchoRequest request;
  request.set_response_count(20);
  request.set_sleep_ms(50);
  request.set_response_size(100);
  auto reader = stub->ServerStream(&context, request);
  EchoResponse response;
  ASSERT_TRUE(reader->Read(&response));

  CertifiedKey rotated = ca_.IssueLocalhost("localhost-rotated");
  WritePair(rotated);
  const std::string success =
      "sepal_tls_certificate_reloads_total{listener=\"fleet\",result=\"success\"}";
  double reloads = MetricNow(success);
  ASSERT_TRUE(server_->Reload(server_->config()).ok());  // the same config text
  EXPECT_EQ(MetricNow(success), reloads + 1);

  RawHandshake raw = RawTlsHandshake(port_);
  ASSERT_TRUE(raw.ok) << raw.error;
  EXPECT_EQ(raw.serial, rotated.serial_hex);
  EXPECT_NE(raw.serial, server_cert_.serial_hex);
  EXPECT_TRUE(Unary(TlsChannel("localhost", nullptr, 1)).ok());

  int count = 1;
  while (reader->Read(&response)) ++count;
  grpc::Status status = reader->Finish();
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(count, 20);
}

TEST_F(TlsTest, BadPairOnReloadKeepsTheCurrentCertificate) {
  StartTls();
  const std::string failure =
      "sepal_tls_certificate_reloads_total{listener=\"fleet\",result=\"failure\"}";
  double failures = MetricNow(failure);
  // A new certificate with the old key: they do not match.
  CertifiedKey rotated = ca_.IssueLocalhost();
  ASSERT_TRUE(WriteTextFile(Path("server.pem"), rotated.certificate_pem));
  EXPECT_TRUE(server_->Reload(server_->config()).ok());
  EXPECT_EQ(MetricNow(failure), failures + 1);
  RawHandshake raw = RawTlsHandshake(port_);
  ASSERT_TRUE(raw.ok) << raw.error;
  EXPECT_EQ(raw.serial, server_cert_.serial_hex);

  // Not PEM at all: the same.
  ASSERT_TRUE(WriteTextFile(Path("server.pem"), "not a certificate\n"));
  EXPECT_TRUE(server_->Reload(server_->config()).ok());
  EXPECT_EQ(MetricNow(failure), failures + 2);
  EXPECT_EQ(RawTlsHandshake(port_).serial, server_cert_.serial_hex);
  EXPECT_TRUE(Unary(TlsChannel()).ok());
}

TEST_F(TlsTest, BadPairAtStartIsAnErrorNamingTheFile) {
  CertifiedKey other = ca_.IssueLocalhost();
  ASSERT_TRUE(WriteTextFile(Path("server.key"), other.private_key_pem));
  auto config = config::ParseConfig(Yaml({}, backend_->address()), "test.yaml");
  ASSERT_TRUE(config.ok()) << config.status();
  absl::Status check = tls::ValidateTlsFiles(*config);
  EXPECT_FALSE(check.ok());
  EXPECT_NE(check.message().find("does not match"), std::string::npos) << check.message();
  EXPECT_NE(check.message().find("listener fleet"), std::string::npos) << check.message();
  Server server(std::make_shared<const config::Config>(*config));
  absl::Status status = server.Start();
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.message().find(Path("server.pem")), std::string::npos) << status.message();
  server.Stop();

  ASSERT_TRUE(WriteTextFile(Path("server.key"), "-----BEGIN PRIVATE KEY-----\nAAAA\n"));
  check = tls::ValidateTlsFiles(*config);
  EXPECT_FALSE(check.ok());
  EXPECT_NE(check.message().find(Path("server.key")), std::string::npos) << check.message();
}

TEST_F(TlsTest, TailscaleSourcedListenerWaitsForAPairAndTakesItFromMemory) {
  StartTls({.tailscale_source = true});
  double before = MetricNow(HandshakeErrors("no_certificate"));
  EXPECT_FALSE(RawTlsHandshake(port_).ok);
  EXPECT_TRUE(WaitForMetric(HandshakeErrors("no_certificate"), before + 1));

  CertifiedKey fetched = ca_.IssueLocalhost("node.tailnet.ts.net");
  EXPECT_FALSE(server_->ApplyFetchedCertificate("fleet", fetched.certificate_pem, "junk").ok());
  ASSERT_TRUE(server_
                  ->ApplyFetchedCertificate("fleet", fetched.certificate_pem,
                                            fetched.private_key_pem)
                  .ok());
  RawHandshake raw = RawTlsHandshake(port_);
  ASSERT_TRUE(raw.ok) << raw.error;
  EXPECT_EQ(raw.serial, fetched.serial_hex);
  EXPECT_TRUE(Unary(TlsChannel()).ok());
  // A reload keeps the fetched pair.
  ASSERT_TRUE(server_->Reload(server_->config()).ok());
  EXPECT_EQ(RawTlsHandshake(port_).serial, fetched.serial_hex);
}

TEST_F(TlsTest, ProxyHeaderComesBeforeTheHandshake) {
  StartTls({.proxy_protocol = "v1"});
  const std::string header = "PROXY TCP4 100.64.0.7 127.0.0.1 41000 9092\r\n";
  RawHandshake raw = RawTlsHandshake(port_, {.prefix = header});
  ASSERT_TRUE(raw.ok) << raw.error;
  EXPECT_EQ(raw.serial, server_cert_.serial_hex);
  // Without the header the ClientHello is a bad PROXY header, as on a cleartext listener.
  EXPECT_FALSE(RawTlsHandshake(port_).ok);
  // With the header but cleartext after it: refused as not TLS.
  double before = MetricNow(HandshakeErrors("not_tls"));
  int fd = ConnectLoopback(port_);
  ASSERT_GE(fd, 0);
  std::string bytes = header + "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
  ASSERT_EQ(write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  EXPECT_TRUE(ReadsUntilClosed(fd));
  close(fd);
  EXPECT_TRUE(WaitForMetric(HandshakeErrors("not_tls"), before + 1));
}

TEST_F(TlsTest, ConnectionStillHandshakingWhenADrainBeginsGetsAGoaway) {
  StartTls();
  int fd = ConnectLoopback(port_);  // accepted before the drain, handshake after it began
  ASSERT_GE(fd, 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  std::atomic<bool> drained{false};
  std::thread drain([&] { drained = server_->Drain(std::chrono::seconds(5)); });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  std::vector<int> frame_types;
  RawHandshake raw = RawTlsHandshakeOn(fd, {}, [&](SSL* ssl) {
    std::string hello = std::string(kH2Hello, sizeof(kH2Hello) - 1);
    SSL_write(ssl, hello.data(), static_cast<int>(hello.size()));
    std::string bytes;
    char buffer[4096];
    int n;
    while ((n = SSL_read(ssl, buffer, sizeof(buffer))) > 0) bytes.append(buffer, n);
    frame_types = FrameTypes(bytes);
  });
  close(fd);
  drain.join();
  ASSERT_TRUE(raw.ok) << raw.error;
  EXPECT_NE(std::find(frame_types.begin(), frame_types.end(), 0x7), frame_types.end())
      << "no GOAWAY among " << frame_types.size() << " frames";
  EXPECT_TRUE(drained);
}

TEST_F(TlsTest, CleartextConnectionStillInItsProxyHeaderWhenADrainBeginsGetsAGoaway) {
  std::string yaml = DefaultConfigYaml(backend_->address());
  yaml.replace(yaml.find("    routes:"), 0, "    proxy_protocol: v1\n");
  StartSepal(yaml);
  int fd = ConnectLoopback(port_);
  ASSERT_GE(fd, 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  std::atomic<bool> drained{false};
  std::thread drain([&] { drained = server_->Drain(std::chrono::seconds(5)); });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  std::string bytes = "PROXY TCP4 100.64.0.7 127.0.0.1 41000 9092\r\n" +
                      std::string(kH2Hello, sizeof(kH2Hello) - 1);
  ASSERT_EQ(write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  std::string received;
  EXPECT_TRUE(ReadsUntilClosed(fd, &received));
  close(fd);
  drain.join();
  std::vector<int> types = FrameTypes(received);
  EXPECT_NE(std::find(types.begin(), types.end(), 0x7), types.end());
  EXPECT_TRUE(drained);
}

TEST_F(TlsTest, ListenerAddedByAReloadGetsItsCertificate) {
  StartTls();
  config::Config next = *server_->config();
  config::ListenerConfig extra = next.listeners[0];
  extra.name = "extra";
  CertifiedKey extra_cert = ca_.IssueLocalhost("extra");
  ASSERT_TRUE(WriteTextFile(Path("extra.pem"), extra_cert.certificate_pem));
  ASSERT_TRUE(WriteTextFile(Path("extra.key"), extra_cert.private_key_pem));
  extra.tls->certificate = Path("extra.pem");
  extra.tls->private_key = Path("extra.key");
  next.listeners.push_back(extra);
  ASSERT_TRUE(server_->Reload(std::make_shared<const config::Config>(next)).ok());
  uint16_t extra_port = server_->BoundPort("extra");
  ASSERT_NE(extra_port, 0);
  RawHandshake raw = RawTlsHandshake(extra_port);
  ASSERT_TRUE(raw.ok) << raw.error;
  EXPECT_EQ(raw.serial, extra_cert.serial_hex);
  EXPECT_EQ(RawTlsHandshake(port_).serial, server_cert_.serial_hex);

  // A listener added with a bad pair fails the reload as a whole (nothing changes).
  config::ListenerConfig broken = extra;
  broken.name = "broken";
  broken.tls->private_key = Path("server.key");  // not extra.pem's key
  next.listeners.push_back(broken);
  uint64_t generation = server_->generation();
  absl::Status status = server_->Reload(std::make_shared<const config::Config>(next));
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.message().find("listener broken"), std::string::npos) << status.message();
  EXPECT_EQ(server_->generation(), generation);
  EXPECT_EQ(server_->BoundPort("broken"), 0);
}

TEST_F(TlsTest, CheckFlagValidatesTheCertificatePair) {
  std::string yaml = Yaml({}, "127.0.0.1:1");
  ASSERT_TRUE(WriteTextFile(Path("sepal.yaml"), yaml));
  std::string command = std::string(SEPAL_BINARY) + " --config " + Path("sepal.yaml") +
                        " --check 2>&1";
  auto run = [&](std::string* output) {
    FILE* pipe = popen(command.c_str(), "r");
    char buffer[4096];
    size_t n;
    while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) output->append(buffer, n);
    int status = pclose(pipe);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  };
  std::string output;
  EXPECT_EQ(run(&output), 0) << output;
  EXPECT_NE(output.find("listener fleet certificate: /CN=localhost, serial " +
                        server_cert_.serial_hex + ", expires "),
            std::string::npos)
      << output;
  EXPECT_EQ(output.find("NOT VALID NOW"), std::string::npos) << output;

  LeafOptions expired_options;
  expired_options.common_name = "localhost";
  expired_options.dns_names = {"localhost"};
  expired_options.ip_addresses = {};
  expired_options.Expired();
  WritePair(ca_.Issue(expired_options));
  output.clear();
  EXPECT_EQ(run(&output), 0) << output;  // a warning: a rotation may be under way
  EXPECT_NE(output.find("NOT VALID NOW"), std::string::npos) << output;

  ASSERT_TRUE(WriteTextFile(Path("server.key"), ca_.IssueLocalhost().private_key_pem));
  output.clear();
  EXPECT_EQ(run(&output), 1) << output;
  EXPECT_NE(output.find("does not match certificate"), std::string::npos) << output;
  ASSERT_TRUE(WriteTextFile(Path("server.pem"), "garbage\n"));
  output.clear();
  EXPECT_EQ(run(&output), 1) << output;
  EXPECT_NE(output.find(Path("server.pem")), std::string::npos) << output;
  EXPECT_NE(output.find("no start line"), std::string::npos) << output;
}

TEST_F(TlsTest, IdentityAndAuthorizationStillUseThePeerAddress) {
  std::string yaml = Yaml({}, backend_->address());
  yaml.replace(yaml.find("listeners:"), 0, kLoopbackSupernodeIdentityYaml);
  const std::string fleet_route = "upstream: superlink\n";
  size_t at = yaml.find(fleet_route) + fleet_route.size();
  yaml.replace(at, 0, "        allow: {tags: [tag:supernode]}\n");
  at = yaml.find(fleet_route, at) + fleet_route.size();
  yaml.replace(at, 0, "        allow: {tags: [tag:admin]}\n");
  StartSepal(yaml);
  auto channel = TlsChannel();
  grpc::ClientContext context;
  FleetRequest request;
  FleetResponse response;
  grpc::Status status = Fleet::NewStub(channel)->CreateNode(&context, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  std::vector<std::string> seen(response.seen_metadata().begin(), response.seen_metadata().end());
  EXPECT_NE(std::find(seen.begin(), seen.end(), "tailscale-node-name=loopback-supernode"),
            seen.end());
  grpc::ClientContext control_context;
  ControlRequest control_request;
  ControlResponse control_response;
  status = Control::NewStub(channel)->StartRun(&control_context, control_request,
                                               &control_response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED) << status.error_message();
}

TEST_F(TlsTest, SighupOnTheRealBinaryRotatesTheCertificate) {
  SepalProcess sepal;
  std::string yaml = Yaml({}, backend_->address());
  yaml.replace(yaml.find("127.0.0.1:0"), 11, "127.0.0.1:{PORT}");
  ASSERT_TRUE(sepal.Start(yaml));
  RawHandshake first = RawTlsHandshake(sepal.port());
  ASSERT_TRUE(first.ok) << first.error;
  EXPECT_EQ(first.serial, server_cert_.serial_hex);
  CertifiedKey rotated = ca_.IssueLocalhost("rotated");
  WritePair(rotated);
  ASSERT_TRUE(sepal.Signal(SIGHUP));
  std::string serial;
  for (int i = 0; i < 100 && serial != rotated.serial_hex; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    serial = RawTlsHandshake(sepal.port()).serial;
  }
  EXPECT_EQ(serial, rotated.serial_hex);
  EXPECT_EQ(sepal.Stop(), 0);
}

// --- Upstream TLS: sepal → a stand-in SuperLink serving TLS.

class UpstreamTlsTest : public TlsTest {
 protected:
  void SetUp() override {
    TlsTest::SetUp();
    upstream_cert_ = ca_.IssueLocalhost("superlink");
    FakeSuperLink::Options options;
    options.addresses = {"127.0.0.1:0"};
    options.tls_certificate_pem = upstream_cert_.certificate_pem;
    options.tls_private_key_pem = upstream_cert_.private_key_pem;
    tls_backend_ = FakeSuperLink::Start(options);
    ASSERT_NE(tls_backend_, nullptr);
  }
  void TearDown() override {
    TlsTest::TearDown();
    if (tls_backend_) tls_backend_->Shutdown();
  }
  void StartCleartextToTlsUpstream(const std::string& upstream_tls) {
    std::string yaml = DefaultConfigYaml(tls_backend_->address());
    yaml += "    tls: " + upstream_tls + "\n";
    StartSepal(yaml);
  }

  CertifiedKey upstream_cert_;
  std::unique_ptr<FakeSuperLink> tls_backend_;
};

TEST_F(UpstreamTlsTest, VerifiedTlsToTheSuperLinkCarriesCalls) {
  StartCleartextToTlsUpstream("{ca: " + Path("ca.pem") + ", server_name: localhost}");
  grpc::Status status = Unary(NewChannel());
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(tls_backend_->CallCount("/sepal.test.Echo/Unary"), 1);
}

TEST_F(UpstreamTlsTest, DefaultServerNameIsTheAddressHostAndIpSansMatch) {
  StartCleartextToTlsUpstream("{ca: " + Path("ca.pem") + "}");  // 127.0.0.1, an IP SAN
  grpc::Status status = Unary(NewChannel());
  EXPECT_TRUE(status.ok()) << status.error_message();
}

TEST_F(UpstreamTlsTest, WrongServerNameFailsCallsWithUnavailableNamingTheCause) {
  StartCleartextToTlsUpstream("{ca: " + Path("ca.pem") + ", server_name: superlink.internal}");
  const std::string failures = "sepal_upstream_connect_failures_total{upstream=\"superlink\"}";
  double before = MetricNow(failures);
  grpc::Status status = Unary(NewChannel());
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_NE(status.error_message().find("upstream superlink TLS handshake failed"),
            std::string::npos)
      << status.error_message();
  EXPECT_NE(status.error_message().find("certificate verify failed"), std::string::npos)
      << status.error_message();
  EXPECT_NE(status.error_message().find("mismatch"), std::string::npos)
      << status.error_message();
  EXPECT_GE(MetricNow(failures), before + 1);
  EXPECT_EQ(tls_backend_->TotalCallCount(), 0);
}

TEST_F(UpstreamTlsTest, UntrustedSuperLinkCertificateFailsTheCall) {
  TestCa other_ca("another CA");
  ASSERT_TRUE(WriteTextFile(Path("other-ca.pem"), other_ca.certificate_pem()));
  StartCleartextToTlsUpstream("{ca: " + Path("other-ca.pem") + ", server_name: localhost}");
  grpc::Status status = Unary(NewChannel());
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_NE(status.error_message().find("certificate verify failed"), std::string::npos)
      << status.error_message();
}

TEST_F(UpstreamTlsTest, CleartextUpstreamConfiguredAsTlsFailsPromptly) {
  // The TLS upstream config pointed at the cleartext stand-in.
  std::string yaml = DefaultConfigYaml(backend_->address());
  yaml += "    tls: {ca: " + Path("ca.pem") + ", server_name: localhost}\n";
  StartSepal(yaml);
  auto started = std::chrono::steady_clock::now();
  grpc::Status status = Unary(NewChannel());
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_NE(status.error_message().find("TLS handshake failed"), std::string::npos)
      << status.error_message();
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(3));
}

TEST_F(UpstreamTlsTest, ClientCertificateForASuperLinkThatRequiresOne) {
  FakeSuperLink::Options options;
  options.addresses = {"127.0.0.1:0"};
  options.tls_certificate_pem = upstream_cert_.certificate_pem;
  options.tls_private_key_pem = upstream_cert_.private_key_pem;
  options.tls_client_ca_pem = ca_.certificate_pem();
  auto mtls_backend = FakeSuperLink::Start(options);
  ASSERT_NE(mtls_backend, nullptr);
  CertifiedKey client = ca_.Issue(ClientLeaf("sepal"));
  ASSERT_TRUE(WriteTextFile(Path("client.pem"), client.certificate_pem));
  ASSERT_TRUE(WriteTextFile(Path("client.key"), client.private_key_pem));

  std::string yaml = DefaultConfigYaml(mtls_backend->address());
  yaml += "    tls: {ca: " + Path("ca.pem") + ", server_name: localhost, certificate: " +
          Path("client.pem") + ", private_key: " + Path("client.key") + "}\n";
  StartSepal(yaml);
  grpc::Status status = Unary(NewChannel());
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(mtls_backend->CallCount("/sepal.test.Echo/Unary"), 1);
  server_->Stop();
  server_.reset();

  // Without the client certificate the SuperLink refuses sepal: UNAVAILABLE.
  std::string without = DefaultConfigYaml(mtls_backend->address());
  without += "    tls: {ca: " + Path("ca.pem") + ", server_name: localhost}\n";
  StartSepal(without);
  status = Unary(NewChannel());
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
  EXPECT_EQ(mtls_backend->CallCount("/sepal.test.Echo/Unary"), 1);
  mtls_backend->Shutdown();
}

TEST_F(UpstreamTlsTest, SilentServerIsBoundedByTheConnectTimeout) {
  // A socket that accepts TCP (the kernel's backlog) but never answers the ClientHello.
  uint16_t silent_port = 0;
  int silent = ListenLoopback(&silent_port);
  ASSERT_GE(silent, 0);
  std::string yaml = DefaultConfigYaml("127.0.0.1:" + std::to_string(silent_port));
  yaml += "    tls: {ca: " + Path("ca.pem") + ", server_name: localhost}\n";
  StartSepal(yaml);  // connect_timeout: 2s
  auto started = std::chrono::steady_clock::now();
  grpc::Status status = Unary(NewChannel());
  auto waited = std::chrono::steady_clock::now() - started;
  close(silent);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
  EXPECT_NE(status.error_message().find("timed out"), std::string::npos)
      << status.error_message();
  EXPECT_GE(waited, std::chrono::milliseconds(1800));
  EXPECT_LT(waited, std::chrono::milliseconds(4500));
}

TEST_F(UpstreamTlsTest, TlsOnBothSides) {
  std::string yaml = Yaml({}, tls_backend_->address());
  yaml += "    tls: {ca: " + Path("ca.pem") + ", server_name: localhost}\n";
  StartSepal(yaml);
  auto stub = Echo::NewStub(TlsChannel());
  grpc::ClientContext context;
  EchoRequest request;
  request.set_response_count(10);
  request.set_response_size(64 * 1024);
  auto reader = stub->ServerStream(&context, request);
  EchoResponse response;
  int count = 0;
  while (reader->Read(&response)) {
    EXPECT_EQ(response.payload().size(), 64u * 1024);
    ++count;
  }
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_EQ(count, 10);
}

}  // namespace
}  // namespace sepal::test
