// TailscaleCertSource: status -> cert -> check -> deliver -> wait, on one steady_timer; every
// handler holds only a weak reference to the state, so the source may die at any point.
#include "proxy/tls/tailscale_cert_source.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <boost/asio/steady_timer.hpp>
#include <boost/json.hpp>
#include <charconv>
#include <ctime>
#include <utility>
#include <vector>

#include "proxy/common/strings.h"
#include "proxy/identity/localapi_client.h"
#include "proxy/metrics/metrics.h"

namespace sepal::tls {
namespace {

using Clock = std::chrono::system_clock;
using Kind = CertSourceError::Kind;
using std::chrono::milliseconds;
namespace json = boost::json;

constexpr size_t kMaxStatusBytes = 16 * 1024 * 1024;  // a status with every peer of a big tailnet
constexpr size_t kMaxPairBytes = 1024 * 1024;
constexpr size_t kMaxErrorText = 300;

// ---- metrics ------------------------------------------------------------------------------

struct Metrics {
  metrics::CounterFamily* fetches;
  metrics::GaugeFamily* expiry;
};

const Metrics& GetMetrics() {
  static const Metrics families = [] {
    metrics::Registry& registry = metrics::DefaultRegistry();
    Metrics m;
    m.fetches = &registry.AddCounter(
        "sepal_tls_certificate_fetches_total",
        "Certificate fetches from tailscaled, by result (ok or the kind of failure).", {"result"});
    m.expiry = &registry.AddGauge("sepal_tls_certificate_expiry_timestamp_seconds",
                                  "notAfter of the certificate in use, Unix seconds.", {"domain"});
    return m;
  }();
  return families;
}

void CountFetch(std::string_view result) {
  GetMetrics().fetches->WithLabels({std::string(result)}).Increment(metrics::kSharedShard);
}

// ---- PEM and X509 -------------------------------------------------------------------------

template <typename T, void (*Free)(T*)>
struct Freer {
  void operator()(T* p) const { Free(p); }
};
using BioPtr = std::unique_ptr<BIO, Freer<BIO, BIO_free_all>>;
using CertPtr = std::unique_ptr<X509, Freer<X509, X509_free>>;
using KeyPtr = std::unique_ptr<EVP_PKEY, Freer<EVP_PKEY, EVP_PKEY_free>>;

// The first line of OpenSSL's error queue (and clears it), for messages.
std::string OpenSslError() {
  unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) return "unknown error";
  char text[256];
  ERR_error_string_n(code, text, sizeof(text));
  return text;
}

BioPtr MemoryBio(std::string_view text) {
  return BioPtr(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
}

struct PemBlock {
  std::string label;  // "CERTIFICATE", "EC PRIVATE KEY", ...
  std::string text;   // BEGIN line to END line, with a final newline
};

// The PEM blocks of `body` in order; text outside blocks is ignored. False on a block that
// does not end.
bool SplitPem(std::string_view body, std::vector<PemBlock>* blocks, std::string* error) {
  constexpr std::string_view kBegin = "-----BEGIN ";
  constexpr std::string_view kDashes = "-----";
  size_t at = 0;
  while ((at = body.find(kBegin, at)) != std::string_view::npos) {
    size_t label_start = at + kBegin.size();
    size_t label_end = body.find(kDashes, label_start);
    if (label_end == std::string_view::npos) {
      *error = "a PEM BEGIN line does not end";
      return false;
    }
    std::string label(body.substr(label_start, label_end - label_start));
    std::string end_line = StrCat("-----END ", label, kDashes);
    size_t end = body.find(end_line, label_end);
    if (end == std::string_view::npos) {
      *error = StrCat("the PEM block ", label, " has no END line");
      return false;
    }
    end += end_line.size();
    std::string text(body.substr(at, end - at));
    text += '\n';
    blocks->push_back({std::move(label), std::move(text)});
    at = end;
  }
  return true;
}

std::optional<Clock::time_point> ToTimePoint(const ASN1_TIME* time) {
  std::tm tm{};
  if (time == nullptr || ASN1_TIME_to_tm(time, &tm) != 1) return std::nullopt;
  return Clock::from_time_t(timegm(&tm));
}

std::string FormatTime(Clock::time_point time) {
  std::time_t t = Clock::to_time_t(time);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char text[32];
  std::strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return text;
}

// The first line of an error body, trimmed, for messages.
std::string ErrorText(std::string_view body) {
  body = body.substr(0, body.find('\n'));
  if (body.size() > kMaxErrorText) body = body.substr(0, kMaxErrorText);
  return std::string(body);
}

bool Contains(std::string_view text, std::string_view part) {
  return text.find(part) != std::string_view::npos;
}

// A domain tailscaled could have a certificate for; also keeps the request target clean.
bool PlausibleDomain(std::string_view name) {
  if (name.empty() || name.size() > 253 || name.find('.') == std::string_view::npos) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '.';
  });
}

