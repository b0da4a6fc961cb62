// What the process holds and what it can give back: resident set size, CPU time, and the
// allocator's call that returns free heap pages to the kernel. Cheap enough to call every
// 25 ms (bench/memory.md: ~2.5 µs for the RSS, under 1 µs for the CPU time).
#pragma once

#include <chrono>
#include <cstdint>
#include <string_view>

namespace sepal::memory {

// Resident set size in bytes: the second field of /proc/self/statm times the page size (what
// the OOM killer and a cgroup's memory.current count, less page cache). 0 if unreadable.
uint64_t ResidentBytes();

// User plus system CPU time of the whole process so far.
std::chrono::microseconds ProcessCpuTime();

// The allocator behind malloc: "glibc", "jemalloc" (LD_PRELOAD or linked) or "mimalloc".
std::string_view AllocatorName();

// Gives free heap memory back to the kernel: glibc's malloc_trim(0) (every arena's free pages,
// not only the top of the heap), jemalloc's arena purge. Takes the allocator's arena locks for
// as long as it walks the free lists (about a millisecond per few thousand free chunks), so
// call it when that does not matter: when the process is quiet or over its budget.
// False if the allocator has no such call or nothing was released.
bool ReleaseFreeMemory();

}  // namespace sepal::memory
