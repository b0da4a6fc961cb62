// A Transport (socket, or TLS over it) as the AsyncReadStream / AsyncWriteStream that
// Boost.Beast's HTTP/1.1 parser and serializer read from and write to.
#pragma once

#include <utility>

#include "proxy/http2/transport.h"

namespace sepal::http1 {

class TransportStream {
 public:
  using executor_type = Transport::Socket::executor_type;

  explicit TransportStream(Transport& transport) : transport_(transport) {}

  executor_type get_executor() { return transport_.socket().get_executor(); }

  template <typename MutableBuffers, typename Handler>
  void async_read_some(const MutableBuffers& buffers, Handler&& handler) {
    transport_.AsyncReadSome(buffers, std::forward<Handler>(handler));
  }

  template <typename ConstBuffers, typename Handler>
  void async_write_some(const ConstBuffers& buffers, Handler&& handler) {
    if (Transport::TlsStream* tls = transport_.tls()) {
      tls->async_write_some(buffers, std::forward<Handler>(handler));
    } else {
      transport_.socket().async_write_some(buffers, std::forward<Handler>(handler));
    }
  }

 private:
  Transport& transport_;
};

}  // namespace sepal::http1
