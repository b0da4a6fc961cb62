// SessionMemory implementation.
#include "proxy/http2/session_memory.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

namespace sepal {

namespace {
constexpr size_t kFrameBufferMinSize = 16 * 1024;

size_t PageSize() {
  static const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return page;
}
}  // namespace

SessionMemory::SessionMemory()
    : mem_{this, &SessionMemory::Malloc, &SessionMemory::Free, &SessionMemory::Calloc,
           &SessionMemory::Realloc} {}

bool SessionMemory::IsFrameBuffer(size_t size) const {
  return creating_ && size >= kFrameBufferMinSize && frame_buffer_ == nullptr;
}

void* SessionMemory::AllocateFrameBuffer(size_t size) {
  const size_t page = PageSize();
  void* ptr = std::aligned_alloc(page, (size + page - 1) / page * page);
  if (ptr != nullptr) {
    frame_buffer_ = ptr;
    frame_buffer_size_ = size;
    frame_buffer_resident_ = true;
  }
  return ptr;
}

void SessionMemory::Untrack(void* ptr) {
  if (ptr != nullptr && ptr == frame_buffer_) {
    frame_buffer_ = nullptr;
    frame_buffer_size_ = 0;
  }
}

void* SessionMemory::Malloc(size_t size, void* self) {
  auto* memory = static_cast<SessionMemory*>(self);
  if (memory->IsFrameBuffer(size)) return memory->AllocateFrameBuffer(size);
  return std::malloc(size);
}

void SessionMemory::Free(void* ptr, void* self) {
  static_cast<SessionMemory*>(self)->Untrack(ptr);
  std::free(ptr);
}

void* SessionMemory::Calloc(size_t count, size_t size, void* self) {
  auto* memory = static_cast<SessionMemory*>(self);
  if (size != 0 && count <= SIZE_MAX / size && memory->IsFrameBuffer(count * size)) {
    void* ptr = memory->AllocateFrameBuffer(count * size);
    if (ptr != nullptr) std::memset(ptr, 0, count * size);
    return ptr;
  }
  return std::calloc(count, size);
}

void* SessionMemory::Realloc(void* ptr, size_t size, void* self) {
  auto* memory = static_cast<SessionMemory*>(self);
  // nghttp2 1.52 allocates its buffers by realloc(NULL, size). A resized frame buffer is not
  // tracked any more (nghttp2 never resizes it).
  if (ptr == nullptr && memory->IsFrameBuffer(size)) return memory->AllocateFrameBuffer(size);
  memory->Untrack(ptr);
  return std::realloc(ptr, size);
}

bool SessionMemory::ReleaseFrameBufferPages() {
  if (frame_buffer_ == nullptr || !frame_buffer_resident_) return false;
  const uintptr_t page = PageSize();
  const auto begin = reinterpret_cast<uintptr_t>(frame_buffer_);
  const uintptr_t first = (begin + page - 1) & ~(page - 1);
  const uintptr_t last = (begin + frame_buffer_size_) & ~(page - 1);
  frame_buffer_resident_ = false;
  if (last <= first) return false;
  return madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED) == 0;
}

}  // namespace sepal
