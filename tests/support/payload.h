// Generated payloads and the body hash the REST stand-ins and clients agree on.
//
// Payload: byte i of a generated payload is 'a' + i % 26 (FakeSuperLink::MakePayload's
// pattern), so any part of a large one can be made, or checked, without holding it whole.
// Hash: 64-bit FNV-1a, printed as 16 lowercase hex digits ("body-fnv1a=HEX").
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

namespace sepal::test {

// The byte at `offset` of a generated payload.
inline char PayloadByte(uint64_t offset) { return static_cast<char>('a' + offset % 26); }

// Writes the generated payload's bytes [offset, offset + size) to out.
inline void FillPayload(char* out, size_t size, uint64_t offset) {
  unsigned letter = static_cast<unsigned>(offset % 26);
  for (size_t i = 0; i < size; ++i) {
    out[i] = static_cast<char>('a' + letter);
    if (++letter == 26) letter = 0;
  }
}

// 64-bit FNV-1a, fed incrementally.
class Fnv1a {
 public:
  static constexpr uint64_t kOffsetBasis = 14695981039346656037ull;
  static constexpr uint64_t kPrime = 1099511628211ull;

  void Update(const char* data, size_t size) {
    uint64_t hash = hash_;
    for (size_t i = 0; i < size; ++i) hash = (hash ^ static_cast<uint8_t>(data[i])) * kPrime;
    hash_ = hash;
  }
  void Update(std::string_view bytes) { Update(bytes.data(), bytes.size()); }
  // Feeds the generated payload's bytes [offset, offset + size), without materializing them.
  void UpdatePayload(uint64_t offset, uint64_t size) {
    uint64_t hash = hash_;
    unsigned letter = static_cast<unsigned>(offset % 26);
    for (uint64_t i = 0; i < size; ++i) {
      hash = (hash ^ static_cast<uint8_t>('a' + letter)) * kPrime;
      if (++letter == 26) letter = 0;
    }
    hash_ = hash;
  }

  uint64_t value() const { return hash_; }
  // 16 lowercase hex digits.
  std::string Hex() const {
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(hash_));
    return std::string(hex, 16);
  }

 private:
  uint64_t hash_ = kOffsetBasis;
};

inline std::string Fnv1aHex(std::string_view bytes) {
  Fnv1a hash;
  hash.Update(bytes);
  return hash.Hex();
}

// The hash of a generated payload of `size` bytes (what a server reports as body-fnv1a for a
// generated upload).
inline std::string PayloadFnv1aHex(uint64_t size) {
  Fnv1a hash;
  hash.UpdatePayload(0, size);
  return hash.Hex();
}

}  // namespace sepal::test
