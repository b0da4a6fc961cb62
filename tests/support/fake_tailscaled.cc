// FakeTailscaled: a Beast HTTP/1.1 server on a unix socket with tailscaled's LocalAPI
// answers for whois and watch-ipn-bus.
#include "tests/support/fake_tailscaled.h"

#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <algorithm>
#include <charconv>
#include <cstdio>
#include <deque>
#include <exception>
#include <fstream>
#include <sstream>
#include <unordered_set>
#include <utility>
#include <vector>

namespace sepal::test {
namespace {

namespace net = boost::asio;
namespace http = boost::beast::http;
using boost::system::error_code;
using Socket = net::local::stream_protocol::socket;

constexpr std::string_view kLocalApiHost = "local-tailscaled.sock";
constexpr std::string_view kWhoIsPath = "/localapi/v0/whois";
constexpr std::string_view kWatchPath = "/localapi/v0/watch-ipn-bus";
constexpr std::string_view kStatusPath = "/localapi/v0/status";
constexpr std::string_view kCertPrefix = "/localapi/v0/cert/";
constexpr std::string_view kTextPlain = "text/plain; charset=utf-8";

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Go's url.QueryUnescape: '+' is a space, %XX a byte; a bad escape makes the pair invalid.
std::optional<std::string> QueryUnescape(std::string_view text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '+') {
      out.push_back(' ');
    } else if (text[i] == '%') {
      if (i + 2 >= text.size()) return std::nullopt;
      int high = HexDigit(text[i + 1]);
      int low = HexDigit(text[i + 2]);
      if (high < 0 || low < 0) return std::nullopt;
      out.push_back(static_cast<char>(high * 16 + low));
      i += 2;
    } else {
      out.push_back(text[i]);
    }
  }
  return out;
}

// The first valid value of `key` in a query string, as Go's Request.FormValue; "" if none.
std::string FormValue(std::string_view query, std::string_view key) {
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    size_t eq = pair.find('=');
    std::optional<std::string> name = QueryUnescape(pair.substr(0, eq));
    std::optional<std::string> value =
        QueryUnescape(eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1));
    if (name && value && *name == key) return *value;
  }
  return "";
}

bool IsNodeKey(std::string_view text) {
  constexpr std::string_view kPrefix = "nodekey:";
  if (text.substr(0, kPrefix.size()) != kPrefix) return false;
  std::string_view hex = text.substr(kPrefix.size());
  if (hex.size() != 64) return false;
  for (char c : hex) {
    if (HexDigit(c) < 0) return false;
  }
  return true;
}

// The first watch-ipn-bus line: Go marshals every nil pointer field of ipn.Notify as null.
std::string InitialNotification() {
  std::string line = "{\"Version\":\"";
  line += FakeTailscaled::kVersion;
  line +=
      "\",\"ErrMessage\":null,\"LoginFinished\":null,\"State\":null,\"Prefs\":null,"
      "\"NetMap\":null,\"Engine\":null,\"BrowseToURL\":null,\"LocalTCPPort\":null,"
      "\"ClientVersion\":null,\"Health\":null}";
  return line;
}

// A JSON string literal (the names and addresses here need no more than this).
std::string Quote(std::string_view text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  out += '"';
  return out;
}

// A tab-indented JSON array of strings at nesting `depth`, or null when empty (Go marshals a
// nil slice as null).
std::string StringArray(const std::vector<std::string>& items, int depth) {
  if (items.empty()) return "null";
  std::string indent(static_cast<size_t>(depth + 1), '\t');
  std::string out = "[";
  for (size_t i = 0; i < items.size(); ++i) {
    out += (i == 0 ? "\n" : ",\n") + indent + Quote(items[i]);
  }
  out += "\n" + std::string(static_cast<size_t>(depth), '\t') + "]";
  return out;
}

// ipnlocal.validLookingCertDomain.
bool ValidLookingCertDomain(std::string_view name) {
  return !name.empty() && name.find("..") == std::string_view::npos &&
         name.find_first_of(std::string_view(":/\\\0", 4)) == std::string_view::npos &&
         name.find('.') != std::string_view::npos;
}