// Seconds of a Retry-After header (delta-seconds form only; an HTTP date is ignored).
std::optional<milliseconds> ParseRetryAfter(std::string_view value) {
  while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  while (!value.empty() && value.back() == ' ') value.remove_suffix(1);
  long long seconds = 0;
  auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), seconds);
  if (value.empty() || ec != std::errc() || end != value.data() + value.size() || seconds < 0) {
    return std::nullopt;
  }
  return std::chrono::seconds(std::min<long long>(seconds, 7 * 24 * 3600));
}

}  // namespace

std::string_view KindName(Kind kind) {
  switch (kind) {
    case Kind::kConnect: return "connect";
    case Kind::kTimeout: return "timeout";
    case Kind::kIo: return "io";
    case Kind::kForbidden: return "forbidden";
    case Kind::kNotRunning: return "not_running";
    case Kind::kNoDomain: return "no_domain";
    case Kind::kHttpsDisabled: return "https_disabled";
    case Kind::kRateLimited: return "rate_limited";
    case Kind::kHttp: return "http_error";
    case Kind::kBadPair: return "bad_pair";
  }
  return "error";
}

std::optional<CertificatePair> ParseCertificatePair(std::string_view body, std::string_view domain,
                                                    Clock::time_point now, std::string* error) {
  ERR_clear_error();
  std::vector<PemBlock> blocks;
  if (!SplitPem(body, &blocks, error)) return std::nullopt;
  CertificatePair pair;
  pair.domain = std::string(domain);
  std::vector<CertPtr> certs;
  KeyPtr key;
  for (const PemBlock& block : blocks) {
    BioPtr bio = MemoryBio(block.text);
    if (block.label == "CERTIFICATE") {
      CertPtr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
      if (!cert) {
        *error = StrCat("certificate ", certs.size() + 1, " does not parse: ", OpenSslError());
        return std::nullopt;
      }
      certs.push_back(std::move(cert));
      pair.certificate_pem += block.text;
    } else if (block.label == "ENCRYPTED PRIVATE KEY") {
      *error = "the private key is encrypted";
      return std::nullopt;
    } else if (Contains(block.label, "PRIVATE KEY")) {
      if (key) {
        *error = "the answer holds more than one private key";
        return std::nullopt;
      }
      // No passphrase callback: an encrypted key must fail, not prompt on a terminal.
      key.reset(PEM_read_bio_PrivateKey(bio.get(), nullptr,
                                        [](char*, int, int, void*) { return 0; }, nullptr));
      if (!key) {
        *error = StrCat("the private key (", block.label, ") does not parse: ", OpenSslError());
        return std::nullopt;
      }
      pair.private_key_pem = block.text;
    } else {
      *error = StrCat("unexpected PEM block ", block.label);
      return std::nullopt;
    }
  }
  if (!key) {
    *error = "no private key in the answer";
    return std::nullopt;
  }
  if (certs.empty()) {
    *error = "no certificate in the answer";
    return std::nullopt;
  }
  X509* leaf = certs.front().get();
  if (X509_check_private_key(leaf, key.get()) != 1) {
    ERR_clear_error();
    *error = "the private key does not match the certificate";
    return std::nullopt;
  }
  std::optional<Clock::time_point> not_before = ToTimePoint(X509_get0_notBefore(leaf));
  std::optional<Clock::time_point> not_after = ToTimePoint(X509_get0_notAfter(leaf));
  if (!not_before || !not_after) {
    *error = "the certificate's validity dates do not parse";
    return std::nullopt;
  }
  pair.not_before = *not_before;
  pair.not_after = *not_after;
  if (now >= pair.not_after) {
    *error = StrCat("the certificate expired at ", FormatTime(pair.not_after));
    return std::nullopt;
  }
  if (X509_check_host(leaf, std::string(domain).c_str(), domain.size(), 0, nullptr) != 1) {
    ERR_clear_error();
    *error = StrCat("the certificate is not for ", domain);
    return std::nullopt;
  }
  for (size_t i = 0; i + 1 < certs.size(); ++i) {
    if (X509_check_issued(certs[i + 1].get(), certs[i].get()) != X509_V_OK) {
      *error = StrCat("certificate ", i + 2, " of the chain did not issue certificate ", i + 1);
      return std::nullopt;
    }
  }
  return pair;
}

