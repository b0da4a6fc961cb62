#!/usr/bin/env python3
"""Every config and command of docs/multi-site-federation.md, exercised.

The guide marks each block it shows with an HTML comment (invisible when rendered):
  <!-- guide-test: config PATH -->      a sepal config: written to PATH, `sepal --check` passes
  <!-- guide-test: listener-of PATH -->  one listener replacing its namesake in PATH's config,
                                         which must still pass --check (later blocks see it)
  <!-- guide-test: policy-of PATH -->    exactly what `sepal policy --config PATH` prints
  <!-- guide-test: policy-for PATH -->   a hand-widened policy: valid JSON that still agrees
                                         with PATH (tags owned, ports granted, capability
                                         methods the config's routes route)
  <!-- guide-test: toml -->              a pyproject.toml federation: parses, dials the
                                         Control listener as the listener expects
  <!-- guide-test: commands -->          shell lines, each run or checked:
      sepal ...                run (after the paths below are moved into a temp dir) against a
                               fake tailscaled that knows 100.101.12.34 (supernode-a, tagged)
                               and 100.88.201.7 (alice-laptop); exit 0 unless `# exit N`
      certs/sepal-certs.sh ... run; the files later blocks name must then exist
      tailscale up ...         its tags are owned in the policy
      flower-superlink ...     every API on 127.0.0.2 (or a unix socket), the ports sepal's
                               upstreams use, --insecure iff the upstreams speak cleartext
      flower-supernode ...     dials the tailnet name on the Fleet listener's port, with
                               --insecure / --root-certificates / neither as that listener's
                               TLS (at that point of the guide) requires
      flwr run|ls . NAME       NAME is a federation of the toml block
      curl http://ADMIN/PATH   ADMIN is the config's admin address, PATH an admin endpoint
      package, apt, systemctl  the files they use exist in the repository
Any other command fails the test: a new command in the guide needs a check here.

Usage: guide_test.py SEPAL FAKE_TAILSCALED SOURCE_DIR
"""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib

import yaml

TAILNET_NAME = "superlink.tail3c4d5e.ts.net"
PEERS = {"100.101.12.34": "tagged-node.json", "100.88.201.7": "user-node.json"}
MOVED_PREFIXES = ("/etc/sepal", "/var/run/tailscale")
ADMIN_ENDPOINTS = {"/", "/status", "/peers", "/metrics", "/healthz", "/ready", "/config"}

failures = []


def check(condition, what):
    print(("ok   " if condition else "FAIL ") + what)
    if not condition:
        failures.append(what)
    return condition


def blocks(markdown):
    """(kind, argument, language, text) for every marked fenced block, in order."""
    pattern = re.compile(r"<!-- guide-test: (\S+)(?: (\S+))? -->\n```(\w*)\n(.*?)\n```", re.S)
    return [m.groups() for m in pattern.finditer(markdown)]


