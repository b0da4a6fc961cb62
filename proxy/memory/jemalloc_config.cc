// jemalloc's start-up settings for the sepal binary (linked in only with SEPAL_ALLOCATOR=
// jemalloc, cmake/Allocator.cmake). jemalloc reads this symbol before its first allocation;
// MALLOC_CONF in the environment still overrides any of it.
//   background_thread:true  a jemalloc thread purges unused dirty pages on a timer, so memory
//                           goes back to the kernel also when every worker is idle (without
//                           it, purging happens only during later allocations: after a burst
//                           sepal stayed at 72 MiB, bench/memory.md)
//   dirty_decay_ms:1000     freed pages go back within about a second (default 10 s)
//   muzzy_decay_ms:0        and are returned outright (MADV_DONTNEED), not kept lazily
// The memory budget also purges at once when the process goes quiet or over its budget
// (ReleaseFreeMemory: mallctl "arena.<all>.purge").
extern "C" {
// NOLINTNEXTLINE: the name and type are jemalloc's interface.
extern const char* malloc_conf;
const char* malloc_conf = "background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0";
}
