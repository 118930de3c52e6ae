"""Grafana provisioning: the datasource and dashboards load, refer to each other, and query only
metrics the service exports, with labels a real server's /metrics has. (No Grafana runs here;
these are the checks a broken file fails.)"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator

import httpx
import pytest
import yaml
from deploy_checks import (
    COMPOSE_FILE,
    GRAFANA_DIR,
    INFERENCE_ENDPOINTS,
    PROMETHEUS_DIR,
    PROMETHEUS_OWN_METRICS,
    ROOT,
    promql_metric_names,
    require_tool,
)
from prometheus_client.parser import text_string_to_metric_families
from samples import digit_png, encode, photo
from servers import ServerThread, settings_for

DASHBOARDS = sorted((GRAFANA_DIR / "dashboards").glob("*.json"))
DATASOURCES = GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = GRAFANA_DIR / "provisioning" / "dashboards" / "oodserve.yml"
# A selector `name{matchers}` and one of its matchers `label op "value"`.
_SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


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


def _all_exprs() -> list[str]:
    return [e.replace("$model", ".*") for path in DASHBOARDS for e in _exprs(json.loads(path.read_text()))]


def _panels(dashboard: dict) -> list[dict]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def target_labels() -> set[str]:
    """Labels Prometheus adds to every scraped series: job, instance and the relabelled ones."""
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "oodserve"]
    return {"job", "instance"} | {rule["target_label"] for rule in job.get("relabel_configs", [])}


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, str]]]:
    """A real server's /metrics after a digit (in-distribution) and a photo (OOD) went through
    /predict: each sample name with the label sets it has."""
    models = tmp_path_factory.mktemp("models")
    for path in (ROOT / "models").glob("*.onnx"):
        shutil.copy(path, models / path.name)
    with ServerThread(settings_for(models)) as server:
        for data in (digit_png(0)[0], encode(photo("chelsea").resize((64, 64)))):
            response = httpx.post(f"{server.url}/predict", content=data, headers={"content-type": "image/png"})
            assert response.status_code == 200, response.text
        samples: dict[str, list[dict[str, str]]] = {}
        for family in text_string_to_metric_families(server.metrics()):
            for sample in family.samples:
                samples.setdefault(sample.name, []).append(sample.labels)
    verdicts = {labels["verdict"] for labels in samples["oodserve_images_total"]}
    assert verdicts == {"in", "ood"}, f"the two images should give both verdicts, got {verdicts}"
    return samples


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
    for expr in _all_exprs():
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


def test_dashboard_shows_traffic_verdicts_latency_and_models():
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


def matches(op: str, value: str, actual: str | None) -> bool:
    """Whether a PromQL matcher selects a series whose label is ``actual`` (None: no such label)."""
    actual = actual or ""
    hit = re.fullmatch(value, actual) is not None if op in ("=~", "!~") else value == actual
    return hit if op in ("=", "=~") else not hit


def test_every_selector_matches_what_a_real_server_exports(scraped):
    """A selector whose metric, label or value the service does not export shows an empty panel
    and no error. Status codes are only checked to be codes: a scrape after two good requests has
    no 5xx to match."""
    for expr in _all_exprs():
        for name, body in _SELECTOR.findall(expr):
            if name in PROMETHEUS_OWN_METRICS:
                continue
            assert name in scraped, f"{name} is not in a real /metrics, in: {expr}"
            for label, op, value in _MATCHER.findall(body):
                if label == "status":
                    assert any(matches(op, value, str(code)) for code in range(100, 600)), expr
                    continue
                assert any(matches(op, value, labels.get(label)) for labels in scraped[name]), (
                    f'{name}{{{label}{op}"{value}"}} matches no sample of a real /metrics, in: {expr}'
                )


def test_every_grouping_label_is_on_the_series_it_groups(scraped):
    for expr in _all_exprs():
        names = promql_metric_names(expr) - PROMETHEUS_OWN_METRICS
        present = target_labels() | {label for name in names for labels in scraped[name] for label in labels}
        for grouping in _GROUPING.findall(expr):
            labels = {label.strip() for label in grouping.split(",")}
            assert labels <= present, f"no series has {sorted(labels - present)}, in: {expr}"