class Guide:
    def __init__(self, sepal, source, root):
        self.sepal, self.source, self.root = sepal, source, root
        self.configs = {}  # guide path -> parsed config
        self.federations = {}
        self.policies = {}  # guide path -> sepal policy output (parsed)
        self.first_policy = None  # of the first config, before any listener-of
        self.advertised = set()  # tags of `tailscale up --advertise-tags`

    def finish(self):
        owned = set((self.first_policy or {}).get("tagOwners", {}))
        for tag in sorted(self.advertised):
            check(tag in owned, f"`tailscale up --advertise-tags={tag}`: owned in the policy sepal prints")

    def moved(self, text):
        for prefix in MOVED_PREFIXES:
            text = re.sub(r"(?<![\w/])" + re.escape(prefix), self.root + prefix, text)
        return text

    def write_config(self, path, config):
        self.configs[path] = config
        real = self.moved(path)
        os.makedirs(os.path.dirname(real), exist_ok=True)
        with open(real, "w") as f:
            f.write(self.moved(yaml.safe_dump(config, sort_keys=False)))
        done = subprocess.run([self.sepal, "--config", real, "--check"], capture_output=True,
                              text=True)
        check(done.returncode == 0, f"sepal --check accepts {path} as the guide has it now"
              + ("" if done.returncode == 0 else ":\n" + done.stdout + done.stderr))
        policy = subprocess.run([self.sepal, "policy", "--config", real], capture_output=True,
                                text=True)
        self.policies[path] = json.loads(policy.stdout) if policy.returncode == 0 else None
        if self.first_policy is None:
            self.first_policy = self.policies[path]

    def main_config(self):
        return next(iter(self.configs.values()))

    def listener(self, route_prefix):
        for listener in self.main_config()["listeners"]:
            if any(r["match"].startswith(route_prefix) for r in listener["routes"]):
                return listener
        return None

    # ------------------------------------------------------------------ blocks

    def config(self, path, text):
        self.write_config(path, yaml.safe_load(text))

    def listener_of(self, path, text):
        (listener,) = yaml.safe_load(text)
        config = self.configs[path]
        names = [item["name"] for item in config["listeners"]]
        if not check(listener["name"] in names, f"listener {listener['name']} exists in {path}"):
            return
        config["listeners"][names.index(listener["name"])] = listener
        self.write_config(path, config)

    def policy_of(self, path, text):
        check(json.loads(text) == self.policies.get(path),
              f"the policy shown is exactly what `sepal policy --config {path}` prints")

    def policy_for(self, path, text):
        policy = json.loads(text)
        config = self.configs[path]
        tags, ports, capability_methods = set(), set(), {}
        for listener in config["listeners"]:
            ports.add("tcp:" + listener["address"].rsplit(":", 1)[1])
            for route in listener["routes"]:
                allow = route.get("allow", {})
                tags.update(allow.get("tags", []))
                if "capability" in allow:
                    capability_methods.setdefault(allow["capability"], set()).add(route["match"])
        check(tags <= set(policy.get("tagOwners", {})), f"widened policy owns the tags {sorted(tags)}")
        granted = {port for grant in policy["grants"] for port in grant.get("ip", [])}
        check(granted == ports, f"widened policy grants exactly the listener ports {sorted(ports)}")
        for grant in policy["grants"]:
            for name, values in grant.get("app", {}).items():
                check(name in capability_methods, f"capability {name} is one the config uses")
                for value in values:
                    for method in value.get("methods", []):
                        check(method in capability_methods.get(name, ()),
                              f"{name} grants {method}, a route that uses it")
        groups = set(policy.get("groups", {}))
        for grant in policy["grants"]:
            for src in grant["src"]:
                if src.startswith("group:"):
                    check(src in groups, f"group {src} is defined")

    def toml(self, text):
        federations = tomllib.loads(text)["tool"]["flwr"]["federations"]
        control = self.listener("/flwr.proto.Control/")
        port = control["address"].rsplit(":", 1)[1]
        for name, federation in federations.items():
            self.federations[name] = federation
            check(federation["address"] == f"{TAILNET_NAME}:{port}",
                  f"federation {name} dials the Control listener on the tailnet name")
            check(federation.get("insecure", False) == ("tls" not in control),
                  f"federation {name}: insecure matches the Control listener's TLS")

    # ------------------------------------------------------------------ commands

    def command(self, line):
        expected = 0
        comment = re.search(r"\s+# exit (\d+)$", line)
        if comment:
            expected = int(comment.group(1))
            line = line[:comment.start()]
        args = shlex.split(line)
        if args[0] == "sudo":
            args = args[1:]
        name = args[0]
        if name == "sepal":
            done = subprocess.run([self.sepal] + [self.moved(a) for a in args[1:]],
                                  capture_output=True, text=True)
            check(done.returncode == expected, f"`{line}` exits {expected} (got {done.returncode})"
                  + ("" if done.returncode == expected else ":\n" + done.stdout + done.stderr))
        elif name == "certs/sepal-certs.sh":
            done = subprocess.run(["bash", os.path.join(self.source, name)]
                                  + [self.moved(a) for a in args[1:]],
                                  capture_output=True, text=True, cwd=self.root)
            check(done.returncode == 0, f"`{line}` succeeds" + ("" if done.returncode == 0
                                                              else ":\n" + done.stderr))
        elif name == "tailscale":
            check(args[1] == "up", f"`{line}`: tailscale up")
            flags = dict(a.split("=", 1) for a in args[2:])
            check(set(flags) <= {"--auth-key", "--advertise-tags", "--hostname"},
                  f"`{line}`: known flags")
            # Checked at the end: the tags come before the config in the guide.
            self.advertised.update(flags.get("--advertise-tags", "").split(","))
        elif name == "flower-superlink":
            self.superlink(line, args)
        elif name == "flower-supernode":
            self.supernode(line, args)
        elif name == "flwr":
            check(args[1] in ("run", "ls") and args[2] == "." and args[3] in self.federations,
                  f"`{line}`: a federation the guide defined")
        elif name == "curl":
            url = next(a for a in args if a.startswith("http://"))
            host_port, _, path = url[len("http://"):].partition("/")
            check(host_port == self.main_config()["admin"]["address"],
                  f"`{line}`: the config's admin address")
            check("/" + path in ADMIN_ENDPOINTS, f"`{line}`: /{path} is an admin endpoint")
        elif name == "scripts/package-deb.sh":
            check(os.access(os.path.join(self.source, name), os.X_OK), f"{name} exists")
        elif name == "apt-get":
            script = open(os.path.join(self.source, "scripts/package-deb.sh")).read()
            check(args[1] == "install" and args[2].startswith("./build-release/deb/sepal_")
                  and "build-release/deb" in script, f"`{line}`: package-deb.sh's default output")
        elif name == "systemctl":
            check(args[-1] == "sepal" and os.path.exists(
                os.path.join(self.source, "deploy/systemd/sepal.service")),
                f"`{line}`: the shipped unit")
        else:
            check(False, f"`{line}`: no check for this command in guide_test.py")

    def superlink(self, line, args):
        flags, i = {}, 1
        while i < len(args):
            if args[i] == "--insecure":
                flags["--insecure"] = True
                i += 1
            else:
                flags[args[i]] = args[i + 1]
                i += 2
        upstreams = {u["address"] for u in self.main_config()["upstreams"]}
        for flag in ("--fleet-api-address", "--control-api-address", "--serverappio-api-address"):
            address = flags.get(flag, "")
            check(address.startswith("127.0.0.2:") or address.startswith("unix:"),
                  f"`flower-superlink {flag} {address}` is out of the tailnet's reach")
        check({flags.get("--fleet-api-address"), flags.get("--control-api-address")} == upstreams,
              "the SuperLink's Fleet and Control addresses are sepal's upstreams")
        cleartext = all("tls" not in u for u in self.main_config()["upstreams"])
        check(flags.get("--insecure", False) == cleartext, "--insecure iff the upstreams are h2c")

    def supernode(self, line, args):
        fleet = self.listener("/flwr.proto.Fleet/")
        port = fleet["address"].rsplit(":", 1)[1]
        superlink = args[args.index("--superlink") + 1]
        check(superlink == f"{TAILNET_NAME}:{port}", f"`{line}`: the tailnet name, Fleet's port")
        tls = fleet.get("tls")
        if tls is None:
            check("--insecure" in args, f"`{line}`: --insecure for an h2c listener")
        elif tls.get("source") == "tailscale":
            check("--insecure" not in args and "--root-certificates" not in args,
                  f"`{line}`: Let's Encrypt needs neither --insecure nor a CA file")
        else:
            ca = self.moved(args[args.index("--root-certificates") + 1])
            check(os.path.exists(ca), f"`{line}`: the CA file exists")
            certificate = self.moved(tls["certificate"])
            verified = subprocess.run(["openssl", "verify", "-CAfile", ca, certificate],
                                      capture_output=True, text=True)
            check(verified.returncode == 0, "the listener's certificate verifies against that CA")
            names = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in",
                                    certificate], capture_output=True, text=True).stdout
            check("DNS:" + TAILNET_NAME in names, f"the certificate names {TAILNET_NAME}")


