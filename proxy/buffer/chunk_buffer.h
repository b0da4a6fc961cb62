// Byte queue made of fixed-size chunks recycled through a per-worker pool: bodies of any
// size stream through a bounded, reused set of pages instead of fresh allocations.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

namespace sepal {

class WriteQueue;

// A chunk is exactly 16 KiB with its header, so the allocator serves it from its 16 KiB size
// class (a 16 KiB payload plus header used to take a 20 KiB slot: 5 pages for 4).
struct Chunk {
  static constexpr size_t kSize = 16 * 1024;
  static constexpr size_t kHeaderSize = 16;
  static constexpr size_t kCapacity = kSize - kHeaderSize;
  Chunk* next = nullptr;
  uint16_t begin = 0;  // first unread byte
  uint16_t end = 0;    // one past the last written byte
  // Holders: the ChunkBuffer (or WriteQueue) that took it from the pool, plus one for every
  // pending write that sends bytes straight out of it (WriteQueue). Back to the pool at 0.
  uint32_t refs = 0;
  uint8_t data[kCapacity];
};
static_assert(sizeof(Chunk) == Chunk::kSize);

// Free list of chunks owned by one worker thread (no locking). It keeps free chunks up to the
// worker's recent working set (the most chunks in use at once, decayed by Tick() every
// second), and never fewer than `min_free`: a steady transfer recycles its chunks here instead
// of through the allocator, whose purging would fault every page back in (a 5 MiB-call
// benchmark took ~30 page faults per MiB that way), while what a burst leaves behind goes back
// within seconds of its end (bench/memory.md). The minimum, 64 chunks (1 MiB), recycles one
// stream window's worth of pages without asking the allocator.
class ChunkPool {
 public:
  static constexpr size_t kDefaultMaxFree = 64;

  explicit ChunkPool(size_t min_free = kDefaultMaxFree) : min_free_(min_free) {}
  ~ChunkPool();
  ChunkPool(const ChunkPool&) = delete;
  ChunkPool& operator=(const ChunkPool&) = delete;

  // A chunk with one reference (the caller's).
  Chunk* Get();
  // Drops one reference; the last one recycles the chunk.
  void Put(Chunk* chunk);
  static void Ref(Chunk* chunk) { ++chunk->refs; }
  // Hands free chunks beyond `keep` back to the allocator (the memory budget's shedding) and
  // forgets the working set; returns how many.
  size_t Release(size_t keep = 0);
  // Once a second: the working set decays to a quarter (or what is in use now, if more) and
  // free chunks beyond it go back to the allocator. Returns how many.
  size_t Tick();
  size_t free_count() const { return free_count_; }
  // Chunks handed out and not yet put back: what this worker's buffers hold.
  size_t in_use() const { return in_use_; }
  size_t working_set() const { return working_set_; }

 private:
  size_t limit() const { return working_set_ > min_free_ ? working_set_ : min_free_; }
  void DeleteFree(size_t count);

  Chunk* free_ = nullptr;
  size_t free_count_ = 0;
  size_t in_use_ = 0;
  size_t working_set_ = 0;
  size_t min_free_;
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
  // Copies up to `max` unread bytes to `out` without reading them; returns how many.
  size_t Peek(uint8_t* out, size_t max) const;
  // Reads up to `max` bytes like Read(), but hands `out` references to them in place (the
  // chunks live until the write that carries them completes); returns how many.
  size_t Splice(size_t max, WriteQueue& out);
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
  // Advances the read cursor over up to `max` bytes, passing each contiguous piece to
  // `sink(chunk, data, n)`; then frees or retains what was read.
  template <typename Sink>
  size_t Take(size_t max, Sink&& sink);

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
