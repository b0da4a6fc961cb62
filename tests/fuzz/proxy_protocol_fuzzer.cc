// Fuzz target: the PROXY protocol header parser (v1 text, v2 binary). Input: one byte that
// picks the listener mode (v1, v2, any), then the connection's first bytes.
//
// Invariants: a verdict never claims more bytes than it was given, nor more than the
// protocol's limits; a kNeedMore answer is only given below those limits; the answer for
// every prefix of the input is consistent with the answer for the whole (kNeedMore until a
// kDone's header_length and the same header from there on; once kError, kError for good);
// the parser never reads past the length it is given (each prefix is a heap copy of exactly
// that size, so ASan sees an overread).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "proxy/listener/proxy_protocol.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

using sepal::ProxyHeader;
using sepal::ProxyParseResult;
using sepal::ProxyParseStatus;
using sepal::config::ProxyProtocol;

constexpr uint8_t kV2Signature[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                      0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
constexpr size_t kV2MaxLength = 16 + sepal::kProxyV2MaxPayload;

ProxyParseResult ParsePrefix(const uint8_t* data, size_t length, ProxyProtocol mode) {
  std::vector<uint8_t> copy(data, data + length);
  // An empty vector's data() may be null; the parser must cope with length 0 either way.
  return sepal::ParseProxyHeader(copy.data(), copy.size(), mode);
}

bool SameHeader(const ProxyHeader& a, const ProxyHeader& b) {
  return a.local == b.local && a.source_ip == b.source_ip && a.destination_ip == b.destination_ip &&
         a.source_port == b.source_port && a.destination_port == b.destination_port &&
         a.header_length == b.header_length;
}

void CheckVerdict(const ProxyParseResult& result, const uint8_t* data, size_t length,
                  ProxyProtocol mode) {
  switch (result.status) {
    case ProxyParseStatus::kNeedMore:
      FUZZ_CHECK(length < kV2MaxLength, "kNeedMore beyond the longest header");
      if (mode == ProxyProtocol::kV1) {
        FUZZ_CHECK(length < sepal::kProxyV1MaxLength, "kNeedMore beyond a v1 line");
      }
      break;
    case ProxyParseStatus::kError:
      FUZZ_CHECK(!result.error.empty(), "an error has a reason");
      break;
    case ProxyParseStatus::kDone: {
      const ProxyHeader& header = result.header;
      FUZZ_CHECK(header.header_length > 0 && header.header_length <= length,
                 "consumed length within the input");
      bool v2 = header.header_length >= 16 && std::memcmp(data, kV2Signature, 12) == 0;
      bool v1 = std::memcmp(data, "PROXY ", std::min<size_t>(6, length)) == 0 && length >= 6;
      FUZZ_CHECK(v1 || v2, "a header starts with a signature");
      if (v1) {
        FUZZ_CHECK(mode != ProxyProtocol::kV2, "v1 accepted only when allowed");
        FUZZ_CHECK(header.header_length <= sepal::kProxyV1MaxLength, "v1 line length");
        FUZZ_CHECK(data[header.header_length - 2] == '\r' && data[header.header_length - 1] == '\n',
                   "a v1 line ends with CRLF");
      } else {
        FUZZ_CHECK(mode != ProxyProtocol::kV1, "v2 accepted only when allowed");
        FUZZ_CHECK(header.header_length <= kV2MaxLength, "v2 length within the cap");
        size_t declared = (size_t{data[14]} << 8) | data[15];
        FUZZ_CHECK(header.header_length == 16 + declared, "v2 length is the declared one");
      }
      if (!header.local) {
        FUZZ_CHECK(header.source_ip.is_v4() == header.destination_ip.is_v4(),
                   "source and destination of one family");
      }
      break;
    }
  }
}

// Prefix lengths to compare with the whole: all short ones, the neighbourhood of the
// verdict's length, and a sample of the rest (all of them would be quadratic).
std::vector<size_t> PrefixLengths(size_t size, size_t header_length) {
  std::vector<size_t> lengths;
  for (size_t n = 0; n < size; ++n) {
    bool near_header = header_length != 0 && n + 2 >= header_length && n <= header_length + 2;
    if (n <= 128 || near_header || n % 61 == 0 || n + 2 >= size) lengths.push_back(n);
  }
  return lengths;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  static constexpr ProxyProtocol kModes[] = {ProxyProtocol::kV1, ProxyProtocol::kV2,
                                             ProxyProtocol::kAny};
  ProxyProtocol mode = kModes[data[0] % 3];
  const uint8_t* bytes = data + 1;
  size_t length = size - 1;

  ProxyParseResult whole = ParsePrefix(bytes, length, mode);
  CheckVerdict(whole, bytes, length, mode);
  size_t header_length = whole.status == ProxyParseStatus::kDone ? whole.header.header_length : 0;
  bool errored = false;
  for (size_t n : PrefixLengths(length, header_length)) {
    ProxyParseResult part = ParsePrefix(bytes, n, mode);
    CheckVerdict(part, bytes, n, mode);
    switch (whole.status) {
      case ProxyParseStatus::kDone:
        if (n < header_length) {
          FUZZ_CHECK(part.status == ProxyParseStatus::kNeedMore,
                     "a prefix of a complete header needs more");
        } else {
          FUZZ_CHECK(part.status == ProxyParseStatus::kDone && SameHeader(part.header, whole.header),
                     "the header does not depend on the bytes after it");
        }
        break;
      case ProxyParseStatus::kNeedMore:
        FUZZ_CHECK(part.status == ProxyParseStatus::kNeedMore,
                   "a prefix of an undecided input is undecided");
        break;
      case ProxyParseStatus::kError:
        FUZZ_CHECK(part.status != ProxyParseStatus::kDone, "a prefix of an error is no header");
        if (errored) FUZZ_CHECK(part.status == ProxyParseStatus::kError, "an error stays an error");
        errored = part.status == ProxyParseStatus::kError;
        break;
    }
  }
  return 0;
}
