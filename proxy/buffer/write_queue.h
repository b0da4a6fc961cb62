// Bytes on their way to one socket, as a gather list: frames nghttp2 serialized (copied into
// chunks the queue holds) and DATA payloads referenced where they already are, in the
// streams' chunk buffers (nghttp2's NGHTTP2_DATA_FLAG_NO_COPY). Every chunk a segment points
// into holds one more reference until Clear(), so a body can be freed or recycled while the
// write that carries its bytes is still in flight.
//
// A connection holds a queue only while it has something to write: queues come from and go
// back to the worker's WriteQueuePool, so an idle connection has none.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "proxy/buffer/chunk_buffer.h"

namespace sepal {

class WriteQueue {
 public:
  struct Segment {
    Chunk* chunk;
    const uint8_t* data;
    size_t size;
  };
  // Pieces a write aims for: Asio passes at most 64 iovecs to one sendmsg, and a DATA frame
  // takes up to three (header, and a payload across two chunks). A frame appended after the
  // queue is full still fits (the list grows); it just costs a second sendmsg.
  static constexpr size_t kMaxSegments = 60;

  explicit WriteQueue(ChunkPool* pool) : pool_(pool) { segments_.reserve(kMaxSegments + 8); }
  ~WriteQueue() { Clear(); }
  WriteQueue(const WriteQueue&) = delete;
  WriteQueue& operator=(const WriteQueue&) = delete;

  // Copies `data` into the queue's own chunks.
  void Append(const uint8_t* data, size_t size);
  // References `size` bytes at `data` inside `chunk` (which gains a reference).
  void AppendRef(Chunk* chunk, const uint8_t* data, size_t size);

  size_t bytes() const { return bytes_; }
  bool empty() const { return bytes_ == 0; }
  // No room for another DATA frame in this write.
  bool full(size_t max_bytes) const {
    return bytes_ >= max_bytes || segments_.size() + 3 > kMaxSegments;
  }
  std::span<const Segment> segments() const { return segments_; }
  // Copies everything into `out` (for TLS, which encrypts one buffer at a time).
  void CopyTo(std::vector<uint8_t>& out) const;
  // Drops the first `n` bytes (a partial write went out): segments wholly sent lose their
  // reference, a partly sent one is trimmed.
  void Consume(size_t n);
  // Drops every segment and reference.
  void Clear();

 private:
  void Push(Chunk* chunk, const uint8_t* data, size_t size);

  ChunkPool* pool_;
  Chunk* owned_ = nullptr;  // where Append() copies to (the queue's own reference)
  std::vector<Segment> segments_;
  size_t bytes_ = 0;
};

// Spare queues of one worker (no locking): a connection takes one when it starts a write and
// gives it back, empty, when it has nothing more to send.
class WriteQueuePool {
 public:
  explicit WriteQueuePool(ChunkPool* chunks, size_t max_spare = 64)
      : chunks_(chunks), max_spare_(max_spare) {}
  std::unique_ptr<WriteQueue> Get();
  void Put(std::unique_ptr<WriteQueue> queue);

 private:
  ChunkPool* chunks_;
  size_t max_spare_;
  std::vector<std::unique_ptr<WriteQueue>> spare_;
};

}  // namespace sepal
