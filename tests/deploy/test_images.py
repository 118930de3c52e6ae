"""The Dockerfiles: hadolint-clean, and the properties the serving images promise."""

from __future__ import annotations

import http.server
import re
import socket
import subprocess
import sys
import threading

import pytest
from deploy_checks import DOCKER, ROOT, require_tool

DOCKERFILES = sorted(DOCKER.glob("Dockerfile*"))
SERVING = [DOCKER / "Dockerfile", DOCKER / "Dockerfile.gpu"]


def test_the_three_images_exist():
    assert [p.name for p in DOCKERFILES] == ["Dockerfile", "Dockerfile.gpu", "Dockerfile.train"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_clean(dockerfile):
    hadolint = require_tool("hadolint")
    result = subprocess.run([hadolint, "--no-color", str(dockerfile)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", SERVING, ids=lambda p: p.name)
def test_serving_image_promises(dockerfile):
    text = dockerfile.read_text()
    runtime = text.split(" AS runtime", 1)[1]  # the stage that ships
    assert re.search(r"^USER 10001", runtime, re.M), "runs as root"
    assert 'ENTRYPOINT ["tini", "--"]' in runtime, "SIGTERM must reach uvicorn through tini"
    assert 'CMD ["python", "-m", "service"]' in runtime
    assert re.search(r"^HEALTHCHECK .*healthcheck\.py", runtime, re.M)
    assert "COPY models/ /app/models/" in runtime
    assert "COPY training" not in text, "the serving image needs no training code"
    assert "OODSERVE_THREADS" not in runtime, "threads come from the cgroup CPU quota, not the image"


def test_serving_image_installs_no_torch():
    # The `serve` extra is what the CPU image installs; torch there would add ~1 GB.
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for extra in ("serve", "gpu"):
        assert not any(re.match(r"torch\b", dep) for dep in extras[extra]), extra


class _Handler(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):  # the stdlib calls it by this name
        self.send_response(self.status if self.path == "/readyz" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.parametrize(("status", "exit_code"), [(200, 0), (503, 1)])
def test_healthcheck_script(status, exit_code):
    handler = type("Handler", (_Handler,), {"status": status})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {"OODSERVE_PORT": str(server.server_address[1]), "PATH": ""}
        result = subprocess.run([sys.executable, str(DOCKER / "healthcheck.py")], env=env, timeout=10)
        assert result.returncode == exit_code
    finally:
        server.shutdown()
        server.server_close()


def test_healthcheck_script_fails_when_nothing_listens():
    with socket.socket() as s:  # a free port, closed again: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"OODSERVE_PORT": str(port), "PATH": ""}
    result = subprocess.run([sys.executable, str(DOCKER / "healthcheck.py")], env=env, timeout=10,
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 1
    assert "/readyz" in result.stderr
