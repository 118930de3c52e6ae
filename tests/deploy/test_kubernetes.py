"""deploy/k8s: the manifests validate (schemas, custom resources' structure, checkov) and a broken
copy fails the same check; the alert rules' copy, the shutdown timings and
the resources agree with the service they deploy."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from deploy_checks import ROOT

from service.settings import Settings

K8S = ROOT / "deploy" / "k8s"
DEPLOY_PYTHON = ROOT / ".venv-deploy" / "bin" / "python"  # `make deploy-check` creates it


def deploy_python() -> str:
    if not DEPLOY_PYTHON.exists():
        message = f"{DEPLOY_PYTHON} is missing: `make deploy-check` installs the Kubernetes checks' tools"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI runs it first")
        pytest.skip(message)
    return str(DEPLOY_PYTHON)


def run_check(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [deploy_python(), str(K8S / "check.py"), str(root)], capture_output=True, text=True, timeout=300, check=False
    )


def test_every_manifest_validates():
    result = run_check(K8S)
    assert result.returncode == 0, result.stdout + result.stderr
    for resource in ("base: Deployment", "base: PodMonitor", "base: PrometheusRule", "kserve: ServingRuntime"):
        assert f"ok   {resource}/oodserve" in result.stdout, resource


BREAKAGES = {
    "schema": ("base/deployment.yaml", "replicas: 2", "replicas: two", "spec/replicas"),
    "linter": ("base/deployment.yaml", "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false", "CKV_K8S_22"),
    "custom resource": ("base/podmonitor.yaml", "podMetricsEndpoints:", "endpoints:", "podMetricsEndpoints must"),
    "kustomize": ("base/kustomization.yaml", "  - pdb.yaml", "  - missing.yaml", "missing.yaml"),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_a_broken_copy_fails_the_check(tmp_path, breakage):
    file, good, bad, reported = BREAKAGES[breakage]
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    text = (copy / file).read_text()
    assert good in text, f"{file} no longer contains {good!r}: update this test"
    (copy / file).write_text(text.replace(good, bad, 1))
    result = run_check(copy)
    assert result.returncode == 1 and reported in result.stdout + result.stderr, result.stdout + result.stderr


def test_prometheus_rule_is_generated_from_the_alert_rules():
    spec = importlib.util.spec_from_file_location("prometheusrule", K8S / "prometheusrule.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (K8S / "base" / "prometheusrule.yaml").read_text() == module.render(), (
        "run python deploy/k8s/prometheusrule.py"
    )


def deployment() -> dict:
    return yaml.safe_load((K8S / "base" / "deployment.yaml").read_text())


def container_settings(container: dict) -> Settings:
    """The settings the container's environment gives the service (so they are valid, too)."""
    env = {e["name"].removeprefix("OODSERVE_").lower(): e["value"] for e in container["env"]}
    return Settings(**env)


def test_grace_period_covers_the_drain_and_no_pre_stop_doubles_it():
    pod = deployment()["spec"]["template"]["spec"]
    container = pod["containers"][0]
    s = container_settings(container)
    after_sigterm = s.drain_delay_s + s.body_timeout_s + s.deadline_ms / 1000
    assert pod["terminationGracePeriodSeconds"] > after_sigterm
    assert "preStop" not in container.get("lifecycle", {})  # the service drains itself (deployment.yaml says why)
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert s.model_poll_s > 0 and str(s.model_dir) == container["volumeMounts"][0]["mountPath"]


def mebibytes(quantity: str) -> float:
    units = {"Mi": 1, "Gi": 1024}
    return float(quantity[:-2]) * units[quantity[-2:]]


def test_memory_limit_covers_the_documented_bound():
    """docs/service.md: peak - idle <= 2 x MAX_UPLOAD_BYTES + DECODE_MEMORY_MB + threads x DECODE_MEMORY_MB / 64,
    over an idle worker of about 290 MiB (the bundled models, the photo model v3's pretrained branch included)."""
    container = deployment()["spec"]["template"]["spec"]["containers"][0]
    s = container_settings(container)
    threads = s.decode_threads or 4  # the default: CPUs available, at most 4
    bound = 2 * s.max_upload_bytes / 2**20 + s.decode_memory_mb + threads * s.decode_memory_mb / 64
    requests, limits = (mebibytes(container["resources"][k]["memory"]) for k in ("requests", "limits"))
    assert requests >= 290 + bound * s.workers and limits > requests
