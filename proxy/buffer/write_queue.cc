// WriteQueue and WriteQueuePool implementation.
#include "proxy/buffer/write_queue.h"

#include <algorithm>
#include <cstring>

namespace sepal {

void WriteQueue::Push(Chunk* chunk, const uint8_t* data, size_t size) {
  bytes_ += size;
  if (!segments_.empty()) {
    Segment& last = segments_.back();
    if (last.chunk == chunk && last.data + last.size == data) {
      last.size += size;  // contiguous with the previous piece: no new reference
      return;
    }
  }
  ChunkPool::Ref(chunk);
  segments_.push_back(Segment{chunk, data, size});
}

void WriteQueue::Append(const uint8_t* data, size_t size) {
  while (size > 0) {
    if (owned_ == nullptr || owned_->end == Chunk::kCapacity) {
      if (owned_ != nullptr) pool_->Put(owned_);  // its segments keep it alive
      owned_ = pool_->Get();
    }
    size_t n = std::min<size_t>(size, Chunk::kCapacity - owned_->end);
    uint8_t* at = owned_->data + owned_->end;
    std::memcpy(at, data, n);
    owned_->end = static_cast<uint16_t>(owned_->end + n);
    Push(owned_, at, n);
    data += n;
    size -= n;
  }
}

void WriteQueue::AppendRef(Chunk* chunk, const uint8_t* data, size_t size) {
  if (size > 0) Push(chunk, data, size);
}

void WriteQueue::CopyTo(std::vector<uint8_t>& out) const {
  out.clear();
  out.reserve(bytes_);
  for (const Segment& segment : segments_) {
    out.insert(out.end(), segment.data, segment.data + segment.size);
  }
}

void WriteQueue::Consume(size_t n) {
  n = std::min(n, bytes_);
  bytes_ -= n;
  size_t done = 0;
  while (n > 0 && done < segments_.size()) {
    Segment& segment = segments_[done];
    if (segment.size > n) {
      segment.data += n;
      segment.size -= n;
      break;
    }
    n -= segment.size;
    pool_->Put(segment.chunk);
    ++done;
  }
  segments_.erase(segments_.begin(), segments_.begin() + static_cast<std::ptrdiff_t>(done));
}

void WriteQueue::Clear() {
  for (const Segment& segment : segments_) pool_->Put(segment.chunk);
  segments_.clear();
  bytes_ = 0;
  if (owned_ != nullptr) {
    pool_->Put(owned_);
    owned_ = nullptr;
  }
}

std::unique_ptr<WriteQueue> WriteQueuePool::Get() {
  if (spare_.empty()) return std::make_unique<WriteQueue>(chunks_);
  std::unique_ptr<WriteQueue> queue = std::move(spare_.back());
  spare_.pop_back();
  return queue;
}

void WriteQueuePool::Put(std::unique_ptr<WriteQueue> queue) {
  queue->Clear();
  if (spare_.size() < max_spare_) spare_.push_back(std::move(queue));
}

}  // namespace sepal
