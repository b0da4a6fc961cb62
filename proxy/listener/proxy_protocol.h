// Strict parser for the PROXY protocol header (HAProxy's v1 text and v2 binary forms) that a
// load balancer or `tailscale serve --proxy-protocol` puts before a connection's own bytes.
#pragma once

#include <boost/asio/ip/address.hpp>
#include <cstddef>
#include <cstdint>
#include <string>

#include "proxy/config/config.h"

namespace sepal {

// What a PROXY header says about the connection it precedes.
struct ProxyHeader {
  // v2 LOCAL command, v2 AF_UNSPEC or v1 "UNKNOWN": keep the socket's own peer; the address
  // fields below are then left unset.
  bool local = false;
  boost::asio::ip::address source_ip, destination_ip;
  uint16_t source_port = 0, destination_port = 0;
  size_t header_length = 0;  // bytes to skip before the application data
};

enum class ProxyParseStatus { kNeedMore, kDone, kError };

struct ProxyParseResult {
  ProxyParseStatus status = ProxyParseStatus::kNeedMore;
  ProxyHeader header;  // meaningful when status == kDone
  std::string error;   // one log-line reason when status == kError
};

// Longest v1 line, CRLF included (the spec's worst case "PROXY TCP6 <max> <max> 65535 65535").
inline constexpr size_t kProxyV1MaxLength = 107;
// v2: 16 fixed bytes plus at most this many bytes of addresses and TLVs. The wire allows
// 65535; senders need far less, and a small cap bounds what we buffer before the handshake.
inline constexpr size_t kProxyV2MaxPayload = 4096;

// Parses the start of a connection's bytes (`data[0..length)`), accepting the versions that
// `mode` allows. kNeedMore: no verdict yet, call again with the same bytes plus more (the
// caller accumulates). Never reads beyond `length`. Invalid input is a kError as early as it
// can be told apart from a valid prefix. `mode` must not be kNone.
ProxyParseResult ParseProxyHeader(const uint8_t* data, size_t length, config::ProxyProtocol mode);

}  // namespace sepal
