"""The service's Prometheus metrics. The names are a contract: alerts and dashboards in docker/ query them.

With several workers ``/metrics`` merges every worker's values (service/metrics/workers.py).
"""

from __future__ import annotations

import os

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from modelfile import ModelMetadata
from service.metrics.score_histogram import ScoreHistograms
from service.metrics.workers import drop_dead_workers, multiprocess_dir

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
FAST_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = tuple(float(2**i) for i in range(9))  # 1, 2, 4, ..., 256
# oodserve_ood_score's buckets come with each model (service/metrics/score_histogram.py): scores differ by method.
P_VALUE_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


class Metrics:
    """All of the service's metrics, registered in one registry per app (so tests can run several)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._declare_http(self.registry)
        self._declare_batching(self.registry)
        self._declare_verdicts(self.registry)

    def _declare_http(self, r: CollectorRegistry) -> None:
        self.requests = Counter(
            "oodserve_requests",
            "HTTP requests answered, by route template, model and status code",
            ["endpoint", "model", "status"],
            registry=r,
        )
        self.request_duration = Histogram(
            "oodserve_request_duration_seconds",
            "Time from request start to the end of the response",
            ["endpoint", "model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    def _declare_batching(self, r: CollectorRegistry) -> None:
        self.queue_wait = Histogram(
            "oodserve_queue_wait_seconds",
            "Time a request waited in the batcher's queue",
            ["model"],
            buckets=FAST_BUCKETS,
            registry=r,
        )
        self.inference_duration = Histogram(
            "oodserve_inference_duration_seconds",
            "Time onnxruntime took for one batch",
            ["model"],
            buckets=FAST_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "oodserve_batch_size",
            "Images per inference batch",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "oodserve_queue_depth",
            "Images waiting in the batcher's queue (summed over workers)",
            ["model"],
            multiprocess_mode="livesum",
            registry=r,
        )

    def _declare_verdicts(self, r: CollectorRegistry) -> None:
        self.images = Counter(
            "oodserve_images",
            "Images classified, by verdict (in = in-distribution, ood = rejected)",
            ["model", "verdict"],
            registry=r,
        )
        self.ood_score = ScoreHistograms(r)
        self.p_value = Histogram(
            "oodserve_ood_p_value",
            "Conformal p-value of each image's OOD score against calibration",
            ["model"],
            buckets=P_VALUE_BUCKETS,
            registry=r,
        )
        self.model_loads = Counter(
            "oodserve_model_loads",
            "Model versions loaded into service, refused by the checks, or unloaded",
            ["model", "result"],
            registry=r,
        )
        self.model_info = Gauge(
            "oodserve_model_info",
            "A served model (always 1); its metadata is in the labels",
            ["model", "version", "method", "score", "dataset"],
            multiprocess_mode="livemax",
            registry=r,
        )

    def for_model(self, metadata: ModelMetadata, name: str | None = None) -> ModelMetrics:
        """The model's metrics, labelled ``name`` (the name it is served under; default: its metadata's)."""
        name = name or metadata.name
        self.ood_score.add(metadata, name)
        self.model_info.labels(name, metadata.version, metadata.method, metadata.score, metadata.dataset).set(1)
        return ModelMetrics(self, name)

    def observe_request(self, endpoint: str, model: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, model, str(status)).inc()
        self.request_duration.labels(endpoint, model).observe(seconds)

    def exposition(self) -> tuple[bytes, str]:
        """The text exposition: this process's registry, or every worker's when multiprocess."""
        if directory := multiprocess_dir():
            drop_dead_workers(directory)
            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged)
            return generate_latest(merged), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    @staticmethod
    def process_exiting() -> None:
        # Drops this worker's `livesum`/`livemax` gauge files so its queue depth stops counting.
        if multiprocess_dir():
            multiprocess.mark_process_dead(os.getpid())


class ModelMetrics:
    """The children of :class:`Metrics` for one model, handed to that model's batcher."""

    def __init__(self, metrics: Metrics, model: str):
        self.queue_wait = metrics.queue_wait.labels(model)
        self.inference_duration = metrics.inference_duration.labels(model)
        self.batch_size = metrics.batch_size.labels(model)
        self.queue_depth = metrics.queue_depth.labels(model)
        self._in = metrics.images.labels(model, "in")
        self._ood = metrics.images.labels(model, "ood")
        self._ood_score = metrics.ood_score.labels(model)
        self._p_value = metrics.p_value.labels(model)

    def observe_verdicts(self, ood_scores: np.ndarray, p_values: np.ndarray, is_ood: np.ndarray) -> None:
        n_ood = int(np.count_nonzero(is_ood))
        self._ood.inc(n_ood)
        self._in.inc(len(is_ood) - n_ood)
        for score, p in zip(ood_scores.tolist(), p_values.tolist(), strict=True):
            self._ood_score.observe(score)
            self._p_value.observe(p)
