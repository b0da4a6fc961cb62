// Fuzz target: the gRPC adapter prefix reader (filters/grpc_adapter). Input: one byte whose
// low bit says whether the body ended, then the request body's first bytes.
//
// Invariants: a found method is a Fleet path named by an identifier; the reader never reads
// past the bytes it is given (each prefix is a heap copy of exactly that size, so ASan sees
// an overread) nor decides on more than kMaxInspectedBytes; a refusal has a result label and
// a message; and prefixes agree with the whole: while the body is open, every prefix is
// undecided or decided the same way as the whole input, and once decided, stays decided.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "filters/grpc_adapter/adapter_inspector.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

namespace adapter = sepal::filters::grpc_adapter;
using Outcome = adapter::Inspection::Outcome;

adapter::Inspection InspectCopy(const uint8_t* data, size_t length, bool ended) {
  std::vector<uint8_t> copy(data, data + length);
  return adapter::Inspect({copy.data(), copy.size()}, ended);
}

void CheckVerdict(const adapter::Inspection& inspection) {
  switch (inspection.outcome) {
    case Outcome::kNeedMore:
      break;
    case Outcome::kFound: {
      FUZZ_CHECK(inspection.result == adapter::result::kOk, "found means ok");
      const std::string prefix = "/flwr.proto.Fleet/";
      FUZZ_CHECK(inspection.method.compare(0, prefix.size(), prefix) == 0 &&
                     inspection.method.size() > prefix.size(),
                 "a Fleet path");
      for (char c : inspection.method.substr(prefix.size())) {
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '_';
        FUZZ_CHECK(ok, "the method is an identifier");
      }
      FUZZ_CHECK(inspection.message_end >= adapter::kGrpcHeaderBytes, "a message was read");
      break;
    }
    case Outcome::kRefused:
      FUZZ_CHECK(!inspection.result.empty() && inspection.result != adapter::result::kOk,
                 "a refusal has its label");
      FUZZ_CHECK(!inspection.message.empty(), "a refusal says why");
      break;
  }
}

bool Same(const adapter::Inspection& a, const adapter::Inspection& b) {
  return a.outcome == b.outcome && a.method == b.method && a.result == b.result;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  bool ended = (data[0] & 1) != 0;
  const uint8_t* body = data + 1;
  size_t length = size - 1;

  adapter::Inspection whole = InspectCopy(body, length, ended);
  CheckVerdict(whole);
  // Bytes past the window change nothing.
  if (length > adapter::kMaxInspectedBytes && !ended) {
    FUZZ_CHECK(Same(whole, InspectCopy(body, adapter::kMaxInspectedBytes, false)),
               "only the window is read");
  }
  // Every short prefix, then a sample (all of them would be quadratic).
  bool decided = false;
  size_t limit = std::min(length, adapter::kMaxInspectedBytes + 8);
  for (size_t n = 0; n <= limit; ++n) {
    if (n > 512 && n % 61 != 0 && n + 2 < limit) continue;
    adapter::Inspection part = InspectCopy(body, n, false);
    CheckVerdict(part);
    if (part.outcome == Outcome::kNeedMore) {
      FUZZ_CHECK(!decided, "once decided, more bytes do not undecide");
      FUZZ_CHECK(n < adapter::kMaxInspectedBytes, "undecided within the window only");
      continue;
    }
    decided = true;
    // A decision rests on the bytes seen alone: the whole input (ended or not) agrees.
    FUZZ_CHECK(Same(part, whole), "a prefix decides as the whole");
  }
  if (ended) FUZZ_CHECK(whole.outcome != Outcome::kNeedMore, "an ended body is decided");
  return 0;
}
