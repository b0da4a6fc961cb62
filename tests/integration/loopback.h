// Plain TCP sockets to 127.0.0.1 for tests that speak raw bytes (HTTP/1.1, garbage).
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <sstream>
#include <string>

namespace sepal::test {

// A PROXY protocol v2 header announcing a TCP/IPv4 connection from `source` to
// `destination` (what `tailscale serve --proxy-protocol=2` sends).
inline std::string ProxyV2(const std::string& source, uint16_t source_port,
                           const std::string& destination = "127.0.0.1",
                           uint16_t destination_port = 9092) {
  std::string header("\r\n\r\n\0\r\nQUIT\n", 12);
  header += '\x21';  // version 2, PROXY
  header += '\x11';  // AF_INET, STREAM
  header += std::string("\x00\x0c", 2);
  in_addr src{}, dst{};
  inet_pton(AF_INET, source.c_str(), &src);
  inet_pton(AF_INET, destination.c_str(), &dst);
  header.append(reinterpret_cast<const char*>(&src), 4);
  header.append(reinterpret_cast<const char*>(&dst), 4);
  uint16_t sp = htons(source_port), dp = htons(destination_port);
  header.append(reinterpret_cast<const char*>(&sp), 2);
  header.append(reinterpret_cast<const char*>(&dp), 2);
  return header;
}

// A connected socket to 127.0.0.1:port with a 5 s receive timeout, or -1.
inline int ConnectLoopback(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval timeout{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// A socket listening on 127.0.0.1 at a free port (without SO_REUSEPORT) that never
// accepts: the kernel completes handshakes into its backlog. Returns the fd (or -1) and
// sets *port.
inline int ListenLoopback(uint16_t* port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || listen(fd, 16) != 0) {
    close(fd);
    return -1;
  }
  socklen_t length = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &length);
  *port = ntohs(addr.sin_port);
  return fd;
}

// Plain HTTP/1.1 GET on 127.0.0.1:port (the admin server); the whole response, status line
// included, or "" if nothing answered.
inline std::string HttpGet(uint16_t port, const std::string& path) {
  int fd = ConnectLoopback(port);
  if (fd < 0) return "";
  std::string request = "GET " + path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  if (write(fd, request.data(), request.size()) < 0) {
    close(fd);
    return "";
  }
  std::string response;
  char buf[8192];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) response.append(buf, static_cast<size_t>(n));
  close(fd);
  return response;
}

// Value of one exact series line ("name{labels}") in a Prometheus exposition; 0 if absent.
inline double SeriesValue(const std::string& exposition, const std::string& series) {
  std::istringstream in(exposition);
  std::string line;
  while (std::getline(in, line)) {
    if (line.size() > series.size() && line.compare(0, series.size(), series) == 0 &&
        line[series.size()] == ' ') {
      return std::stod(line.substr(series.size() + 1));
    }
  }
  return 0;
}

}  // namespace sepal::test
