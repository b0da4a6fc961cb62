// TailscaleCertSource: the pair parser and status parser on their own, then the source against
// FakeTailscaled: first fetch and domain discovery, renewal, tailscaled's error answers
// (HTTPS off, 429, 403, slow, not running, a mismatched key) with backoff, and recovery.
#include "proxy/tls/tailscale_cert_source.h"
#include "proxy/tls/tls_context.h"

#include <gtest/gtest.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/json.hpp>
#include <vector>

#include "proxy/common/strings.h"
#include "proxy/identity/localapi_client.h"
#include "proxy/metrics/metrics.h"
#include "tests/support/fake_tailscaled.h"
#include "tests/support/test_pki.h"

namespace sepal::tls {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using test::FakeTailscaled;
using test::LeafOptions;
using test::TestCa;
using Kind = CertSourceError::Kind;
using Clock = std::chrono::system_clock;

constexpr std::string_view kDomain = "superlink.tail1234.ts.net";

// True if `chain_pem` (leaf first) verifies against `ca_pem` for `domain`.
bool VerifiesAgainst(const std::string& chain_pem, const std::string& ca_pem,
                     const std::string& domain) {
  BIO* ca_bio = BIO_new_mem_buf(ca_pem.data(), static_cast<int>(ca_pem.size()));
  X509* ca = PEM_read_bio_X509(ca_bio, nullptr, nullptr, nullptr);
  BIO* chain_bio = BIO_new_mem_buf(chain_pem.data(), static_cast<int>(chain_pem.size()));
  X509* leaf = PEM_read_bio_X509(chain_bio, nullptr, nullptr, nullptr);
  X509_STORE* store = X509_STORE_new();
  X509_STORE_add_cert(store, ca);
  X509_STORE_CTX* context = X509_STORE_CTX_new();
  X509_STORE_CTX_init(context, store, leaf, nullptr);
  X509_VERIFY_PARAM_set1_host(X509_STORE_CTX_get0_param(context), domain.c_str(), domain.size());
  bool ok = X509_verify_cert(context) == 1;
  X509_STORE_CTX_free(context);
  X509_STORE_free(store);
  X509_free(leaf);
  X509_free(ca);
  BIO_free(chain_bio);
  BIO_free(ca_bio);
  return ok;
}

LeafOptions TailnetLeaf(std::string domain = std::string(kDomain)) {
  LeafOptions options;
  options.common_name = domain;
  options.dns_names = {domain};
  options.ip_addresses = {};
  options.include_chain = true;
  options.sec1_key = true;
  return options;
}

// A tailnet leaf from `ca` in tailscaled's ?type=pair layout (key, then chain), parsed.
std::optional<CertificatePair> IssueAndParse(const TestCa& ca, test::CertifiedKey* pem,
                                             std::string* error) {
  *pem = ca.Issue(TailnetLeaf());
  return ParseCertificatePair(pem->private_key_pem + pem->certificate_pem, kDomain, Clock::now(),
                              error);
}

// ---- ParseCertificatePair -----------------------------------------------------------------

TEST(ParseCertificatePair, KeyThenChainAsTailscaledSendsIt) {
  TestCa ca;
  test::CertifiedKey pem;
  std::string error;
  auto pair = IssueAndParse(ca, &pem, &error);
  ASSERT_TRUE(pair) << error;
  EXPECT_EQ(pair->domain, kDomain);
  EXPECT_EQ(pair->certificate_pem, pem.certificate_pem);  // leaf, then the CA
  EXPECT_EQ(pair->private_key_pem, pem.private_key_pem);
  EXPECT_NE(pair->private_key_pem.find("BEGIN EC PRIVATE KEY"), std::string::npos);
  auto lifetime = pair->not_after - pair->not_before;
  EXPECT_NEAR(std::chrono::duration<double>(lifetime).count(), 90 * 86400, 1);
  EXPECT_TRUE(VerifiesAgainst(pair->certificate_pem, ca.certificate_pem(), std::string(kDomain)));
}

TEST(ParseCertificatePair, ChainThenPkcs8Key) {
  TestCa ca;
  LeafOptions options = TailnetLeaf();
  options.sec1_key = false;
  test::CertifiedKey pem = ca.Issue(options);
  std::string error;
  auto pair = ParseCertificatePair("junk before\n" + pem.certificate_pem + pem.private_key_pem,
                                   kDomain, Clock::now(), &error);
  ASSERT_TRUE(pair) << error;
  EXPECT_EQ(pair->private_key_pem, pem.private_key_pem);
}

TEST(ParseCertificatePair, RejectsKeyOfAnotherCertificate) {
  TestCa ca;
  test::CertifiedKey pem = ca.Issue(TailnetLeaf());
  std::string error;
  EXPECT_FALSE(ParseCertificatePair(test::NewPrivateKeyPem() + pem.certificate_pem, kDomain,
                                    Clock::now(), &error));
  EXPECT_EQ(error, "the private key does not match the certificate");
}

TEST(ParseCertificatePair, RejectsMissingPartsAndGarbage) {
  TestCa ca;
  test::CertifiedKey pem = ca.Issue(TailnetLeaf());
  std::string error;
  EXPECT_FALSE(ParseCertificatePair(pem.certificate_pem, kDomain, Clock::now(), &error));
  EXPECT_EQ(error, "no private key in the answer");
  EXPECT_FALSE(ParseCertificatePair(pem.private_key_pem, kDomain, Clock::now(), &error));
  EXPECT_EQ(error, "no certificate in the answer");
  EXPECT_FALSE(ParseCertificatePair("", kDomain, Clock::now(), &error));
  EXPECT_FALSE(ParseCertificatePair(pem.private_key_pem + pem.private_key_pem +
                                        pem.certificate_pem,
                                    kDomain, Clock::now(), &error));
  EXPECT_EQ(error, "the answer holds more than one private key");
  std::string truncated = pem.certificate_pem.substr(0, pem.certificate_pem.size() / 2);
  EXPECT_FALSE(ParseCertificatePair(pem.private_key_pem + truncated, kDomain, Clock::now(),
                                    &error));
  EXPECT_NE(error.find("no END line"), std::string::npos) << error;
  std::string corrupt = pem.private_key_pem + "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n"
                                              "-----END CERTIFICATE-----\n";
  EXPECT_FALSE(ParseCertificatePair(corrupt, kDomain, Clock::now(), &error));
  EXPECT_NE(error.find("does not parse"), std::string::npos) << error;
}

TEST(ParseCertificatePair, RejectsExpiredWrongDomainAndBrokenChain) {
  TestCa ca;
  LeafOptions expired = TailnetLeaf();
  expired.not_before = -seconds(7200);
  expired.lifetime = seconds(3600);
  test::CertifiedKey old = ca.Issue(expired);
  std::string error;
  EXPECT_FALSE(ParseCertificatePair(old.private_key_pem + old.certificate_pem, kDomain,
                                    Clock::now(), &error));
  EXPECT_NE(error.find("expired at"), std::string::npos) << error;

  test::CertifiedKey other = ca.Issue(TailnetLeaf("other.tail1234.ts.net"));
  EXPECT_FALSE(ParseCertificatePair(other.private_key_pem + other.certificate_pem, kDomain,
                                    Clock::now(), &error));
  EXPECT_EQ(error, "the certificate is not for superlink.tail1234.ts.net");

  LeafOptions leaf_only = TailnetLeaf();
  leaf_only.include_chain = false;
  test::CertifiedKey pem = ca.Issue(leaf_only);
  TestCa stranger("someone else's CA");
  EXPECT_FALSE(ParseCertificatePair(
      pem.private_key_pem + pem.certificate_pem + stranger.certificate_pem(), kDomain,
      Clock::now(), &error));
  EXPECT_EQ(error, "certificate 2 of the chain did not issue certificate 1");
}

// ---- The fetched pair as a listener context (what Server::ApplyFetchedCertificate installs)
// serves a TLS handshake a client verifies ---------------------------------------------------

// Runs a TLS handshake between a server using `pair` and a client that trusts `ca_pem` and
// checks `domain`, over an in-memory BIO pair. True when both sides finish and the client's
// verification passed.
bool HandshakeWith(const CertificatePair& pair, const std::string& ca_pem,
                   const std::string& domain, std::string* error) {
  auto context = MakeServerContextFromPem(config::ListenerTlsConfig{}, pair.certificate_pem,
                                          pair.private_key_pem);
  if (!context.ok()) {
    *error = std::string(context.status().message());
    return false;
  }
  SSL_CTX* server_ctx = (*context)->context->native_handle();
  SSL_CTX* client_ctx = SSL_CTX_new(TLS_client_method());
  bool ok = true;
  {
    BIO* ca_bio = BIO_new_mem_buf(ca_pem.data(), static_cast<int>(ca_pem.size()));
    X509* ca = PEM_read_bio_X509(ca_bio, nullptr, nullptr, nullptr);
    X509_STORE_add_cert(SSL_CTX_get_cert_store(client_ctx), ca);
    X509_free(ca);
    BIO_free(ca_bio);
    SSL_CTX_set_verify(client_ctx, SSL_VERIFY_PEER, nullptr);
    SSL* client = SSL_new(client_ctx);
    SSL* server = SSL_new(server_ctx);
    SSL_set1_host(client, domain.c_str());
    SSL_set_tlsext_host_name(client, domain.c_str());
    static const unsigned char kAlpnH2[] = {2, 'h', '2'};  // listeners require h2
    SSL_set_alpn_protos(client, kAlpnH2, sizeof(kAlpnH2));
    BIO* client_bio = nullptr;
    BIO* server_bio = nullptr;
    BIO_new_bio_pair(&client_bio, 0, &server_bio, 0);
    SSL_set_bio(client, client_bio, client_bio);
    SSL_set_bio(server, server_bio, server_bio);
    SSL_set_connect_state(client);
    SSL_set_accept_state(server);
    bool client_done = false;
    bool server_done = false;
    for (int round = 0; round < 50 && !(client_done && server_done); ++round) {
      if (!client_done) client_done = SSL_do_handshake(client) == 1;
      if (!server_done) server_done = SSL_do_handshake(server) == 1;
    }
    ok = client_done && server_done && SSL_get_verify_result(client) == X509_V_OK;
    if (!ok) {
      *error = StrCat("handshake failed: verify result ",
                      X509_verify_cert_error_string(SSL_get_verify_result(client)));
    }
    SSL_free(client);
    SSL_free(server);
  }
  SSL_CTX_free(client_ctx);
  ERR_clear_error();
  return ok;
}

TEST(FetchedPairContext, ServesAHandshakeTheClientVerifies) {
  TestCa ca;
  test::CertifiedKey pem;
  std::string error;
  auto pair = IssueAndParse(ca, &pem, &error);
  ASSERT_TRUE(pair) << error;
  EXPECT_TRUE(HandshakeWith(*pair, ca.certificate_pem(), std::string(kDomain), &error)) << error;
  // The same pair does not pass for another name.
  EXPECT_FALSE(HandshakeWith(*pair, ca.certificate_pem(), "other.tail1234.ts.net", &error));
}

TEST(FetchedPairContext, RejectsAKeyOfAnotherCertificate) {
  TestCa ca;
  test::CertifiedKey pem = ca.Issue(TailnetLeaf());
  auto context = MakeServerContextFromPem(config::ListenerTlsConfig{}, pem.certificate_pem,
                                          test::NewPrivateKeyPem());
  ASSERT_FALSE(context.ok());
  EXPECT_NE(context.status().message().find("private key does not match the certificate"),
            std::string::npos)
      << context.status();
}

// ---- CertDomainFromStatus -----------------------------------------------------------------

TEST(CertDomainFromStatus, PrefersCertDomainsThenSelfDnsName) {
  CertSourceError error;
  EXPECT_EQ(CertDomainFromStatus(R"({"BackendState":"Running","Self":{"DNSName":"a.ts.net."},
                                     "CertDomains":["b.tail1.ts.net","c.ts.net"]})",
                                 &error),
            "b.tail1.ts.net");
  EXPECT_EQ(CertDomainFromStatus(
                R"({"BackendState":"Running","Self":{"DNSName":"a.tail1.ts.net."},"CertDomains":null})",
                &error),
            "a.tail1.ts.net");
}

