"""The service's configuration: one class, read from ``OODSERVE_*`` environment variables.

docs/service.md carries a table of these fields; tests/service/test_service_settings.py keeps it in step.
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

    model_dir: Path = Field(
        Path("models"),
        description="the model repository: `NAME/VERSION/model.onnx` (Triton's layout) and flat `NAME.onnx` "
        "files (version 1)",
    )
    # The model repository's lifecycle: how versions go live (docs/service.md, "Model versions").
    model_versions: int = Field(
        1, ge=0, description="newest versions of each model that are served (Triton's `latest: N`); 0 serves all"
    )
    model_poll_s: float = Field(
        0.0,
        ge=0,
        le=86_400,
        description="seconds between scans of `model_dir` for new, changed and removed versions, which are "
        "loaded, checked and warmed up before they take traffic; 0 turns polling off",
    )
    model_repository_api: bool = Field(
        False,
        description="enable the Open Inference Protocol's model repository extension (`/v2/repository/...`: "
        "index, load, unload); off, those paths answer 403. Needs `workers` = 1",
    )
    default_model: str = Field("mnist-acet-lenet", description="model used when a request names none")
    ui: bool = Field(
        True,
        description="serve the pages for people: `/` (upload images, see each verdict and why) and `/card/NAME` "
        "(a model's card); off, those paths answer 404 and nothing else changes",
    )
    max_batch_size: int = Field(32, ge=1, le=4096, description="most images in one inference batch")
    max_delay_ms: float = Field(
        5.0,
        ge=0,
        le=10_000,
        description="longest the oldest queued request waits for a fuller batch while more requests are on "
        "their way (decoding)",
    )
    batch_wait_when_idle: bool = Field(
        False,
        description="wait up to `max_delay_ms` for a fuller batch even when no more requests are on their way "
        "(default: a free model takes what is queued at once, unless requests are decoding)",
    )
    max_queue: int = Field(
        256, ge=1, description="most images waiting per model and worker; beyond it requests get 503"
    )
    deadline_ms: float = Field(10_000, gt=0, description="a request not answered within this time gets 504")
    max_upload_bytes: int = Field(
        20 * 1024 * 1024, ge=1024, description="largest request body (all files together) in bytes"
    )
    max_pixels: int = Field(50_000_000, ge=1, description="largest image (width x height), checked before decoding")
    max_image_side: int = Field(20_000, ge=1, description="longest image side in pixels, checked before decoding")
    max_aspect_ratio: float = Field(
        100.0, ge=1, description="largest ratio of an image's long side to its short side, checked before decoding"
    )
    decode_threads: int | None = Field(
        None, ge=1, description="threads that decode images; default: CPUs available, at most 4"
    )
    decode_memory_mb: int = Field(
        512,
        ge=16,
        description="memory the decodes in flight may hold together (each image's cost is read from its header: "
        "8 bytes a pixel); images wait for their share",
    )
    max_decode_queue: int = Field(
        256, ge=1, description="most images waiting for or in decoding per worker; beyond it requests get 503"
    )
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
    # Connections and shutdown; the ones marked `python -m service` only configure its uvicorn server.
    drain_delay_s: float = Field(
        5.0,
        ge=0,
        le=600,
        description="after SIGTERM: seconds `/readyz` answers 503 while new connections are still served, "
        "before the listener closes (what a Kubernetes endpoint removal needs; SIGINT skips it)",
    )
    keep_alive_timeout_s: float = Field(
        5.0,
        gt=0,
        le=3600,
        description="an idle connection (no request started) is closed after this (`python -m service` only)",
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="a request's line and headers must arrive within this after their first byte, else 408 "
        "(`python -m service` only)",
    )
    body_timeout_s: float = Field(
        30.0, gt=0, le=3600, description="a request's body must arrive within this after its headers, else 408"
    )
    max_header_bytes: int = Field(
        64 * 1024,
        ge=1024,
        le=16 * 1024 * 1024,
        description="largest request line + headers, else 431 (`python -m service` only)",
    )
    max_connections: int = Field(
        1000,
        ge=1,
        description="open connections (or running requests) per worker beyond which requests get 503 "
        "(`python -m service` only)",
    )
    backlog: int = Field(
        2048,
        ge=1,
        description="connections the kernel queues before the service accepts them (`python -m service` only)",
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        "info", description="log level of the service and uvicorn"
    )
    access_log: bool = Field(
        False,
        description="log a line per request (uvicorn's access log; `python -m service` only). Off by default: at "
        "saturation it costs about 7 % of the CPU, and the request metrics count every request by route and status",
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

    @model_validator(mode="after")
    def _repository_api_with_one_worker(self) -> Settings:
        # Each worker has its own models: a load or unload would change only the worker that got it.
        if self.model_repository_api and self.workers > 1:
            raise ValueError(
                f"model_repository_api needs workers = 1 (got {self.workers}): each worker process serves its "
                "own copy of the models, and a load or unload request reaches only one of them; with several "
                "workers use model_poll_s, which every worker follows"
            )
        return self

    @property
    def decode_thread_count(self) -> int:
        return self.decode_threads or min(4, available_cpus())

    @property
    def intra_op_threads(self) -> int:
        return self.threads or max(1, available_cpus() // self.workers)
