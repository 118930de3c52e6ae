"""The model file: the one contract between ``training/`` and ``service/`` (docs/model-format.md).

An oodserve model is one ONNX file whose graph maps ``images`` to ``probabilities``, ``ood_score`` and
``logits`` (``signature``: names, dtypes, shapes), and whose metadata (``schema``, written by ``propsfile``)
says what the service needs beyond the graph: the input, the classes, and the ``Calibration`` that turns a
score into a verdict. ``guard`` holds the input-domain guard's constants; ``session`` opens a file in
onnxruntime (the one module here that uses it, on call). Neither torch nor onnxruntime is imported by
importing this package.
"""

from .guard import DOMAIN_TOLERANCE, OUT_OF_DOMAIN_SCORE
from .propsfile import write_metadata
from .schema import (
    CALIBRATION_QUANTILES,
    HISTOGRAM_BINS,
    ID_ROW,
    METADATA_KEY,
    SCHEMA_VERSION,
    Calibration,
    ClassifierInput,
    Evaluation,
    FeatureSource,
    InputSpec,
    InvalidModelFile,
    ModelMetadata,
    OODResult,
    PostHoc,
    PostHocScore,
    Recalibration,
    ScoreHistograms,
    metadata_from_props,
)
from .session import open_session, read_metadata
from .signature import INPUT_NAME, OUTPUT_NAMES

__all__ = [
    "CALIBRATION_QUANTILES",
    "DOMAIN_TOLERANCE",
    "HISTOGRAM_BINS",
    "ID_ROW",
    "INPUT_NAME",
    "METADATA_KEY",
    "OUTPUT_NAMES",
    "OUT_OF_DOMAIN_SCORE",
    "SCHEMA_VERSION",
    "Calibration",
    "ClassifierInput",
    "Evaluation",
    "FeatureSource",
    "InputSpec",
    "InvalidModelFile",
    "ModelMetadata",
    "OODResult",
    "PostHoc",
    "PostHocScore",
    "Recalibration",
    "ScoreHistograms",
    "metadata_from_props",
    "open_session",
    "read_metadata",
    "write_metadata",
]
