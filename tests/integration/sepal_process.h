// Runs the real sepal binary as a child process (for memory measurements and signal
// handling), with a generated config file and a free loopback port.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "tests/integration/loopback.h"

namespace sepal::test {

inline uint16_t FreeLoopbackPort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

inline bool CanConnect(uint16_t port) {
  int fd = ConnectLoopback(port);
  if (fd >= 0) close(fd);
  return fd >= 0;
}

class SepalProcess {
 public:
  // `yaml` may contain "{PORT}" and "{ADMIN_PORT}", replaced by free loopback ports, and
  // "{DIR}", the process's temporary directory.
  bool Start(std::string yaml) {
    port_ = FreeLoopbackPort();
    admin_port_ = FreeLoopbackPort();
    char dir_template[] = "/tmp/sepal-test-XXXXXX";
    dir_ = mkdtemp(dir_template);
    config_path_ = dir_ + "/sepal.yaml";
    WriteConfig(std::move(yaml));
    pid_ = fork();
    if (pid_ == 0) {
      execl(SEPAL_BINARY, SEPAL_BINARY, "--config", config_path_.c_str(), "--log-level", "warn",
            static_cast<char*>(nullptr));
      _exit(127);
    }
    for (int i = 0; i < 200; ++i) {
      if (CanConnect(port_)) return true;
      int status;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    return false;
  }

  // Sends `sig`, waits up to `timeout`; returns the exit code (or -1 / 128+signal).
  int Stop(int sig = SIGTERM, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    if (pid_ <= 0) return -1;
    kill(pid_, sig);
    auto deadline = std::chrono::steady_clock::now() + timeout;
    int status = 0;
    while (waitpid(pid_, &status, WNOHANG) != pid_) {
      if (std::chrono::steady_clock::now() > deadline) {
        kill(pid_, SIGKILL);
        waitpid(pid_, &status, 0);
        pid_ = -1;
        return -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

  ~SepalProcess() {
    if (pid_ > 0) Stop(SIGKILL);
    if (!dir_.empty()) std::system(("rm -rf '" + dir_ + "'").c_str());
  }

  // (Re)writes the config file, with the placeholders of Start(); SIGHUP makes sepal read it.
  void WriteConfig(std::string yaml) {
    auto replace_all = [&yaml](const std::string& key, const std::string& value) {
      for (size_t at; (at = yaml.find(key)) != std::string::npos;) {
        yaml.replace(at, key.size(), value);
      }
    };
    replace_all("{PORT}", std::to_string(port_));
    replace_all("{ADMIN_PORT}", std::to_string(admin_port_));
    replace_all("{DIR}", dir_);
    std::string temporary = config_path_ + ".new";
    std::ofstream(temporary) << yaml;
    std::rename(temporary.c_str(), config_path_.c_str());  // never a half-written file
  }
  bool Signal(int sig) const { return pid_ > 0 && kill(pid_, sig) == 0; }
  uint16_t admin_port() const { return admin_port_; }
  const std::string& dir() const { return dir_; }

  // Peak resident set size (VmHWM) in KiB.
  long PeakRssKib() const { return StatusField("VmHWM:"); }
  long RssKib() const { return StatusField("VmRSS:"); }

  uint16_t port() const { return port_; }
  pid_t pid() const { return pid_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  long StatusField(const std::string& name) const {
    std::ifstream in("/proc/" + std::to_string(pid_) + "/status");
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind(name, 0) == 0) return std::strtol(line.c_str() + name.size(), nullptr, 10);
    }
    return -1;
  }

  pid_t pid_ = -1;
  uint16_t port_ = 0;
  uint16_t admin_port_ = 0;
  std::string dir_;
  std::string config_path_;
};

}  // namespace sepal::test
