"""Response bodies of the service's own endpoints, documented field by field in the OpenAPI schema.

The Open Inference Protocol's bodies live with that protocol in ``service/http/v2_inference.py``, the error
body and its documentation in ``service/http/errors.py``.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from modelfile import Evaluation, InputSpec, PostHoc, Recalibration, ScoreHistograms


class Prediction(BaseModel):
    filename: str | None = Field(None, description="the uploaded file's name, when it had one")
    label: str = Field(description="the most probable class")
    class_index: int = Field(description="index of `label` in the model's class list")
    confidence: float = Field(description="probability of `label`")
    probabilities: dict[str, float] = Field(
        description="class name -> probability: every class in class order, or with `top_k` the `top_k` "
        "most probable classes, most probable first"
    )
    ood_score: float = Field(description="out-of-distribution score; higher means less like the training data")
    threshold: float = Field(description="the model's calibrated threshold: `is_ood = ood_score > threshold`")
    p_value: float = Field(
        description="conformal p-value: share of in-distribution calibration images scoring at least "
        "`ood_score`; small values mean unusual input"
    )
    is_ood: bool = Field(description="the reject flag: do not trust `label` when true")


class PredictResponse(BaseModel):
    model: str = Field(description="name of the model that answered")
    model_version: str = Field(description="version of that model")
    predictions: list[Prediction] = Field(description="one entry per image, in upload order")


class ModelInfo(BaseModel):
    name: str
    version: str = Field(description="the repository's version: `NAME/VERSION/model.onnx`, 1 for a flat `NAME.onnx`")
    default: bool = Field(description="whether requests that name no model (and no version) get this one")
    model_version: str = Field(description="the version the model file's metadata gives (informational)")
    source: str = Field(description="the file it was loaded from, relative to the model directory")
    method: str = Field(description="training method (informational)")
    score: str = Field(description="what `ood_score` measures")
    dataset: str = Field(description="the in-distribution training data")
    architecture: str | None = None
    created: str | None = None
    precision: str = Field(description="`fp32`, or `int8` for a quantized file (`training.export --quantize int8`)")
    quantized_from: str | None = Field(None, description="an int8 file's source: the checkpoint it was exported from")
    classes: list[str] = Field(description="class names, in output order")
    input: InputSpec = Field(description="how uploaded images are converted before inference")
    threshold: float = Field(description="`is_ood = ood_score > threshold`")
    tpr: float = Field(description="share of in-distribution validation images accepted at the threshold")
    calibration_split: str = Field(description="data the threshold was calibrated on")
    calibration_images: int = Field(description="how many in-distribution images the threshold was set on")
    calibration_histogram: ScoreHistograms = Field(
        description="their OOD scores as a histogram (row `calibration`, read off the file's p-value table): "
        "where an image's `ood_score` falls among in-distribution images"
    )
    recalibration: Recalibration | None = Field(
        None, description="where the threshold was set again after export (`python -m modelfile recalibrate`)"
    )
    training_negatives: list[str] | None = Field(
        None, description="the kinds of out-of-distribution input training showed the network; null: not recorded"
    )
    posthoc: PostHoc | None = Field(
        None,
        description="for a file made by `python -m training.posthoc`: where the classifier and each feature "
        "network came from, and the score fitted to them",
    )
    evaluation: Evaluation = Field(
        description="test accuracy and OOD detection results; measured at the stored "
        "threshold: `id_reject_rate` (share of the test split rejected) "
        "and each OOD set's `accepted` share"
    )
    providers: list[str] = Field(description="onnxruntime execution providers in use, in order")


class ModelList(BaseModel):
    default_model: str
    models: list[ModelInfo]
    failures: dict[str, str] = Field(
        description="model files that are not served -> why; a refused new version leaves the one before serving"
    )


class Liveness(BaseModel):
    status: str = Field("live", description="always `live` while the process answers")


class Readiness(BaseModel):
    ready: bool = Field(description="true once every model file is loaded and warmed up")
    models: list[str] = Field(description="names of the loaded models")
    reason: str | None = Field(None, description="why the service is not ready")


def inline_defs(schema: dict) -> dict:
    """A pydantic JSON schema with its ``$defs`` written in place, for an OpenAPI document: OpenAPI
    resolves ``#/$defs/...`` against the whole document, where pydantic's definitions are not."""
    defs = schema.pop("$defs", {})

    def resolve(node: object) -> object:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    return resolve(schema)
