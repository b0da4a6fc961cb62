// Lets an asynchronous completion handler find out whether the object that started the
// operation still exists.
//
// Asio runs a handler whose operation had already completed (a timer that fired, an accept
// that was aborted by close()) even if the object that owned the timer or socket was
// destroyed in between: destruction only cancels operations still pending. A handler that
// captured `this` must therefore check a token before it touches the object:
//
//   timer_.async_wait([this, alive = liveness_.Watch()](error_code ec) {
//     if (alive.expired() || ec) return;
//     ...
//   });
#pragma once

#include <memory>

namespace sepal {

class Liveness {
 public:
  Liveness() = default;
  Liveness(const Liveness&) = delete;
  Liveness& operator=(const Liveness&) = delete;

  // A token that expires when this Liveness is destroyed. The first call allocates.
  std::weak_ptr<const void> Watch() {
    if (!flag_) flag_ = std::make_shared<char>(0);
    return flag_;
  }

 private:
  std::shared_ptr<const void> flag_;
};

}  // namespace sepal