std::string ChunkFrame(std::string_view data) {
  char size[20];
  auto [end, ec] = std::to_chars(size, size + sizeof(size), data.size(), 16);
  std::string frame(size, end);
  frame += "\r\n";
  frame += data;
  frame += "\r\n";
  return frame;
}

}  // namespace

// Lives on the server thread; owns the acceptor and knows every open connection.
class FakeTailscaled::Server : public std::enable_shared_from_this<FakeTailscaled::Server> {
 public:
  class Connection;

  Server(FakeTailscaled& owner, net::io_context& io_context)
      : owner_(owner), io_context_(io_context), acceptor_(io_context) {}

  bool Listen(const std::string& path, std::string* error) {
    ::unlink(path.c_str());
    error_code ec;
    try {
      net::local::stream_protocol::endpoint endpoint(path);
      acceptor_.open(endpoint.protocol(), ec);
      if (!ec) acceptor_.bind(endpoint, ec);
      if (!ec) acceptor_.listen(net::socket_base::max_listen_connections, ec);
    } catch (const std::exception& e) {
      *error = e.what();
      return false;
    }
    if (ec) *error = ec.message();
    return !ec;
  }

  void Accept();
  void CloseAll();
  void Push(const std::string& line);

  FakeTailscaled& owner() { return owner_; }
  std::unordered_set<Connection*>& connections() { return connections_; }
  std::unordered_set<Connection*>& watchers() { return watchers_; }

 private:
  FakeTailscaled& owner_;
  net::io_context& io_context_;
  net::local::stream_protocol::acceptor acceptor_;
  std::unordered_set<Connection*> connections_;
  std::unordered_set<Connection*> watchers_;
};

