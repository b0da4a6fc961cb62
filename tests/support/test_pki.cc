// TestCa: X509 certificates built field by field with OpenSSL 3 (EVP keys, X509V3 extensions
// from config strings, PEM through memory BIOs).
#include "tests/support/test_pki.h"

#include <openssl/bn.h>
#include <openssl/encoder.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <utility>

namespace sepal::test {
namespace {

[[noreturn]] void Die(const char* what) {
  std::fprintf(stderr, "test_pki: %s failed\n", what);
  ERR_print_errors_fp(stderr);
  std::abort();
}

template <typename T, void (*Free)(T*)>
struct Freer {
  void operator()(T* p) const { Free(p); }
};
using KeyPtr = std::unique_ptr<EVP_PKEY, Freer<EVP_PKEY, EVP_PKEY_free>>;
using CertPtr = std::unique_ptr<X509, Freer<X509, X509_free>>;
using BioPtr = std::unique_ptr<BIO, Freer<BIO, BIO_free_all>>;

KeyPtr NewKey() {
  KeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  if (!key) Die("EVP_PKEY_Q_keygen(EC, P-256)");
  return key;
}

std::string BioText(BIO* bio) {
  char* data = nullptr;
  long size = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<size_t>(size));
}

std::string CertPem(X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), cert) != 1) Die("PEM_write_bio_X509");
  return BioText(bio.get());
}

std::string KeyPem(EVP_PKEY* key, bool sec1) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio) Die("BIO_new");
  if (sec1) {
    OSSL_ENCODER_CTX* encoder = OSSL_ENCODER_CTX_new_for_pkey(key, EVP_PKEY_KEYPAIR, "PEM",
                                                              "type-specific", nullptr);
    bool ok = encoder != nullptr && OSSL_ENCODER_to_bio(encoder, bio.get()) == 1;
    OSSL_ENCODER_CTX_free(encoder);
    if (!ok) Die("OSSL_ENCODER_to_bio(type-specific)");
  } else if (PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) !=
             1) {
    Die("PEM_write_bio_PrivateKey");
  }
  return BioText(bio.get());
}

void AddExtension(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX context;
  X509V3_set_ctx_nodb(&context);
  X509V3_set_ctx(&context, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* extension = X509V3_EXT_nconf_nid(nullptr, &context, nid, value.c_str());
  if (extension == nullptr) Die("X509V3_EXT_nconf_nid");
  if (X509_add_ext(cert, extension, -1) != 1) Die("X509_add_ext");
  X509_EXTENSION_free(extension);
}

// A certificate for `key` with the subject, validity and serial set; extensions come after.
CertPtr NewCertificate(EVP_PKEY* key, const std::string& common_name,
                       std::chrono::seconds not_before, std::chrono::seconds lifetime,
                       std::string* serial_hex) {
  CertPtr cert(X509_new());
  if (!cert || X509_set_version(cert.get(), X509_VERSION_3) != 1) Die("X509_new");
  unsigned char serial[16];
  if (RAND_bytes(serial, sizeof(serial)) != 1) Die("RAND_bytes");
  serial[0] = static_cast<unsigned char>((serial[0] & 0x3F) | 0x40);  // positive, 16 bytes
  BIGNUM* number = BN_bin2bn(serial, sizeof(serial), nullptr);
  if (number == nullptr || BN_to_ASN1_INTEGER(number, X509_get_serialNumber(cert.get())) == nullptr) {
    Die("serial number");
  }
  char* hex = BN_bn2hex(number);
  if (hex == nullptr) Die("BN_bn2hex");
  *serial_hex = hex;
  OPENSSL_free(hex);
  BN_free(number);
  long start = static_cast<long>(not_before.count());
  if (X509_gmtime_adj(X509_getm_notBefore(cert.get()), start) == nullptr ||
      X509_gmtime_adj(X509_getm_notAfter(cert.get()), start + static_cast<long>(lifetime.count())) ==
          nullptr) {
    Die("X509_gmtime_adj");
  }
  X509_NAME* name = X509_get_subject_name(cert.get());
  auto text = [](const std::string& s) { return reinterpret_cast<const unsigned char*>(s.c_str()); };
  if (X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, text(common_name), -1, -1, 0) != 1) {
    Die("X509_NAME_add_entry_by_txt");
  }
  if (X509_set_pubkey(cert.get(), key) != 1) Die("X509_set_pubkey");
  return cert;
}

}  // namespace

