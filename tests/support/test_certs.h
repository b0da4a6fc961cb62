// Certificates made at test time with OpenSSL (nothing checked in): a CA, and leaf
// certificates it signs for servers (DNS and IP SANs) and clients, including expired ones.
// Keys are ECDSA P-256: quick to generate.
#pragma once

#include <string>
#include <vector>

namespace sepal::test {

struct CertifiedKey {
  std::string certificate_pem;
  std::string private_key_pem;
  std::string serial_hex;  // uppercase hex, as BN_bn2hex prints it
  std::string common_name;
};

struct LeafOptions {
  std::string common_name = "sepal-test";
  std::vector<std::string> dns_names;     // subjectAltName DNS entries
  std::vector<std::string> ip_addresses;  // subjectAltName IP entries
  bool client = false;   // extendedKeyUsage clientAuth instead of serverAuth
  bool expired = false;  // valid until yesterday
};

class TestCa {
 public:
  explicit TestCa(const std::string& common_name);
  ~TestCa();
  TestCa(const TestCa&) = delete;
  TestCa& operator=(const TestCa&) = delete;

  const std::string& certificate_pem() const { return self_.certificate_pem; }
  // A new key and a certificate for it signed by this CA; every call has a fresh serial.
  CertifiedKey Issue(const LeafOptions& options) const;
  // A server certificate for "localhost" and 127.0.0.1.
  CertifiedKey IssueLocalhost(const std::string& common_name = "localhost") const;

 private:
  CertifiedKey self_;
  void* key_ = nullptr;   // EVP_PKEY*
  void* cert_ = nullptr;  // X509*
};

// Writes `content` to `path` (replacing it atomically); false on error.
bool WriteTextFile(const std::string& path, const std::string& content);

}  // namespace sepal::test
