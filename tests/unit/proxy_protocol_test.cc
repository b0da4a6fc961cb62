// ParseProxyHeader: valid v1/v2 headers, incremental feeding, every error class, and a
// deterministic mutation fuzz loop.
#include "proxy/listener/proxy_protocol.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace sepal {
namespace {

using config::ProxyProtocol;
using ::testing::HasSubstr;

const std::string kV2Signature("\r\n\r\n\0\r\nQUIT\n", 12);
constexpr std::string_view kHttp2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

// Parses exactly the bytes of `input`, from a buffer of that size (so reading past the end
// is a heap overflow that sanitizers see).
ProxyParseResult Parse(std::string_view input, ProxyProtocol mode = ProxyProtocol::kAny) {
  std::vector<uint8_t> bytes(input.begin(), input.end());
  return ParseProxyHeader(bytes.data(), bytes.size(), mode);
}

std::string BigEndian16(uint16_t value) {
  return {static_cast<char>(value >> 8), static_cast<char>(value & 0xFF)};
}

std::string V2(uint8_t version_command, uint8_t family, const std::string& payload) {
  return kV2Signature + static_cast<char>(version_command) + static_cast<char>(family) +
         BigEndian16(static_cast<uint16_t>(payload.size())) + payload;
}

// Address block: raw address bytes (4 or 16 each) and ports.
std::string Addresses(const std::string& source, const std::string& destination,
                      uint16_t source_port, uint16_t destination_port) {
  return source + destination + BigEndian16(source_port) + BigEndian16(destination_port);
}

std::string Ipv4Block() {
  return Addresses(std::string("\xC0\xA8\x01\x02", 4), std::string("\x0A\x00\x00\x01", 4), 51234,
                   9092);
}

std::string Ipv6Block() {
  std::string source(16, '\0'), destination(16, '\0');
  source[0] = '\xFD';
  source[1] = '\x7A';
  source[15] = '\x05';
  destination[15] = '\x01';
  return Addresses(source, destination, 443, 9093);
}

std::string Tlv(uint8_t type, const std::string& value) {
  return static_cast<char>(type) + BigEndian16(static_cast<uint16_t>(value.size())) + value;
}

void ExpectError(std::string_view input, std::string_view message,
                 ProxyProtocol mode = ProxyProtocol::kAny) {
  ProxyParseResult result = Parse(input, mode);
  EXPECT_EQ(result.status, ProxyParseStatus::kError)
      << "input: " << ::testing::PrintToString(std::string(input));
  EXPECT_THAT(result.error, HasSubstr(message));
}

// A kDone result that names these endpoints and consumed `header_length` bytes.
void ExpectEndpoints(const ProxyParseResult& result, std::string_view source,
                     std::string_view destination, uint16_t source_port, uint16_t destination_port,
                     size_t header_length) {
  ASSERT_EQ(result.status, ProxyParseStatus::kDone) << result.error;
  EXPECT_FALSE(result.header.local);
  EXPECT_EQ(result.header.source_ip.to_string(), source);
  EXPECT_EQ(result.header.destination_ip.to_string(), destination);
  EXPECT_EQ(result.header.source_port, source_port);
  EXPECT_EQ(result.header.destination_port, destination_port);
  EXPECT_EQ(result.header.header_length, header_length);
}

// Every strict prefix of `input` is kNeedMore; the whole is kDone.
void ExpectNeedMoreUntilComplete(const std::string& input, ProxyProtocol mode) {
  for (size_t n = 0; n < input.size(); ++n) {
    ProxyParseResult result = Parse(std::string_view(input).substr(0, n), mode);
    ASSERT_EQ(result.status, ProxyParseStatus::kNeedMore)
        << "prefix length " << n << ": " << result.error;
  }
  ProxyParseResult result = Parse(input, mode);
  ASSERT_EQ(result.status, ProxyParseStatus::kDone) << result.error;
  EXPECT_EQ(result.header.header_length, input.size());
}

// ---- v1 ----

TEST(ProxyProtocolV1Test, Tcp4) {
  ProxyParseResult result = Parse("PROXY TCP4 192.168.1.2 10.0.0.1 51234 9092\r\n");
  ExpectEndpoints(result, "192.168.1.2", "10.0.0.1", 51234, 9092, 44);
  EXPECT_TRUE(result.header.source_ip.is_v4());
}

TEST(ProxyProtocolV1Test, Tcp6) {
  ProxyParseResult result = Parse("PROXY TCP6 fd7a:115c:a1e0::5 fd7a:115c:a1e0::1 0 65535\r\n");
  ExpectEndpoints(result, "fd7a:115c:a1e0::5", "fd7a:115c:a1e0::1", 0, 65535, 56);
  EXPECT_TRUE(result.header.source_ip.is_v6());
}

TEST(ProxyProtocolV1Test, Tcp6AcceptsMappedIpv4TextForm) {
  ProxyParseResult result = Parse("PROXY TCP6 ::ffff:1.2.3.4 ::1 1 2\r\n");
  ASSERT_EQ(result.status, ProxyParseStatus::kDone) << result.error;
  EXPECT_TRUE(result.header.source_ip.is_v6());
}

TEST(ProxyProtocolV1Test, UnknownKeepsSocketPeer) {
  ProxyParseResult bare = Parse("PROXY UNKNOWN\r\n");
  ASSERT_EQ(bare.status, ProxyParseStatus::kDone) << bare.error;
  EXPECT_TRUE(bare.header.local);
  EXPECT_EQ(bare.header.header_length, 15u);

  // The receiver ignores whatever follows UNKNOWN up to the CRLF.
  ProxyParseResult with_addresses = Parse("PROXY UNKNOWN ::1 ::2 1 2\r\n");
  ASSERT_EQ(with_addresses.status, ProxyParseStatus::kDone) << with_addresses.error;
  EXPECT_TRUE(with_addresses.header.local);
}

TEST(ProxyProtocolV1Test, LongestAllowedLineIs107Bytes) {
  std::string full(39, 'f');
  for (size_t i = 4; i < full.size(); i += 5) full[i] = ':';
  std::string line = "PROXY UNKNOWN " + full + " " + full + " 65535 65535\r\n";
  ASSERT_EQ(line.size(), 107u);
  ProxyParseResult result = Parse(line);
  ASSERT_EQ(result.status, ProxyParseStatus::kDone) << result.error;
  EXPECT_EQ(result.header.header_length, 107u);

  std::string tcp6 = "PROXY TCP6 " + full + " " + full + " 65535 65535\r\n";
  result = Parse(tcp6);
  ASSERT_EQ(result.status, ProxyParseStatus::kDone) << result.error;
  EXPECT_EQ(result.header.source_ip.to_string(), "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
}

TEST(ProxyProtocolV1Test, HeaderLengthExcludesApplicationBytes) {
  std::string header = "PROXY TCP4 1.2.3.4 5.6.7.8 1000 2000\r\n";
  ProxyParseResult result = Parse(header + std::string(kHttp2Preface));
  ASSERT_EQ(result.status, ProxyParseStatus::kDone) << result.error;
  EXPECT_EQ(result.header.header_length, header.size());
  EXPECT_EQ(result.header.source_ip.to_string(), "1.2.3.4");
}

TEST(ProxyProtocolV1Test, ByteByByteNeedsMoreUntilComplete) {
  for (ProxyProtocol mode : {ProxyProtocol::kV1, ProxyProtocol::kAny}) {
    ExpectNeedMoreUntilComplete("PROXY TCP4 100.64.0.7 100.64.0.1 40000 9092\r\n", mode);
    ExpectNeedMoreUntilComplete("PROXY TCP6 fd7a::7 fd7a::1 40000 9093\r\n", mode);
    ExpectNeedMoreUntilComplete("PROXY UNKNOWN\r\n", mode);
  }
}

TEST(ProxyProtocolV1Test, RejectsMissingCrlfWithin107Bytes) {
  std::string line = "PROXY TCP4 1.2.3.4 5.6.7.8 1 2" + std::string(78, ' ');
  ASSERT_EQ(line.size(), 108u);
  ExpectError(line, "no CRLF within 107 bytes");
  // 107 bytes without CRLF are already too many (the 108th byte can't make it valid).
  ExpectError(line.substr(0, 107), "no CRLF within 107 bytes");
  EXPECT_EQ(Parse(line.substr(0, 106)).status, ProxyParseStatus::kNeedMore);
  // A CRLF whose LF would be byte 108.
  std::string late = std::string("PROXY UNKNOWN ") + std::string(92, 'x') + "\r\n";
  ASSERT_EQ(late.size(), 108u);
  ExpectError(late, "no CRLF within 107 bytes");
}

TEST(ProxyProtocolV1Test, RejectsBadLineEndings) {
  ExpectError("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "LF without CR");
  ExpectError("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", "CR not followed by LF");
  // A CR at the very end may still be followed by LF.
  EXPECT_EQ(Parse("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r").status, ProxyParseStatus::kNeedMore);
  ExpectError(std::string("PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n"), "non-printable byte 0x09");
  ExpectError(std::string("PROXY \0", 7), "non-printable byte 0x00");
}

TEST(ProxyProtocolV1Test, RejectsSpacingAndFieldCount) {
  ExpectError("PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "empty field");
  ExpectError("PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", "empty field");
  ExpectError("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "empty field");
  ExpectError("PROXY \r\n", "empty field");
  ExpectError("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 extra\r\n", "5 fields after the protocol");
  ExpectError("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "3 fields after the protocol");
  ExpectError("PROXY TCP4\r\n", "0 fields after the protocol");
}

TEST(ProxyProtocolV1Test, RejectsUnknownProtocolToken) {
  ExpectError("PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", "unsupported PROXY v1 protocol \"UDP4\"");
  ExpectError("PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", "unsupported PROXY v1 protocol");
  ExpectError("PROXY UNKNOWNX\r\n", "unsupported PROXY v1 protocol");
}

TEST(ProxyProtocolV1Test, RejectsInvalidIpv4) {
  ExpectError("PROXY TCP4 256.1.1.1 5.6.7.8 1 2\r\n", "invalid source address \"256.1.1.1\"");
  ExpectError("PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", "invalid source address");
  ExpectError("PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n", "invalid source address");
  ExpectError("PROXY TCP4 1.2.3.04 5.6.7.8 1 2\r\n", "invalid source address");
  ExpectError("PROXY TCP4 1..3.4 5.6.7.8 1 2\r\n", "invalid source address");
  ExpectError("PROXY TCP4 1.2.3.4 5.6.7. 1 2\r\n", "invalid destination address");
  ExpectError("PROXY TCP4 1.2.3.4 -5.6.7.8 1 2\r\n", "invalid destination address");
  ExpectError("PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "TCP4 line has an invalid source address");
}

TEST(ProxyProtocolV1Test, RejectsInvalidIpv6) {
  ExpectError("PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "TCP6 line has an IPv4 source address");
  ExpectError("PROXY TCP6 ::1 5.6.7.8 1 2\r\n", "TCP6 line has an IPv4 destination address");
  ExpectError("PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "invalid source address");
  ExpectError("PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n", "invalid source address");
  ExpectError("PROXY TCP6 1:::2 ::1 1 2\r\n", "invalid source address");
  ExpectError("PROXY TCP6 [::1] ::1 1 2\r\n", "invalid source address");
  ExpectError("PROXY TCP6 ::1 g::1 1 2\r\n", "invalid destination address");
}

TEST(ProxyProtocolV1Test, RejectsInvalidPorts) {
  ExpectError("PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "invalid source port \"65536\"");
  ExpectError("PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n", "invalid destination port");
  ExpectError("PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n", "invalid source port \"080\"");
  ExpectError("PROXY TCP4 1.2.3.4 5.6.7.8 1 00\r\n", "invalid destination port");
  ExpectError("PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", "invalid source port");
  ExpectError("PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", "invalid source port");
  ExpectError("PROXY TCP4 1.2.3.4 5.6.7.8 1 0x10\r\n", "invalid destination port");
}

// ---- v2 ----

TEST(ProxyProtocolV2Test, ProxyIpv4) {
  ProxyParseResult result = Parse(V2(0x21, 0x11, Ipv4Block()));
  ExpectEndpoints(result, "192.168.1.2", "10.0.0.1", 51234, 9092, 28);
  EXPECT_TRUE(result.header.source_ip.is_v4());
}

TEST(ProxyProtocolV2Test, ProxyIpv6) {
  ProxyParseResult result = Parse(V2(0x21, 0x21, Ipv6Block()));
  ExpectEndpoints(result, "fd7a::5", "::1", 443, 9093, 52);
  EXPECT_TRUE(result.header.source_ip.is_v6());
}

TEST(ProxyProtocolV2Test, SkipsTlvs) {
  std::string tlvs = Tlv(0x01, "h2") + Tlv(0x02, "superlink.example.ts.net") + Tlv(0x04, "") +
                     Tlv(0xE0, std::string(300, 'x'));
  std::string header = V2(0x21, 0x11, Ipv4Block() + tlvs);
  ProxyParseResult result = Parse(header + "PRI * HTTP/2.0");
  ASSERT_EQ(result.status, ProxyParseStatus::kDone) << result.error;
  EXPECT_EQ(result.header.header_length, header.size());
  EXPECT_EQ(result.header.source_port, 51234);

  result = Parse(V2(0x21, 0x21, Ipv6Block() + Tlv(0x03, "abcd")));
  ASSERT_EQ(result.status, ProxyParseStatus::kDone) << result.error;
  EXPECT_EQ(result.header.destination_port, 9093);
}

TEST(ProxyProtocolV2Test, LocalCommandKeepsSocketPeer) {
  ProxyParseResult empty = Parse(V2(0x20, 0x00, ""));
  ASSERT_EQ(empty.status, ProxyParseStatus::kDone) << empty.error;
  EXPECT_TRUE(empty.header.local);
  EXPECT_EQ(empty.header.header_length, 16u);

  // LOCAL ignores the family byte and the address block, even a short or odd one.
  ProxyParseResult with_block = Parse(V2(0x20, 0x11, "xyz"));
  ASSERT_EQ(with_block.status, ProxyParseStatus::kDone) << with_block.error;
  EXPECT_TRUE(with_block.header.local);
  EXPECT_EQ(with_block.header.header_length, 19u);
}

TEST(ProxyProtocolV2Test, ProxyWithUnspecifiedFamilyIsLocal) {
  ProxyParseResult result = Parse(V2(0x21, 0x00, Tlv(0x04, "")));
  ASSERT_EQ(result.status, ProxyParseStatus::kDone) << result.error;
  EXPECT_TRUE(result.header.local);
  EXPECT_EQ(result.header.header_length, 19u);
}

TEST(ProxyProtocolV2Test, HeaderLengthExcludesApplicationBytes) {
  std::string header = V2(0x21, 0x21, Ipv6Block());
  std::string input = header + std::string(kHttp2Preface);
  ProxyParseResult result = Parse(input);
  ASSERT_EQ(result.status, ProxyParseStatus::kDone) << result.error;
  EXPECT_EQ(result.header.header_length, header.size());
  EXPECT_EQ(input.substr(result.header.header_length), kHttp2Preface);
}

TEST(ProxyProtocolV2Test, ByteByByteNeedsMoreUntilComplete) {
  for (ProxyProtocol mode : {ProxyProtocol::kV2, ProxyProtocol::kAny}) {
    ExpectNeedMoreUntilComplete(V2(0x21, 0x11, Ipv4Block()), mode);
    ExpectNeedMoreUntilComplete(V2(0x21, 0x21, Ipv6Block() + Tlv(0x01, "h2")), mode);
    ExpectNeedMoreUntilComplete(V2(0x20, 0x00, ""), mode);
  }
}

TEST(ProxyProtocolV2Test, AcceptsTheLengthCap) {
  std::string tlv = Tlv(0xEE, std::string(kProxyV2MaxPayload - 12 - 3, 'z'));
  std::string header = V2(0x21, 0x11, Ipv4Block() + tlv);
  ASSERT_EQ(header.size(), 16 + kProxyV2MaxPayload);
  ProxyParseResult result = Parse(header);
  ASSERT_EQ(result.status, ProxyParseStatus::kDone) << result.error;
  EXPECT_EQ(result.header.header_length, header.size());
}

TEST(ProxyProtocolV2Test, RejectsBadSignature) {
  std::string header = V2(0x21, 0x11, Ipv4Block());
  header[10] = 'X';  // "QUIX"
  ExpectError(header, "missing PROXY protocol header (first bytes 0x0d 0x0a");
}

TEST(ProxyProtocolV2Test, RejectsWrongVersion) {
  ExpectError(V2(0x11, 0x11, Ipv4Block()), "unsupported PROXY v2 version 1");
  ExpectError(V2(0x31, 0x11, Ipv4Block()), "unsupported PROXY v2 version 3");
  // Seen as soon as byte 13 arrives.
  ExpectError(kV2Signature + '\x11', "unsupported PROXY v2 version 1");
}

TEST(ProxyProtocolV2Test, RejectsBadCommand) {
  ExpectError(V2(0x22, 0x11, Ipv4Block()), "unsupported PROXY v2 command 2");
  ExpectError(V2(0x2F, 0x11, Ipv4Block()), "unsupported PROXY v2 command 15");
}

TEST(ProxyProtocolV2Test, RejectsUnsupportedFamilies) {
  ExpectError(V2(0x21, 0x12, Ipv4Block()), "datagram (UDP)");
  ExpectError(V2(0x21, 0x22, Ipv6Block()), "datagram (UDP)");
  ExpectError(V2(0x21, 0x31, std::string(216, '\0')), "AF_UNIX");
  ExpectError(V2(0x21, 0x32, std::string(216, '\0')), "AF_UNIX");
  ExpectError(V2(0x21, 0x41, Ipv4Block()), "invalid PROXY v2 address family/transport byte 0x41");
  ExpectError(V2(0x21, 0x10, Ipv4Block()), "byte 0x10");
  ExpectError(V2(0x21, 0x01, Ipv4Block()), "byte 0x01");
  // Seen as soon as byte 14 arrives.
  ExpectError(kV2Signature + "\x21\x12", "datagram (UDP)");
}

TEST(ProxyProtocolV2Test, RejectsTruncatedAddresses) {
  ExpectError(V2(0x21, 0x11, Ipv4Block().substr(0, 11)),
              "address block truncated (11 bytes, IPv4 needs 12)");
  ExpectError(V2(0x21, 0x21, Ipv4Block()), "address block truncated (12 bytes, IPv6 needs 36)");
  ExpectError(V2(0x21, 0x21, ""), "address block truncated (0 bytes, IPv6 needs 36)");
}

TEST(ProxyProtocolV2Test, RejectsLengthOverflow) {
  std::string fixed =
      kV2Signature + "\x21\x11" + BigEndian16(static_cast<uint16_t>(kProxyV2MaxPayload + 1));
  // Rejected from the 16 fixed bytes alone, before any of the payload is buffered.
  ExpectError(fixed, "PROXY v2 header too long (4113 bytes, limit 4112)");
  ExpectError(kV2Signature + std::string("\x20\x00", 2) + BigEndian16(0xFFFF), "header too long");
}

TEST(ProxyProtocolV2Test, RejectsTlvsThatDoNotFit) {
  std::string overrun = Tlv(0x02, "abcdef");
  overrun.resize(overrun.size() - 1);  // the TLV says 6 bytes, 5 remain
  ExpectError(V2(0x21, 0x11, Ipv4Block() + overrun), "TLV of type 0x02 overruns the header");
  ExpectError(V2(0x21, 0x11, Ipv4Block() + Tlv(0x01, "h2") + "\x04\x00"),
              "ends inside a TLV header");
}

// ---- modes and non-PROXY input ----

TEST(ProxyProtocolModeTest, DisabledModeIsAnError) {
  ExpectError("PROXY UNKNOWN\r\n", "proxy protocol disabled", ProxyProtocol::kNone);
  ExpectError("", "proxy protocol disabled", ProxyProtocol::kNone);
}

TEST(ProxyProtocolModeTest, V2HeaderOnV1Listener) {
  ExpectError(V2(0x21, 0x11, Ipv4Block()), "got a PROXY v2 header but the listener expects v1",
              ProxyProtocol::kV1);
  // A partial v2 signature waits until it can be named.
  EXPECT_EQ(Parse("\r\n\r\n", ProxyProtocol::kV1).status, ProxyParseStatus::kNeedMore);
}

TEST(ProxyProtocolModeTest, V1HeaderOnV2Listener) {
  ExpectError("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
              "got a PROXY v1 header but the listener expects v2", ProxyProtocol::kV2);
  ExpectError("PROXY ", "got a PROXY v1 header but the listener expects v2", ProxyProtocol::kV2);
  EXPECT_EQ(Parse("PROX", ProxyProtocol::kV2).status, ProxyParseStatus::kNeedMore);
}

TEST(ProxyProtocolModeTest, EmptyInputNeedsMore) {
  for (ProxyProtocol mode : {ProxyProtocol::kV1, ProxyProtocol::kV2, ProxyProtocol::kAny}) {
    EXPECT_EQ(Parse("", mode).status, ProxyParseStatus::kNeedMore);
  }
}

TEST(ProxyProtocolModeTest, Http2PrefaceWhereHeaderRequired) {
  for (ProxyProtocol mode : {ProxyProtocol::kV1, ProxyProtocol::kV2, ProxyProtocol::kAny}) {
    ExpectError(kHttp2Preface, "missing PROXY protocol header (got what looks like HTTP/2)", mode);
  }
  // "PR" could still become "PROXY "; "PRI" cannot.
  EXPECT_EQ(Parse("PR", ProxyProtocol::kV1).status, ProxyParseStatus::kNeedMore);
  ExpectError("PRI", "looks like HTTP/2", ProxyProtocol::kV1);
}

TEST(ProxyProtocolModeTest, TlsClientHelloWhereHeaderRequired) {
  // Record header (handshake, TLS 1.0 record version, length) and ClientHello start.
  const std::string client_hello("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11);
  for (ProxyProtocol mode : {ProxyProtocol::kV1, ProxyProtocol::kV2, ProxyProtocol::kAny}) {
    ExpectError(client_hello, "missing PROXY protocol header (got what looks like TLS)", mode);
    ExpectError(client_hello.substr(0, 1), "looks like TLS", mode);
  }
}

TEST(ProxyProtocolModeTest, OtherBytesAreShownInHex) {
  ExpectError("GET / HTTP/1.1\r\n",
              "missing PROXY protocol header (first bytes 0x47 0x45 0x54 "
              "0x20 0x2f 0x20 0x48 0x54)");
  ExpectError("proxy TCP4", "missing PROXY protocol header (first bytes 0x70");
}

// ---- fuzz ----

// Deterministic: the engine's raw output is fully specified by the standard (unlike the
// distributions), so every platform runs the same inputs.
TEST(ProxyProtocolFuzzTest, RandomAndMutatedInputsNeverMisbehave) {
  const std::vector<std::string> seeds = {
      "PROXY TCP4 192.168.1.2 10.0.0.1 51234 9092\r\n",
      "PROXY TCP6 fd7a:115c:a1e0::5 ::ffff:1.2.3.4 0 65535\r\n",
      "PROXY UNKNOWN\r\n",
      V2(0x21, 0x11, Ipv4Block()),
      V2(0x21, 0x21, Ipv6Block() + Tlv(0x01, "h2") + Tlv(0x02, "host")),
      V2(0x20, 0x00, ""),
      std::string(kHttp2Preface),
  };
  const ProxyProtocol modes[] = {ProxyProtocol::kV1, ProxyProtocol::kV2, ProxyProtocol::kAny};
  std::mt19937 rng(20240611);
  auto below = [&rng](size_t n) { return static_cast<size_t>(rng() % n); };
  size_t done = 0, errors = 0;
  for (int iteration = 0; iteration < 200000; ++iteration) {
    std::string input;
    if (below(8) == 0) {
      input.resize(below(64));
      for (char& c : input) c = static_cast<char>(rng());
    } else {
      input = seeds[below(seeds.size())];
      for (size_t mutations = below(4); mutations > 0 && !input.empty(); --mutations) {
        size_t at = below(input.size());
        switch (below(5)) {
          case 0:
            input[at] = static_cast<char>(rng());
            break;
          case 1:
            input[at] = static_cast<char>(input[at] ^ (1 << below(8)));
            break;
          case 2:
            input.erase(at, 1);
            break;
          case 3:
            input.insert(at, 1, static_cast<char>(" .:0123456789\r\n"[below(15)]));
            break;
          case 4:
            input.resize(at);
            break;
        }
      }
      if (below(2) == 0) input += std::string(below(32), 'A');
    }

    ProxyProtocol mode = modes[below(3)];
    ProxyParseResult result = Parse(input, mode);
    switch (result.status) {
      case ProxyParseStatus::kDone: {
        ++done;
        ASSERT_GT(result.header.header_length, 0u);
        ASSERT_LE(result.header.header_length, input.size());
        // The verdict depends on the header bytes only.
        ProxyParseResult exact =
            Parse(std::string_view(input).substr(0, result.header.header_length), mode);
        ASSERT_EQ(exact.status, ProxyParseStatus::kDone);
        ASSERT_EQ(exact.header.header_length, result.header.header_length);
        break;
      }
      case ProxyParseStatus::kError:
        ++errors;
        ASSERT_FALSE(result.error.empty());
        break;
      case ProxyParseStatus::kNeedMore:
        // Buffering is bounded by the largest header we accept.
        ASSERT_LT(input.size(), 16 + kProxyV2MaxPayload);
        break;
    }
  }
  // The mutations keep a fair share of inputs valid, so both outcomes get exercised.
  EXPECT_GT(done, 10000u);
  EXPECT_GT(errors, 10000u);
}

}  // namespace
}  // namespace sepal