struct TestCa::State {
  KeyPtr key;
  CertPtr cert;
  std::string pem;
  std::string serial_hex;
  std::mutex mutex;  // OpenSSL objects are shared by copies of the handle
};

TestCa::TestCa(const std::string& common_name) : state_(std::make_shared<State>()) {
  state_->key = NewKey();
  state_->cert = NewCertificate(state_->key.get(), common_name, std::chrono::seconds(-3600),
                                std::chrono::hours(24 * 3650), &state_->serial_hex);
  X509* cert = state_->cert.get();
  if (X509_set_issuer_name(cert, X509_get_subject_name(cert)) != 1) Die("X509_set_issuer_name");
  AddExtension(cert, cert, NID_basic_constraints, "critical,CA:TRUE,pathlen:0");
  AddExtension(cert, cert, NID_key_usage, "critical,keyCertSign,cRLSign");
  AddExtension(cert, cert, NID_subject_key_identifier, "hash");
  if (X509_sign(cert, state_->key.get(), EVP_sha256()) <= 0) Die("X509_sign (CA)");
  state_->pem = CertPem(cert);
}

TestCa::~TestCa() = default;

const std::string& TestCa::certificate_pem() const { return state_->pem; }

CertifiedKey TestCa::Issue(const LeafOptions& options) const {
  KeyPtr key = NewKey();
  CertifiedKey out;
  std::lock_guard lock(state_->mutex);
  CertPtr cert = NewCertificate(key.get(), options.common_name, options.not_before,
                                options.lifetime, &out.serial_hex);
  X509* issuer = state_->cert.get();
  if (X509_set_issuer_name(cert.get(), X509_get_subject_name(issuer)) != 1) {
    Die("X509_set_issuer_name");
  }
  AddExtension(cert.get(), issuer, NID_basic_constraints, "critical,CA:FALSE");
  AddExtension(cert.get(), issuer, NID_key_usage, "critical,digitalSignature");
  std::string usages;
  if (options.server_auth) usages = "serverAuth";
  if (options.client_auth) usages += usages.empty() ? "clientAuth" : ",clientAuth";
  if (!usages.empty()) AddExtension(cert.get(), issuer, NID_ext_key_usage, usages);
  std::string names;
  for (const std::string& dns : options.dns_names) {
    names += (names.empty() ? "DNS:" : ",DNS:") + dns;
  }
  for (const std::string& ip : options.ip_addresses) {
    names += (names.empty() ? "IP:" : ",IP:") + ip;
  }
  if (!names.empty()) AddExtension(cert.get(), issuer, NID_subject_alt_name, names);
  AddExtension(cert.get(), issuer, NID_subject_key_identifier, "hash");
  AddExtension(cert.get(), issuer, NID_authority_key_identifier, "keyid");
  if (X509_sign(cert.get(), state_->key.get(), EVP_sha256()) <= 0) Die("X509_sign (leaf)");

  out.certificate_pem = CertPem(cert.get());
  if (options.include_chain) out.certificate_pem += state_->pem;
  out.private_key_pem = KeyPem(key.get(), options.sec1_key);
  out.common_name = options.common_name;
  return out;
}

CertifiedKey TestCa::IssueLocalhost(const std::string& common_name) const {
  LeafOptions options;
  options.common_name = common_name;
  return Issue(options);
}

std::string NewPrivateKeyPem() {
  KeyPtr key = NewKey();
  return KeyPem(key.get(), false);
}

bool WriteTextFile(const std::string& path, const std::string& content) {
  std::string temporary = path + ".tmp";
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    if (!out) return false;
    out << content;
    if (!out.flush()) return false;
  }
  return std::rename(temporary.c_str(), path.c_str()) == 0;
}

}  // namespace sepal::test
