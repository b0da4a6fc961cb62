// nghttp2 session options and SETTINGS shared by the server and client sides.
#pragma once

#include <nghttp2/nghttp2.h>

#include <memory>

#include "proxy/config/config.h"

namespace sepal {

struct NgOptionDeleter {
  void operator()(nghttp2_option* o) const { nghttp2_option_del(o); }
};
using NgOption = std::unique_ptr<nghttp2_option, NgOptionDeleter>;

// Options for a downstream (server) session: manual window updates plus the library's
// protections against rapid reset and CONTINUATION floods, tuned from `limits`.
NgOption MakeServerOptions(const config::Http2Limits& limits);
// Options for an upstream (client) session.
NgOption MakeClientOptions();

// The stream limit nghttp2 enforces on a server session (with a connection error). sepal
// advertises limits.max_concurrent_streams and answers streams between the two with
// RST_STREAM REFUSED_STREAM itself, as RFC 9113 5.1.2 allows and gRPC clients retry.
uint32_t HardMaxConcurrentStreams(const config::Http2Limits& limits);

// Submits initial SETTINGS (a server's with the hard stream limit) and raises the connection
// window. Returns nghttp2 error or 0.
int SubmitInitialSettings(nghttp2_session* session, const config::Http2Limits& limits,
                          bool is_server);

}  // namespace sepal
