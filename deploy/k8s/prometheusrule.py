"""docker/prometheus/alerts.yml as a Prometheus Operator PrometheusRule (base/prometheusrule.yaml).

    python deploy/k8s/prometheusrule.py           write base/prometheusrule.yaml
    python deploy/k8s/prometheusrule.py --check   exit 1 when it differs from what alerts.yml gives

One source for the rules: compose's Prometheus loads alerts.yml, Kubernetes gets this copy, and
`make deploy-check` runs --check so the two cannot drift. The rules' unit tests
(docker/prometheus/tests/alerts_test.yml) therefore cover both.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "docker" / "prometheus" / "alerts.yml"
TARGET = Path(__file__).resolve().parent / "base" / "prometheusrule.yaml"

HEADER = "# GENERATED from docker/prometheus/alerts.yml by deploy/k8s/prometheusrule.py: edit that file, then rerun.\n"


class _Literal(yaml.SafeDumper):
    """Multi-line strings (the PromQL expressions) as `|` blocks, as in alerts.yml."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Literal.add_representer(str, _str)


def render(alerts: Path = ALERTS) -> str:
    rules = yaml.safe_load(alerts.read_text())
    resource = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "oodserve", "labels": {"role": "alert-rules"}},
        "spec": {"groups": rules["groups"]},
    }
    return HEADER + yaml.dump(resource, Dumper=_Literal, sort_keys=False, width=1000)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    parser.add_argument("--alerts", type=Path, default=ALERTS)
    parser.add_argument("--target", type=Path, default=TARGET)
    args = parser.parse_args()
    expected = render(args.alerts)
    if args.check:
        if not args.target.exists() or args.target.read_text() != expected:
            print(f"{args.target} is out of date with {args.alerts}: run python deploy/k8s/prometheusrule.py")
            return 1
        print(f"{args.target.name} matches {args.alerts.name}")
        return 0
    args.target.write_text(expected)
    return 0


if __name__ == "__main__":
    sys.exit(main())
