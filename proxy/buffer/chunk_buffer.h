// Byte queue made of fixed-size chunks recycled through a per-worker pool: bodies of any
// size stream through a bounded, reused set of pages instead of fresh allocations.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

namespace sepal {

struct Chunk {
  static constexpr size_t kCapacity = 16 * 1024;  // one maximal HTTP/2 DATA frame payload
  Chunk* next = nullptr;
  uint32_t begin = 0;  // first unread byte
  uint32_t end = 0;    // one past the last written byte
  uint8_t data[kCapacity];
};

// Free list of chunks owned by one worker thread (no locking). Keeps at most `max_free`
// chunks; the rest go back to the allocator. The default keeps 1 MiB a worker: enough to
// recycle one stream window's worth of pages without asking the allocator, little enough that
// what a burst leaves behind is not pinned here (512 chunks, 8 MiB a worker, used to stay
// resident after every large-message burst; bench/memory.md).
class ChunkPool {
 public:
  static constexpr size_t kDefaultMaxFree = 64;

  explicit ChunkPool(size_t max_free = kDefaultMaxFree) : max_free_(max_free) {}
  ~ChunkPool();
  ChunkPool(const ChunkPool&) = delete;
  ChunkPool& operator=(const ChunkPool&) = delete;

  Chunk* Get();
  void Put(Chunk* chunk);
  // Hands free chunks beyond `keep` back to the allocator (the memory budget's shedding, or an
  // idle worker); returns how many.
  size_t Release(size_t keep = 0);
  size_t free_count() const { return free_count_; }
  // Chunks handed out and not yet put back: what this worker's buffers hold.
  size_t in_use() const { return in_use_; }

 private:
  Chunk* free_ = nullptr;
  size_t free_count_ = 0;
  size_t in_use_ = 0;
  size_t max_free_;
};

// FIFO of bytes. Optionally *retains* bytes already read (up to a limit) so that a request
// refused by an upstream (GOAWAY / REFUSED_STREAM) can be replayed on another connection.
class ChunkBuffer {
 public:
  explicit ChunkBuffer(ChunkPool* pool) : pool_(pool) {}
  ~ChunkBuffer() { Clear(); }
  ChunkBuffer(const ChunkBuffer&) = delete;
  ChunkBuffer& operator=(const ChunkBuffer&) = delete;

  void Append(const uint8_t* data, size_t length);
  // Copies up to `max` unread bytes to `out` and returns how many.
  size_t Read(uint8_t* out, size_t max);
  // Unread bytes.
  size_t size() const { return unread_; }
  bool empty() const { return unread_ == 0; }
  // Drops everything (unread and retained).
  void Clear();

  // Retention: while enabled, Read() keeps bytes so Rewind() can replay them. Retention
  // switches itself off (freeing retained bytes) once more than `limit` bytes were read.
  void EnableRetention(size_t limit) {
    retain_ = true;
    retain_limit_ = limit;
  }
  void DisableRetention();
  bool retaining() const { return retain_; }
  // Makes retained bytes unread again. Only valid while retaining.
  void Rewind();

 private:
  void FreeReadChunks();

  ChunkPool* pool_;
  Chunk* head_ = nullptr;  // oldest chunk (may hold retained bytes)
  Chunk* tail_ = nullptr;
  Chunk* read_chunk_ = nullptr;  // read cursor
  uint32_t read_offset_ = 0;
  size_t unread_ = 0;
  size_t retained_ = 0;
  size_t retain_limit_ = 0;
  bool retain_ = false;
};

}  // namespace sepal
