"""Prometheus configuration and alerting rules: valid, unit-tested, and in step with the service."""

from __future__ import annotations

import subprocess

import pytest
import yaml
from deploy_checks import (
    INFERENCE_ENDPOINTS,
    PROMETHEUS_DIR,
    PROMETHEUS_OWN_METRICS,
    promql_metric_names,
    require_tool,
)

ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERT_TESTS = PROMETHEUS_DIR / "tests" / "alerts_test.yml"
CONFIG = PROMETHEUS_DIR / "prometheus.yml"


def _rules() -> list[dict]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def _alerts() -> list[dict]:
    return [rule for rule in _rules() if "alert" in rule]


def _promtool(*args: str) -> subprocess.CompletedProcess:
    promtool = require_tool("promtool")
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=120)


def test_promql_metric_names_reader():
    # The reader the name checks below trust, on the shapes of expression they meet.
    assert promql_metric_names(
        'histogram_quantile(0.99, sum by (model, le) (rate(x_bucket{endpoint=~"/a|b"}[5m])))'
    ) == {"x_bucket"}
    expr = "a:rec > 3 * b_total offset 1h and up{job='x'} == 0 unless on (m) absent(c)"
    assert promql_metric_names(expr) == {"a:rec", "b_total", "up", "c"}
    assert promql_metric_names("sum(rate(x[$__rate_interval])) / 1e3") == {"x"}


def test_config_and_rules_pass_promtool_check():
    result = _promtool("check", "config", str(CONFIG))  # also checks the rule files it loads
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_unit_tests_pass():
    result = _promtool("test", "rules", str(ALERT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_required_alerts_exist():
    names = {a["alert"] for a in _alerts()}
    assert {
        "OODServeOODRateSurge",
        "OODServeHighErrorRate",
        "OODServeHighLatencyP99",
        "OODServeQueueSaturated",
        "OODServeTargetDown",
    } <= names


def test_every_alert_is_tested_firing_and_silent():
    """Each alert needs a case where it fires and one where it must not (a rule that never fires
    passes every "silent" case)."""
    firing, silent = set(), set()
    for case in yaml.safe_load(ALERT_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    for alert in _alerts():
        name = alert["alert"]
        assert name in firing, f"{name}: no unit test in which it fires"
        assert name in silent, f"{name}: no unit test in which it stays silent"


def test_rules_use_only_metrics_the_service_exports(exported_metric_names):
    recorded = {rule["record"] for rule in _rules() if "record" in rule}
    known = exported_metric_names | recorded | PROMETHEUS_OWN_METRICS
    for rule in _rules():
        unknown = promql_metric_names(rule["expr"]) - known
        assert not unknown, f"{rule.get('alert') or rule.get('record')}: unknown metrics {unknown}"


@pytest.mark.parametrize("alert", _alerts(), ids=lambda a: a["alert"])
def test_alert_is_actionable(alert):
    assert alert["labels"]["severity"] in {"warning", "critical"}
    assert alert["annotations"]["summary"] and alert["annotations"]["description"]
    assert alert.get("for"), "without `for:` one bad scrape or evaluation pages someone"


def test_request_ratios_count_inference_routes_only():
    # Probes and /metrics scrapes are requests too; a ratio over all requests would dilute errors.
    for alert in _alerts():
        if "oodserve_request" in alert["expr"]:
            assert f"endpoint=~{INFERENCE_ENDPOINTS}" in alert["expr"], alert["alert"]


def test_scrape_config_finds_the_compose_services():
    config = yaml.safe_load(CONFIG.read_text())
    assert "alerts.yml" in config["rule_files"]
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "oodserve"]
    (sd,) = job["dns_sd_configs"]
    # The names are docker-compose.yml's service names; TargetDown/Absent alerts use this job name.
    assert set(sd["names"]) == {"service", "service-gpu"}
    assert sd["port"] == 8000
