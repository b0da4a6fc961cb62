#!/usr/bin/env python3
"""Opens N HTTP/2 (h2c) connections to a proxy on this machine, makes one gRPC Echo call on
each, then holds them all open and idle (bench/run.sh: memory per idle connection).

  idle_connections.py --target 127.0.0.1:PORT --connections N [--hold SECONDS]
Prints "ready N" on stdout once every connection has had its call answered, then holds the
connections for --hold seconds (default 30). Connections come from
127.0.0.2, .3, ... (2000 each) so the source ports do not run out. Standard library only;
loopback targets only.
"""
import argparse
import ipaddress
import socket
import struct
import sys
import time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
PER_SOURCE = 2000


def frame(kind, flags, stream_id, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(
        ">I", stream_id) + payload


def literal(name_index, value):
    # Literal header field without indexing, indexed name (4-bit prefix), no Huffman.
    value = value.encode()
    head = bytes([name_index]) if name_index < 15 else bytes([0x0F, name_index - 15])
    return head + bytes([len(value)]) + value


def one_call(sock, authority):
    block = (b"\x83\x86" + literal(4, "/sepal.test.Echo/Unary") + literal(1, authority) +
             literal(31, "application/grpc") + b"\x00\x02te\x08trailers")
    message = b"\x00" + struct.pack(">I", 102) + b"\x0a\x64" + b"x" * 100
    sock.sendall(PREFACE + frame(0x4, 0, 0) + frame(0x1, 0x4, 1, block) +
                 frame(0x0, 0x1, 1, message))
    pending = b""
    while True:
        data = sock.recv(65536)
        if not data:
            raise OSError("the proxy closed the connection")
        pending += data
        while len(pending) >= 9:
            length = int.from_bytes(pending[:3], "big")
            if len(pending) < 9 + length:
                break
            kind, flags = pending[3], pending[4]
            pending = pending[9 + length:]
            if kind == 0x4 and not flags & 0x1:
                sock.sendall(frame(0x4, 0x1, 0))  # SETTINGS ack
            if kind == 0x1 and flags & 0x1:
                return  # trailers (END_STREAM): the call is over


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True)
    parser.add_argument("--connections", type=int, required=True)
    parser.add_argument("--hold", type=float, default=30)
    args = parser.parse_args()
    host, port = args.target.rsplit(":", 1)
    if not ipaddress.ip_address(host).is_loopback:
        sys.exit("idle_connections.py: loopback targets only")
    sockets = []
    for i in range(args.connections):
        sock = socket.socket()
        sock.settimeout(10)
        sock.bind((f"127.0.0.{2 + i // PER_SOURCE}", 0))
        sock.connect((host, int(port)))
        one_call(sock, args.target)
        sockets.append(sock)
    print("ready", len(sockets), flush=True)
    time.sleep(args.hold)  # bench/run.sh reads the proxy's memory meanwhile, then stops us


if __name__ == "__main__":
    main()
