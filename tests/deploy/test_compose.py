"""docker-compose.yml: accepted by docker-compose, safe defaults, in step with the settings class."""

from __future__ import annotations

import os
import subprocess

import pytest
import yaml
from deploy_checks import COMPOSE_FILE, ROOT, require_tool

from service.settings import Settings

# Settings the images fix for the container (docker/Dockerfile*), so compose does not pass them.
FIXED_BY_IMAGE = {"host", "port", "model_dir"}


def _compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def _services() -> dict:
    return _compose()["services"]


def _config(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    docker_compose = require_tool("docker-compose")
    return subprocess.run(
        [docker_compose, "-f", str(COMPOSE_FILE), *args, "config", "-q"],
        capture_output=True, text=True, cwd=ROOT, timeout=60, env={**os.environ, **(env or {})},
    )  # fmt: skip


@pytest.mark.parametrize("profiles", [(), ("gpu",), ("gpu", "train")], ids=["default", "gpu", "all"])
def test_docker_compose_accepts_the_file(profiles):
    args = [a for p in profiles for a in ("--profile", p)]
    result = _config(*args)
    assert result.returncode == 0, result.stderr


def test_no_features_only_compose_v2_knows():
    # docker-compose 1.29 rejects a top-level `name`; `version` is obsolete in v2 and only warns.
    assert set(_compose()) <= {"services", "volumes", "networks", "x-oodserve"}


def test_service_environment_is_the_settings_class():
    """Every setting is passed through from the caller's environment, named as the settings class
    names it; a renamed or added field that compose does not pass fails here."""
    expected = {f"OODSERVE_{name.upper()}" for name in Settings.model_fields} - {
        f"OODSERVE_{name.upper()}" for name in FIXED_BY_IMAGE
    }
    for name in ("service", "service-gpu"):
        environment = _services()[name]["environment"]
        # Bare names: compose passes the caller's value when set and nothing otherwise, so unset
        # settings keep the service's own defaults instead of a copy of them in this file.
        assert all("=" not in e for e in environment), environment
        assert set(environment) == expected, f"{name}: differs from service/settings.py"


def test_images_fix_only_real_settings():
    for dockerfile in ("Dockerfile", "Dockerfile.gpu"):
        text = (ROOT / "docker" / dockerfile).read_text()
        for name in FIXED_BY_IMAGE | {"providers"}:
            if f"OODSERVE_{name.upper()}=" in text:
                assert name in Settings.model_fields, f"{dockerfile} sets a setting that does not exist"
        assert "OODSERVE_HOST=0.0.0.0" in text, f"{dockerfile}: would listen on the container's loopback"


def test_ports_listen_on_loopback_by_default():
    for name, service in _services().items():
        for port in service.get("ports", []):
            assert port.startswith("${OODSERVE_BIND:-127.0.0.1}:"), f"{name}: {port}"


def test_grafana_password_comes_from_the_environment():
    env = dict(e.split("=", 1) for e in _services()["grafana"]["environment"])
    assert env["GF_SECURITY_ADMIN_PASSWORD"] == "${GRAFANA_ADMIN_PASSWORD:-}"


def test_profiles():
    services = _services()
    # `docker compose up` starts these; the GPU variant and training only on request.
    assert {n for n, s in services.items() if "profiles" not in s} == {"service", "prometheus", "grafana"}
    assert services["service-gpu"]["profiles"] == ["gpu"]
    for name in ("service-gpu", "train"):
        (device,) = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]


def test_service_hardening_and_health():
    for name in ("service", "service-gpu"):
        service = _services()[name]
        assert service["read_only"] is True and "/tmp" in service["tmpfs"]
        assert service["healthcheck"]["test"] == ["CMD", "python", "/app/healthcheck.py"]
        assert service["volumes"] == ["${OODSERVE_MODELS:-./models}:/app/models:ro"]
        # Longer than the service's default request deadline (10 s), so SIGTERM can drain.
        assert int(service["stop_grace_period"].rstrip("s")) > Settings().deadline_ms / 1000
