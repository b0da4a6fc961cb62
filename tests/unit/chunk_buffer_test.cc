// ChunkBuffer: byte order across chunks, retention and replay, pool recycling.
#include "proxy/buffer/chunk_buffer.h"
#include "proxy/buffer/write_queue.h"

#include <gtest/gtest.h>

#include <string>

namespace sepal {
namespace {

std::string ReadAll(ChunkBuffer& buffer, size_t step) {
  std::string out;
  std::string piece(step, '\0');
  while (!buffer.empty()) {
    size_t n = buffer.Read(reinterpret_cast<uint8_t*>(piece.data()), step);
    out.append(piece.data(), n);
  }
  return out;
}

std::string Pattern(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>(i * 7 + i / 251);
  return s;
}

TEST(ChunkBufferTest, PreservesBytesAcrossChunkBoundaries) {
  ChunkPool pool;
  ChunkBuffer buffer(&pool);
  std::string data = Pattern(3 * Chunk::kCapacity + 123);
  for (size_t at = 0; at < data.size(); at += 1000) {
    size_t n = std::min<size_t>(1000, data.size() - at);
    buffer.Append(reinterpret_cast<const uint8_t*>(data.data() + at), n);
  }
  EXPECT_EQ(buffer.size(), data.size());
  EXPECT_EQ(ReadAll(buffer, 4099), data);
  EXPECT_TRUE(buffer.empty());
}

TEST(ChunkBufferTest, PeekCopiesUnreadBytesAcrossChunksWithoutReadingThem) {
  ChunkPool pool;
  ChunkBuffer buffer(&pool);
  buffer.EnableRetention(1 << 20);
  std::string data = Pattern(2 * Chunk::kCapacity + 50);
  buffer.Append(reinterpret_cast<const uint8_t*>(data.data()), data.size());
  std::string skipped(Chunk::kCapacity - 10, '\0');
  buffer.Read(reinterpret_cast<uint8_t*>(skipped.data()), skipped.size());
  // From 10 bytes before the first boundary, over the second one, to the end.
  std::string peeked(Chunk::kCapacity + 100, '\0');
  size_t n = buffer.Peek(reinterpret_cast<uint8_t*>(peeked.data()), peeked.size());
  ASSERT_EQ(n, Chunk::kCapacity + 60);
  EXPECT_EQ(peeked.substr(0, n), data.substr(skipped.size()));
  EXPECT_EQ(buffer.size(), Chunk::kCapacity + 60);
  EXPECT_EQ(buffer.Peek(reinterpret_cast<uint8_t*>(peeked.data()), 3), 3u);
  EXPECT_EQ(peeked.substr(0, 3), data.substr(skipped.size(), 3));
  EXPECT_EQ(ReadAll(buffer, 777), data.substr(skipped.size()));
  EXPECT_EQ(buffer.Peek(reinterpret_cast<uint8_t*>(peeked.data()), 10), 0u);
}

TEST(ChunkBufferTest, DrainedChunksReturnToThePool) {
  ChunkPool pool;
  {
    ChunkBuffer buffer(&pool);
    std::string data = Pattern(5 * Chunk::kCapacity);
    buffer.Append(reinterpret_cast<const uint8_t*>(data.data()), data.size());
    EXPECT_EQ(pool.free_count(), 0u);
    ReadAll(buffer, 16384);
    EXPECT_EQ(pool.free_count(), 5u);
  }
  // A second buffer reuses them instead of allocating.
  ChunkBuffer again(&pool);
  std::string small = Pattern(100);
  again.Append(reinterpret_cast<const uint8_t*>(small.data()), small.size());
  EXPECT_EQ(pool.free_count(), 4u);
}

TEST(ChunkBufferTest, PoolKeepsTheWorkingSetUntilItDecays) {
  ChunkPool pool(2);
  ChunkBuffer buffer(&pool);
  std::string data = Pattern(8 * Chunk::kCapacity);
  buffer.Append(reinterpret_cast<const uint8_t*>(data.data()), data.size());
  EXPECT_EQ(pool.working_set(), 8u);
  buffer.Clear();
  // Recycled, not freed: the next body of that size needs no allocation.
  EXPECT_EQ(pool.free_count(), 8u);
  EXPECT_EQ(pool.Tick(), 6u);  // the working set decays to 2 (8 / 4), the minimum is 2
  EXPECT_EQ(pool.free_count(), 2u);
  EXPECT_EQ(pool.Tick(), 0u);  // never below the minimum
  EXPECT_EQ(pool.free_count(), 2u);
}

TEST(ChunkBufferTest, ChunksReferencedByAWriteOutliveTheirBuffer) {
  ChunkPool pool(0);
  WriteQueue out(&pool);
  {
    ChunkBuffer buffer(&pool);
    std::string data = Pattern(Chunk::kCapacity + 100);
    buffer.Append(reinterpret_cast<const uint8_t*>(data.data()), data.size());
    EXPECT_EQ(buffer.Splice(Chunk::kCapacity + 50, out), Chunk::kCapacity + 50);
    EXPECT_EQ(buffer.size(), 50u);
    // The first chunk was read out; the buffer let go of it, the write still holds it.
    EXPECT_EQ(pool.in_use(), 2u);
    buffer.Clear();
    EXPECT_EQ(pool.in_use(), 2u);
    // The bytes the write refers to are still the body's.
    std::string sent;
    for (const WriteQueue::Segment& s : out.segments()) {
      sent.append(reinterpret_cast<const char*>(s.data), s.size);
    }
    EXPECT_EQ(sent, data.substr(0, Chunk::kCapacity + 50));
  }
  out.Append(reinterpret_cast<const uint8_t*>("abc"), 3);  // a copied frame: one more chunk
  EXPECT_EQ(out.bytes(), Chunk::kCapacity + 53);
  EXPECT_EQ(pool.in_use(), 3u);
  out.Clear();
  EXPECT_EQ(pool.in_use(), 0u);
}

TEST(ChunkBufferTest, RewindReplaysRetainedBytes) {
  ChunkPool pool;
  ChunkBuffer buffer(&pool);
  buffer.EnableRetention(64 * 1024);
  std::string data = Pattern(40000);
  buffer.Append(reinterpret_cast<const uint8_t*>(data.data()), data.size());
  std::string first = ReadAll(buffer, 3000);
  EXPECT_EQ(first, data);
  buffer.Rewind();
  EXPECT_EQ(buffer.size(), data.size());
  EXPECT_EQ(ReadAll(buffer, 7000), data);
}

TEST(ChunkBufferTest, RewindAfterPartialReadAndLaterAppend) {
  ChunkPool pool;
  ChunkBuffer buffer(&pool);
  buffer.EnableRetention(1 << 20);
  std::string a = Pattern(20000);
  buffer.Append(reinterpret_cast<const uint8_t*>(a.data()), a.size());
  std::string part(5000, '\0');
  ASSERT_EQ(buffer.Read(reinterpret_cast<uint8_t*>(part.data()), 5000), 5000u);
  std::string b = Pattern(30000);
  buffer.Append(reinterpret_cast<const uint8_t*>(b.data()), b.size());
  buffer.Rewind();
  EXPECT_EQ(ReadAll(buffer, 1000), a + b);
}

TEST(ChunkBufferTest, RetentionSwitchesOffPastItsLimit) {
  ChunkPool pool;
  ChunkBuffer buffer(&pool);
  buffer.EnableRetention(10000);
  std::string data = Pattern(50000);
  buffer.Append(reinterpret_cast<const uint8_t*>(data.data()), data.size());
  std::string out(20000, '\0');
  buffer.Read(reinterpret_cast<uint8_t*>(out.data()), 20000);
  EXPECT_FALSE(buffer.retaining());
  EXPECT_EQ(buffer.size(), 30000u);
  EXPECT_EQ(ReadAll(buffer, 999), data.substr(20000));
}

TEST(WriteQueueTest, ConsumeDropsWhatAPartialWriteSent) {
  ChunkPool pool(0);
  ChunkBuffer body(&pool);
  std::string data = Pattern(3000);
  body.Append(reinterpret_cast<const uint8_t*>(data.data()), data.size());
  WriteQueue out(&pool);
  out.Append(reinterpret_cast<const uint8_t*>("header"), 6);  // a copied frame header
  body.Splice(3000, out);                                     // the payload, in place
  ASSERT_EQ(out.segments().size(), 2u);
  out.Consume(4);  // inside the first segment
  EXPECT_EQ(out.bytes(), 3002u);
  EXPECT_EQ(out.segments().size(), 2u);
  out.Consume(2 + 1000);  // the rest of the first, and into the second
  ASSERT_EQ(out.segments().size(), 1u);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(out.segments()[0].data),
                        out.segments()[0].size),
            data.substr(1000));
  out.Consume(5000);  // more than is left: everything
  EXPECT_TRUE(out.empty());
  EXPECT_TRUE(out.segments().empty());
  body.Clear();
  out.Clear();
  EXPECT_EQ(pool.in_use(), 0u);
}

}  // namespace
}  // namespace sepal