TEST(CertDomainFromStatus, NamesWhatIsWrong) {
  CertSourceError error;
  EXPECT_FALSE(CertDomainFromStatus(R"({"BackendState":"NeedsLogin","Self":{"DNSName":""}})",
                                    &error));
  EXPECT_EQ(error.kind, Kind::kNotRunning);
  EXPECT_NE(error.message.find("BackendState NeedsLogin"), std::string::npos);
  EXPECT_FALSE(CertDomainFromStatus(R"({"BackendState":"Running","Self":{"DNSName":""}})",
                                    &error));
  EXPECT_EQ(error.kind, Kind::kNoDomain);
  EXPECT_FALSE(CertDomainFromStatus("<html>", &error));
  EXPECT_EQ(error.kind, Kind::kIo);
  EXPECT_FALSE(CertDomainFromStatus(R"({"CertDomains":["../../etc/passwd"]})", &error));
  EXPECT_EQ(error.kind, Kind::kNoDomain);
}

// ---- RefreshDelay -------------------------------------------------------------------------

TEST(RefreshDelay, OneThirdOfTheLifetimeLeftClampedToTheLimits) {
  TailscaleCertSource::Options options;
  CertificatePair pair;
  Clock::time_point start = Clock::now();
  pair.not_before = start;
  pair.not_after = start + std::chrono::hours(24 * 90);
  // A fresh 90-day certificate: renewal is 60 days away, so the 12 h cap applies.
  EXPECT_EQ(TailscaleCertSource::RefreshDelay(pair, start, options), std::chrono::hours(12));
  // Just before day 60: the hours that are left.
  EXPECT_EQ(TailscaleCertSource::RefreshDelay(
                pair, start + std::chrono::hours(24 * 60) - std::chrono::hours(3), options),
            std::chrono::hours(3));
  // Past the renewal point (tailscaled still serves the old one): poll at min_refresh.
  EXPECT_EQ(TailscaleCertSource::RefreshDelay(pair, start + std::chrono::hours(24 * 70), options),
            std::chrono::minutes(1));
  // A 3 s certificate: 2 s, unless min_refresh says otherwise.
  pair.not_after = start + seconds(3);
  options.min_refresh = milliseconds(100);
  EXPECT_EQ(TailscaleCertSource::RefreshDelay(pair, start, options), milliseconds(2000));
}

