// Test certificate authority built on the OpenSSL 3 API.
#include "tests/support/test_certs.h"

#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cstdio>
#include <fstream>
#include <stdexcept>

namespace sepal::test {

namespace {

void Check(bool ok, const char* what) {
  if (!ok) throw std::runtime_error(std::string("test_certs: ") + what);
}

EVP_PKEY* NewKey() {
  EVP_PKEY* key = EVP_EC_gen("P-256");
  Check(key != nullptr, "EVP_EC_gen");
  return key;
}

std::string KeyPem(EVP_PKEY* key) {
  BIO* bio = BIO_new(BIO_s_mem());
  Check(PEM_write_bio_PrivateKey(bio, key, nullptr, nullptr, 0, nullptr, nullptr) == 1,
        "PEM_write_bio_PrivateKey");
  char* data = nullptr;
  long length = BIO_get_mem_data(bio, &data);
  std::string pem(data, static_cast<size_t>(length));
  BIO_free(bio);
  return pem;
}

std::string CertPem(X509* cert) {
  BIO* bio = BIO_new(BIO_s_mem());
  Check(PEM_write_bio_X509(bio, cert) == 1, "PEM_write_bio_X509");
  char* data = nullptr;
  long length = BIO_get_mem_data(bio, &data);
  std::string pem(data, static_cast<size_t>(length));
  BIO_free(bio);
  return pem;
}

void AddExtension(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* extension = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  Check(extension != nullptr, "X509V3_EXT_conf_nid");
  X509_add_ext(cert, extension, -1);
  X509_EXTENSION_free(extension);
}

// A certificate for `key` named `common_name`; self-signed when issuer is null.
X509* NewCertificate(EVP_PKEY* key, const std::string& common_name, X509* issuer,
                     bool expired, std::string* serial_hex) {
  X509* cert = X509_new();
  X509_set_version(cert, 2);
  // A random 64-bit serial: certificates issued in one test are told apart by it.
  BIGNUM* serial = BN_new();
  BN_rand(serial, 63, BN_RAND_TOP_ONE, BN_RAND_BOTTOM_ANY);
  BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(cert));
  char* hex = BN_bn2hex(serial);
  *serial_hex = hex;
  OPENSSL_free(hex);
  BN_free(serial);
  if (expired) {
    X509_gmtime_adj(X509_getm_notBefore(cert), -2L * 24 * 3600);
    X509_gmtime_adj(X509_getm_notAfter(cert), -1L * 24 * 3600);
  } else {
    X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
    X509_gmtime_adj(X509_getm_notAfter(cert), 7L * 24 * 3600);
  }
  X509_set_pubkey(cert, key);
  X509_NAME* name = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(common_name.c_str()), -1, -1,
                             0);
  X509_set_issuer_name(cert, issuer != nullptr ? X509_get_subject_name(issuer) : name);
  X509* signer = issuer != nullptr ? issuer : cert;
  AddExtension(cert, signer, NID_subject_key_identifier, "hash");
  AddExtension(cert, signer, NID_authority_key_identifier, "keyid:always");
  return cert;
}

void Sign(X509* cert, EVP_PKEY* key) {
  Check(X509_sign(cert, key, EVP_sha256()) > 0, "X509_sign");
}

}  // namespace

TestCa::TestCa(const std::string& common_name) {
  EVP_PKEY* key = NewKey();
  X509* cert = NewCertificate(key, common_name, nullptr, false, &self_.serial_hex);
  AddExtension(cert, cert, NID_basic_constraints, "critical,CA:TRUE");
  AddExtension(cert, cert, NID_key_usage, "critical,keyCertSign,cRLSign");
  Sign(cert, key);
  self_.certificate_pem = CertPem(cert);
  self_.private_key_pem = KeyPem(key);
  self_.common_name = common_name;
  key_ = key;
  cert_ = cert;
}

TestCa::~TestCa() {
  EVP_PKEY_free(static_cast<EVP_PKEY*>(key_));
  X509_free(static_cast<X509*>(cert_));
}

CertifiedKey TestCa::Issue(const LeafOptions& options) const {
  auto* ca_cert = static_cast<X509*>(cert_);
  auto* ca_key = static_cast<EVP_PKEY*>(key_);
  EVP_PKEY* key = NewKey();
  CertifiedKey out;
  X509* cert =
      NewCertificate(key, options.common_name, ca_cert, options.expired, &out.serial_hex);
  AddExtension(cert, ca_cert, NID_basic_constraints, "critical,CA:FALSE");
  AddExtension(cert, ca_cert, NID_key_usage, "critical,digitalSignature,keyEncipherment");
  AddExtension(cert, ca_cert, NID_ext_key_usage, options.client ? "clientAuth" : "serverAuth");
  std::string san;
  for (const std::string& dns : options.dns_names) san += (san.empty() ? "DNS:" : ",DNS:") + dns;
  for (const std::string& ip : options.ip_addresses) san += (san.empty() ? "IP:" : ",IP:") + ip;
  if (!san.empty()) AddExtension(cert, ca_cert, NID_subject_alt_name, san);
  Sign(cert, ca_key);
  out.certificate_pem = CertPem(cert);
  out.private_key_pem = KeyPem(key);
  out.common_name = options.common_name;
  X509_free(cert);
  EVP_PKEY_free(key);
  return out;
}

CertifiedKey TestCa::IssueLocalhost(const std::string& common_name) const {
  LeafOptions options;
  options.common_name = common_name;
  options.dns_names = {"localhost"};
  options.ip_addresses = {"127.0.0.1", "::1"};
  return Issue(options);
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
