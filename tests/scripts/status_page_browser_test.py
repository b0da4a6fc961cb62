#!/usr/bin/env python3
"""The admin status page (/) in a real browser: Debian's chromium, headless.

sepal runs with the tailscale identity provider (the fake tailscaled answering WhoIs for
127.0.0.2 = supernode-a, tag:supernode and 127.0.0.3 = alice-laptop, alice@example.com), a
cleartext Fleet listener and a TLS listener whose certificate expires in 10 days. Three peers
hold connections while the browser looks: a SuperNode polling PullMessages and heartbeats, a
user following StreamLogs, and a stranger (127.0.0.4) that the tailnet does not know.

Checks, on what chromium parsed (--dump-dom) and drew (--screenshot):
  * the page has the listeners, upstreams, certificates and peers tables with the right rows;
  * each peer row shows who it is, its calls by method and its last error;
  * the certificate row is marked as expiring soon, the upstream as reachable;
  * the page asks to be reloaded (meta refresh) and has no script;
  * the screenshot is the page drawn with its inline CSS (the Content-Security-Policy lets
    inline styles through): the header grey and the "ok" green are both on it.

Usage: status_page_browser_test.py SEPAL FAKE_SUPERLINK FAKE_TAILSCALED FLOWER_CLIENT
Exit 77 (skipped) when chromium is not installed.
"""
import html.parser
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
import zlib

SUPERNODE, ALICE, STRANGER = "127.0.0.2", "127.0.0.3", "127.0.0.4"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_line(path, text, process, seconds=10):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{path}: exited early:\n{open(path).read()}")
        if os.path.exists(path) and text in open(path).read():
            return
        time.sleep(0.05)
    raise SystemExit(f"{path}: no '{text}' within {seconds} s:\n{open(path).read()}")