class FakeTailscaled::Server::Connection
    : public std::enable_shared_from_this<FakeTailscaled::Server::Connection> {
 public:
  Connection(std::shared_ptr<Server> server, Socket socket)
      : server_(std::move(server)), socket_(std::move(socket)), timer_(socket_.get_executor()) {
    server_->connections().insert(this);
  }
  ~Connection() { server_->connections().erase(this); }

  void ReadRequest() {
    parser_.emplace();
    parser_->body_limit(64 * 1024);
    http::async_read(socket_, buffer_, *parser_,
                     [self = shared_from_this()](const error_code& ec, size_t) {
                       if (ec) return self->Close();
                       self->Handle(self->parser_->release());
                     });
  }

  void Queue(const std::string& line) {
    if (closed_) return;
    queue_.push_back(ChunkFrame(line + "\n"));
    if (!writing_) WriteNext();
  }

  void Close() {
    if (closed_) return;
    closed_ = true;
    timer_.cancel();
    if (watching_) {
      server_->watchers().erase(this);
      server_->owner().WatcherClosed();
    }
    error_code ignored;
    socket_.close(ignored);
  }

 private:
  using Request = http::request<http::string_body>;

  void Handle(const Request& request) {
    std::string_view target = request.target();
    std::string_view host = request[http::field::host];
    std::string_view path = target.substr(0, target.find('?'));
    std::string_view query =
        path.size() < target.size() ? target.substr(path.size() + 1) : std::string_view();
    FakeTailscaled& owner = server_->owner();
    if (path == kWhoIsPath) owner.RecordWhoIs(target, host);
    // DNS-rebinding protection comes before anything else, even the Tailscale-* headers.
    bool forbidden = host != kLocalApiHost || request.count(http::field::referer) != 0 ||
                     request.count(http::field::origin) != 0;
    if (forbidden) {
      return Respond(request, {403, std::string(kTextPlain), "invalid localapi request\n", ""}, false);
    }
    if (path == kWhoIsPath) {
      Response response = owner.AnswerWhoIs(query);
      std::chrono::milliseconds delay = owner.delay();
      if (delay.count() <= 0) return Respond(request, response, true);
      timer_.expires_after(delay);
      timer_.async_wait([self = shared_from_this(), request, response](const error_code& ec) {
        if (!ec) self->Respond(request, response, true);
      });
      return;
    }
    if (path == kStatusPath) {
      return Respond(request, {200, "application/json", owner.AnswerStatus(), ""}, true);
    }
    if (path.substr(0, kCertPrefix.size()) == kCertPrefix) {
      Response response = owner.AnswerCert(path.substr(kCertPrefix.size()), query);
      std::chrono::milliseconds delay = owner.cert_delay();
      if (delay.count() <= 0) return Respond(request, response, true);
      timer_.expires_after(delay);
      timer_.async_wait([self = shared_from_this(), request, response](const error_code& ec) {
        if (!ec) self->Respond(request, response, true);
      });
      return;
    }
    if (path == kWatchPath) {
      std::string mask_text = FormValue(query, "mask");
      uint64_t mask = 0;
      if (!mask_text.empty()) {
        auto [end, ec] =
            std::from_chars(mask_text.data(), mask_text.data() + mask_text.size(), mask);
        if (ec != std::errc() || end != mask_text.data() + mask_text.size()) {
          return Respond(request, {400, std::string(kTextPlain), "bad mask\n", ""}, true);
        }
      }
      owner.RecordWatch(mask);
      return StartWatch();
    }
    Respond(request, {404, std::string(kTextPlain), "404 page not found\n", ""}, true);
  }

  static void SetTailscaleHeaders(http::fields& fields) {
    fields.set("Tailscale-Version", kVersion);
    fields.set("Tailscale-Cap", std::to_string(kCapabilityVersion));
    fields.set("Content-Security-Policy",
               "default-src 'none'; frame-ancestors 'none'; script-src 'none'; "
               "script-src-elem 'none'; script-src-attr 'none'");
    fields.set("X-Frame-Options", "DENY");
    fields.set("X-Content-Type-Options", "nosniff");
  }

  void Respond(const Request& request, const Response& answer, bool tailscale_headers) {
    auto response = std::make_shared<http::response<http::string_body>>();
    response->version(request.version());
    response->result(answer.status);
    if (tailscale_headers) SetTailscaleHeaders(*response);
    response->set(http::field::content_type, answer.content_type);
    if (!answer.retry_after.empty()) response->set(http::field::retry_after, answer.retry_after);
    // http.Error sets nosniff on every error, with or without the headers above.
    if (answer.status >= 400) response->set("X-Content-Type-Options", "nosniff");
    response->body() = answer.body;
    response->keep_alive(request.keep_alive());
    response->prepare_payload();
    http::async_write(socket_, *response,
                      [self = shared_from_this(), response](const error_code& ec, size_t) {
                        if (ec || !response->keep_alive()) return self->Close();
                        self->ReadRequest();
                      });
  }

  void StartWatch() {
    watch_header_.emplace(http::status::ok, 11);
    SetTailscaleHeaders(*watch_header_);
    watch_header_->set(http::field::content_type, "application/json");
    watch_header_->chunked(true);
    watch_serializer_.emplace(*watch_header_);
    http::async_write_header(socket_, *watch_serializer_,
                             [self = shared_from_this()](const error_code& ec, size_t) {
                               if (ec) return self->Close();
                               self->OnWatchStarted();
                             });
  }

  void OnWatchStarted() {
    if (closed_) return;
    watching_ = true;
    server_->watchers().insert(this);
    server_->owner().WatcherOpened();
    Queue(InitialNotification());
    // The client sends nothing more; a read that ends tells us it went away.
    socket_.async_read_some(net::buffer(discard_),
                            [self = shared_from_this()](const error_code& ec, size_t) {
                              if (ec) self->Close();
                            });
  }

  void WriteNext() {
    writing_ = true;
    net::async_write(socket_, net::buffer(queue_.front()),
                     [self = shared_from_this()](const error_code& ec, size_t) {
                       self->queue_.pop_front();
                       if (ec) return self->Close();
                       if (self->queue_.empty()) {
                         self->writing_ = false;
                       } else {
                         self->WriteNext();
                       }
                     });
  }

  std::shared_ptr<Server> server_;
  Socket socket_;
  net::steady_timer timer_;
  boost::beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::optional<http::response<http::empty_body>> watch_header_;
  std::optional<http::response_serializer<http::empty_body>> watch_serializer_;
  std::deque<std::string> queue_;
  char discard_[512];
  bool writing_ = false;
  bool watching_ = false;
  bool closed_ = false;
};

