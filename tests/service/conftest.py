"""Fixtures for the service tests: a model directory with the bundled models (plus an RGB stand-in
for colour handling) and one shared real server for the tests that need no special settings."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from servers import DEFAULT_MODEL, REPO, RGB_MODEL, SHARED_LIMITS, ServerThread, settings_for
from stand_in import metadata, write_model


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled models, copied so tests can add files beside them, plus an RGB stand-in."""
    bundled = sorted((REPO / "models").glob("*.onnx"))
    if not any(p.stem == DEFAULT_MODEL for p in bundled):
        pytest.fail(
            f"models/{DEFAULT_MODEL}.onnx is missing: the service tests run against the bundled "
            "model (`make models` builds it)"
        )
    directory = tmp_path_factory.mktemp("models")
    for path in bundled:
        shutil.copy(path, directory / path.name)
    write_model(
        directory / f"{RGB_MODEL}.onnx", metadata(RGB_MODEL, channels=3, height=32, width=24, resize="letterbox")
    )
    return directory


@pytest.fixture(scope="session")
def server(model_dir: Path) -> Iterator[ServerThread]:
    """One real server shared by the tests that only send requests."""
    with ServerThread(settings_for(model_dir, **SHARED_LIMITS)) as running:
        yield running


@pytest.fixture
def client(server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c
