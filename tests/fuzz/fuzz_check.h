// Invariant checks for the fuzz targets: a failed check prints what and where, then aborts,
// which libFuzzer reports as a crash (and the ctest replay as a failed test).
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string_view>

#define FUZZ_CHECK(condition, what)                                                       \
  do {                                                                                    \
    if (!(condition)) ::sepal::fuzz::Fail(#condition, what, __FILE__, __LINE__);          \
  } while (false)

namespace sepal::fuzz {

[[noreturn]] inline void Fail(const char* condition, std::string_view what, const char* file,
                              int line) {
  std::fprintf(stderr, "%s:%d: invariant failed: %s: %.*s\n", file, line, condition,
               static_cast<int>(what.size()), what.data());
  std::abort();
}

}  // namespace sepal::fuzz