void FakeTailscaled::Server::Accept() {
  acceptor_.async_accept([self = shared_from_this()](const error_code& ec, Socket socket) {
    if (ec) return;  // closed by CloseAll
    std::make_shared<Connection>(self, std::move(socket))->ReadRequest();
    self->Accept();
  });
}

void FakeTailscaled::Server::CloseAll() {
  error_code ignored;
  acceptor_.close(ignored);
  std::vector<Connection*> open(connections_.begin(), connections_.end());
  for (Connection* connection : open) connection->Close();
  io_context_.stop();
}

void FakeTailscaled::Server::Push(const std::string& line) {
  std::vector<Connection*> watchers(watchers_.begin(), watchers_.end());
  for (Connection* watcher : watchers) watcher->Queue(line);
}

FakeTailscaled::FakeTailscaled(std::string socket_path) : socket_path_(std::move(socket_path)) {}

FakeTailscaled::~FakeTailscaled() { Stop(); }

std::unique_ptr<FakeTailscaled> FakeTailscaled::Start(std::string socket_path) {
  std::unique_ptr<FakeTailscaled> fake(new FakeTailscaled(std::move(socket_path)));
  if (!fake->Restart()) return nullptr;
  return fake;
}

std::string FakeTailscaled::FixtureDir() { return SEPAL_WHOIS_FIXTURE_DIR; }

std::string FakeTailscaled::LoadBody(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  std::ostringstream text;
  text << in.rdbuf();
  std::string body = text.str();
  // json.MarshalIndent output has no trailing newline; files usually do.
  while (!body.empty() && (body.back() == '\n' || body.back() == '\r')) body.pop_back();
  return body;
}

std::string FakeTailscaled::LoadFixture(std::string_view name) {
  return LoadBody(FixtureDir() + "/" + std::string(name));
}

bool FakeTailscaled::Restart() {
  std::lock_guard control(control_mutex_);
  if (io_context_) return true;
  io_context_ = std::make_unique<net::io_context>();
  server_ = std::make_shared<Server>(*this, *io_context_);
  std::string error;
  if (!server_->Listen(socket_path_, &error)) {
    std::fprintf(stderr, "fake tailscaled: cannot listen on %s: %s\n", socket_path_.c_str(),
                 error.c_str());
    server_.reset();
    io_context_.reset();
    return false;
  }
  server_->Accept();
  thread_ = std::thread([io_context = io_context_.get()] { io_context->run(); });
  return true;
}

void FakeTailscaled::Stop() {
  std::lock_guard control(control_mutex_);
  if (!io_context_) return;
  net::post(*io_context_, [server = server_] { server->CloseAll(); });
  thread_.join();
  server_.reset();
  // Handlers still queued hold the last connections; they go with the io_context.
  io_context_.reset();
  ::unlink(socket_path_.c_str());
}

bool FakeTailscaled::running() const {
  std::lock_guard control(control_mutex_);
  return io_context_ != nullptr;
}

