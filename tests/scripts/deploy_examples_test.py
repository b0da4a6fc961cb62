#!/usr/bin/python3
"""Checks every shipped deployment example against the rules that keep sepal in the path.

Tailscale facts the rules encode:
- In userspace networking (TS_USERSPACE unset or true: the tailscale image's default),
  tailscaled's netstack forwards a tailnet connection to port P of the node to
  127.0.0.1:P, for every P. So anything bound to 127.0.0.1 or a wildcard address is
  reachable from the tailnet; the SuperLink must bind elsewhere (127.0.0.2, a unix
  socket), or SuperNodes bypass sepal.
- In kernel networking the tailnet reaches wildcard binds (0.0.0.0, [::]) but not loopback.
- A connection forwarded by `tailscale serve --tcp` arrives from tailscaled's own dial and
  is not known to WhoIs: the listener behind it needs the PROXY protocol, and serve must
  send it (--proxy-protocol=1|2).
- Flower's SuperLink binds ServerAppIo to 0.0.0.0:9091, Fleet to 0.0.0.0:9092 and Control
  to 0.0.0.0:9093 unless told otherwise.
Every sepal config found must also pass `sepal --config FILE --check`.

Usage: deploy_examples_test.py SEPAL_BINARY SOURCE_DIR
  Checks deploy/compose/*.yaml and deploy/kubernetes/*.yaml, runs --check on those and on
  deploy/examples/*.yaml and deploy/systemd/*.yaml (the packaged config), then
  checks that each bad example under tests/scripts/deploy_fixtures/ is refused with the
  expected reason (so the rules cannot silently stop working).
"""

import os
import re
import shlex
import subprocess
import sys
import tempfile

import yaml

SUPERLINK_DEFAULTS = {
    "--serverappio-api-address": "0.0.0.0:9091",
    "--fleet-api-address": "0.0.0.0:9092",
    "--control-api-address": "0.0.0.0:9093",
}
SUPERLINK_ADDRESS_FLAGS = set(SUPERLINK_DEFAULTS) | {
    "--exec-api-address", "--simulationio-api-address", "--health-server-address"}
WILDCARD_HOSTS = {"0.0.0.0", "::", "[::]", ""}
NETSTACK_HOSTS = {"127.0.0.1", "localhost"} | WILDCARD_HOSTS


def host_port(address):
    """'1.2.3.4:5' / '[::1]:5' -> (host, port); unix: addresses -> (None, None)."""
    if address.startswith("unix:"):
        return None, None
    host, _, port = address.rpartition(":")
    return host.strip("[]") if host.startswith("[") else host, port


def is_userspace(env):
    value = str(env.get("TS_USERSPACE", "true")).lower()
    return value not in ("false", "0", "no")


class Deployment:
    """One pod/compose project: its tailscaled mode, SuperLink args, sepal config, serves."""

    def __init__(self, name):
        self.name = name
        self.userspace = None
        self.superlink_args = None
        self.sepal_config = None      # parsed YAML
        self.sepal_config_text = None
        self.serve_commands = []      # argument lists of `tailscale serve ...`


def commands_in(container):
    """Every command line a container (compose service or k8s container) may run."""
    lines = []
    for key in ("command", "args", "entrypoint"):
        value = container.get(key)
        if isinstance(value, list):
            lines.append(" ".join(str(v) for v in value))
        elif isinstance(value, str):
            lines.append(value)
    post_start = (container.get("lifecycle") or {}).get("postStart") or {}
    exec_command = (post_start.get("exec") or {}).get("command")
    if exec_command:
        lines.append(" ".join(exec_command))
    return lines


def serve_invocations(text):
    """Argument lists of each `tailscale serve` in a shell text."""
    found = []
    for part in re.split(r"[;&|\n]+", text):
        words = shlex.split(part, posix=True) if part.strip() else []
        for i in range(len(words) - 1):
            if words[i] == "tailscale" and words[i + 1] == "serve":
                found.append(words[i + 2:])
    return found


def environment(container):
    env = container.get("environment") or container.get("env") or {}
    if isinstance(env, list):  # k8s [{name, value}] or compose ["K=V"]
        result = {}
        for item in env:
            if isinstance(item, dict):
                result[item.get("name")] = item.get("value", "")
            else:
                key, _, value = str(item).partition("=")
                result[key] = value
        return result
    return env


def classify(deployment, container, image):
    if image.startswith("tailscale/tailscale"):
        deployment.userspace = is_userspace(environment(container))
    if image.startswith("flwr/superlink"):
        args = container.get("args") or container.get("command") or []
        deployment.superlink_args = [str(a) for a in args]
    for line in commands_in(container):
        deployment.serve_commands += serve_invocations(line)


def load_compose(path):
    with open(path) as f:
        doc = yaml.safe_load(f)
    deployment = Deployment(path)
    for name, service in (doc.get("services") or {}).items():
        image = str(service.get("image", ""))
        classify(deployment, service, image)
        if name == "sepal" or image.startswith("sepal"):
            for volume in service.get("volumes") or []:
                source, _, target = str(volume).partition(":")
                if target.split(":")[0] == "/etc/sepal/sepal.yaml":
                    config_path = os.path.join(os.path.dirname(path), source)
                    with open(config_path) as f:
                        deployment.sepal_config_text = f.read()
    return deployment