// ---- against the fake tailscaled -----------------------------------------------------------

std::string UniqueSocketPath() {
  static int counter = 0;
  return "/tmp/sepal-cert-ts-" + std::to_string(::getpid()) + "-" + std::to_string(++counter) +
         ".sock";
}

class CertSourceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    socket_path_ = UniqueSocketPath();
    fake_ = FakeTailscaled::Start(socket_path_);
    ASSERT_NE(fake_, nullptr);
    options_.initial_backoff = milliseconds(50);
    options_.max_backoff = milliseconds(400);
    options_.min_refresh = milliseconds(100);
    options_.status_timeout = milliseconds(2000);
    options_.cert_timeout = milliseconds(2000);
  }

  void TearDown() override {
    source_.reset();
    RunFor(milliseconds(20));  // let dropped handlers run
  }

  void RunFor(milliseconds duration) {
    if (io_.stopped()) io_.restart();
    io_.run_for(duration);
  }

  void StartSource() {
    source_ = std::make_unique<TailscaleCertSource>(
        io_.get_executor(), socket_path_,
        [this](const CertificatePair& pair) { pairs_.push_back(pair); },
        [this](const CertSourceError& error) { errors_.push_back(error); }, options_);
    source_->Start();
  }

  // Runs the event loop until `predicate` holds (true) or 10 s pass (false).
  template <typename Predicate>
  bool RunUntil(Predicate predicate, milliseconds timeout = milliseconds(10000)) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!predicate()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      if (io_.stopped()) io_.restart();  // it stops whenever it runs out of work
      io_.run_one_for(milliseconds(10));
    }
    return true;
  }

  std::string socket_path_;
  std::unique_ptr<FakeTailscaled> fake_;
  boost::asio::io_context io_;
  TailscaleCertSource::Options options_;
  std::unique_ptr<TailscaleCertSource> source_;
  std::vector<CertificatePair> pairs_;
  std::vector<CertSourceError> errors_;
};

