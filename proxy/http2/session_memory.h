// The allocator of one nghttp2 session (nghttp2_mem): the heap, plus a way to give back the
// pages of the session's frame buffer while the connection is idle.
//
// nghttp2 allocates a 16 KiB frame buffer when a session is created and keeps it for the
// session's life; every frame it serializes is written there first (sepal copies it out at
// once), so the first frames leave a page of it resident on every connection, ~4 KiB of an
// idle connection's ~16 KiB. Between frames its contents are dead: when the session has
// nothing queued and no write is in flight, MADV_DONTNEED returns those pages to the kernel
// (reading them again gives zeros, and the next frame simply faults a page back in).
//
// Which allocation is the frame buffer: the one of 16 KiB or more made while the session is
// being created (the only one nghttp2 1.52 makes, by realloc(NULL, 16394)); it stops being tracked when nghttp2 frees
// or resizes it. It is allocated page-aligned, so that the first page, where nghttp2 writes
// every small frame, is whole and can be given back too.
#pragma once

#include <nghttp2/nghttp2.h>

#include <cstddef>

namespace sepal {

class SessionMemory {
 public:
  SessionMemory();
  SessionMemory(const SessionMemory&) = delete;
  SessionMemory& operator=(const SessionMemory&) = delete;

  // For nghttp2_session_*_new3; valid as long as this object.
  nghttp2_mem* mem() { return &mem_; }
  // Around the nghttp2_session_*_new3 call.
  void BeginSessionCreation() { creating_ = true; }
  void EndSessionCreation() { creating_ = false; }
  // The session serialized a frame: its buffer has resident pages again.
  void FrameBufferUsed() { frame_buffer_resident_ = true; }
  // Gives the frame buffer's whole pages back to the kernel. Only when the session has
  // nothing queued (nghttp2_session_want_write() is false) and no write is in flight.
  // Returns whether it did anything.
  bool ReleaseFrameBufferPages();
  bool tracking() const { return frame_buffer_ != nullptr; }
  // Pages of the frame buffer may be resident (a frame was serialized since the last release).
  bool frame_buffer_resident() const { return frame_buffer_ != nullptr && frame_buffer_resident_; }

 private:
  static void* Malloc(size_t size, void* self);
  static void Free(void* ptr, void* self);
  static void* Calloc(size_t count, size_t size, void* self);
  static void* Realloc(void* ptr, size_t size, void* self);
  bool IsFrameBuffer(size_t size) const;
  void* AllocateFrameBuffer(size_t size);
  void Untrack(void* ptr);

  nghttp2_mem mem_;
  bool creating_ = false;
  bool frame_buffer_resident_ = true;
  void* frame_buffer_ = nullptr;
  size_t frame_buffer_size_ = 0;
};

}  // namespace sepal
