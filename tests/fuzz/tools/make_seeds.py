#!/usr/bin/env python3
"""Writes the hand-made seeds of the proxy_protocol, whois, localapi, grpc_adapter and rest
corpora.

Usage: tests/fuzz/tools/make_seeds.py [CORPUS_DIR]   (default: tests/fuzz/corpus)
The downstream corpus comes from make_h2_seeds (a C++ tool on nghttp2's client API), the
config corpus is hand-written YAML. Re-running this rewrites the same files.
"""
import ipaddress
import os
import struct
import sys

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
MODE_V1, MODE_V2, MODE_ANY = b"\x00", b"\x01", b"\x02"


def v2(command, family, addresses, tlvs=b""):
    payload = addresses + tlvs
    return V2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack("!H", len(payload)) + payload


def v2_inet(src, dst, sport, dport):
    packed = ipaddress.ip_address(src).packed + ipaddress.ip_address(dst).packed
    return packed + struct.pack("!HH", sport, dport)


def proxy_protocol():
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    tlv = bytes([0x01, 0x00, 0x02]) + b"h2" + bytes([0x04, 0x00, 0x00])  # ALPN, NOOP
    return {
        "v1-tcp4": MODE_V1 + b"PROXY TCP4 100.101.12.34 100.64.0.1 41000 9092\r\n" + preface,
        "v1-tcp6": MODE_ANY + b"PROXY TCP6 fd7a:115c:a1e0::1 fd7a:115c:a1e0::2 5 9092\r\n",
        "v1-unknown": MODE_V1 + b"PROXY UNKNOWN\r\n",
        "v1-unknown-long": MODE_ANY + b"PROXY UNKNOWN ffff::1 ffff::2 65535 65535\r\n",
        "v1-partial": MODE_V1 + b"PROXY TCP4 1.2.3.4 5.6",
        "v2-tcp4": MODE_V2 + v2(1, 0x11, v2_inet("100.101.12.34", "100.64.0.1", 41000, 9092)),
        "v2-tcp6-tlv": MODE_ANY + v2(1, 0x21, v2_inet("fd7a:115c:a1e0::1", "::1", 1, 2), tlv)
        + preface,
        "v2-local": MODE_V2 + v2(0, 0x00, b""),
        "v2-unix": MODE_V2 + v2(1, 0x31, b"/a".ljust(108, b"\0") + b"/b".ljust(108, b"\0")),
        "v2-udp4": MODE_ANY + v2(1, 0x12, v2_inet("1.2.3.4", "5.6.7.8", 1, 2)),
        "v2-truncated": MODE_V2 + v2(1, 0x11, v2_inet("1.2.3.4", "5.6.7.8", 1, 2))[:20],
    }


def whois():
    return {
        "null-capmap.json": b'{"Node":{"Name":"a.ts.net.","ComputedName":"a","Tags":null},'
        b'"UserProfile":{"LoginName":"alice@example.com"},"CapMap":null}',
        "methods-string.json": b'{"Node":{"Name":"n.t.ts.net.","Tags":["tag:supernode"]},'
        b'"UserProfile":{"LoginName":"tagged-devices"},"CapMap":{"example.com/cap/flower":'
        b'[{"methods":"/flwr.proto.Fleet/*"},{"methods":[1,"/x/Y"]},7,null],"b/cap":null}}',
        "bad-tags.json": b'{"Node":{"Tags":"tag:x"},"UserProfile":{}}',
        "big-ids.json": b'{"Node":{"ID":123456789012345678901234567890,"StableID":"n1"},'
        b'"UserProfile":{"ID":1e400,"LoginName":"\\u00e9"}}',
    }


def http(status_line, headers, body=b""):
    head = b"HTTP/1.1 " + status_line + b"\r\n" + b"".join(h + b"\r\n" for h in headers)
    return head + b"\r\n" + body


def chunked(*pieces):
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