// The fake's /status and /cert answers, read raw through LocalApiClient::Get.
TEST_F(CertSourceTest, FakeTailscaledStatusAndCertTranscripts) {
  identity::LocalApiClient client(io_.get_executor(), socket_path_);
  std::optional<identity::LocalApiResponse> response;
  auto get = [&](const std::string& target, size_t max_body = 1024 * 1024) {
    response.reset();
    client.Get(target, milliseconds(2000), max_body,
               [&](identity::LocalApiResponse r) { response = std::move(r); });
    EXPECT_TRUE(RunUntil([&] { return response.has_value(); }));
    return *response;
  };

  identity::LocalApiResponse status = get("/localapi/v0/status");
  ASSERT_TRUE(status.ok()) << status.error;
  EXPECT_EQ(status.status, 200u);
  boost::json::value parsed = boost::json::parse(status.body);
  EXPECT_EQ(parsed.at("BackendState").as_string(), "Running");
  EXPECT_EQ(parsed.at("Self").at("DNSName").as_string(), "superlink.tail1234.ts.net.");
  EXPECT_EQ(parsed.at("TailscaleIPs").as_array().size(), 2u);
  EXPECT_EQ(parsed.at("CertDomains").at(0).as_string(), kDomain);
  EXPECT_EQ(status.body.back(), '\n');  // json.Encoder

  identity::LocalApiResponse key = get("/localapi/v0/cert/superlink.tail1234.ts.net?type=key");
  EXPECT_EQ(key.status, 200u);
  EXPECT_EQ(key.body.rfind("-----BEGIN EC PRIVATE KEY-----", 0), 0u);
  EXPECT_EQ(key.body.find("CERTIFICATE"), std::string::npos);
  identity::LocalApiResponse cert = get("/localapi/v0/cert/superlink.tail1234.ts.net");
  EXPECT_EQ(cert.body.rfind("-----BEGIN CERTIFICATE-----", 0), 0u);
  identity::LocalApiResponse pair = get("/localapi/v0/cert/superlink.tail1234.ts.net?type=pair");
  EXPECT_EQ(pair.body, key.body + cert.body);  // key first, then the chain

  EXPECT_EQ(get("/localapi/v0/cert/superlink.tail1234.ts.net?type=der").body,
            "invalid type; want \"cert\" (default), \"key\", or \"pair\"\n");
  EXPECT_EQ(get("/localapi/v0/cert/localhost").body, "invalid domain\n");
  identity::LocalApiResponse other = get("/localapi/v0/cert/other.tail1234.ts.net?type=pair");
  EXPECT_EQ(other.status, 500u);
  EXPECT_EQ(other.body,
            "invalid domain \"other.tail1234.ts.net\"; must be one of "
            "[\"superlink.tail1234.ts.net\"]\n");
  fake_->SetHttpsEnabled(false);
  EXPECT_EQ(get("/localapi/v0/cert/superlink.tail1234.ts.net?type=pair").body,
            std::string(FakeTailscaled::kHttpsDisabledError) + "\n");
  fake_->SetCertFailure(429, "slow down\n", "17");
  identity::LocalApiResponse limited = get("/localapi/v0/cert/superlink.tail1234.ts.net");
  EXPECT_EQ(limited.status, 429u);
  EXPECT_EQ(limited.retry_after, "17");
  EXPECT_EQ(fake_->CertRequestCount(), 8);
  EXPECT_EQ(fake_->CertsIssued(), 1);  // one certificate, served from its cache after that

  identity::LocalApiResponse cut = get("/localapi/v0/status", 64);
  EXPECT_EQ(cut.failure, identity::LocalApiResponse::Failure::kIo);
  EXPECT_EQ(fake_->StatusRequestCount(), 2);
}

