// main() for the replay builds of the fuzz targets: runs LLVMFuzzerTestOneInput once per
// file named on the command line or found (recursively) in a directory named there, so a
// normal build (g++, no libFuzzer) re-checks the committed corpus and reproducers under ctest.
// Names starting with '.' (.gitkeep) are skipped. A missing path is an error.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

namespace fs = std::filesystem;

bool Hidden(const fs::path& path) { return path.filename().string().starts_with("."); }

bool Replay(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "cannot read %s\n", path.c_str());
    return false;
  }
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // A copy of exactly the input's size, so ASan catches reads past its end (as libFuzzer does).
  std::vector<uint8_t> input(bytes.begin(), bytes.end());
  std::fprintf(stderr, "replay %s (%zu bytes)\n", path.c_str(), input.size());
  LLVMFuzzerTestOneInput(input.data(), input.size());
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  size_t replayed = 0;
  for (int i = 1; i < argc; ++i) {
    fs::path arg(argv[i]);
    std::error_code ec;
    if (fs::is_directory(arg, ec)) {
      std::vector<fs::path> files;
      for (const auto& entry : fs::recursive_directory_iterator(arg)) {
        if (entry.is_regular_file() && !Hidden(entry.path())) files.push_back(entry.path());
      }
      std::sort(files.begin(), files.end());
      for (const fs::path& file : files) {
        if (!Replay(file)) return 1;
        ++replayed;
      }
    } else if (fs::is_regular_file(arg, ec)) {
      if (!Replay(arg)) return 1;
      ++replayed;
    } else {
      std::fprintf(stderr, "no such file or directory: %s\n", argv[i]);
      return 1;
    }
  }
  std::printf("%zu inputs replayed, no failure\n", replayed);
  return 0;
}