def localapi():
    # Byte 0: bit 0 = watch-ipn-bus, bits 1-2 = body limit (0, 16, 1024, 1 MiB); byte 1: piece.
    get_1m, get_16, watch = b"\x06", b"\x02", b"\x01"
    json = b'{"Self":{"DNSName":"sepal.tail3c4d5e.ts.net."}}'
    plain = [b"Content-Type: text/plain; charset=utf-8", b"X-Content-Type-Options: nosniff"]
    return {
        "status-200": get_1m + b"\x07" + http(b"200 OK", [b"Content-Type: application/json",
                                                           b"Content-Length: %d" % len(json)], json),
        "status-chunked": get_1m + b"\x02" + http(b"200 OK", [b"Transfer-Encoding: chunked"],
                                                  chunked(json[:9], json[9:])),
        "whois-404": get_1m + b"\xff" + http(b"404 Not Found", plain + [b"Content-Length: 10"],
                                             b"not found\n"),
        "cert-429": get_1m + b"\x00" + http(b"429 Too Many Requests",
                                            [b"Retry-After: 120", b"Content-Length: 0"]),
        "too-large": get_16 + b"\x10" + http(b"200 OK", [b"Content-Length: 40"], b"x" * 40),
        "until-close": get_1m + b"\x03" + http(b"200 OK", [b"Connection: close"], b"body to eof"),
        "watch-lines": watch + b"\x05" + http(b"200 OK", [b"Content-Type: application/json",
                                                          b"Transfer-Encoding: chunked"],
                                              chunked(b'{"Version":"1.102.3"}\n{"NetMap":',
                                                      b'{}}\n\n{"State":6}\n')),
        "watch-403": watch + b"\xff" + http(b"403 Forbidden", plain + [b"Content-Length: 25"],
                                            b"invalid localapi request\n"),
    }


def field(number, value):
    """A length-delimited protobuf field (values under 16 KiB)."""
    n, length = len(value), b""
    while True:
        byte, n = n & 0x7F, n >> 7
        length += bytes([byte | 0x80 if n else byte])
        if not n:
            return bytes([number << 3 | 2]) + length + value


def grpc_frame(message, compressed=False):
    return bytes([1 if compressed else 0]) + struct.pack("!I", len(message)) + message


def grpc_adapter():
    ended, open_ = b"\x01", b"\x00"
    entry = lambda k, v: field(1, field(1, k) + field(2, v))
    metadata = (entry(b"flower-package-name", b"flwr") + entry(b"flower-version", b"1.23.0") +
                entry(b"grpc-message-module", b"flwr.proto.fleet_pb2") +
                entry(b"grpc-message-qualname", b"PullMessagesRequest"))
    name = field(2, b"PullMessagesRequest")
    content = field(3, b"\x0a\x02\x08\x07\x12\x05model")
    flower = grpc_frame(metadata + name + content)
    return {
        "flower-pull": ended + flower,
        "flower-pull-open": open_ + flower[:60],
        "name-only": ended + grpc_frame(field(2, b"GetRunRequest")),
        "content-first": ended + grpc_frame(content + name),
        "second-name": ended + grpc_frame(name + content + field(2, b"PushMessagesRequest")),
        "compressed": ended + grpc_frame(metadata + name + content, compressed=True),
        "big-metadata": open_ + grpc_frame(entry(b"padding", b"m" * 4200) + name + content),
        "two-messages": ended + flower + grpc_frame(field(2, b"PushMessagesRequest")),
        "unknown-fields": ended + grpc_frame(b"\x38\x96\x01\x45abcd" + name + content),
        "not-a-request": ended + grpc_frame(field(2, b"Hello") + content),
    }


# rest: byte 0 picks the listener and the write size (rest_fuzzer.cc); 0x14 = plain, all at once.
REST_PLAIN, REST_PROXY, REST_AFTER_PREFIX = b"\x14", b"\x15", b"\x16"
REST_HEADERS = (b"Host: superlink:9095\r\nUser-Agent: python-requests/2.28.1\r\n"
                b"Accept-Encoding: gzip, deflate\r\nAccept: application/protobuf\r\n"
                b"Connection: keep-alive\r\nContent-Type: application/protobuf\r\n")