std::optional<FakeTailscaled::PeerKeys> FakeTailscaled::ParsePeer(std::string_view text) {
  error_code ec;
  if (text.substr(0, 8) == "nodekey:") {
    if (!IsNodeKey(text)) return std::nullopt;
    return PeerKeys{std::string(text), std::string(text), false};
  }
  // A bare IP stands for port 0, as netip.ParseAddr in the real handler.
  net::ip::address bare = net::ip::make_address(std::string(text), ec);
  if (!ec) {
    std::string ip = bare.to_string();
    return PeerKeys{bare.is_v6() ? "[" + ip + "]:0" : ip + ":0", ip, false};
  }
  // netip.ParseAddrPort: "1.2.3.4:80" or "[v6]:80".
  size_t colon = text.rfind(':');
  if (colon == std::string_view::npos) return std::nullopt;
  std::string_view host = text.substr(0, colon);
  std::string_view port_text = text.substr(colon + 1);
  bool bracketed = host.size() >= 2 && host.front() == '[' && host.back() == ']';
  if (bracketed) host = host.substr(1, host.size() - 2);
  uint16_t port = 0;
  auto [end, port_ec] =
      std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (port_text.empty() || port_ec != std::errc() || end != port_text.data() + port_text.size()) {
    return std::nullopt;
  }
  net::ip::address ip = net::ip::make_address(std::string(host), ec);
  if (ec || ip.is_v6() != bracketed) return std::nullopt;
  std::string ip_text = ip.to_string();
  std::string exact = bracketed ? "[" + ip_text + "]:" : ip_text + ":";
  exact += std::to_string(port);
  return PeerKeys{exact, ip_text, true};
}

bool FakeTailscaled::AddPeer(std::string_view ip_or_ip_port, std::string json_body) {
  std::optional<PeerKeys> keys = ParsePeer(ip_or_ip_port);
  if (!keys) return false;
  std::lock_guard lock(mutex_);
  peers_[keys->has_port ? keys->exact : keys->any_port] = std::move(json_body);
  return true;
}

bool FakeTailscaled::AddPeerToward(std::string_view ip_or_ip_port, std::string_view toward,
                                   std::string json_body) {
  std::optional<PeerKeys> keys = ParsePeer(ip_or_ip_port);
  if (!keys) return false;
  std::lock_guard lock(mutex_);
  peers_toward_[(keys->has_port ? keys->exact : keys->any_port) + "|" + std::string(toward)] =
      std::move(json_body);
  return true;
}

void FakeTailscaled::RemovePeer(std::string_view ip_or_ip_port) {
  std::optional<PeerKeys> keys = ParsePeer(ip_or_ip_port);
  if (!keys) return;
  std::lock_guard lock(mutex_);
  peers_.erase(keys->exact);
  peers_.erase(keys->any_port);
}

void FakeTailscaled::SetDelay(std::chrono::milliseconds delay) {
  std::lock_guard lock(mutex_);
  delay_ = delay;
}

std::chrono::milliseconds FakeTailscaled::delay() const {
  std::lock_guard lock(mutex_);
  return delay_;
}

void FakeTailscaled::SetFailure(unsigned status, std::string body) {
  std::lock_guard lock(mutex_);
  failure_status_ = status;
  failure_body_ = std::move(body);
}

void FakeTailscaled::RecordWhoIs(std::string_view target, std::string_view host) {
  std::lock_guard lock(mutex_);
  ++request_count_;
  last_target_ = target;
  last_host_ = host;
  changed_.notify_all();
}

FakeTailscaled::Response FakeTailscaled::AnswerWhoIs(std::string_view query) const {
  auto text_error = [](unsigned status, std::string message) {
    return Response{status, std::string(kTextPlain), std::move(message), ""};
  };
  std::lock_guard lock(mutex_);
  if (failure_status_ != 0) return text_error(failure_status_, failure_body_);
  std::string addr = FormValue(query, "addr");
  if (addr.empty()) return text_error(400, "missing 'addr' parameter\n");
  std::optional<PeerKeys> keys = ParsePeer(addr);
  if (!keys) {
    if (addr.substr(0, 8) == "nodekey:") {
      return text_error(400, "invalid nodekey in 'addr' parameter\n");
    }
    return text_error(400, "invalid 'addr' parameter\n");
  }
  // tailscaled 1.100+: the CapMap toward a Service (svc_name) or one of the node's
  // addresses (dst_ip); the checks and messages are the real ones.
  std::string service = FormValue(query, "svc_name");
  std::string dst_ip = FormValue(query, "dst_ip");
  if (!service.empty() && (service.substr(0, 4) != "svc:" || service.size() == 4)) {
    return text_error(400, "invalid svc_name\n");
  }
  if (!dst_ip.empty()) {
    error_code ec;
    net::ip::make_address(dst_ip, ec);
    if (ec) return text_error(400, "invalid dst_ip\n");
  }
  auto peer = peers_.find(keys->exact);
  if (peer == peers_.end()) peer = peers_.find(keys->any_port);
  if (peer == peers_.end()) return text_error(404, "no match for IP:port\n");
  for (const std::string& toward : {service, dst_ip}) {
    if (toward.empty()) continue;
    auto scoped = peers_toward_.find(peer->first + "|" + toward);
    if (scoped != peers_toward_.end()) return Response{200, "application/json", scoped->second, ""};
  }
  return Response{200, "application/json", peer->second, ""};
}