def get(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return response.status, response.read().decode()


class Tables(html.parser.HTMLParser):
    """Collects every <table id=...> as a list of rows, each a list of (cell text, class)."""

    def __init__(self):
        super().__init__()
        self.tables, self.ids, self.meta, self.scripts = {}, set(), [], 0
        self._table = self._row = self._cell = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "script":
            self.scripts += 1
        elif tag == "meta":
            self.meta.append(attrs)
        elif tag == "table":
            self._table = self.tables.setdefault(attrs.get("id", ""), [])
        elif tag == "tr" and self._table is not None:
            self._row = []
            self._table.append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = ["", attrs.get("class") or ""]
            self._row.append(self._cell)
        elif tag in ("br", "li") and self._cell is not None:
            self._cell[0] += " "

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None
        elif tag in ("td", "th"):
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[0] += data


def rows_by_header(table):
    header = [cell[0].strip() for cell in table[0]]
    return [{name: (cell[0].strip(), cell[1]) for name, cell in zip(header, row)} for row in table[1:]]


def png_pixels(path):
    """(width, height, set of RGB colours) of an 8-bit RGB/RGBA PNG, as chromium writes them."""
    data = open(path, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise SystemExit(f"{path}: not a PNG")
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            if depth != 8 or colour not in (2, 6):
                raise SystemExit(f"{path}: unexpected PNG format depth={depth} colour={colour}")
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels
    previous = bytearray(stride)
    colours = set()
    for y in range(height):
        line = raw[y * (stride + 1):(y + 1) * (stride + 1)]
        kind, row = line[0], bytearray(line[1:])
        for i in range(stride):
            left = row[i - channels] if i >= channels else 0
            up = previous[i]
            upper_left = previous[i - channels] if i >= channels else 0
            if kind == 1:
                row[i] = (row[i] + left) & 0xFF
            elif kind == 2:
                row[i] = (row[i] + up) & 0xFF
            elif kind == 3:
                row[i] = (row[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - upper_left
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - upper_left)
                predictor = left if pa <= pb and pa <= pc else up if pb <= pc else upper_left
                row[i] = (row[i] + predictor) & 0xFF
        for x in range(0, stride, channels):
            colours.add(bytes(row[x:x + 3]))
        previous = row
    return width, height, colours


def main():
    if len(sys.argv) != 5:
        raise SystemExit(__doc__)
    sepal, superlink, tailscaled, client = sys.argv[1:]
    browser = shutil.which("chromium")
    if browser is None:
        print("SKIP: chromium is not installed (scripts/install-deps.sh installs it)")
        return 77
    failures = []

    def check(condition, what):
        print(("ok   " if condition else "FAIL ") + what)
        if not condition:
            failures.append(what)

    work = tempfile.mkdtemp(prefix="sepal-browser-")
    processes = []

    def start(name, argv):
        log = os.path.join(work, name + ".log")
        process = subprocess.Popen(argv, stdout=open(log, "w"), stderr=subprocess.STDOUT)
        processes.append(process)
        return process, log

    try:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-days", "10", "-subj", "/CN=superlink",
                        "-addext", "subjectAltName=DNS:superlink.tail3c4d5e.ts.net",
                        "-keyout", f"{work}/key.pem", "-out", f"{work}/cert.pem"],
                       check=True, capture_output=True)
        tailscaled_socket, superlink_socket = f"{work}/tailscaled.sock", f"{work}/superlink.sock"
        fleet_port, control_port, admin_port = free_port(), free_port(), free_port()
        config = f"""workers: 1
admin: {{address: 127.0.0.1:{admin_port}}}
identity:
  provider: tailscale
  tailscale: {{socket: {tailscaled_socket}}}
listeners:
  - name: fleet
    address: 127.0.0.1:{fleet_port}
    routes:
      - match: /flwr.proto.Fleet/
        upstream: superlink
        allow: {{tags: [tag:supernode]}}
      - match: /flwr.proto.Control/
        upstream: superlink
        allow: {{users: [alice@example.com]}}
  - name: control
    address: 127.0.0.1:{control_port}
    tls: {{certificate: {work}/cert.pem, private_key: {work}/key.pem}}
    routes:
      - match: /flwr.proto.Control/
        upstream: superlink
        allow: {{users: [alice@example.com]}}
upstreams:
  - {{name: superlink, address: "unix:{superlink_socket}"}}
"""
        with open(f"{work}/sepal.yaml", "w") as f:
            f.write(config)

        process, log = start("tailscaled", [tailscaled, "--socket", tailscaled_socket,
                                            "--peer", f"{SUPERNODE}=tagged-node.json",
                                            "--peer", f"{ALICE}=user-node.json"])
        wait_for_line(log, "listening on", process)
        process, log = start("superlink", [superlink, "--listen", f"unix:{superlink_socket}"])
        wait_for_line(log, "listening on", process)
        process, log = start("sepal", [sepal, "--config", f"{work}/sepal.yaml"])
        deadline = time.monotonic() + 10
        while True:
            try:
                if get(admin_port, "/ready")[0] == 200:
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"sepal did not become ready:\n{open(log).read()}")
            time.sleep(0.05)

        target = ["--target", f"127.0.0.1:{fleet_port}"]
        # What the SuperNode did before: registered, pushed a 1 MiB object, tried Control.
        for args in (["/flwr.proto.Fleet/RegisterNode", "/flwr.proto.Fleet/ActivateNode"],
                     ["--payload-bytes", "1MiB", "/flwr.proto.Fleet/PushObject"],
                     ["--expect", "PERMISSION_DENIED", "/flwr.proto.Control/ListRuns"]):
            done = subprocess.run([client, "--bind", SUPERNODE, *target, *args],
                                  capture_output=True, text=True)
            check(done.returncode == 0, f"supernode-a: {' '.join(args)}: {done.stdout.strip()}")
        # Held open while the browser looks (a minute each, however slow chromium starts on a
        # loaded machine; stopped once it has looked).
        start("supernode", [client, "--bind", SUPERNODE, *target, "--repeat", "600",
                            "--interval", "100ms", "/flwr.proto.Fleet/PullMessages",
                            "/flwr.proto.Fleet/SendNodeHeartbeat"])
        start("alice", [client, "--bind", ALICE, *target, "--timeout", "90s", "--lines", "1200",
                        "/flwr.proto.Control/StreamLogs"])
        start("stranger", [client, "--bind", STRANGER, *target, "--repeat", "600",
                           "--interval", "100ms", "--expect", "UNAUTHENTICATED",
                           "/flwr.proto.Fleet/PullMessages"])
        deadline = time.monotonic() + 10
        while b'"peer_count":3' not in get(admin_port, "/peers")[1].encode():
            if time.monotonic() > deadline:
                raise SystemExit("three peers never showed up in /peers: " + get(admin_port, "/peers")[1])
            time.sleep(0.1)
        time.sleep(0.5)  # a few PullMessages rounds

        url = f"http://127.0.0.1:{admin_port}/"
        common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-extensions", f"--user-data-dir={work}/profile"]
        dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True,
                             timeout=60)
        check(dom.returncode == 0 and "</html>" in dom.stdout,
              f"chromium --dump-dom rendered the page (exit {dom.returncode})")
        page = Tables()
        page.feed(dom.stdout)

        check(page.scripts == 0, "the page has no script")
        check(any(m.get("http-equiv") == "refresh" and m.get("content") == "5" for m in page.meta),
              "the page reloads itself every 5 s")
        check({"ready", "generation", "listeners", "upstreams", "certificates", "peers"} <= page.ids,
              f"the page has its sections (ids {sorted(page.ids)})")

        listeners = {row["name"][0]: row for row in rows_by_header(page.tables.get("listeners", [[]]))}
        check(set(listeners) == {"fleet", "control"}, f"listeners table: {sorted(listeners)}")
        if "fleet" in listeners:
            check(listeners["fleet"]["port"][0] == str(fleet_port), "fleet's bound port")
            check(listeners["fleet"]["peers"][0] == "3", "fleet has 3 peers")
        if "control" in listeners:
            check(listeners["control"]["TLS"][0] == "files", "control terminates TLS from files")

        upstreams = rows_by_header(page.tables.get("upstreams", [[]]))
        check(len(upstreams) == 1 and upstreams[0]["state"] == ("reachable", "ok"),
              f"the SuperLink upstream is reachable: {upstreams}")

        certificates = rows_by_header(page.tables.get("certificates", [[]]))
        check(len(certificates) == 1 and certificates[0]["listener"][0] == "control",
              f"one certificate row, for control: {certificates}")
        if certificates:
            days = certificates[0]["days left"]
            check(9 < float(days[0]) <= 10 and "warn" in days[1],
                  f"the certificate expires in 10 days and is marked as soon: {days}")

        peers = {row["peer"][0]: row for row in rows_by_header(page.tables.get("peers", [[]]))}
        check(set(peers) == {"supernode-a", "alice-laptop", STRANGER}, f"peers: {sorted(peers)}")
        node = peers.get("supernode-a")
        if node:
            check(node["tags or user"][0] == "tag:supernode", "supernode-a shows its tag")
            check(node["addresses"][0].startswith(SUPERNODE + ":"), "supernode-a's address")
            methods = node["calls by method"][0]
            for method in ("RegisterNode", "ActivateNode", "PushObject", "PullMessages",
                           "SendNodeHeartbeat", "Control/ListRuns"):
                check(method in methods, f"supernode-a's calls list {method}")
            check(int(node["calls"][0]) >= 6, f"supernode-a made its calls ({node['calls'][0]})")
            check("MiB" in node["bytes in"][0], f"1 MiB came in from supernode-a ({node['bytes in'][0]})")
            check("PERMISSION_DENIED" in node["last error"][0] and "warn" in node["last error"][1],
                  f"supernode-a's last error: {node['last error'][0]}")
        user = peers.get("alice-laptop")
        if user:
            check(user["tags or user"][0] == "alice@example.com", "alice-laptop shows its user")
            check(user["in flight"][0] == "1", "alice's StreamLogs is in flight")
        stranger = peers.get(STRANGER)
        if stranger:
            check(stranger["tags or user"] == ("not a tailnet peer", "bad"),
                  f"the stranger is marked: {stranger['tags or user']}")
            check("UNAUTHENTICATED" in stranger["last error"][0], "the stranger was refused")

        shot = f"{work}/status.png"
        drawn = subprocess.run([*common, "--hide-scrollbars", "--window-size=1600,1000",
                                f"--screenshot={shot}", url], capture_output=True, text=True,
                               timeout=60)
        check(drawn.returncode == 0 and os.path.exists(shot),
              f"chromium --screenshot wrote a PNG (exit {drawn.returncode})")
        if os.path.exists(shot):
            width, height, colours = png_pixels(shot)
            check((width, height) == (1600, 1000), f"screenshot is 1600x1000 ({width}x{height})")
            check(len(colours) > 50, f"the screenshot is not blank ({len(colours)} colours)")
            check(bytes.fromhex("eeeeee") in colours, "table headers are drawn grey (inline CSS applied)")
            check(bytes.fromhex("dff0d8") in colours, "'ok' cells are drawn green")
            check(bytes.fromhex("fcf8e3") in colours, "'warn' cells are drawn yellow")
            check(bytes.fromhex("f2dede") in colours, "'bad' cells are drawn red")
            keep = os.environ.get("SEPAL_SCREENSHOT")
            if keep:
                shutil.copy(shot, keep)
                print(f"screenshot copied to {keep}")
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if failures:
            for name in ("sepal", "supernode", "alice", "stranger"):
                path = os.path.join(work, name + ".log")
                if os.path.exists(path):
                    print(f"--- {path} (last lines)")
                    print("".join(open(path).readlines()[-15:]))
        shutil.rmtree(work, ignore_errors=True)

    if failures:
        print(f"{len(failures)} check(s) failed")
        return 1
    print("status page checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