std::optional<std::string> CertDomainFromStatus(std::string_view status_json,
                                                CertSourceError* error) {
  boost::system::error_code ec;
  json::value status = json::parse(json::string_view(status_json.data(), status_json.size()), ec);
  if (ec || !status.is_object()) {
    error->kind = Kind::kIo;
    error->message = StrCat("tailscaled's status is not a JSON object: ",
                            ec ? ec.message() : std::string("wrong type"));
    return std::nullopt;
  }
  const json::object& object = status.as_object();
  std::string state;
  if (const json::value* v = object.if_contains("BackendState"); v && v->is_string()) {
    state = std::string(v->as_string());
  }
  if (!state.empty() && state != "Running") {
    error->kind = Kind::kNotRunning;
    error->message = StrCat("tailscaled is not running (BackendState ", state,
                            "): bring the node up with 'tailscale up'");
    return std::nullopt;
  }
  std::string domain;
  if (const json::value* v = object.if_contains("CertDomains"); v && v->is_array()) {
    for (const json::value& item : v->as_array()) {
      if (item.is_string() && !item.as_string().empty()) {
        domain = std::string(item.as_string());
        break;
      }
    }
  }
  if (domain.empty()) {
    const json::value* self = object.if_contains("Self");
    if (self && self->is_object()) {
      if (const json::value* v = self->as_object().if_contains("DNSName"); v && v->is_string()) {
        domain = std::string(v->as_string());
      }
    }
    while (!domain.empty() && domain.back() == '.') domain.pop_back();
  }
  if (domain.empty()) {
    error->kind = Kind::kNoDomain;
    error->message =
        "tailscaled reports no MagicDNS name for this node (enable MagicDNS and HTTPS "
        "certificates in the admin console)";
    return std::nullopt;
  }
  if (!PlausibleDomain(domain)) {
    error->kind = Kind::kNoDomain;
    error->message = StrCat("tailscaled reports an unusable certificate domain '", domain, "'");
    return std::nullopt;
  }
  return domain;
}

// ---- the source ---------------------------------------------------------------------------

class TailscaleCertSource::Core : public std::enable_shared_from_this<Core> {
 public:
  Core(boost::asio::any_io_executor executor, std::string socket_path, PairCallback on_pair,
       ErrorCallback on_error, Options options)
      : client_(executor, std::move(socket_path)),
        timer_(executor),
        on_pair_(std::move(on_pair)),
        on_error_(std::move(on_error)),
        options_(std::move(options)) {}

  void Start() {
    if (started_ || stopped_) return;
    started_ = true;
    Fetch();
  }

  void Stop() {
    stopped_ = true;
    timer_.cancel();
  }

  const std::optional<CertificatePair>& current() const { return current_; }