TEST_F(CertSourceTest, FirstFetchDiscoversTheDomainAndDeliversAVerifiedPair) {
  StartSource();
  ASSERT_TRUE(RunUntil([&] { return !pairs_.empty(); }));
  EXPECT_TRUE(errors_.empty());
  const CertificatePair& pair = pairs_.front();
  EXPECT_EQ(pair.domain, kDomain);
  EXPECT_TRUE(VerifiesAgainst(pair.certificate_pem, fake_->CaPem(), std::string(kDomain)));
  EXPECT_NE(pair.private_key_pem.find("PRIVATE KEY"), std::string::npos);
  std::string error;
  EXPECT_TRUE(HandshakeWith(pair, fake_->CaPem(), std::string(kDomain), &error)) << error;
  EXPECT_GT(pair.not_after, Clock::now() + std::chrono::hours(24 * 89));
  EXPECT_EQ(fake_->StatusRequestCount(), 1);
  EXPECT_EQ(fake_->CertRequestCount(), 1);
  ASSERT_TRUE(source_->current());
  EXPECT_EQ(source_->current()->not_after, pair.not_after);
  std::string scrape = metrics::DefaultRegistry().Serialize();
  EXPECT_NE(scrape.find("sepal_tls_certificate_fetches_total{result=\"ok\"}"), std::string::npos);
  EXPECT_NE(scrape.find("sepal_tls_certificate_expiry_timestamp_seconds{domain=\"" +
                        std::string(kDomain) + "\"}"),
            std::string::npos);
}

