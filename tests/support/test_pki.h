// Certificates for tests, made at run time with OpenSSL's C API (no private key is checked in):
// a CA and leaves signed by it, with chosen SANs, validity window, key usage and key format.
// Keys are ECDSA P-256: quick to generate.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace sepal::test {

struct CertifiedKey {
  std::string certificate_pem;  // leaf, then the issuing CA when asked for a chain
  std::string private_key_pem;
  std::string serial_hex;  // uppercase hex, as BN_bn2hex prints it
  std::string common_name;
};

struct LeafOptions {
  std::string common_name = "localhost";
  std::vector<std::string> dns_names = {"localhost"};           // subjectAltName DNS entries
  std::vector<std::string> ip_addresses = {"127.0.0.1", "::1"};  // subjectAltName IP entries
  // Validity relative to now: [now + not_before, now + not_before + lifetime].
  std::chrono::seconds not_before{-60};
  std::chrono::seconds lifetime{std::chrono::hours(24 * 90)};
  bool server_auth = true;   // extendedKeyUsage serverAuth
  bool client_auth = false;  // extendedKeyUsage clientAuth
  // Append the CA certificate after the leaf (as a served chain is).
  bool include_chain = false;
  // "EC PRIVATE KEY" (SEC1, what tailscaled writes) instead of PKCS#8 "PRIVATE KEY".
  bool sec1_key = false;

  // Sets the window to "valid from two days ago until yesterday".
  LeafOptions& Expired() {
    not_before = -std::chrono::hours(48);
    lifetime = std::chrono::hours(24);
    return *this;
  }
};

// An EC P-256 certificate authority. Copyable handle; thread-safe for concurrent Issue calls.
class TestCa {
 public:
  // Aborts the test process on an OpenSSL failure (it means the environment is broken).
  explicit TestCa(const std::string& common_name = "sepal test CA");
  ~TestCa();
  TestCa(const TestCa&) = default;
  TestCa& operator=(const TestCa&) = default;

  const std::string& certificate_pem() const;
  // A new key and a certificate for it signed by this CA; every call has a fresh serial.
  CertifiedKey Issue(const LeafOptions& options) const;
  // A server leaf (no chain) named `common_name` for "localhost", 127.0.0.1 and ::1.
  CertifiedKey IssueLocalhost(const std::string& common_name = "localhost") const;

 private:
  struct State;
  std::shared_ptr<State> state_;
};

// A fresh EC P-256 key alone, PKCS#8 PEM (for key-mismatch tests).
std::string NewPrivateKeyPem();

// Writes `content` to `path` (replacing it atomically); false on error.
bool WriteTextFile(const std::string& path, const std::string& content);

}  // namespace sepal::test
