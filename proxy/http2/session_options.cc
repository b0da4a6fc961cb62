// nghttp2 option and SETTINGS setup.
#include "proxy/http2/session_options.h"

#include <algorithm>

namespace sepal {

NgOption MakeServerOptions(const config::Http2Limits& limits) {
  nghttp2_option* raw = nullptr;
  nghttp2_option_new(&raw);
  NgOption option(raw);
  nghttp2_option_set_no_auto_window_update(raw, 1);
  nghttp2_option_set_stream_reset_rate_limit(raw, limits.stream_reset_burst,
                                             limits.stream_reset_rate);
  nghttp2_option_set_max_continuations(raw, limits.max_continuations);
  // Peers that flood us with frames needing an ACK (PING, SETTINGS) get cut off.
  nghttp2_option_set_max_outbound_ack(raw, 1000);
  nghttp2_option_set_max_settings(raw, 32);
  return option;
}

NgOption MakeClientOptions() {
  nghttp2_option* raw = nullptr;
  nghttp2_option_new(&raw);
  NgOption option(raw);
  nghttp2_option_set_no_auto_window_update(raw, 1);
  nghttp2_option_set_peer_max_concurrent_streams(raw, 100);
  return option;
}

uint32_t HardMaxConcurrentStreams(const config::Http2Limits& limits) {
  uint64_t soft = limits.max_concurrent_streams;
  uint64_t hard = soft + std::max<uint64_t>(soft, 128);
  return static_cast<uint32_t>(std::min<uint64_t>(hard, 0xffffffffu));
}

int SubmitInitialSettings(nghttp2_session* session, const config::Http2Limits& limits,
                          bool is_server) {
  nghttp2_settings_entry entries[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, HardMaxConcurrentStreams(limits)},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, limits.stream_window_bytes},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, limits.max_header_list_bytes},
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
  };
  // A server must not send ENABLE_PUSH; a client advertises no stream limit of its own.
  int rv = is_server
               ? nghttp2_submit_settings(session, NGHTTP2_FLAG_NONE, entries, 3)
               : nghttp2_submit_settings(session, NGHTTP2_FLAG_NONE, entries + 1, 3);
  if (rv != 0) return rv;
  return nghttp2_session_set_local_window_size(session, NGHTTP2_FLAG_NONE, 0,
                                               static_cast<int32_t>(limits.connection_window_bytes));
}

}  // namespace sepal