 private:
  // A callback that runs only while the core is alive and not stopped; it holds the core for
  // its own duration, so user callbacks inside may destroy the source.
  template <typename F>
  auto Guarded(F f) {
    return [weak = weak_from_this(), f = std::move(f)](auto&&... args) {
      std::shared_ptr<Core> self = weak.lock();
      if (!self || self->stopped_) return;
      f(*self, std::forward<decltype(args)>(args)...);
    };
  }

  void Fetch() {
    if (!options_.domain.empty()) return FetchCert(options_.domain);
    client_.Get("/localapi/v0/status", options_.status_timeout, kMaxStatusBytes,
                Guarded([](Core& core, identity::LocalApiResponse response) {
                  core.OnStatus(std::move(response));
                }));
  }

  void OnStatus(identity::LocalApiResponse response) {
    if (!response.ok()) return Fail(TransportError(response, "status"));
    if (response.status != 200) return Fail(HttpError(response, "status"));
    CertSourceError error;
    std::optional<std::string> domain = CertDomainFromStatus(response.body, &error);
    if (!domain) return Fail(std::move(error));
    FetchCert(*domain);
  }

  void FetchCert(const std::string& domain) {
    if (!PlausibleDomain(domain)) {
      return Fail({Kind::kNoDomain, StrCat("'", domain, "' is not a domain to fetch a certificate for")});
    }
    client_.Get(StrCat("/localapi/v0/cert/", domain, "?type=pair"), options_.cert_timeout,
                kMaxPairBytes,
                Guarded([domain](Core& core, identity::LocalApiResponse response) {
                  core.OnCert(domain, std::move(response));
                }));
  }

  void OnCert(const std::string& domain, identity::LocalApiResponse response) {
    if (!response.ok()) return Fail(TransportError(response, StrCat("the certificate for ", domain)));
    if (response.status != 200) return Fail(CertHttpError(domain, response));
    std::string error;
    std::optional<CertificatePair> pair =
        ParseCertificatePair(response.body, domain, options_.now(), &error);
    if (!pair) {
      return Fail({Kind::kBadPair, StrCat("tailscaled's certificate for ", domain,
                                          " is unusable: ", error)});
    }
    Succeed(std::move(*pair));
  }

  CertSourceError TransportError(const identity::LocalApiResponse& response,
                                 std::string_view what) const {
    using Failure = identity::LocalApiResponse::Failure;
    switch (response.failure) {
      case Failure::kConnect:
        return {Kind::kConnect, StrCat("cannot reach tailscaled at ", client_.socket_path(), ": ",
                                       response.error, " (is tailscaled running?)")};
      case Failure::kTimeout:
        return {Kind::kTimeout, StrCat("tailscaled did not answer the request for ", what,
                                       " in time (", client_.socket_path(), ")")};
      default:
        return {Kind::kIo, StrCat("the request to tailscaled for ", what, " failed: ",
                                  response.error)};
    }
  }

  CertSourceError HttpError(const identity::LocalApiResponse& response,
                            std::string_view what) const {
    if (response.status == 403) {
      return {Kind::kForbidden,
              StrCat("tailscaled refused the request for ", what, " (403: ",
                     ErrorText(response.body),
                     "); run sepal as root or as the user named by tailscaled's "
                     "TS_PERMIT_CERT_UID")};
    }
    return {Kind::kHttp, StrCat("tailscaled answered the request for ", what, " with ",
                                response.status, ": ", ErrorText(response.body))};
  }

  CertSourceError CertHttpError(const std::string& domain,
                                const identity::LocalApiResponse& response) const {
    std::string_view body = response.body;
    if (response.status == 429 || Contains(body, "rateLimited") ||
        Contains(body, "too many certificates")) {
      CertSourceError error{Kind::kRateLimited,
                            StrCat("rate limited fetching the certificate for ", domain, " (",
                                   response.status, ": ", ErrorText(body), "); retrying later")};
      if (std::optional<milliseconds> after = ParseRetryAfter(response.retry_after)) {
        error.retry_in = std::min(*after, options_.max_retry_after);
      }
      return error;
    }
    if (response.status == 500 && (Contains(body, "does not support getting TLS certs") ||
                                   Contains(body, "not enabled"))) {
      return {Kind::kHttpsDisabled,
              StrCat("HTTPS certificates are not enabled for this tailnet (enable HTTPS in the "
                     "admin console, DNS page); tailscaled said: ",
                     ErrorText(body))};
    }
    return HttpError(response, StrCat("the certificate for ", domain));
  }

