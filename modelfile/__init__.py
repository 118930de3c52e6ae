"""The model file: the one contract between ``training/`` and ``service/`` (docs/model-format.md).

An oodserve model is one ONNX file whose graph maps ``images`` to ``probabilities``, ``ood_score`` and
``logits``, and whose metadata (``schema``) says what the service needs beyond the graph: the input, the
classes, and the ``Calibration`` that turns a score into a verdict. ``guard`` holds the input-domain
guard's constants; ``session`` opens a file in onnxruntime (the one module here that uses it, on call).
Neither torch nor onnxruntime is imported by importing this package.
"""

from .guard import DOMAIN_TOLERANCE, OUT_OF_DOMAIN_SCORE
from .schema import (
    CALIBRATION_QUANTILES,
    INPUT_NAME,
    METADATA_KEY,
    OUTPUT_NAMES,
    SCHEMA_VERSION,
    Calibration,
    Evaluation,
    InputSpec,
    InvalidModelFile,
    ModelMetadata,
    OODResult,
    Recalibration,
    check_graph_signature,
    metadata_from_props,
)
from .session import open_session, read_metadata

__all__ = [
    "CALIBRATION_QUANTILES", "DOMAIN_TOLERANCE", "INPUT_NAME", "METADATA_KEY", "OUTPUT_NAMES", "OUT_OF_DOMAIN_SCORE",
    "SCHEMA_VERSION", "Calibration", "Evaluation", "InputSpec", "InvalidModelFile", "ModelMetadata", "OODResult",
    "Recalibration",     "check_graph_signature", "metadata_from_props", "open_session", "read_metadata",
]
