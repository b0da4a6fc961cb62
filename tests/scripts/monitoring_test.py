#!/usr/bin/python3
"""Checks the shipped monitoring files against promtool and sepal's metric reference.

- deploy/prometheus/alerts.yaml: `promtool check rules`, then `promtool test rules` with
  deploy/prometheus/alerts_test.yaml (each alert fires on its series, none on a healthy sepal).
- deploy/grafana/sepal.json: valid JSON with panels; every query parses as PromQL (promtool
  checks them as recording rules, with Grafana's $__rate_interval, $__range and variables
  replaced); every query names only metric families declared in docs/metrics.md.
- The alerts name only declared families too.

Usage: monitoring_test.py SOURCE_DIR   (exit 77 = skipped: promtool is not installed)
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

SKIP = 77


def families(metrics_md):
    """Metric family names in docs/metrics.md's tables (`sepal_...` in the first column)."""
    names = set()
    for line in open(metrics_md, encoding="utf-8"):
        m = re.match(r"\| `(sepal_[a-z_]+)` \|", line)
        if m:
            names.add(m.group(1))
    return names


def metric_names(expr):
    """The sepal series an expression selects, as family names."""
    names = set()
    for name in re.findall(r"\bsepal_[a-z_]+", expr):
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and name[: -len(suffix)].endswith("_seconds"):
                name = name[: -len(suffix)]
        names.add(name)
    return names


def grafana_to_promql(expr):
    expr = expr.replace("$__rate_interval", "5m").replace("$__range", "1h")
    return re.sub(r"\$[a-z_]+", ".*", expr)


def main():
    source = sys.argv[1]
    promtool = shutil.which("promtool")
    if promtool is None:
        print("promtool not installed (Debian: apt-get install prometheus): skipped")
        return SKIP
    failures = []
    declared = families(os.path.join(source, "docs", "metrics.md"))
    if len(declared) < 20:
        failures.append(f"only {len(declared)} families found in docs/metrics.md")

    rules_dir = os.path.join(source, "deploy", "prometheus")
    for args in (["check", "rules", "alerts.yaml"], ["test", "rules", "alerts_test.yaml"]):
        run = subprocess.run([promtool, *args], cwd=rules_dir, capture_output=True, text=True)
        if run.returncode != 0:
            failures.append(f"promtool {' '.join(args)}: {run.stdout}{run.stderr}")

    alerts = yaml.safe_load(open(os.path.join(rules_dir, "alerts.yaml"), encoding="utf-8"))
    alert_names = set()
    for group in alerts["groups"]:
        for rule in group["rules"]:
            alert_names.add(rule["alert"])
            for name in metric_names(rule["expr"]) - declared:
                failures.append(f"alert {rule['alert']}: {name} is not in docs/metrics.md")
    # The five situations, each covered by an alert.
    for wanted in ("SepalSuperLinkUnreachable", "SepalDenySpike", "SepalIdentityLookupsFailing",
                   "SepalCertificateExpiringSoon", "SepalReloadFailed"):
        if wanted not in alert_names:
            failures.append(f"alerts.yaml has no {wanted}")

    dashboard = json.load(open(os.path.join(source, "deploy", "grafana", "sepal.json"),
                               encoding="utf-8"))
    panels = dashboard.get("panels", [])
    if len(panels) < 8:
        failures.append(f"the dashboard has {len(panels)} panels")
    exprs = []
    for panel in panels:
        targets = panel.get("targets", [])
        if not targets:
            failures.append(f"panel {panel.get('title')!r} has no query")
        for target in targets:
            expr = target["expr"]
            exprs.append((panel["title"], expr))
            selected = metric_names(expr)
            if not selected:
                failures.append(f"panel {panel['title']!r}: no sepal metric in {expr}")
            for name in selected - declared:
                failures.append(f"panel {panel['title']!r}: {name} is not in docs/metrics.md")
    with tempfile.TemporaryDirectory() as tmp:
        rules = {"groups": [{"name": "dashboard", "rules": [
            {"record": f"dashboard:query_{i}", "expr": grafana_to_promql(expr)}
            for i, (_, expr) in enumerate(exprs)]}]}
        path = os.path.join(tmp, "dashboard_rules.yaml")
        with open(path, "w", encoding="utf-8") as out:
            yaml.safe_dump(rules, out)
        run = subprocess.run([promtool, "check", "rules", path], capture_output=True, text=True)
        if run.returncode != 0:
            failures.append(f"dashboard queries do not parse: {run.stdout}{run.stderr}")

    for failure in failures:
        print("FAIL:", failure)
    print(f"{len(alert_names)} alerts, {len(exprs)} dashboard queries, {len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
