"""The service's configuration: one class, read from ``OODSERVE_*`` environment variables.

docs/service.md carries a table of these fields; tests/service/test_settings.py keeps it in step.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def available_cpus() -> int:
    """CPUs this process may really use: its affinity mask, capped by a cgroup CPU quota.

    ``os.cpu_count()`` reports the host's cores; in a container limited to 2 CPUs on a 64-core
    host, 64 intra-op threads would fight over 2 CPUs' worth of time slices.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return cpus


def _cgroup_cpu_quota() -> float | None:
    """The CPU quota in CPUs from cgroup v2 ``cpu.max`` or v1 ``cfs_quota_us``; None when unlimited."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


class Settings(BaseSettings):
    """Every knob of the service. Each field is the environment variable ``OODSERVE_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="OODSERVE_", protected_namespaces=(), frozen=True)

    model_dir: Path = Field(Path("models"), description="directory whose `*.onnx` files are served")
    default_model: str = Field("mnist-acet-lenet", description="model used when a request names none")
    max_batch_size: int = Field(32, ge=1, le=4096, description="most images in one inference batch")
    max_delay_ms: float = Field(
        5.0, ge=0, le=10_000, description="longest the oldest queued request waits for a fuller batch"
    )
    max_queue: int = Field(
        256, ge=1, description="most images waiting per model and worker; beyond it requests get 503"
    )
    deadline_ms: float = Field(10_000, gt=0, description="a request not answered within this time gets 504")
    max_upload_bytes: int = Field(
        20 * 1024 * 1024, ge=1024, description="largest request body (all files together) in bytes"
    )
    max_pixels: int = Field(50_000_000, ge=1, description="largest image (width x height), checked before decoding")
    max_files: int = Field(16, ge=1, description="most images in one `/predict` request")
    threads: int | None = Field(
        None,
        ge=1,
        description="onnxruntime intra-op threads per model; default: CPUs available (affinity, cgroup "
        "quota) divided by workers",
    )
    providers: Annotated[list[str], NoDecode] = Field(
        ["CPUExecutionProvider"],
        min_length=1,
        description="onnxruntime execution providers in order of preference, comma-separated, e.g. "
        "`CUDAExecutionProvider,CPUExecutionProvider`",
    )
    workers: int = Field(1, ge=1, description="uvicorn worker processes (`python -m service` only)")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        "info", description="log level of the service and uvicorn"
    )
    host: str = Field("127.0.0.1", description="address to listen on (`python -m service` only)")
    port: int = Field(8000, ge=0, le=65535, description="port to listen on (`python -m service` only)")

    @field_validator("providers", mode="before")
    @classmethod
    def _split_providers(cls, v: object) -> object:
        if isinstance(v, str):
            return [p.strip() for p in v.split(",") if p.strip()]
        return v

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_log_level(cls, v: object) -> object:
        return v.lower() if isinstance(v, str) else v

    @model_validator(mode="after")
    def _one_request_fits_one_batch(self) -> Settings:
        # A request's images are batched together (accepted or refused as a whole), so one request
        # must fit into one batch.
        if self.max_files > self.max_batch_size:
            raise ValueError(
                f"max_files ({self.max_files}) must not exceed max_batch_size ({self.max_batch_size}): "
                "the images of one request go to the model in one batch"
            )
        return self

    @property
    def intra_op_threads(self) -> int:
        return self.threads or max(1, available_cpus() // self.workers)
