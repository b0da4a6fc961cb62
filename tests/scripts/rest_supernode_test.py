#!/usr/bin/env python3
"""Flower's Fleet REST transport through sepal, with the real `requests` library.

This is what `flower-supernode --rest` does on the wire: one `requests.Session` (keep-alive),
POSTs to f"{base_url}/{api_path}" with api_path starting with "/", so the request target is
"//api/v0/fleet/<kebab-method>"; headers Content-Type and Accept application/protobuf; no
timeout; any answer that is not 200 with Content-Type application/protobuf is a failure.

sepal runs with a `protocol: http1` listener ("rest") on 127.0.0.1, the static identity
provider (127.0.0.2/32 = hospital-a, tag:supernode; 127.0.0.3/32 = intruder, tag:other), one
route `/api/v0/fleet/` allowed to tag:supernode and a `protocol: http1` upstream, the stand-in
REST SuperLink (sepal-fake-rest-superlink). Each node's Session binds its connections to its
loopback address (an HTTPAdapter passing source_address to urllib3's pool).

Checks:
  * 127.0.0.2 runs Flower's call sequence (register-node, activate-node, pull-messages x3,
    push-messages, send-node-heartbeat, get-run, get-fab, pull-object answered with a 20 MB
    payload (x-reply-bytes), push-object with a 20 MB body, deactivate-node, unregister-node):
    every answer 200, application/protobuf, the bodies intact, all on ONE TCP connection to
    sepal (sepal_downstream_connections_total{listener="rest"} and urllib3's pool agree);
  * 127.0.0.3 gets 403 on register-node with a text body starting "sepal:";
  * /metrics: sepal_grpc_requests_total{listener="rest",grpc_service="rest",
    grpc_method="pull-messages",grpc_code="OK"} is 3.

Usage: rest_supernode_test.py SEPAL FAKE_REST_SUPERLINK
   (or the environment variables SEPAL_BINARY and SEPAL_FAKE_REST_SUPERLINK)
Exit 77 (skipped) when the `requests` module cannot be imported (Debian: python3-requests).
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

try:
    import requests
    from requests.adapters import HTTPAdapter
except ImportError as error:  # pragma: no cover - depends on the machine
    print(f"SKIP: python 'requests' is not importable ({error}); "
          "scripts/install-deps.sh installs python3-requests")
    sys.exit(77)

SUPERNODE, OTHER = "127.0.0.2", "127.0.0.3"
LISTENER = "rest"
PROTOBUF = "application/protobuf"
BIG = 20_000_000
WATCHDOG_SECONDS = 100  # below the CTest TIMEOUT, so a hang still says where it was

PROCESSES = []  # (name, Popen): stopped by PID in main's finally block (and by the watchdog)
STEP = ["starting"]


# --- protobuf wire format, by hand (tests/proto/fleet.proto: FleetRequest{Node node = 1;
# bytes payload = 2; string run_id = 3}, FleetResponse{Node node = 1; bytes payload = 2;
# repeated string seen_metadata = 3}, Node{uint64 node_id = 1}) ---

def varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def length_delimited(field, data):
    return varint(field << 3 | 2) + varint(len(data)) + data


def fleet_request(node_id, payload=b"", run_id=""):
    node = varint(1 << 3 | 0) + varint(node_id)
    body = length_delimited(1, node)
    if payload:
        body += length_delimited(2, payload)
    if run_id:
        body += length_delimited(3, run_id.encode())
    return body


def parse_fields(data):
    """{field number: [values]} of a message: ints for varints, memoryviews otherwise."""
    fields, pos, view = {}, 0, memoryview(data)

    def read_varint():
        nonlocal pos
        shift = value = 0
        while True:
            if pos >= len(view):
                raise ValueError("truncated varint")
            byte = view[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    while pos < len(view):
        key = read_varint()
        field, wire = key >> 3, key & 7
        if wire == 0:
            value = read_varint()
        elif wire == 2:
            size = read_varint()
            if pos + size > len(view):
                raise ValueError(f"field {field}: {size} bytes announced, {len(view) - pos} left")
            value = view[pos:pos + size]
            pos += size
        else:
            raise ValueError(f"field {field}: unexpected wire type {wire}")
        fields.setdefault(field, []).append(value)
    return fields


def fleet_response(data):
    """(node_id or None, payload bytes as memoryview, seen_metadata list) of a FleetResponse."""
    fields = parse_fields(data)
    node_id = None
    if 1 in fields:
        node_id = parse_fields(fields[1][-1]).get(1, [0])[-1]
    payload = fields.get(2, [memoryview(b"")])[-1]
    seen = [bytes(v).decode("utf-8", "replace") for v in fields.get(3, [])]
    return node_id, payload, seen


def generated_payload(size):
    """tests/support/payload.h's pattern: byte i is 'a' + i % 26."""
    alphabet = b"abcdefghijklmnopqrstuvwxyz"
    return (alphabet * (size // 26 + 1))[:size]


# --- processes, ports, metrics ---

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(work, name, argv):
    log = os.path.join(work, name + ".log")
    process = subprocess.Popen(argv, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    PROCESSES.append((name, process))
    return process, log


def stop_all():
    for name, process in reversed(PROCESSES):
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
    for name, process in reversed(PROCESSES):
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()


def read_log(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def wait_for(what, predicate, process, log, seconds=15):
    deadline = time.monotonic() + seconds
    while True:
        value = predicate()
        if value:
            return value
        if process.poll() is not None:
            raise SystemExit(f"FAIL: {what}: the process exited ({process.returncode}):\n"
                             f"{read_log(log)}")
        if time.monotonic() > deadline:
            raise SystemExit(f"FAIL: {what}: not within {seconds} s:\n{read_log(log)}")
        time.sleep(0.05)


def admin_get(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return response.status, response.read().decode()


SERIES = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def metric(port, name, **labels):
    """The value of the one series of `name` whose labels include `labels` (0 if none)."""
    text = admin_get(port, "/metrics")[1]
    found = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = SERIES.match(line)
        if not match or match.group(1) != name:
            continue
        have = dict(LABEL.findall(match.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            found.append(float(match.group(3)))
    if len(found) > 1:
        raise SystemExit(f"FAIL: {name}{labels}: {len(found)} series match")
    return found[0] if found else 0.0


# --- the SuperNode's HTTP client ---

class SourceAddressAdapter(HTTPAdapter):
    """Binds every connection of the pool to (ip, 0): the node's own loopback address."""

    def __init__(self, ip, **kwargs):
        self.source_address = (ip, 0)
        super().__init__(**kwargs)

    def init_poolmanager(self, connections, maxsize, block=False, **pool_kwargs):
        pool_kwargs["source_address"] = self.source_address
        super().init_poolmanager(connections, maxsize, block=block, **pool_kwargs)


def node_session(ip):
    session = requests.Session()
    # The test must reach loopback directly, whatever http_proxy the environment sets.
    session.trust_env = False
    adapter = SourceAddressAdapter(ip)
    session.mount("http://", adapter)
    return session, adapter


def pool_connections(adapter):
    """Connections urllib3 opened, over all pools of the adapter."""
    return sum(pool.num_connections for pool in adapter.poolmanager.pools._container.values())


def main():
    args = sys.argv[1:]
    if not args:
        args = [os.environ.get("SEPAL_BINARY", ""), os.environ.get("SEPAL_FAKE_REST_SUPERLINK", "")]
    if len(args) != 2 or not all(args):
        raise SystemExit(__doc__)
    sepal, fake = args
    for path in args:
        if not os.access(path, os.X_OK):
            raise SystemExit(f"FAIL: {path} is not an executable")

    failures = []

    def check(condition, what):
        print(("ok   " if condition else "FAIL ") + what, flush=True)
        if not condition:
            failures.append(what)

    def watchdog():
        print(f"FAIL: no result within {WATCHDOG_SECONDS} s, during: {STEP[0]}", flush=True)
        for name, process in PROCESSES:
            print(f"--- {name} log:\n{read_log(os.path.join(work, name + '.log'))}", flush=True)
        stop_all()
        os._exit(1)

    work = tempfile.mkdtemp(prefix="sepal-rest-supernode-")
    timer = threading.Timer(WATCHDOG_SECONDS, watchdog)
    timer.daemon = True
    timer.start()
    try:
        # The stand-in SuperLink on an ephemeral port; it prints "listening on 127.0.0.1:PORT".
        STEP[0] = "starting sepal-fake-rest-superlink"
        superlink, superlink_log = start(work, "superlink", [fake, "--listen", "127.0.0.1:0"])
        address = wait_for(
            "sepal-fake-rest-superlink listening",
            lambda: (re.search(r"listening on (127\.0\.0\.1:\d+)", read_log(superlink_log)) or
                     [None, None])[1],
            superlink, superlink_log)

        rest_port, admin_port = free_port(), free_port()
        config = f"""workers: 1
admin: {{address: 127.0.0.1:{admin_port}}}
identity:
  provider: static
  static:
    - match: {SUPERNODE}/32
      node: hospital-a
      user: tagged-devices
      tags: [tag:supernode]
    - match: {OTHER}/32
      node: intruder
      user: tagged-devices
      tags: [tag:other]
listeners:
  - name: {LISTENER}
    address: 127.0.0.1:{rest_port}
    protocol: http1
    routes:
      - match: /api/v0/fleet/
        upstream: superlink-rest
        allow: {{tags: [tag:supernode]}}
upstreams:
  - name: superlink-rest
    address: {address}
    protocol: http1
"""
        config_path = os.path.join(work, "sepal.yaml")
        with open(config_path, "w") as f:
            f.write(config)

        # Readiness through the admin server's /ready, so that no probe connection is made to
        # the REST listener (its connection counter is what the test checks).
        STEP[0] = "starting sepal"
        process, sepal_log = start(work, "sepal", [sepal, "--config", config_path])

        def ready():
            try:
                return admin_get(admin_port, "/ready")[0] == 200
            except OSError:
                return False

        wait_for("sepal /ready", ready, process, sepal_log)
        connections_before = metric(admin_port, "sepal_downstream_connections_total",
                                    listener=LISTENER)

        base_url = f"http://127.0.0.1:{rest_port}"
        headers = {"Content-Type": PROTOBUF, "Accept": PROTOBUF}

        def post(session, method, body, extra_headers=None):
            api_path = f"/api/v0/fleet/{method}"
            STEP[0] = f"POST {api_path}"
            # Exactly Flower's rest client: f"{base_url}/{api_path}", no timeout.
            return session.post(f"{base_url}/{api_path}", data=body,
                                headers={**headers, **(extra_headers or {})}, timeout=None)

        def protobuf_ok(method, response):
            ok = (response.status_code == 200 and
                  response.headers.get("Content-Type") == PROTOBUF)
            check(ok, f"supernode: {response.request.method} {response.request.path_url} -> "
                      f"{response.status_code} {response.headers.get('Content-Type')}"
                      + ("" if ok else f": {response.content[:300]!r}"))
            if not ok:
                return None
            try:
                return fleet_response(response.content)
            except ValueError as error:
                check(False, f"supernode: {method}: the body is no FleetResponse ({error})")
                return None

        # --- the SuperNode on 127.0.0.2: Flower's call sequence on one Session ---
        node, adapter = node_session(SUPERNODE)
        node_id = 4242
        sequence = (["register-node", "activate-node"] + ["pull-messages"] * 3 +
                    ["push-messages", "send-node-heartbeat", "get-run", "get-fab"])
        for method in sequence:
            body = fleet_request(node_id, payload=f"{method} body".encode(), run_id="17")
            answer = protobuf_ok(method, post(node, method, body))
            if answer is not None:
                got_node, payload, seen = answer
                check(got_node == node_id and bytes(payload) == f"{method} body".encode(),
                      f"supernode: {method}: the SuperLink echoed node {got_node} and the payload")
                check("tailscale-node-name=hospital-a" in seen,
                      f"supernode: {method}: the SuperLink saw the node's identity header")

        # pull-object: a small request, a 20 MB object back (the stand-in's x-reply-bytes).
        answer = protobuf_ok("pull-object", post(node, "pull-object", fleet_request(node_id),
                                                 {"x-reply-bytes": str(BIG)}))
        if answer is not None:
            _, payload, _ = answer
            check(len(payload) == BIG and payload == generated_payload(BIG),
                  f"supernode: pull-object: a {len(payload)}-byte object, intact")

        # push-object: a 20 MB body (above the stand-in's parse limit: counted, not parsed).
        size = BIG - 16
        size += BIG - len(fleet_request(node_id, payload=b"x" * size))  # the body exactly BIG
        big_body = fleet_request(node_id, payload=generated_payload(size))
        check(len(big_body) == BIG, f"supernode: push-object: a {len(big_body)}-byte body")
        answer = protobuf_ok("push-object", post(node, "push-object", big_body))
        if answer is not None:
            _, _, seen = answer
            check(f"body-bytes={len(big_body)}" in seen,
                  f"supernode: push-object: the SuperLink received {len(big_body)} body bytes "
                  f"({[s for s in seen if s.startswith('body-bytes=')]})")

        for method in ("deactivate-node", "unregister-node"):
            answer = protobuf_ok(method, post(node, method, fleet_request(node_id)))
            if answer is not None:
                check(answer[0] == node_id, f"supernode: {method}: node {answer[0]} echoed")

        STEP[0] = "counting connections"
        opened = metric(admin_port, "sepal_downstream_connections_total",
                        listener=LISTENER) - connections_before
        check(opened == 1, f"supernode: sepal accepted {opened:g} connection(s) on listener "
                           f"{LISTENER} for the whole sequence (want 1)")
        check(pool_connections(adapter) == 1,
              f"supernode: urllib3 opened {pool_connections(adapter)} connection(s) (want 1)")
        node.close()

        # --- a node tagged otherwise, on 127.0.0.3: refused by sepal ---
        other, _ = node_session(OTHER)
        response = post(other, "register-node", fleet_request(7))
        text = response.content.decode("utf-8", "replace")
        check(response.status_code == 403 and text.startswith("sepal:"),
              f"other: POST {response.request.path_url} -> {response.status_code} "
              f"{response.headers.get('Content-Type')}: {text.strip()!r}")
        other.close()

        STEP[0] = "reading /metrics"
        pulls = metric(admin_port, "sepal_grpc_requests_total", listener=LISTENER,
                       grpc_service="rest", grpc_method="pull-messages", grpc_code="OK")
        check(pulls == 3, f'/metrics: sepal_grpc_requests_total{{listener="{LISTENER}",'
                          f'grpc_service="rest",grpc_method="pull-messages",grpc_code="OK"}} '
                          f"{pulls:g} (want 3)")
    except requests.RequestException as error:
        failures.append(f"{STEP[0]}: {error!r}")
        print(f"FAIL {STEP[0]}: {error!r}", flush=True)
    finally:
        timer.cancel()
        stop_all()

    if failures:
        for name, _ in PROCESSES:
            print(f"--- {name} log:\n{read_log(os.path.join(work, name + '.log'))}")
        print(f"FAIL: {len(failures)} check(s) failed (logs kept in {work}): " + "; ".join(failures))
        return 1
    shutil.rmtree(work, ignore_errors=True)
    print(f"ok: Flower's REST call sequence through sepal with requests {requests.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
