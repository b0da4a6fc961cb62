// A private scratch directory for a fuzz target's unix sockets, made once per process under
// $TMPDIR (or /tmp) and removed at exit.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>

namespace sepal::fuzz {

inline const std::string& ScratchDir() {
  // Never destroyed: the atexit handler below runs after static destructors would have.
  static const std::string& dir = *new std::string([] {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern = std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") +
                          "/sepal-fuzz-XXXXXX";
    if (mkdtemp(pattern.data()) == nullptr) std::abort();
    std::atexit([] {
      std::error_code ignored;
      std::filesystem::remove_all(ScratchDir(), ignored);
    });
    return pattern;
  }());
  return dir;
}

}  // namespace sepal::fuzz
