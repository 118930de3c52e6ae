"""Settings come from OODSERVE_* variables, and the README documents every one of them."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError
from servers import REPO

from service.settings import Settings, available_cpus


def test_environment_variables_are_read(monkeypatch):
    monkeypatch.setenv("OODSERVE_PROVIDERS", "CUDAExecutionProvider, CPUExecutionProvider")
    monkeypatch.setenv("OODSERVE_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("OODSERVE_MAX_BATCH_SIZE", "64")
    monkeypatch.setenv("OODSERVE_MODEL_DIR", "/srv/models")
    settings = Settings()
    assert settings.providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert settings.log_level == "debug" and settings.max_batch_size == 64
    assert str(settings.model_dir) == "/srv/models"


def test_one_request_must_fit_one_batch():
    with pytest.raises(ValidationError, match=r"max_files .* must not exceed max_batch_size"):
        Settings(max_files=64, max_batch_size=32)


def test_threads_default_to_the_usable_cpus_shared_by_workers():
    assert 1 <= available_cpus() <= len(os.sched_getaffinity(0))
    assert Settings(workers=1, threads=None).intra_op_threads == available_cpus()
    assert Settings(workers=64, threads=None).intra_op_threads == 1
    assert Settings(threads=3).intra_op_threads == 3


def configuration_table() -> str:
    """The table README.md must contain, generated from the settings class."""

    def default(value: object) -> str:
        if value is None:
            return "auto"
        if isinstance(value, list):
            return ",".join(value)
        return str(value)

    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        rows.append(f"| `OODSERVE_{name.upper()}` | `{default(field.default)}` | {field.description} |")
    return "\n".join(rows)


def test_docs_document_every_setting():
    docs = (REPO / "README.md").read_text()
    for name in Settings.model_fields:
        assert f"OODSERVE_{name.upper()}" in docs, f"README.md does not mention OODSERVE_{name.upper()}"
    table = configuration_table()
    assert table in docs, f"the configuration table in README.md is out of date; it should read:\n{table}"