  void Succeed(CertificatePair pair) {
    CountFetch("ok");
    failures_ = 0;
    bool changed = !current_ || current_->certificate_pem != pair.certificate_pem ||
                   current_->private_key_pem != pair.private_key_pem;
    milliseconds delay = RefreshDelay(pair, options_.now(), options_);
    if (changed) {
      GetMetrics().expiry->WithLabels({pair.domain}).Set(
          static_cast<double>(Clock::to_time_t(pair.not_after)));
      current_ = std::move(pair);
      // The callback may stop or destroy the source: keep the core and look again after.
      std::shared_ptr<Core> keep = shared_from_this();
      if (on_pair_) on_pair_(*current_);
      if (stopped_) return;
    }
    Schedule(delay);
  }

  void Fail(CertSourceError error) {
    CountFetch(KindName(error.kind));
    ++failures_;
    milliseconds backoff = options_.initial_backoff;
    for (int i = 1; i < failures_ && backoff < options_.max_backoff; ++i) backoff *= 2;
    backoff = std::min(backoff, options_.max_backoff);
    // A Retry-After (already set) wins over the backoff.
    if (error.retry_in <= milliseconds::zero()) error.retry_in = backoff;
    error.consecutive_failures = failures_;
    milliseconds delay = error.retry_in;
    std::shared_ptr<Core> keep = shared_from_this();
    if (on_error_) on_error_(error);
    if (stopped_) return;
    Schedule(delay);
  }

  void Schedule(milliseconds delay) {
    timer_.expires_after(delay);
    timer_.async_wait(Guarded([](Core& core, const boost::system::error_code& ec) {
      if (!ec) core.Fetch();
    }));
  }

  identity::LocalApiClient client_;
  boost::asio::steady_timer timer_;
  PairCallback on_pair_;
  ErrorCallback on_error_;
  const Options options_;
  std::optional<CertificatePair> current_;
  int failures_ = 0;
  bool started_ = false;
  bool stopped_ = false;
};

TailscaleCertSource::TailscaleCertSource(boost::asio::any_io_executor executor,
                                         std::string socket_path, PairCallback on_pair,
                                         ErrorCallback on_error)
    : TailscaleCertSource(std::move(executor), std::move(socket_path), std::move(on_pair),
                          std::move(on_error), Options{}) {}

TailscaleCertSource::TailscaleCertSource(boost::asio::any_io_executor executor,
                                         std::string socket_path, PairCallback on_pair,
                                         ErrorCallback on_error, Options options)
    : core_(std::make_shared<Core>(std::move(executor), std::move(socket_path), std::move(on_pair),
                                   std::move(on_error), std::move(options))) {
  GetMetrics();  // families declared before any fetch, off the callback path
}

TailscaleCertSource::~TailscaleCertSource() { core_->Stop(); }

void TailscaleCertSource::Start() { core_->Start(); }

void TailscaleCertSource::Stop() { core_->Stop(); }

const std::optional<CertificatePair>& TailscaleCertSource::current() const {
  return core_->current();
}

milliseconds TailscaleCertSource::RefreshDelay(const CertificatePair& pair, Clock::time_point now,
                                               const Options& options) {
  auto lifetime = pair.not_after - pair.not_before;
  auto renew_at = pair.not_after - lifetime / 3;
  auto delay = std::chrono::duration_cast<milliseconds>(renew_at - now);
  return std::clamp(delay, options.min_refresh, std::max(options.min_refresh, options.max_refresh));
}

}  // namespace sepal::tls