int FakeTailscaled::RequestCount() const {
  std::lock_guard lock(mutex_);
  return request_count_;
}

bool FakeTailscaled::WaitForRequestCount(int n, std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mutex_);
  return changed_.wait_for(lock, timeout, [&] { return request_count_ >= n; });
}

std::string FakeTailscaled::LastRequestTarget() const {
  std::lock_guard lock(mutex_);
  return last_target_;
}

std::string FakeTailscaled::LastHostHeader() const {
  std::lock_guard lock(mutex_);
  return last_host_;
}

void FakeTailscaled::RecordWatch(uint64_t mask) {
  std::lock_guard lock(mutex_);
  last_watch_mask_ = mask;
}

std::optional<uint64_t> FakeTailscaled::LastWatchMask() const {
  std::lock_guard lock(mutex_);
  return last_watch_mask_;
}

void FakeTailscaled::WatcherOpened() {
  std::lock_guard lock(mutex_);
  ++watcher_count_;
  changed_.notify_all();
}

void FakeTailscaled::WatcherClosed() {
  std::lock_guard lock(mutex_);
  --watcher_count_;
  changed_.notify_all();
}

int FakeTailscaled::WatcherCount() const {
  std::lock_guard lock(mutex_);
  return watcher_count_;
}

bool FakeTailscaled::WaitForWatcherCount(int n, std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mutex_);
  return changed_.wait_for(lock, timeout, [&] { return watcher_count_ == n; });
}

void FakeTailscaled::SetSelf(SelfNode self) {
  std::lock_guard lock(mutex_);
  self_ = std::move(self);
  std::string name = self_.dns_name;
  if (!name.empty() && name.back() == '.') name.pop_back();
  cert_domains_ = {name};
}

void FakeTailscaled::SetBackendState(std::string state) {
  std::lock_guard lock(mutex_);
  backend_state_ = std::move(state);
}

void FakeTailscaled::SetHttpsEnabled(bool enabled) {
  std::lock_guard lock(mutex_);
  https_enabled_ = enabled;
}

void FakeTailscaled::SetCertDomains(std::vector<std::string> domains) {
  std::lock_guard lock(mutex_);
  cert_domains_ = std::move(domains);
}

void FakeTailscaled::SetCertLifetime(std::chrono::seconds lifetime) {
  std::lock_guard lock(mutex_);
  cert_lifetime_ = lifetime;
  issued_.clear();
}

void FakeTailscaled::SetCertPairOverride(std::optional<std::string> body) {
  std::lock_guard lock(mutex_);
  cert_pair_override_ = std::move(body);
}

void FakeTailscaled::SetCertFailure(unsigned status, std::string body, std::string retry_after) {
  std::lock_guard lock(mutex_);
  cert_failure_status_ = status;
  cert_failure_body_ = std::move(body);
  cert_failure_retry_after_ = std::move(retry_after);
}

void FakeTailscaled::SetCertDelay(std::chrono::milliseconds delay) {
  std::lock_guard lock(mutex_);
  cert_delay_ = delay;
}

std::chrono::milliseconds FakeTailscaled::cert_delay() const {
  std::lock_guard lock(mutex_);
  return cert_delay_;
}

int FakeTailscaled::StatusRequestCount() const {
  std::lock_guard lock(mutex_);
  return status_count_;
}