TEST_F(CertSourceTest, UsesCertDomainsAndAConfiguredDomainSkipsStatus) {
  FakeTailscaled::SelfNode self;
  self.dns_name = "fl-superlink.tail9999.ts.net.";
  fake_->SetSelf(self);
  StartSource();
  ASSERT_TRUE(RunUntil([&] { return !pairs_.empty(); }));
  EXPECT_EQ(pairs_.front().domain, "fl-superlink.tail9999.ts.net");
  source_.reset();

  options_.domain = "fl-superlink.tail9999.ts.net";
  pairs_.clear();
  int status_before = fake_->StatusRequestCount();
  StartSource();
  ASSERT_TRUE(RunUntil([&] { return !pairs_.empty(); }));
  EXPECT_EQ(fake_->StatusRequestCount(), status_before);
}

TEST_F(CertSourceTest, RenewsBeforeExpiry) {
  fake_->SetCertLifetime(seconds(3));  // tailscaled renews at 2 s, the source polls from 2 s
  StartSource();
  ASSERT_TRUE(RunUntil([&] { return !pairs_.empty(); }));
  ASSERT_TRUE(RunUntil([&] { return pairs_.size() >= 2; }));
  EXPECT_GT(pairs_[1].not_after, pairs_[0].not_after);
  EXPECT_NE(pairs_[1].private_key_pem, pairs_[0].private_key_pem);
  EXPECT_GE(fake_->CertsIssued(), 2);
  // Never handed an expired certificate.
  for (const CertificatePair& pair : pairs_) EXPECT_GT(pair.not_after, pair.not_before);
  EXPECT_TRUE(errors_.empty());
}

