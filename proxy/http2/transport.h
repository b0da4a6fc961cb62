// The byte stream under an Http2Connection: a plain socket, or TLS over that socket.
//
// One branch per read or write picks the layer (no virtual call): the cleartext path costs
// what it did before TLS existed. The TLS layer is added by StartTls() before any HTTP/2
// byte moves; the socket itself stays reachable for connect, PROXY headers, peeking at a
// client's first bytes and socket options.
#pragma once

#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/write.hpp>
#include <memory>
#include <utility>

namespace sepal {

class Transport {
 public:
  // On the io_context's own executor type, not the type-erased any_io_executor: every
  // composed operation copies and destroys its stream's executor.
  using Socket = boost::asio::basic_stream_socket<boost::asio::generic::stream_protocol,
                                                  boost::asio::io_context::executor_type>;
  using TlsStream = boost::asio::ssl::stream<Socket&>;

  explicit Transport(Socket socket) : socket_(std::move(socket)) {}

  Socket& socket() { return socket_; }
  const Socket& socket() const { return socket_; }
  // Null while cleartext.
  TlsStream* tls() { return tls_.get(); }
  const TlsStream* tls() const { return tls_.get(); }

  // Layers TLS over the socket with `context` (kept alive as long as this transport: the
  // session refers to it). The caller sets per-connection options and runs the handshake.
  TlsStream& StartTls(std::shared_ptr<boost::asio::ssl::context> context) {
    context_ = std::move(context);
    tls_ = std::make_unique<TlsStream>(socket_, *context_);
    return *tls_;
  }

  template <typename MutableBuffers, typename Handler>
  void AsyncReadSome(const MutableBuffers& buffers, Handler&& handler) {
    if (tls_) {
      tls_->async_read_some(buffers, std::forward<Handler>(handler));
    } else {
      socket_.async_read_some(buffers, std::forward<Handler>(handler));
    }
  }

  template <typename ConstBuffers, typename Handler>
  void AsyncWrite(const ConstBuffers& buffers, Handler&& handler) {
    if (tls_) {
      boost::asio::async_write(*tls_, buffers, std::forward<Handler>(handler));
    } else {
      boost::asio::async_write(socket_, buffers, std::forward<Handler>(handler));
    }
  }

  // Closes the socket (no TLS close_notify: the peer sees the TCP close, as with a
  // cleartext connection). Pending operations complete with operation_aborted.
  void Close() {
    boost::system::error_code ignored;
    socket_.shutdown(Socket::shutdown_both, ignored);
    socket_.close(ignored);
  }

 private:
  Socket socket_;
  std::shared_ptr<boost::asio::ssl::context> context_;
  std::unique_ptr<TlsStream> tls_;  // declared after context_: destroyed first
};

}  // namespace sepal
