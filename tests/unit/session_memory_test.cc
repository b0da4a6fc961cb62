// SessionMemory: which allocation of a real nghttp2 session is its frame buffer, that it is
// page-aligned, and that its pages go back to the kernel (and come back) as the connection
// goes idle and speaks again.
#include "proxy/http2/session_memory.h"

#include <gtest/gtest.h>
#include <nghttp2/nghttp2.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <memory>

namespace sepal {
namespace {

struct SessionDeleter {
  void operator()(nghttp2_session* session) const { nghttp2_session_del(session); }
};
using Session = std::unique_ptr<nghttp2_session, SessionDeleter>;

Session NewServerSession(SessionMemory& memory) {
  nghttp2_session_callbacks* callbacks = nullptr;
  nghttp2_session_callbacks_new(&callbacks);
  nghttp2_session* session = nullptr;
  memory.BeginSessionCreation();
  const int rv = nghttp2_session_server_new3(&session, callbacks, nullptr, nullptr, memory.mem());
  memory.EndSessionCreation();
  nghttp2_session_callbacks_del(callbacks);
  EXPECT_EQ(rv, 0);
  return Session(session);
}

// Sends what the session has queued (its SETTINGS) through nghttp2's frame buffer.
size_t SendQueued(nghttp2_session* session, SessionMemory& memory) {
  size_t total = 0;
  const uint8_t* data = nullptr;
  for (ssize_t n; (n = nghttp2_session_mem_send(session, &data)) > 0;) {
    total += static_cast<size_t>(n);
    memory.FrameBufferUsed();
  }
  return total;
}

TEST(SessionMemoryTest, FindsTheFrameBufferOfARealSession) {
  SessionMemory memory;
  Session session = NewServerSession(memory);
  EXPECT_TRUE(memory.tracking());
  nghttp2_settings_entry settings[] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 100}};
  ASSERT_EQ(nghttp2_submit_settings(session.get(), NGHTTP2_FLAG_NONE, settings, 1), 0);
  EXPECT_GT(SendQueued(session.get(), memory), 0u);
  EXPECT_TRUE(memory.ReleaseFrameBufferPages());
  EXPECT_FALSE(memory.ReleaseFrameBufferPages());  // nothing written since
  // The session works on: the next frames fault a page back in.
  ASSERT_EQ(nghttp2_submit_ping(session.get(), NGHTTP2_FLAG_NONE, nullptr), 0);
  EXPECT_EQ(SendQueued(session.get(), memory), 9u + 8u);
  EXPECT_TRUE(memory.ReleaseFrameBufferPages());
}

TEST(SessionMemoryTest, OnlyTheLargeAllocationDuringCreationIsTheFrameBuffer) {
  SessionMemory memory;
  nghttp2_mem* mem = memory.mem();
  void* before = mem->malloc(32 * 1024, mem->mem_user_data);  // not during creation
  EXPECT_FALSE(memory.tracking());
  memory.BeginSessionCreation();
  void* small = mem->malloc(1024, mem->mem_user_data);
  EXPECT_FALSE(memory.tracking());
  void* frames = mem->realloc(nullptr, 16394, mem->mem_user_data);  // as nghttp2 1.52 does
  void* second = mem->calloc(1, 20000, mem->mem_user_data);  // one frame buffer per session
  memory.EndSessionCreation();
  ASSERT_TRUE(memory.tracking());
  const auto page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(frames) % page, 0u);  // its first page is whole
  // Released pages read back as zeros: their contents were dead.
  std::memset(frames, 'x', 16394);
  memory.FrameBufferUsed();
  EXPECT_TRUE(memory.ReleaseFrameBufferPages());
  const auto* bytes = static_cast<const unsigned char*>(frames);
  EXPECT_EQ(bytes[0], 0);
  EXPECT_EQ(bytes[3 * page - 1], 0);
  EXPECT_EQ(bytes[16393], 'x');  // the last, partial page stays
  mem->free(frames, mem->mem_user_data);
  EXPECT_FALSE(memory.tracking());
  for (void* p : {before, small, second}) mem->free(p, mem->mem_user_data);
}

}  // namespace
}  // namespace sepal