int FakeTailscaled::CertRequestCount() const {
  std::lock_guard lock(mutex_);
  return cert_count_;
}

bool FakeTailscaled::WaitForCertRequestCount(int n, std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mutex_);
  return changed_.wait_for(lock, timeout, [&] { return cert_count_ >= n; });
}

int FakeTailscaled::CertsIssued() const {
  std::lock_guard lock(mutex_);
  return certs_issued_;
}

// ipnstate.Status as `tailscale status --json` and GET /localapi/v0/status print it
// (json.Encoder with SetIndent("", "\t"), so a trailing newline), without peers.
std::string FakeTailscaled::AnswerStatus() {
  std::lock_guard lock(mutex_);
  ++status_count_;
  bool running = backend_state_ == "Running";
  std::vector<std::string> ips = running ? self_.tailscale_ips : std::vector<std::string>{};
  std::vector<std::string> allowed;
  for (const std::string& ip : ips) {
    allowed.push_back(ip + (ip.find(':') == std::string::npos ? "/32" : "/128"));
  }
  std::vector<std::string> cert_domains;
  if (running && https_enabled_) cert_domains = cert_domains_;
  std::string out = "{\n";
  out += "\t\"Version\": " + Quote(kVersion) + ",\n";
  out += "\t\"TUN\": true,\n";
  out += "\t\"BackendState\": " + Quote(backend_state_) + ",\n";
  out += "\t\"HaveNodeKey\": true,\n";
  out += "\t\"AuthURL\": \"\",\n";
  out += "\t\"TailscaleIPs\": " + StringArray(ips, 1) + ",\n";
  out += "\t\"Self\": {\n";
  out += "\t\t\"ID\": \"nT5e1pEXAMPLE\",\n";
  out +=
      "\t\t\"PublicKey\": "
      "\"nodekey:5c8f2a71e0b94d6a3f1e7c2b9a8d4f6e0c3b5a7d9e1f2a4b6c8d0e2f4a6b8c0d\",\n";
  out += "\t\t\"HostName\": " + Quote(self_.host_name) + ",\n";
  out += "\t\t\"DNSName\": " + Quote(running ? self_.dns_name : "") + ",\n";
  out += "\t\t\"OS\": \"linux\",\n";
  out += "\t\t\"UserID\": 6046402813214011,\n";
  out += "\t\t\"TailscaleIPs\": " + StringArray(ips, 2) + ",\n";
  out += "\t\t\"AllowedIPs\": " + StringArray(allowed, 2) + ",\n";
  out += "\t\t\"Addrs\": null,\n";
  out += "\t\t\"CurAddr\": \"\",\n";
  out += "\t\t\"Relay\": \"fra\",\n";
  out += "\t\t\"RxBytes\": 0,\n";
  out += "\t\t\"TxBytes\": 0,\n";
  out += "\t\t\"Created\": \"2026-03-02T09:14:27.512734381Z\",\n";
  out += "\t\t\"LastWrite\": \"0001-01-01T00:00:00Z\",\n";
  out += "\t\t\"LastSeen\": \"0001-01-01T00:00:00Z\",\n";
  out += "\t\t\"LastHandshake\": \"0001-01-01T00:00:00Z\",\n";
  out += std::string("\t\t\"Online\": ") + (running ? "true" : "false") + ",\n";
  out += "\t\t\"ExitNode\": false,\n";
  out += "\t\t\"ExitNodeOption\": false,\n";
  out += "\t\t\"Active\": false,\n";
  out += "\t\t\"PeerAPIURL\": null,\n";
  out += "\t\t\"InNetworkMap\": true,\n";
  out += "\t\t\"InMagicSock\": false,\n";
  out += "\t\t\"InEngine\": false,\n";
  out += "\t\t\"KeyExpiry\": \"2026-08-29T09:14:27Z\"\n";
  out += "\t},\n";
  out += "\t\"Health\": null,\n";
  out += "\t\"MagicDNSSuffix\": " + Quote(self_.magic_dns_suffix) + ",\n";
  out += "\t\"CurrentTailnet\": {\n";
  out += "\t\t\"Name\": \"example.com\",\n";
  out += "\t\t\"MagicDNSSuffix\": " + Quote(self_.magic_dns_suffix) + ",\n";
  out += "\t\t\"MagicDNSEnabled\": true\n";
  out += "\t},\n";
  out += "\t\"CertDomains\": " + StringArray(cert_domains, 1) + ",\n";
  out += "\t\"Peer\": null,\n";
  out += "\t\"User\": null,\n";
  out += "\t\"ClientVersion\": null\n";
  out += "}\n";
  return out;
}