def load_kubernetes(path):
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    deployment = Deployment(path)
    for doc in docs:
        if doc.get("kind") == "ConfigMap" and "sepal.yaml" in (doc.get("data") or {}):
            deployment.sepal_config_text = doc["data"]["sepal.yaml"]
        spec = (((doc.get("spec") or {}).get("template") or {}).get("spec")) or {}
        for container in spec.get("containers") or []:
            classify(deployment, container, str(container.get("image", "")))
    return deployment


def superlink_binds(args):
    binds = dict(SUPERLINK_DEFAULTS)
    for i, arg in enumerate(args):
        flag, eq, value = arg.partition("=")
        if flag in SUPERLINK_ADDRESS_FLAGS:
            binds[flag] = value if eq else (args[i + 1] if i + 1 < len(args) else "")
    if "--exec-api-address" in binds:  # the older name of --control-api-address
        binds["--control-api-address"] = binds.pop("--exec-api-address")
    return binds


def check_deployment(d):
    problems = []
    if d.sepal_config_text is None:
        return [f"{d.name}: no sepal config found"]
    d.sepal_config = yaml.safe_load(d.sepal_config_text)
    mode = "userspace" if d.userspace else "kernel"
    exposed = NETSTACK_HOSTS if d.userspace else WILDCARD_HOSTS
    if d.userspace is None:
        problems.append(f"{d.name}: no tailscale container found")
    if d.superlink_args is not None:
        for flag, address in superlink_binds(d.superlink_args).items():
            host, port = host_port(address)
            if host in exposed:
                problems.append(
                    f"{d.name}: the SuperLink's {flag} {address} is reachable from the "
                    f"tailnet in {mode} networking, bypassing sepal (bind 127.0.0.2 or a "
                    f"unix socket)")
    if d.userspace:
        for upstream in d.sepal_config.get("upstreams") or []:
            host, port = host_port(str(upstream.get("address", "")))
            if host in NETSTACK_HOSTS:
                problems.append(
                    f"{d.name}: upstream {upstream.get('name')} at {upstream['address']}: in "
                    f"userspace networking tailnet peers reach 127.0.0.1:{port} directly")
    listeners = {host_port(str(l.get("address", "")))[1]: l
                 for l in d.sepal_config.get("listeners") or []}
    for serve in d.serve_commands:
        target = next((w for w in serve if re.match(r"^tcp://", w)), None)
        if target is None:
            continue
        port = target.rpartition(":")[2]
        pp = [w for w in serve if w.startswith("--proxy-protocol")]
        listener = listeners.get(port)
        if listener is None:
            problems.append(f"{d.name}: `tailscale serve` forwards to port {port}, where "
                            f"no sepal listener is")
            continue
        mode_pp = str(listener.get("proxy_protocol", "none"))
        if not pp or mode_pp == "none":
            problems.append(
                f"{d.name}: listener {listener.get('name')} is behind `tailscale serve` "
                f"without the PROXY protocol: WhoIs does not know the connections serve "
                f"forwards (use serve --proxy-protocol=2 and proxy_protocol: v2)")
    return problems


def check_with_sepal(sepal, name, text):
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(text)
    try:
        result = subprocess.run([sepal, "--config", f.name, "--check"],
                                capture_output=True, text=True)
    finally:
        os.unlink(f.name)
    if result.returncode != 0:
        return [f"{name}: sepal --check failed: {result.stderr.strip()}"]
    return []


def load(path):
    with open(path) as f:
        text = f.read()
    return load_compose(path) if "services:" in text else load_kubernetes(path)


# Each bad example and the reasons it must be refused for.
FIXTURES = {
    "k8s-userspace-loopback-serve.yaml": [
        "--fleet-api-address 127.0.0.1:19092 is reachable from the tailnet in userspace",
        "--serverappio-api-address 0.0.0.0:9091 is reachable",
        "upstream superlink-fleet at 127.0.0.1:19092",
        "listener fleet is behind `tailscale serve` without the PROXY protocol",
    ],
    "compose-serverappio-open.yaml": [
        "--serverappio-api-address 0.0.0.0:9091 is reachable from the tailnet in kernel",
    ],
}


def main():
    sepal, source = sys.argv[1], sys.argv[2]
    problems = []
    checked = 0
    for folder in ("deploy/compose", "deploy/kubernetes"):
        for name in sorted(os.listdir(os.path.join(source, folder))):
            path = os.path.join(source, folder, name)
            if not name.endswith(".yaml") or name == "sepal.yaml":
                continue
            deployment = load(path)
            problems += check_deployment(deployment)
            if deployment.sepal_config_text is not None:
                problems += check_with_sepal(sepal, path, deployment.sepal_config_text)
            checked += 1
    for folder in ("deploy/examples", "deploy/systemd"):
        for name in sorted(os.listdir(os.path.join(source, folder))):
            if name.endswith(".yaml"):
                path = os.path.join(source, folder, name)
                with open(path) as f:
                    problems += check_with_sepal(sepal, path, f.read())
                checked += 1
    fixtures = os.path.join(source, "tests/scripts/deploy_fixtures")
    for name, expected in FIXTURES.items():
        found = check_deployment(load(os.path.join(fixtures, name)))
        for reason in expected:
            if not any(reason in p for p in found):
                problems.append(f"fixture {name}: expected a problem containing {reason!r}, "
                                f"got {found}")
    for p in problems:
        print("FAIL:", p)
    print(f"{checked} deployment files checked, {len(FIXTURES)} bad fixtures refused"
          if not problems else f"{len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
