// PROXY protocol header parser: strict v1 (text) and v2 (binary) per HAProxy's specification.
#include "proxy/listener/proxy_protocol.h"

#include <algorithm>
#include <array>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include "proxy/common/strings.h"

namespace sepal {
namespace {

using boost::asio::ip::address_v4;
using boost::asio::ip::address_v6;

constexpr std::string_view kV1Prefix = "PROXY ";
constexpr std::array<uint8_t, 12> kV2Signature = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                                  0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
constexpr size_t kV2FixedLength = 16;  // signature, version/command, family, 2-byte length
constexpr std::string_view kHttp2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

// v2 byte 12: high nibble version, low nibble command.
constexpr uint8_t kV2Version = 2;
constexpr uint8_t kV2CommandLocal = 0;
constexpr uint8_t kV2CommandProxy = 1;
// v2 byte 13: high nibble address family, low nibble transport.
constexpr uint8_t kV2Unspec = 0x00;
constexpr uint8_t kV2TcpOverIpv4 = 0x11;
constexpr uint8_t kV2UdpOverIpv4 = 0x12;
constexpr uint8_t kV2TcpOverIpv6 = 0x21;
constexpr uint8_t kV2UdpOverIpv6 = 0x22;
constexpr uint8_t kV2UnixStream = 0x31;
constexpr uint8_t kV2UnixDgram = 0x32;
constexpr size_t kV2Ipv4AddressLength = 12;  // 2 × 4-byte address, 2 × 2-byte port
constexpr size_t kV2Ipv6AddressLength = 36;  // 2 × 16-byte address, 2 × 2-byte port
constexpr size_t kV2TlvHeaderLength = 3;     // type, 2-byte length

ProxyParseResult NeedMore() { return {}; }

ProxyParseResult Error(std::string message) {
  ProxyParseResult result;
  result.status = ProxyParseStatus::kError;
  result.error = std::move(message);
  return result;
}

ProxyParseResult Done(ProxyHeader header) {
  ProxyParseResult result;
  result.status = ProxyParseStatus::kDone;
  result.header = std::move(header);
  return result;
}

std::string Hex(uint8_t byte) {
  constexpr std::string_view kDigits = "0123456789abcdef";
  return StrCat("0x", kDigits[byte >> 4], kDigits[byte & 0xF]);
}

uint16_t ReadBigEndian16(const uint8_t* p) { return static_cast<uint16_t>((p[0] << 8) | p[1]); }

// A v4 or v6 address in network byte order.
template <typename Address>
Address ReadAddress(const uint8_t* p) {
  typename Address::bytes_type bytes;
  std::copy_n(p, bytes.size(), bytes.begin());
  return Address(bytes);
}

// True when the first min(length, pattern.size()) bytes of `data` equal those of `pattern`.
bool MatchesPrefix(const uint8_t* data, size_t length, const uint8_t* pattern,
                   size_t pattern_length) {
  return std::equal(data, data + std::min(length, pattern_length), pattern);
}

bool MatchesPrefix(const uint8_t* data, size_t length, std::string_view pattern) {
  return MatchesPrefix(data, length, reinterpret_cast<const uint8_t*>(pattern.data()),
                       pattern.size());
}

// Names what a connection sent instead of a PROXY header, for the error line.
std::string MissingHeaderError(const uint8_t* data, size_t length) {
  if (length >= 3 && MatchesPrefix(data, length, kHttp2Preface)) {
    return "missing PROXY protocol header (got what looks like HTTP/2)";
  }
  // A TLS record starts with content type 22 (handshake) and major version 3.
  if (data[0] == 0x16 && (length < 2 || data[1] == 0x03)) {
    return "missing PROXY protocol header (got what looks like TLS)";
  }
  std::string seen;
  for (size_t i = 0; i < std::min<size_t>(length, 8); ++i) {
    seen += i == 0 ? "" : " ";
    seen += Hex(data[i]);
  }
  return StrCat("missing PROXY protocol header (first bytes ", seen, ")");
}

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// Decimal without leading zeros ("0" itself is fine), at most `max`.
std::optional<uint32_t> ParseDecimal(std::string_view text, size_t max_digits, uint32_t max) {
  if (text.empty() || text.size() > max_digits || (text.size() > 1 && text[0] == '0')) {
    return std::nullopt;
  }
  uint32_t value = 0;
  for (char c : text) {
    if (!IsDigit(c)) return std::nullopt;
    value = value * 10 + static_cast<uint32_t>(c - '0');
  }
  if (value > max) return std::nullopt;
  return value;
}

// Exactly four dotted decimal octets; no leading zeros (which some parsers read as octal).
std::optional<address_v4> ParseIpv4(std::string_view text) {
  address_v4::bytes_type bytes{};
  for (size_t i = 0; i < bytes.size(); ++i) {
    size_t dot = i + 1 < bytes.size() ? text.find('.') : text.size();
    if (dot == std::string_view::npos) return std::nullopt;
    std::optional<uint32_t> octet = ParseDecimal(text.substr(0, dot), 3, 255);
    if (!octet) return std::nullopt;
    bytes[i] = static_cast<uint8_t>(*octet);
    text.remove_prefix(std::min(text.size(), dot + 1));
  }
  return address_v4(bytes);
}

// RFC 4291 text form (with an optional embedded dotted IPv4 tail); no zone ("%eth0").
std::optional<address_v6> ParseIpv6(std::string_view text) {
  constexpr size_t kMaxText = 45;  // INET6_ADDRSTRLEN without the terminator
  if (text.size() < 2 || text.size() > kMaxText) return std::nullopt;
  for (char c : text) {
    bool hex = IsDigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
    if (!hex && c != ':' && c != '.') return std::nullopt;
  }
  boost::system::error_code ec;
  address_v6 address = boost::asio::ip::make_address_v6(std::string(text), ec);
  if (ec) return std::nullopt;
  return address;
}

// The part of a v1 line between "PROXY " and CRLF.
ProxyParseResult ParseV1Line(std::string_view line, size_t header_length) {
  ProxyHeader header;
  header.header_length = header_length;
  // The spec lets an UNKNOWN line carry anything up to the CRLF; the receiver ignores it.
  if (line == "UNKNOWN" || line.starts_with("UNKNOWN ")) {
    header.local = true;
    return Done(header);
  }

  std::vector<std::string_view> fields;
  for (size_t start = 0;;) {
    size_t space = line.find(' ', start);
    fields.push_back(line.substr(start, space - start));
    if (fields.back().empty()) {
      return Error("PROXY v1 header has an empty field (fields take exactly one space)");
    }
    if (space == std::string_view::npos) break;
    start = space + 1;
  }

  std::string_view protocol = fields[0];
  bool ipv6 = protocol == "TCP6";
  if (!ipv6 && protocol != "TCP4") {
    return Error(StrCat("unsupported PROXY v1 protocol \"", protocol.substr(0, 16),
                        "\" (expected TCP4, TCP6 or UNKNOWN)"));
  }
  if (fields.size() != 5) {
    return Error(StrCat("PROXY v1 ", protocol, " line has ", fields.size() - 1,
                        " fields after the protocol (expected 4)"));
  }

  const char* roles[] = {"source", "destination"};
  boost::asio::ip::address* ips[] = {&header.source_ip, &header.destination_ip};
  for (size_t i = 0; i < 2; ++i) {
    std::string_view text = fields[1 + i];
    if (ipv6) {
      if (std::optional<address_v6> address = ParseIpv6(text)) {
        *ips[i] = *address;
        continue;
      }
      if (ParseIpv4(text)) {
        return Error(
            StrCat("PROXY v1 TCP6 line has an IPv4 ", roles[i], " address \"", text, "\""));
      }
    } else if (std::optional<address_v4> address = ParseIpv4(text)) {
      *ips[i] = *address;
      continue;
    }
    return Error(StrCat("PROXY v1 ", protocol, " line has an invalid ", roles[i], " address \"",
                        text, "\""));
  }

  uint16_t* ports[] = {&header.source_port, &header.destination_port};
  for (size_t i = 0; i < 2; ++i) {
    std::optional<uint32_t> port = ParseDecimal(fields[3 + i], 5, 65535);
    if (!port) {
      return Error(StrCat("PROXY v1 header has an invalid ", roles[i], " port \"", fields[3 + i],
                          "\" (expected 0-65535, no leading zeros)"));
    }
    *ports[i] = static_cast<uint16_t>(*port);
  }
  return Done(header);
}

// `data` starts with "PROXY ".
ProxyParseResult ParseV1(const uint8_t* data, size_t length) {
  size_t scan_end = std::min(length, kProxyV1MaxLength);
  for (size_t i = kV1Prefix.size(); i < scan_end; ++i) {
    uint8_t c = data[i];
    if (c == '\r') {
      if (i + 1 >= kProxyV1MaxLength) break;  // the LF would be byte 108
      if (i + 1 >= length) return NeedMore();
      if (data[i + 1] != '\n') return Error("PROXY v1 header has a CR not followed by LF");
      std::string_view line(reinterpret_cast<const char*>(data) + kV1Prefix.size(),
                            i - kV1Prefix.size());
      return ParseV1Line(line, i + 2);
    }
    if (c == '\n') return Error("PROXY v1 header has an LF without CR");
    if (c < 0x20 || c > 0x7E) {
      return Error(StrCat("PROXY v1 header has a non-printable byte ", Hex(c)));
    }
  }
  if (length >= kProxyV1MaxLength) {
    return Error(StrCat("PROXY v1 header has no CRLF within ", kProxyV1MaxLength, " bytes"));
  }
  return NeedMore();
}

// `data` starts with the 12-byte v2 signature.
ProxyParseResult ParseV2(const uint8_t* data, size_t length) {
  if (length <= 12) return NeedMore();
  uint8_t version = data[12] >> 4;
  uint8_t command = data[12] & 0x0F;
  if (version != kV2Version) {
    return Error(
        StrCat("unsupported PROXY v2 version ", static_cast<int>(version), " (expected 2)"));
  }
  if (command != kV2CommandLocal && command != kV2CommandProxy) {
    return Error(StrCat("unsupported PROXY v2 command ", static_cast<int>(command),
                        " (expected LOCAL or PROXY)"));
  }
  if (length <= 13) return NeedMore();

  // With LOCAL the spec says the family byte and address block are to be ignored.
  uint8_t family = data[13];
  size_t address_length = 0;
  if (command == kV2CommandProxy) {
    switch (family) {
      case kV2Unspec:
        break;
      case kV2TcpOverIpv4:
        address_length = kV2Ipv4AddressLength;
        break;
      case kV2TcpOverIpv6:
        address_length = kV2Ipv6AddressLength;
        break;
      case kV2UdpOverIpv4:
      case kV2UdpOverIpv6:
        return Error("PROXY v2 header declares a datagram (UDP) connection; only TCP is supported");
      case kV2UnixStream:
      case kV2UnixDgram:
        return Error(
            "PROXY v2 header declares AF_UNIX addresses; only TCP over IPv4/IPv6 is "
            "supported");
      default:
        return Error(StrCat("invalid PROXY v2 address family/transport byte ", Hex(family)));
    }
  }
  if (length < kV2FixedLength) return NeedMore();

  size_t payload_length = ReadBigEndian16(data + 14);
  if (payload_length > kProxyV2MaxPayload) {
    return Error(StrCat("PROXY v2 header too long (", kV2FixedLength + payload_length,
                        " bytes, limit ", kV2FixedLength + kProxyV2MaxPayload, ")"));
  }
  if (payload_length < address_length) {
    return Error(StrCat("PROXY v2 address block truncated (", payload_length, " bytes, ",
                        family == kV2TcpOverIpv4 ? "IPv4" : "IPv6", " needs ", address_length,
                        ")"));
  }
  size_t total = kV2FixedLength + payload_length;
  if (length < total) return NeedMore();

  ProxyHeader header;
  header.header_length = total;
  if (address_length == 0) {
    header.local = true;
    return Done(header);
  }

  const uint8_t* p = data + kV2FixedLength;
  if (family == kV2TcpOverIpv4) {
    header.source_ip = ReadAddress<address_v4>(p);
    header.destination_ip = ReadAddress<address_v4>(p + sizeof(address_v4::bytes_type));
    p += 2 * sizeof(address_v4::bytes_type);
  } else {
    header.source_ip = ReadAddress<address_v6>(p);
    header.destination_ip = ReadAddress<address_v6>(p + sizeof(address_v6::bytes_type));
    p += 2 * sizeof(address_v6::bytes_type);
  }
  header.source_port = ReadBigEndian16(p);
  header.destination_port = ReadBigEndian16(p + 2);

  // TLVs (ALPN, authority, CRC32C, SSL info, …) carry nothing sepal uses, but they must tile
  // the rest of the block exactly.
  for (size_t offset = kV2FixedLength + address_length; offset < total;) {
    if (total - offset < kV2TlvHeaderLength) {
      return Error("PROXY v2 TLV area ends inside a TLV header");
    }
    size_t value_length = ReadBigEndian16(data + offset + 1);
    if (value_length > total - offset - kV2TlvHeaderLength) {
      return Error(StrCat("PROXY v2 TLV of type ", Hex(data[offset]), " overruns the header"));
    }
    offset += kV2TlvHeaderLength + value_length;
  }
  return Done(header);
}

}  // namespace

ProxyParseResult ParseProxyHeader(const uint8_t* data, size_t length, config::ProxyProtocol mode) {
  using config::ProxyProtocol;
  if (mode == ProxyProtocol::kNone) return Error("proxy protocol disabled");
  if (length == 0) return NeedMore();
  bool accept_v1 = mode == ProxyProtocol::kV1 || mode == ProxyProtocol::kAny;
  bool accept_v2 = mode == ProxyProtocol::kV2 || mode == ProxyProtocol::kAny;

  // A partial signature of either version waits for more bytes, even one the mode rejects,
  // so that the error can say which version arrived.
  if (MatchesPrefix(data, length, kV2Signature.data(), kV2Signature.size())) {
    if (length < kV2Signature.size()) return NeedMore();
    if (!accept_v2) return Error("got a PROXY v2 header but the listener expects v1");
    return ParseV2(data, length);
  }
  if (MatchesPrefix(data, length, kV1Prefix)) {
    if (length < kV1Prefix.size()) return NeedMore();
    if (!accept_v1) return Error("got a PROXY v1 header but the listener expects v2");
    return ParseV1(data, length);
  }
  return Error(MissingHeaderError(data, length));
}

}  // namespace sepal