// localapi serveCert + ipnlocal GetCertPEM: the domain is checked, a cached certificate is
// served until two thirds of its lifetime, errors are http.Error 500s with the Go error text.
FakeTailscaled::Response FakeTailscaled::AnswerCert(std::string_view domain,
                                                    std::string_view query) {
  auto text_error = [](unsigned status, std::string message) {
    return Response{status, std::string(kTextPlain), std::move(message) + "\n", ""};
  };
  std::lock_guard lock(mutex_);
  ++cert_count_;
  changed_.notify_all();
  if (cert_failure_status_ != 0) {
    return Response{cert_failure_status_, std::string(kTextPlain), cert_failure_body_,
                    cert_failure_retry_after_};
  }
  if (!ValidLookingCertDomain(domain)) return text_error(500, "invalid domain");
  bool running = backend_state_ == "Running";
  const std::vector<std::string> none;
  const std::vector<std::string>& domains = running && https_enabled_ ? cert_domains_ : none;
  if (domains.empty()) return text_error(500, std::string(kHttpsDisabledError));
  if (std::find(domains.begin(), domains.end(), domain) == domains.end()) {
    std::string list = "[";
    for (size_t i = 0; i < domains.size(); ++i) list += (i ? " " : "") + Quote(domains[i]);
    list += "]";
    return text_error(500, "invalid domain " + Quote(domain) + "; must be one of " + list);
  }
  std::string type = FormValue(query, "type");
  if (type != "" && type != "crt" && type != "cert" && type != "key" && type != "pair") {
    return text_error(400, "invalid type; want \"cert\" (default), \"key\", or \"pair\"");
  }
  if (cert_pair_override_ && type == "pair") {
    return Response{200, "text/plain", *cert_pair_override_, ""};
  }
  auto now = std::chrono::system_clock::now();
  auto cached = issued_.find(std::string(domain));
  if (cached == issued_.end() || now >= cached->second.renew_after) {
    LeafOptions options;
    options.common_name = std::string(domain);
    options.dns_names = {std::string(domain)};
    options.ip_addresses = {};
    // Let's Encrypt backdates by an hour; short test lifetimes start now.
    options.not_before = cert_lifetime_ >= std::chrono::hours(2) ? std::chrono::seconds(-3600)
                                                                  : std::chrono::seconds(0);
    options.lifetime = cert_lifetime_ - options.not_before;
    options.include_chain = true;
    options.sec1_key = true;
    CertifiedKey pair = ca_.Issue(options);
    ++certs_issued_;
    auto not_before = now + options.not_before;
    IssuedCert issued{std::move(pair.private_key_pem), std::move(pair.certificate_pem),
                      not_before + (options.lifetime * 2) / 3};
    cached = issued_.insert_or_assign(std::string(domain), std::move(issued)).first;
  }
  std::string body;
  if (type == "key") {
    body = cached->second.key_pem;
  } else if (type == "pair") {
    body = cached->second.key_pem + cached->second.chain_pem;
  } else {
    body = cached->second.chain_pem;
  }
  return Response{200, "text/plain", std::move(body), ""};
}

void FakeTailscaled::PushNotification(std::string json_line) {
  std::lock_guard control(control_mutex_);
  if (!io_context_) return;
  net::post(*io_context_, [server = server_, line = std::move(json_line)] { server->Push(line); });
}

}  // namespace sepal::test
