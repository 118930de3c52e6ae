"""What the service tests share: names, settings, and real servers — the app under uvicorn on a
free loopback port, in a thread of the test process or as a ``python -m service`` subprocess (for
signals and workers).

Tests synchronise by polling a condition with a deadline (``wait_until``), never by sleeping.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
import uvicorn

from service.app import create_app
from service.settings import Settings

REPO = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = "mnist-acet-lenet"
RGB_MODEL = "rgb-stand-in"  # written next to the bundled models by the model_dir fixture
# Small limits on the shared server keep the oversize tests cheap.
SHARED_LIMITS = {"max_upload_bytes": 2 * 1024 * 1024, "max_pixels": 4_000_000, "max_files": 8}
T = TypeVar("T")


def settings_for(model_dir: Path, **overrides: object) -> Settings:
    """Settings for a test server: one intra-op thread, so tests leave CPU to each other."""
    return Settings(model_dir=model_dir, **{"threads": 1, **overrides})


def require_tool(name: str) -> str:
    """Path of an external program, or skip (fail under CI, which installs it) when it is absent."""
    path = shutil.which(name)
    if path is None:
        message = f"`{name}` is not installed (Debian: apt-get install prometheus)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must have it")
        pytest.skip(message)
    return path


def wait_until(condition: Callable[[], T], timeout: float = 20.0, what: str = "the condition") -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)  # the polling interval: the one sleep the test suite has


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(url: str, status: int = 200) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == status
    except httpx.TransportError:
        return False


class ServerThread:
    """``create_app(settings)`` served by uvicorn in a background thread of this process."""

    def __init__(self, settings: Settings, *, wait_ready: bool = True):
        self.settings = settings
        self.app = create_app(settings)
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", lifespan="on"))
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._socket]}, daemon=True)
        self._wait_ready = wait_ready

    def __enter__(self) -> ServerThread:
        self._thread.start()
        wait_until(lambda: self.server.started or not self._thread.is_alive(), what="uvicorn to start")
        assert self._thread.is_alive(), "uvicorn exited during startup"
        if self._wait_ready:
            wait_until(lambda: answers(f"{self.url}/readyz"), what=f"{self.url}/readyz to say ready")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=30)
        self._socket.close()

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics", timeout=10).text


class ServerProcess:
    """``python -m service`` as a subprocess, configured through ``OODSERVE_*`` variables."""

    def __init__(self, env: dict[str, str], *, wait_ready: bool = True):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._env = {**os.environ, "OODSERVE_HOST": "127.0.0.1", "OODSERVE_PORT": str(self.port), **env}
        self._wait_ready = wait_ready
        self.log: list[str] = []
        self._log_changed = threading.Condition()

    def __enter__(self) -> ServerProcess:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service"],
            cwd=REPO,
            env=self._env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read_log, daemon=True).start()
        if self._wait_ready:
            wait_until(
                lambda: answers(f"{self.url}/readyz") or self.process.poll() is not None,
                timeout=60,
                what=f"{self.url}/readyz to say ready",
            )
            assert self.process.poll() is None, "server exited during startup:\n" + "".join(self.log)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def _read_log(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._log_changed:
                self.log.append(line)
                self._log_changed.notify_all()

    def wait_for_log(self, pattern: str, timeout: float = 30.0) -> str:
        """Block until a log line matches ``pattern`` (woken by each new line, no polling)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._log_changed:
            while True:
                for line in self.log:
                    if regex.search(line):
                        return line
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"no log line matching {pattern!r} within {timeout:.0f} s:\n" + "".join(self.log)
                    )
                self._log_changed.wait(left)


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``, in an exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )
