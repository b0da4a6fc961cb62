// Fuzz target: tailscaled's HTTP/1.1 answers as LocalApiClient reads them. The client's
// parsing (Beast) runs inside its socket exchange, so the fuzz bytes are served as the
// response by a one-shot server on a unix socket in-process, on the same io_context.
//
// Input: byte 0 picks the request (bit 0: watch-ipn-bus stream, else a GET) and its body
// limit (bits 1-2), byte 1 the size of the pieces the response is written in; the rest is
// the response. Each input is served twice, whole and in pieces.
//
// Invariants: the callback runs exactly once (on_disconnect for a watch), within a bound; a
// complete response has a 3-digit status and a body within the limit; a failure says why and
// is never "could not connect"; watch lines are non-empty, have no newline and add up to no
// more than was sent; how the bytes are split across reads changes nothing.
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <unistd.h>

#include "proxy/identity/localapi_client.h"
#include "tests/fuzz/fuzz_check.h"
#include "tests/fuzz/scratch_dir.h"

namespace {

namespace net = boost::asio;
using local = net::local::stream_protocol;
using sepal::identity::LocalApiClient;
using sepal::identity::LocalApiResponse;

constexpr size_t kBodyLimits[] = {0, 16, 1024, LocalApiClient::kMaxWhoIsBodyBytes};

// Serves one connection: reads the request head, writes `response` in `piece`-byte writes,
// half-closes, and waits for the client to close.
class OneShotServer : public std::enable_shared_from_this<OneShotServer> {
 public:
  OneShotServer(net::io_context& io, const std::string& path, std::string response, size_t piece)
      : acceptor_(io), socket_(io), response_(std::move(response)), piece_(piece) {
    ::unlink(path.c_str());
    acceptor_.open();
    acceptor_.bind(local::endpoint(path));
    acceptor_.listen();
  }

  void Start() {
    acceptor_.async_accept(socket_, [self = shared_from_this()](boost::system::error_code ec) {
      self->acceptor_.close();
      if (!ec) self->ReadRequest();
    });
  }

 private:
  void ReadRequest() {
    net::async_read_until(socket_, request_, "\r\n\r\n",
                          [self = shared_from_this()](boost::system::error_code ec, size_t) {
                            if (!ec) self->WriteNext();
                          });
  }

  void WriteNext() {
    if (written_ == response_.size()) {
      boost::system::error_code ignored;
      socket_.shutdown(local::socket::shutdown_send, ignored);
      WaitForClose();
      return;
    }
    size_t n = std::min(piece_, response_.size() - written_);
    net::async_write(socket_, net::buffer(response_.data() + written_, n),
                     [self = shared_from_this(), n](boost::system::error_code ec, size_t) {
                       if (ec) return;  // the client gave up (malformed response): fine
                       self->written_ += n;
                       self->WriteNext();
                     });
  }

  void WaitForClose() {
    socket_.async_read_some(net::buffer(sink_),
                            [self = shared_from_this()](boost::system::error_code ec, size_t) {
                              if (!ec) self->WaitForClose();
                            });
  }

  local::acceptor acceptor_;
  local::socket socket_;
  net::streambuf request_;
  std::string response_;
  size_t piece_;
  size_t written_ = 0;
  char sink_[512];
};

struct Outcome {
  size_t calls = 0;
  LocalApiResponse response;                // GET
  std::vector<std::string> lines;           // watch
  std::string disconnect_reason;            // watch

  std::string Describe() const {
    std::string text = "calls " + std::to_string(calls) + ", failure " +
                       std::to_string(static_cast<int>(response.failure)) + " (" +
                       response.error + "), status " + std::to_string(response.status) +
                       ", body " + std::to_string(response.body.size()) + " bytes, " +
                       std::to_string(lines.size()) + " lines, disconnect: " + disconnect_reason;
    return text;
  }

  bool operator==(const Outcome& other) const {
    return calls == other.calls && response.failure == other.response.failure &&
           response.status == other.response.status && response.body == other.response.body &&
           response.retry_after == other.response.retry_after && lines == other.lines &&
           ReasonKind() == other.ReasonKind();
  }

  // How a watch ended: cleanly, with tailscaled's error answer, or on a broken response.
  // (Which parse error Beast names for a broken one can depend on where the reads split.)
  std::string ReasonKind() const {
    if (disconnect_reason == "stream ended" ||
        disconnect_reason.starts_with("watch-ipn-bus returned")) {
      return disconnect_reason;
    }
    return "broken response";
  }
};

Outcome Serve(bool watch, size_t max_body, std::string_view response, size_t piece) {
  net::io_context io;
  const std::string path = sepal::fuzz::ScratchDir() + "/localapi.sock";
  std::make_shared<OneShotServer>(io, path, std::string(response), piece)->Start();
  LocalApiClient client(io.get_executor(), path);
  Outcome outcome;
  std::shared_ptr<LocalApiClient::Watch> stream;
  if (watch) {
    stream = client.WatchIpnBus(
        /*mask=*/1, [&](std::string_view line) { outcome.lines.emplace_back(line); },
        [&](std::string_view reason) {
          ++outcome.calls;
          outcome.disconnect_reason = reason;
        },
        std::chrono::seconds(10));
  } else {
    client.Get("/localapi/v0/status", std::chrono::seconds(10), max_body,
               [&](LocalApiResponse answer) {
                 ++outcome.calls;
                 outcome.response = std::move(answer);
               });
  }
  // Everything is local and the server half-closes: the exchange ends without any timer.
  io.run_for(std::chrono::seconds(5));
  FUZZ_CHECK(outcome.calls == 1, "the callback runs exactly once, and soon");
  return outcome;
}

void CheckOutcome(const Outcome& outcome, bool watch, size_t max_body, size_t sent) {
  if (watch) {
    FUZZ_CHECK(!outcome.disconnect_reason.empty(), "a disconnect says why");
    size_t total = 0;
    for (const std::string& line : outcome.lines) {
      FUZZ_CHECK(!line.empty(), "no empty notification");
      FUZZ_CHECK(line.find('\n') == std::string::npos, "one notification per line");
      FUZZ_CHECK(line.size() <= LocalApiClient::kMaxNotificationBytes, "notification cap");
      total += line.size() + 1;
    }
    FUZZ_CHECK(total <= sent + 1, "lines come from the bytes sent");
    return;
  }
  const LocalApiResponse& response = outcome.response;
  if (response.ok()) {
    FUZZ_CHECK(response.status <= 999, "a 3-digit status");  // Beast takes "042" too
    FUZZ_CHECK(response.body.size() <= max_body, "the body limit holds");
    FUZZ_CHECK(response.body.size() + response.retry_after.size() <= sent, "from the bytes sent");
    FUZZ_CHECK(response.error.empty(), "no error on success");
  } else {
    FUZZ_CHECK(response.failure != LocalApiResponse::Failure::kConnect, "the server was there");
    FUZZ_CHECK(!response.error.empty(), "a failure says why");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  bool watch = (data[0] & 1) != 0;
  size_t max_body = kBodyLimits[(data[0] >> 1) & 3];
  size_t piece = size_t{data[1]} + 1;
  std::string_view response(reinterpret_cast<const char*>(data + 2), size - 2);

  Outcome whole = Serve(watch, max_body, response, response.size() + 1);
  CheckOutcome(whole, watch, max_body, response.size());
  if (piece < response.size()) {
    Outcome pieces = Serve(watch, max_body, response, piece);
    FUZZ_CHECK(pieces == whole, "the same answer however the bytes arrive: whole: " +
                                    whole.Describe() + "; in pieces: " + pieces.Describe());
  }
  return 0;
}