def main():
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    sepal, tailscaled, source = (os.path.abspath(a) for a in sys.argv[1:])
    markdown = open(os.path.join(source, "docs/multi-site-federation.md")).read()
    found = blocks(markdown)
    check(len(found) >= 10, f"the guide has its marked blocks ({len(found)})")
    fences = markdown.count("\n```") // 2
    check(fences == len(found), f"every code block of the guide is marked ({len(found)} of {fences})")

    root = tempfile.mkdtemp(prefix="sepal-guide-")
    socket_path = root + "/var/run/tailscale/tailscaled.sock"
    os.makedirs(os.path.dirname(socket_path))
    argv = [tailscaled, "--socket", socket_path]
    for ip, fixture in PEERS.items():
        argv += ["--peer", f"{ip}={fixture}"]
    log = open(root + "/tailscaled.log", "w+")
    fake = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(socket_path):
            if fake.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the fake tailscaled did not start")
            time.sleep(0.05)
        guide = Guide(sepal, source, root)
        # Commands before the config (the SuperLink's flags) are checked against it too.
        for kind, argument, _, text in found:
            if kind == "config":
                guide.configs.setdefault(argument, yaml.safe_load(text))
        for kind, argument, language, text in found:
            print(f"--- {kind} {argument or ''} ({language})")
            if kind == "commands":
                for line in text.splitlines():
                    if line.strip() and not line.startswith("#"):
                        guide.command(line)
            elif kind == "config":
                guide.config(argument, text)
            elif kind == "listener-of":
                guide.listener_of(argument, text)
            elif kind == "policy-of":
                guide.policy_of(argument, text)
            elif kind == "policy-for":
                guide.policy_for(argument, text)
            elif kind == "toml":
                guide.toml(text)
            else:
                check(False, f"unknown guide-test kind {kind}")
        guide.finish()
    finally:
        fake.terminate()
        fake.wait(timeout=5)
        shutil.rmtree(root, ignore_errors=True)
    if failures:
        print(f"{len(failures)} check(s) failed")
        return 1
    print("every block of the guide checked")
    return 0


if __name__ == "__main__":
    sys.exit(main())
