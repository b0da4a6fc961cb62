// What the worker sees of a client connection, whatever protocol it speaks: drains and
// reloads shut it down, the once-a-second tick checks its calls, the memory budget asks it
// for its largest buffers.
#pragma once

#include <cstddef>
#include <string_view>
#include <utility>
#include <vector>

namespace sepal {

class Listener;
class ProxyStream;

class ClientConnection {
 public:
  virtual Listener& listener() const = 0;
  // Graceful shutdown: new calls are refused (HTTP/2: GOAWAY; HTTP/1.1: Connection: close on
  // the next response); the connection closes once its calls are done. `final_goaway`: the
  // second, last step of a drain.
  virtual void BeginShutdown(bool final_goaway) = 0;
  virtual void ForceClose(std::string_view reason) = 0;
  // Once a second (from the worker).
  virtual void Tick() = 0;
  // Calls whose buffers hold at least `min_bytes`, for the memory budget's shedding.
  virtual void CollectLargeStreams(size_t /*min_bytes*/,
                                   std::vector<std::pair<size_t, ProxyStream*>>* /*out*/) {}

 protected:
  ~ClientConnection() = default;
};

}  // namespace sepal
