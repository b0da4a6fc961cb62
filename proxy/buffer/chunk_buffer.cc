// ChunkPool and ChunkBuffer implementation.
#include "proxy/buffer/chunk_buffer.h"

#include "proxy/buffer/write_queue.h"

#include <algorithm>
#include <cstring>
#include <new>

namespace sepal {

ChunkPool::~ChunkPool() {
  while (free_ != nullptr) {
    Chunk* next = free_->next;
    delete free_;
    free_ = next;
  }
}

Chunk* ChunkPool::Get() {
  ++in_use_;
  if (in_use_ > working_set_) working_set_ = in_use_;
  Chunk* chunk = free_;
  if (chunk == nullptr) {
    chunk = new Chunk;
  } else {
    free_ = chunk->next;
    --free_count_;
    chunk->next = nullptr;
    chunk->begin = chunk->end = 0;
  }
  chunk->refs = 1;
  return chunk;
}

void ChunkPool::Put(Chunk* chunk) {
  if (--chunk->refs > 0) return;  // a pending write still sends from it
  --in_use_;
  // Free and in-use chunks together stay within the working set.
  if (free_count_ + in_use_ >= limit()) {
    delete chunk;
    return;
  }
  chunk->next = free_;
  free_ = chunk;
  ++free_count_;
}

void ChunkPool::DeleteFree(size_t count) {
  for (size_t i = 0; i < count; ++i) {
    Chunk* next = free_->next;
    delete free_;
    free_ = next;
    --free_count_;
  }
}

size_t ChunkPool::Release(size_t keep) {
  working_set_ = in_use_;
  size_t released = free_count_ > keep ? free_count_ - keep : 0;
  DeleteFree(released);
  return released;
}

size_t ChunkPool::Tick() {
  working_set_ = std::max(in_use_, working_set_ / 4);
  size_t total = free_count_ + in_use_;
  size_t excess = total > limit() ? std::min(free_count_, total - limit()) : 0;
  DeleteFree(excess);
  return excess;
}

void ChunkBuffer::Append(const uint8_t* data, size_t length) {
  while (length > 0) {
    if (tail_ == nullptr || tail_->end == Chunk::kCapacity) {
      Chunk* chunk = pool_->Get();
      if (tail_ == nullptr) {
        head_ = tail_ = chunk;
      } else {
        tail_->next = chunk;
        tail_ = chunk;
      }
      if (read_chunk_ == nullptr) {
        read_chunk_ = chunk;
        read_offset_ = 0;
      }
    }
    size_t n = std::min<size_t>(length, Chunk::kCapacity - tail_->end);
    std::memcpy(tail_->data + tail_->end, data, n);
    tail_->end = static_cast<uint16_t>(tail_->end + n);
    data += n;
    length -= n;
    unread_ += n;
  }
}

template <typename Sink>
size_t ChunkBuffer::Take(size_t max, Sink&& sink) {
  size_t taken = 0;
  while (taken < max && unread_ > 0) {
    size_t available = read_chunk_->end - read_offset_;
    if (available == 0) {
      read_chunk_ = read_chunk_->next;
      read_offset_ = read_chunk_->begin;
      continue;
    }
    size_t n = std::min(available, max - taken);
    sink(read_chunk_, read_chunk_->data + read_offset_, n);
    read_offset_ += static_cast<uint32_t>(n);
    taken += n;
    unread_ -= n;
  }
  if (retain_) {
    retained_ += taken;
    if (retained_ > retain_limit_) DisableRetention();
  } else {
    FreeReadChunks();
  }
  return taken;
}

size_t ChunkBuffer::Read(uint8_t* out, size_t max) {
  return Take(max, [&out](Chunk*, const uint8_t* data, size_t n) {
    std::memcpy(out, data, n);
    out += n;
  });
}

size_t ChunkBuffer::Peek(uint8_t* out, size_t max) const {
  size_t copied = 0;
  const Chunk* chunk = read_chunk_;
  size_t offset = read_offset_;
  while (copied < max && copied < unread_ && chunk != nullptr) {
    size_t n = std::min<size_t>(chunk->end - offset, max - copied);
    std::memcpy(out + copied, chunk->data + offset, n);
    copied += n;
    chunk = chunk->next;
    if (chunk != nullptr) offset = chunk->begin;
  }
  return copied;
}

size_t ChunkBuffer::Splice(size_t max, WriteQueue& out) {
  return Take(max, [&out](Chunk* chunk, const uint8_t* data, size_t n) {
    out.AppendRef(chunk, data, n);
  });
}

void ChunkBuffer::FreeReadChunks() {
  // Frees chunks wholly before the read cursor; keeps the cursor's chunk unless drained.
  while (head_ != nullptr && head_ != read_chunk_) {
    Chunk* next = head_->next;
    pool_->Put(head_);
    head_ = next;
  }
  if (head_ == nullptr) {
    tail_ = read_chunk_ = nullptr;
    return;
  }
  head_->begin = static_cast<uint16_t>(read_offset_);
  if (unread_ == 0 && head_ == tail_ && head_->begin == head_->end) {
    // Fully drained: recycle so an idle stream holds no memory.
    pool_->Put(head_);
    head_ = tail_ = read_chunk_ = nullptr;
    read_offset_ = 0;
  }
}

void ChunkBuffer::DisableRetention() {
  retain_ = false;
  retained_ = 0;
  FreeReadChunks();
}

void ChunkBuffer::Rewind() {
  if (!retain_ || head_ == nullptr) return;
  read_chunk_ = head_;
  read_offset_ = head_->begin;
  unread_ += retained_;
  retained_ = 0;
}

void ChunkBuffer::Clear() {
  while (head_ != nullptr) {
    Chunk* next = head_->next;
    pool_->Put(head_);
    head_ = next;
  }
  tail_ = read_chunk_ = nullptr;
  read_offset_ = 0;
  unread_ = retained_ = 0;
}

}  // namespace sepal
