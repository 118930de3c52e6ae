"""The declared runtime helper of the contract: the one way an onnxruntime session is opened for a model
file, and the metadata read through it. onnxruntime is imported when a function here is called, so the
schema stays importable without it."""

from __future__ import annotations

from pathlib import Path

from .schema import InvalidModelFile, ModelMetadata, metadata_from_props


def open_session(path: str | Path, *, threads: int | None = None, providers: list[str] | None = None):
    """The one way an onnxruntime session is opened for a model file (the service's runtime, metadata
    reads, the exporter's calibration, evaluation). ``threads``: intra-op threads, sequential execution,
    no spinning (the service's settings); None leaves onnxruntime's defaults. Providers that this
    onnxruntime lacks are dropped (CPU if none is left). A file that does not load raises
    ``InvalidModelFile`` naming it."""
    import onnxruntime as ort  # here, not at the top: the exporter imports this module too

    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # onnxruntime's own warnings; callers say what matters
    if threads is not None:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Idle intra-op threads otherwise spin for a while after each batch; on a machine that also
        # decodes images (or trains models) that burns CPU for a few microseconds of latency.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    available = ort.get_available_providers()
    usable = [p for p in providers or [] if p in available] or ["CPUExecutionProvider"]
    try:
        return ort.InferenceSession(str(path), opts, providers=usable)
    except Exception as e:  # onnxruntime raises Fail/InvalidGraph/InvalidProtobuf/NoSuchFile
        raise InvalidModelFile(f"{Path(path).name}: not a loadable ONNX model ({e})") from None


def read_metadata(path: str | Path) -> ModelMetadata:
    """Read and validate the metadata of an ONNX file (the service's runtime reads ``metadata_props``
    without the ``onnx`` package)."""
    return metadata_from_props(open_session(path).get_modelmeta().custom_metadata_map)