TEST_F(CertSourceTest, HttpsDisabledIsNamedAndRetriedWithBackoff) {
  fake_->SetHttpsEnabled(false);
  StartSource();
  ASSERT_TRUE(RunUntil([&] { return errors_.size() >= 3; }));
  EXPECT_EQ(errors_[0].kind, Kind::kHttpsDisabled);
  EXPECT_NE(errors_[0].message.find("HTTPS certificates are not enabled for this tailnet (enable "
                                    "HTTPS in the admin console"),
            std::string::npos)
      << errors_[0].message;
  EXPECT_NE(errors_[0].message.find(FakeTailscaled::kHttpsDisabledError), std::string::npos);
  EXPECT_EQ(errors_[0].retry_in, milliseconds(50));
  EXPECT_EQ(errors_[1].retry_in, milliseconds(100));
  EXPECT_EQ(errors_[2].retry_in, milliseconds(200));
  EXPECT_EQ(errors_[2].consecutive_failures, 3);
  EXPECT_TRUE(pairs_.empty());

  fake_->SetHttpsEnabled(true);
  ASSERT_TRUE(RunUntil([&] { return !pairs_.empty(); }));
  std::string scrape = metrics::DefaultRegistry().Serialize();
  EXPECT_NE(scrape.find("sepal_tls_certificate_fetches_total{result=\"https_disabled\"}"),
            std::string::npos);
}

TEST_F(CertSourceTest, BackoffIsCapped) {
  fake_->SetHttpsEnabled(false);
  StartSource();
  ASSERT_TRUE(RunUntil([&] { return errors_.size() >= 6; }));
  EXPECT_EQ(errors_[3].retry_in, milliseconds(400));
  EXPECT_EQ(errors_[5].retry_in, milliseconds(400));
}

TEST_F(CertSourceTest, RateLimitHonoursRetryAfter) {
  fake_->SetCertFailure(429, "429 Too Many Requests\n", "1");
  StartSource();
  ASSERT_TRUE(RunUntil([&] { return !errors_.empty(); }));
  EXPECT_EQ(errors_[0].kind, Kind::kRateLimited);
  EXPECT_EQ(errors_[0].retry_in, milliseconds(1000));
  EXPECT_NE(errors_[0].message.find("rate limited"), std::string::npos) << errors_[0].message;
  EXPECT_NE(errors_[0].message.find("retrying later"), std::string::npos);
  // No request before the Retry-After has passed.
  auto first = std::chrono::steady_clock::now();
  int requests = fake_->CertRequestCount();
  ASSERT_TRUE(RunUntil([&] { return errors_.size() >= 2; }));
  EXPECT_GE(std::chrono::steady_clock::now() - first, milliseconds(900));
  EXPECT_EQ(fake_->CertRequestCount(), requests + 1);

  // Let's Encrypt's own rate limit comes back as a 500 from tailscaled.
  fake_->SetCertFailure(500,
                        "acme: error code 429 \"urn:ietf:params:acme:error:rateLimited\": too "
                        "many certificates (5) already issued for this exact set of domains\n");
  size_t seen = errors_.size();
  ASSERT_TRUE(RunUntil([&] { return errors_.size() > seen; }, milliseconds(5000)));
  EXPECT_EQ(errors_.back().kind, Kind::kRateLimited);
}

TEST_F(CertSourceTest, ForbiddenAndOtherErrorsAreNamed) {
  fake_->SetCertFailure(403, "cert access denied\n");
  StartSource();
  ASSERT_TRUE(RunUntil([&] { return !errors_.empty(); }));
  EXPECT_EQ(errors_[0].kind, Kind::kForbidden);
  EXPECT_NE(errors_[0].message.find("403: cert access denied"), std::string::npos)
      << errors_[0].message;
  EXPECT_NE(errors_[0].message.find("TS_PERMIT_CERT_UID"), std::string::npos);

  fake_->SetCertFailure(500, "acme: order status: invalid\n");
  size_t seen = errors_.size();
  ASSERT_TRUE(RunUntil([&] { return errors_.size() > seen; }));
  EXPECT_EQ(errors_.back().kind, Kind::kHttp);
  EXPECT_NE(errors_.back().message.find("500: acme: order status: invalid"), std::string::npos)
      << errors_.back().message;
}

