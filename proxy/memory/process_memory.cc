// /proc/self/statm, getrusage and the allocator's release call.
#include "proxy/memory/process_memory.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <malloc.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

namespace sepal::memory {
namespace {

// jemalloc's control interface, found at run time: present when jemalloc is preloaded or
// linked, absent (null) under glibc.
using MallctlFn = int (*)(const char*, void*, size_t*, void*, size_t);

MallctlFn Mallctl() {
  static const MallctlFn fn = reinterpret_cast<MallctlFn>(dlsym(RTLD_DEFAULT, "mallctl"));
  return fn;
}

bool IsMimalloc() {
  static const bool found = dlsym(RTLD_DEFAULT, "mi_version") != nullptr;
  return found;
}

}  // namespace

uint64_t ResidentBytes() {
  // Opened once and read with pread: one syscall a sample, no allocation.
  static const int fd = ::open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
  static const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  if (fd < 0) return 0;
  char text[128];
  ssize_t n = ::pread(fd, text, sizeof(text) - 1, 0);
  if (n <= 0) return 0;
  text[n] = '\0';
  // "size resident shared text lib data dt", in pages.
  char* end = nullptr;
  std::strtoull(text, &end, 10);
  if (end == text) return 0;
  const char* resident = end;
  uint64_t pages = std::strtoull(resident, &end, 10);
  if (end == resident) return 0;
  return pages * page;
}

std::chrono::microseconds ProcessCpuTime() {
  rusage usage{};
  if (::getrusage(RUSAGE_SELF, &usage) != 0) return std::chrono::microseconds(0);
  auto micros = [](const timeval& t) {
    return std::chrono::seconds(t.tv_sec) + std::chrono::microseconds(t.tv_usec);
  };
  return micros(usage.ru_utime) + micros(usage.ru_stime);
}

std::string_view AllocatorName() {
  if (Mallctl() != nullptr) return "jemalloc";
  if (IsMimalloc()) return "mimalloc";
  return "glibc";
}

bool ReleaseFreeMemory() {
  if (MallctlFn mallctl = Mallctl()) {
    // MALLCTL_ARENAS_ALL is 4096 in jemalloc 5.
    return mallctl("arena.4096.purge", nullptr, nullptr, nullptr, 0) == 0;
  }
  // Debian's mimalloc 2.0 has no call that purges every thread's pages (mi_collect is per thread).
  if (IsMimalloc()) return false;
  return ::malloc_trim(0) == 1;
}

}  // namespace sepal::memory
