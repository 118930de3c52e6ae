"""Grafana provisioning: the datasource and dashboard load, refer to each other, and query only
metrics the service exports. (No Grafana runs here; these are the checks a broken file fails.)"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator

import pytest
import yaml
from deploy_checks import (
    COMPOSE_FILE,
    GRAFANA_DIR,
    INFERENCE_ENDPOINTS,
    PROMETHEUS_OWN_METRICS,
    promql_metric_names,
    require_tool,
)

DASHBOARDS = sorted((GRAFANA_DIR / "dashboards").glob("*.json"))
DATASOURCES = GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = GRAFANA_DIR / "provisioning" / "dashboards" / "oodserve.yml"


def _walk(node: object) -> Iterator[dict]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


def _dashboard() -> dict:
    return json.loads((GRAFANA_DIR / "dashboards" / "oodserve.json").read_text())


def _exprs(dashboard: dict) -> list[str]:
    return [node["expr"] for node in _walk(dashboard) if isinstance(node.get("expr"), str)]


def _panels(dashboard: dict) -> list[dict]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def test_there_is_a_dashboard():
    assert [p.name for p in DASHBOARDS] == ["oodserve.json"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_parses_and_has_unique_ids(path):
    dashboard = json.loads(path.read_text())
    assert dashboard["uid"] and dashboard["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "duplicate panel ids"


def test_datasource_uids_referenced_by_the_dashboard_are_provisioned():
    provisioned = {ds["uid"]: ds for ds in yaml.safe_load(DATASOURCES.read_text())["datasources"]}
    assert provisioned["oodserve-prometheus"]["type"] == "prometheus"
    # The compose service name and port of Prometheus.
    assert provisioned["oodserve-prometheus"]["url"] == "http://prometheus:9090"
    refs = [node["datasource"] for node in _walk(_dashboard()) if isinstance(node.get("datasource"), dict)]
    assert refs, "no panel names a datasource"
    for ref in refs:
        assert ref["uid"] in provisioned, f"datasource uid {ref['uid']!r} is not provisioned"
        assert ref["type"] == provisioned[ref["uid"]]["type"]


def test_every_panel_has_a_datasource_and_queries():
    for panel in _panels(_dashboard()):
        assert panel.get("datasource"), panel["title"]
        assert panel.get("targets"), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]


def test_queries_use_only_metrics_the_service_exports(exported_metric_names):
    known = exported_metric_names | PROMETHEUS_OWN_METRICS
    for expr in _exprs(_dashboard()):
        unknown = promql_metric_names(expr) - known
        assert not unknown, f"unknown metrics {unknown} in: {expr}"


def test_the_template_variable_query_uses_an_exported_metric(exported_metric_names):
    (model,) = _dashboard()["templating"]["list"]
    metric = re.fullmatch(r"label_values\((\w+), model\)", model["definition"]).group(1)
    assert metric in exported_metric_names


def test_queries_are_valid_promql(tmp_path):
    """promtool parses each query (as a recording rule), with Grafana's variables filled in."""
    promtool = require_tool("promtool")
    exprs = [e.replace("$__rate_interval", "1m").replace("$model", ".*") for e in _exprs(_dashboard())]
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": e} for i, e in enumerate(exprs)
    ]}]}  # fmt: skip
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_shows_what_the_issue_asks_for():
    panels = _panels(_dashboard())

    def exprs_of(predicate) -> str:
        return "\n".join(t["expr"] for p in panels if predicate(p) for t in p["targets"])

    everything = exprs_of(lambda p: True)
    assert "rate(oodserve_requests_total" in everything  # request rate
    for q in ("0.5", "0.95", "0.99"):  # latency percentiles
        assert f"histogram_quantile({q}, sum by (le) (rate(oodserve_request_duration_seconds_bucket" in everything
    assert "oodserve_batch_size_bucket" in everything
    assert "oodserve_queue_depth" in everything
    assert 'oodserve_images_total{verdict="ood"' in everything  # OOD rate per model
    heatmaps = exprs_of(lambda p: p["type"] == "heatmap")
    assert "oodserve_ood_score_bucket" in heatmaps  # OOD-score distribution over time
    assert f"endpoint=~{INFERENCE_ENDPOINTS}" in everything


def test_provisioning_paths_match_the_compose_mounts():
    """Grafana reads dashboards from the folder the provider names, which must be where
    docker-compose.yml mounts docker/grafana/dashboards; the home dashboard must be in it."""
    grafana = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["grafana"]
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in grafana["volumes"] if v.startswith("./"))
    assert mounts["./docker/grafana/provisioning"] == "/etc/grafana/provisioning"
    (provider,) = yaml.safe_load(PROVIDERS.read_text())["providers"]
    assert mounts["./docker/grafana/dashboards"] == provider["options"]["path"]
    env = dict(e.split("=", 1) for e in grafana["environment"])
    home = env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(provider["options"]["path"] + "/")
    assert (GRAFANA_DIR / "dashboards" / home.rsplit("/", 1)[1]).is_file()