TEST_F(CertSourceTest, NotRunningIsNamed) {
  fake_->SetBackendState("NeedsLogin");
  StartSource();
  ASSERT_TRUE(RunUntil([&] { return !errors_.empty(); }));
  EXPECT_EQ(errors_[0].kind, Kind::kNotRunning);
  EXPECT_EQ(fake_->CertRequestCount(), 0);
}

TEST_F(CertSourceTest, SlowTailscaledTimesOut) {
  options_.cert_timeout = milliseconds(200);
  fake_->SetCertDelay(milliseconds(3000));
  StartSource();
  ASSERT_TRUE(RunUntil([&] { return !errors_.empty(); }));
  EXPECT_EQ(errors_[0].kind, Kind::kTimeout);
  EXPECT_NE(errors_[0].message.find("did not answer"), std::string::npos) << errors_[0].message;
}

TEST_F(CertSourceTest, MismatchedKeyIsRejected) {
  TestCa ca;
  test::CertifiedKey pem = ca.Issue(TailnetLeaf());
  fake_->SetCertPairOverride(test::NewPrivateKeyPem() + pem.certificate_pem);
  StartSource();
  ASSERT_TRUE(RunUntil([&] { return !errors_.empty(); }));
  EXPECT_EQ(errors_[0].kind, Kind::kBadPair);
  EXPECT_NE(errors_[0].message.find("does not match"), std::string::npos) << errors_[0].message;
  EXPECT_TRUE(pairs_.empty());
  fake_->SetCertPairOverride(std::nullopt);
  ASSERT_TRUE(RunUntil([&] { return !pairs_.empty(); }));
}

TEST_F(CertSourceTest, TailscaledDownThenUp) {
  fake_->Stop();
  StartSource();
  ASSERT_TRUE(RunUntil([&] { return errors_.size() >= 2; }));
  EXPECT_EQ(errors_[0].kind, Kind::kConnect);
  EXPECT_NE(errors_[0].message.find("cannot reach tailscaled at " + socket_path_),
            std::string::npos)
      << errors_[0].message;
  ASSERT_TRUE(fake_->Restart());
  ASSERT_TRUE(RunUntil([&] { return !pairs_.empty(); }));
  EXPECT_EQ(pairs_[0].domain, kDomain);
}

TEST_F(CertSourceTest, KeepsTheCertificateWhenARefreshFails) {
  fake_->SetCertLifetime(seconds(3));
  StartSource();
  ASSERT_TRUE(RunUntil([&] { return !pairs_.empty(); }));
  fake_->SetCertFailure(500, "acme: order status: invalid\n");
  ASSERT_TRUE(RunUntil([&] { return !errors_.empty(); }));
  ASSERT_TRUE(source_->current());
  EXPECT_EQ(source_->current()->not_after, pairs_[0].not_after);
}

TEST_F(CertSourceTest, DestroyedInsideItsCallbackOrWithRequestsInFlight) {
  fake_->SetHttpsEnabled(false);
  int calls = 0;
  source_ = std::make_unique<TailscaleCertSource>(
      io_.get_executor(), socket_path_, [](const CertificatePair&) {},
      [&](const CertSourceError&) {
        ++calls;
        source_.reset();  // the callback destroys its own source
      },
      options_);
  source_->Start();
  ASSERT_TRUE(RunUntil([&] { return calls == 1; }));
  RunFor(milliseconds(300));  // any timer it left would have fired by now
  EXPECT_EQ(calls, 1);

  // Destroyed while the cert request is held back by tailscaled: no callback afterwards.
  fake_->SetHttpsEnabled(true);
  fake_->SetCertDelay(milliseconds(200));
  int requests = fake_->CertRequestCount();
  StartSource();
  ASSERT_TRUE(RunUntil([&] { return fake_->CertRequestCount() > requests; }));
  source_.reset();
  RunFor(milliseconds(500));
  EXPECT_TRUE(pairs_.empty());
}

}  // namespace
}  // namespace sepal::tls