def rest_post(method, body=b"", extra=b""):
    return (b"POST //api/v0/fleet/" + method + b" HTTP/1.1\r\n" + REST_HEADERS + extra
            + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def rest():
    node = field(1, b"\x08\x05")  # a small protobuf body
    return {
        "register-node": REST_PLAIN + rest_post(b"register-node", node),
        "keep-alive-sequence": REST_PLAIN + rest_post(b"pull-messages", node)
        + rest_post(b"push-messages", b"\x0a" * 300) + rest_post(b"send-node-heartbeat"),
        "denied": REST_PLAIN + rest_post(b"unregister-node", node),
        "open": REST_PLAIN + b"GET /open/thing?x=1 HTTP/1.1\r\nHost: a\r\n\r\n",
        "unrouted": REST_PLAIN + b"GET /other HTTP/1.1\r\nHost: a\r\n\r\n",
        "chunked-body": REST_PLAIN + b"POST /api/v0/fleet/push-object HTTP/1.1\r\nHost: a\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "chunked-answer": REST_PLAIN + rest_post(b"chunked", b"abc"),
        "smuggling": REST_PLAIN + b"POST /api/v0/fleet/pull-messages HTTP/1.1\r\nHost: a\r\n"
        b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "two-lengths": REST_PLAIN + b"POST /api/v0/fleet/get-run HTTP/1.1\r\nHost: a\r\n"
        b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        "expect-continue": REST_PLAIN + rest_post(b"push-object", b"x" * 100,
                                                  b"Expect: 100-continue\r\n"),
        "identity-forged": REST_PLAIN + rest_post(b"get-fab", b"", b"Tailscale-User-Login: root\r\n"
                                                  b"tailscale-node-tags: tag:admin\r\n"
                                                  b"Connection: keep-alive, tailscale-x\r\n"),
        "upstream-close": REST_PLAIN + rest_post(b"close", b"ab"),
        "upstream-hang": REST_PLAIN + rest_post(b"hang", b"ab"),
        "upstream-early": REST_PLAIN + rest_post(b"early", b"y" * 70000),
        "upstream-big": b"\x34" + rest_post(b"big"),  # the client reads only at the end
        "upstream-missing": REST_PLAIN + rest_post(b"missing"),
        "upstream-garbage": REST_PLAIN + rest_post(b"garbage"),
        "bytewise": b"\x00" + rest_post(b"pull-messages", node),
        "proxy-v1": REST_PROXY + b"PROXY TCP4 100.64.0.9 100.64.0.1 41000 9095\r\n"
        + rest_post(b"pull-messages", node),
        "proxy-outside-tailnet": REST_PROXY + b"PROXY TCP4 10.1.2.3 100.64.0.1 41000 9095\r\n"
        + rest_post(b"pull-messages", node) + b"GET /open/x HTTP/1.1\r\nHost: a\r\n\r\n",
        "after-prefix": REST_AFTER_PREFIX + b"pull-object HTTP/1.1\r\nHost: a\r\n"
        b"Content-Length: 3\r\n\r\nabc",
        "http10": REST_PLAIN + b"POST /api/v0/fleet/ping HTTP/1.0\r\nContent-Length: 0\r\n\r\n",
        "h2-preface": REST_PLAIN + b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        "long-line": REST_PLAIN + b"GET /api/v0/fleet/" + b"a" * 1100 + b" HTTP/1.1\r\n\r\n",
    }


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..",
                                                               "corpus")
    for target, seeds in (("proxy_protocol", proxy_protocol()), ("whois", whois()),
                          ("localapi", localapi()), ("grpc_adapter", grpc_adapter()),
                          ("rest", rest())):
        os.makedirs(os.path.join(root, target), exist_ok=True)
        for name, data in seeds.items():
            with open(os.path.join(root, target, name), "wb") as out:
                out.write(data)


if __name__ == "__main__":
    main()
