"""The model file's metadata schema: the one contract between ``training/`` and ``service/``.

An oodserve model is a single ONNX file. Its graph's input and outputs are ``modelfile.signature``'s;
everything the service needs to know beyond the graph lives in one JSON document under the ``oodserve`` key
of the file's ``metadata_props``, validated by :class:`ModelMetadata`. The human-readable description is
``docs/model-format.md``; keep the two in step.

This package has no torch and no onnxruntime dependency (``modelfile.session`` imports onnxruntime
when it is called): the exporter imports it, the service imports it, and neither imports the other.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

SCHEMA_VERSION = 1
METADATA_KEY = "oodserve"
CALIBRATION_QUANTILES = 1001  # the most in-distribution scores a file stores for its p-values
HISTOGRAM_BINS = 48  # the bins of a file's score histograms: enough for a ROC curve, ~4 KB for a dozen rows
ID_ROW = "in-distribution test"  # the histograms' row of the test split; the others are evaluation.ood's names
# Scores at or above this are off any scale (the input-domain guard's float32 max): counted, never binned by value.
_OFF_SCALE = 1e30

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
# A file or folder named in the metadata: its name (and for a checkpoint its run folder's), never a path from
# the root, so that a file says nothing of the machine it was made on.
FileName = Annotated[str, Field(pattern=r"^[^/\\]{1,255}$")]
Unit = Annotated[float, Field(ge=0.0, le=1.0)]


class InvalidModelFile(ValueError):
    """The file is not an oodserve model: the message names the field or part at fault."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(_Strict):
    channels: Literal[1, 3]
    height: int = Field(ge=1, le=4096)
    width: int = Field(ge=1, le=4096)
    color_mode: Literal["L", "RGB"] = Field(description="PIL mode images are converted to before scaling")
    resize: Literal["stretch", "letterbox", "center_crop"] = Field(
        description="how an image of another size is brought to height x width"
    )

    @model_validator(mode="after")
    def _mode_matches_channels(self) -> InputSpec:
        if (self.color_mode == "L") != (self.channels == 1):
            raise ValueError(f"color_mode {self.color_mode!r} does not match channels={self.channels}")
        return self


class Calibration(_Strict):
    threshold: float = Field(description="is_ood = ood_score > threshold")
    tpr: Unit = Field(description="share of in-distribution validation images kept at the threshold")
    n: int = Field(ge=1, description="number of validation images the threshold was set on")
    scores: list[float] = Field(
        min_length=2,
        max_length=10_001,
        description="sorted quantiles of the in-distribution validation scores, for conformal p-values",
    )
    split: str = Field(default="validation", description="which data calibrated it (never the test set)")

    @field_validator("threshold")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v

    @field_validator("scores")
    @classmethod
    def _sorted_finite(cls, v: list[float]) -> list[float]:
        if not all(math.isfinite(s) for s in v):
            raise ValueError("must all be finite numbers")
        if any(b < a for a, b in itertools.pairwise(v)):
            raise ValueError("must be sorted ascending")
        return v

    @functools.cached_property
    def score_array(self) -> np.ndarray:
        """``scores`` as an array, built once: p-values are computed for every served batch."""
        return np.asarray(self.scores, dtype=np.float64)

    def p_values(self, scores: np.ndarray) -> np.ndarray:
        """Conformal p-value (1 + #{cal >= s}) / (n + 1), the count read off the stored quantiles."""
        q = self.score_array
        share_at_or_above = 1.0 - np.searchsorted(q, np.asarray(scores, dtype=np.float64), side="left") / len(q)
        return (1.0 + self.n * share_at_or_above) / (self.n + 1.0)

    def is_ood(self, scores: np.ndarray) -> np.ndarray:
        """The reject rule, written once: ``ood_score > threshold``, failing closed. Written as "not at or
        below" because ``NaN > threshold`` is False: NaN and +-inf are rejected."""
        scores = np.asarray(scores)
        return ~(scores <= self.threshold) | ~np.isfinite(scores)

    def accepted_share(self, scores: np.ndarray) -> float:
        """The share of ``scores`` the rule accepts (what a served model lets through)."""
        return float((~self.is_ood(scores)).mean())

    def rejected_share(self, scores: np.ndarray) -> float:
        """The share of ``scores`` the rule rejects (of in-distribution images: the promise, 1 - tpr)."""
        return float(self.is_ood(scores).mean())

    def histogram(self, bins: int = 40) -> ScoreHistograms:
        """The calibration scores as a histogram (counts of ``n`` images, read off the stored quantiles): what an
        upload's score is drawn against."""
        q = self.score_array
        lo, hi = float(q[0]), float(q[min(len(q) - 1, int(0.995 * len(q)))])
        edges = _edges(min(lo, self.threshold), max(hi, self.threshold), bins)
        counts = _binned(q, edges) * (self.n / len(q))
        return ScoreHistograms(edges=edges, counts={"calibration": [round(c) for c in counts]})

    @classmethod
    def from_scores(cls, scores: np.ndarray, tpr: float, *, split: str = "validation") -> Calibration:
        """Threshold = the in-distribution score below which ``tpr`` of the images fall; the p-value table is
        at most ``CALIBRATION_QUANTILES`` quantiles of the scores."""
        scores = np.sort(np.asarray(scores, dtype=np.float64))
        n, threshold = len(scores), float(np.quantile(scores, tpr, method="higher"))
        if n > CALIBRATION_QUANTILES:
            scores = np.quantile(scores, np.linspace(0, 1, CALIBRATION_QUANTILES), method="nearest")
        return cls(threshold=threshold, tpr=tpr, n=n, scores=[float(s) for s in scores], split=split)


class OODResult(_Strict):
    auroc: Unit
    fpr_at_95_tpr: Unit = Field(
        description="share accepted at the test split's own 95 % TPR score (not the served threshold: see accepted)"
    )
    mmc: Unit | None = None
    accepted: Unit | None = Field(
        default=None,
        description="share of the set accepted (ood_score <= the stored threshold): what the served model lets through",
    )


class ScoreHistograms(_Strict):
    """Score histograms of the test split and each OOD set on shared bins: what a model card draws its score
    histograms and ROC curves from. The first bin also counts scores below ``edges[0]``, the last those above
    ``edges[-1]`` (NaN and the input-domain guard's score included)."""

    edges: list[float] = Field(min_length=2, max_length=257, description="bin edges, ascending, shared by every row")
    counts: dict[str, list[Annotated[int, Field(ge=0)]]] = Field(
        description=f"row -> images per bin: `{ID_ROW}` (the test split) and each `evaluation.ood` set"
    )

    @model_validator(mode="after")
    def _shapes(self) -> ScoreHistograms:
        if not all(math.isfinite(e) for e in self.edges) or any(b <= a for a, b in itertools.pairwise(self.edges)):
            raise ValueError("edges must be finite and strictly ascending")
        if wrong := [k for k, c in self.counts.items() if len(c) != len(self.edges) - 1]:
            raise ValueError(f"rows {wrong} do not have one count per bin ({len(self.edges) - 1})")
        return self

    @classmethod
    def from_scores(cls, rows: dict[str, np.ndarray], bins: int = HISTOGRAM_BINS) -> ScoreHistograms:
        """Shared bins from the 0.5th percentile of the lowest row to the 99.5th of the highest, so that each
        row's bulk is drawn and one far set does not flatten the others into a bin."""
        on_scale = [s[np.isfinite(s) & (s < _OFF_SCALE)] for s in map(np.asarray, rows.values())]
        on_scale = [s for s in on_scale if len(s)]
        lo = min((float(np.quantile(s, 0.005)) for s in on_scale), default=0.0)
        hi = max((float(np.quantile(s, 0.995)) for s in on_scale), default=1.0)
        edges = _edges(lo, hi, bins)
        return cls(edges=edges, counts={k: [int(c) for c in _binned(np.asarray(s), edges)] for k, s in rows.items()})


def _edges(lo: float, hi: float, bins: int) -> list[float]:
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    return [float(e) for e in np.linspace(lo, hi, bins + 1)]


def _binned(scores: np.ndarray, edges: list[float]) -> np.ndarray:
    """Images per bin, the tails and non-finite scores in the end bins (the reject rule fails NaN closed)."""
    scores = np.asarray(scores, dtype=np.float64)
    placed = np.where(np.isfinite(scores), scores, np.inf)
    index = np.clip(np.searchsorted(edges, placed, side="right") - 1, 0, len(edges) - 2)
    return np.bincount(index, minlength=len(edges) - 1).astype(np.float64)


class Evaluation(_Strict):
    """The metadata's ``evaluation``: what the exporter measured on the test split and quick OOD sets."""

    test_accuracy: Unit | None = None
    test_split: str | None = Field(default=None, description="which images the accuracy was measured on")
    ood: dict[str, OODResult] = Field(default_factory=dict, description="OOD set name -> result (ID positive)")
    id_reject_rate: Unit | None = Field(
        default=None,
        description="share of the test split rejected at the stored threshold (the promise: about 1 - calibration.tpr)",
    )
    id_p_value_uniformity: Unit | None = Field(
        default=None,
        description="Kolmogorov-Smirnov test p-value of the test split's conformal p-values against "
        "U[0,1]: small means the calibration split and the test split are not exchangeable",
    )
    score_choice: dict[str, Unit] = Field(
        default_factory=dict,
        description="score name -> AUROC, validation split vs training noise, of each score the method offers "
        "(what `training.export --score auto` chose by); empty when the method has one score",
    )
    histograms: ScoreHistograms | None = Field(
        default=None,
        description="score histograms of the test split and each OOD set on shared bins (the card's plots); "
        "null in files exported before they existed",
    )


class Recalibration(_Strict):
    """Where the stored threshold was set again after export (``python -m modelfile recalibrate``): the user's
    own in-distribution images, a seeded part of them held out to measure the result."""

    folder: FileName = Field(description="the image folder's name (not its path)")
    images: int = Field(ge=2, description="images read from the folder")
    held_out: int = Field(ge=1, description="of which held out (seeded) to measure the reject rate")
    seed: int
    previous_threshold: float = Field(description="the threshold the file had before")
    held_out_reject_rate_before: Unit = Field(
        description="share of the held-out images the previous threshold rejected"
    )
    held_out_reject_rate_after: Unit = Field(description="share of the held-out images the new threshold rejects")
    created: str | None = None


class ClassifierInput(_Strict):
    """How the wrapped classifier expects its input, applied inside the graph after the contract's [0, 1] pixels."""

    pixel_range: Literal["0-1", "0-255"] = "0-1"
    channel_order: Literal["RGB", "BGR"] = "RGB"
    mean: list[float] = Field(min_length=1, max_length=3)
    std: list[float] = Field(min_length=1, max_length=3)


class FeatureSource(_Strict):
    """One feature space a post-hoc score reads: the classifier's own penultimate layer or a pretrained network run
    on the same image as a second branch of the graph."""

    name: str = Field(min_length=1, max_length=64, description="`own`, or the pretrained network's name")
    tensor: str | None = Field(default=None, description="for `own`: the classifier graph's feature tensor")
    dim: int = Field(ge=1, description="feature width")
    input_size: int | None = Field(default=None, description="for a pretrained network: the size it runs at")
    weights: str | None = Field(default=None, description="where its weights came from (a package or a file's name)")


class PostHocScore(_Strict):
    """One score of a post-hoc file: which, on which source, with what fitted (sizes and scalars, not arrays)."""

    score: str = Field(min_length=1, max_length=32)
    source: str = Field(min_length=1, max_length=64, description="a `sources[].name`, or `logits` / `own-score`")
    fitted: dict[str, float | int | str] = Field(default_factory=dict)


class PostHoc(_Strict):
    """Set by ``python -m training.posthoc``: the classifier was trained elsewhere; the OOD score was fitted to it
    afterwards and compiled into the graph."""

    classifier: FileName = Field(description="the wrapped classifier's file name (an ONNX file or a checkpoint)")
    classifier_input: ClassifierInput
    sources: list[FeatureSource] = Field(default_factory=list)
    scores: list[PostHocScore] = Field(min_length=1)
    combination: Literal["single", "fisher"] = Field(
        description="`single`: the one score; `fisher`: each score's in-distribution p-value, combined as "
        "-2 sum log p (Fisher's method)"
    )
    choice: dict[str, Unit] = Field(
        default_factory=dict, description="with `--score auto`: each candidate's AUROC against `choice_set`"
    )
    choice_set: str | None = Field(default=None, description="the outliers the choice was measured against")
    fit_images: int = Field(ge=1, description="in-distribution images the scores were fitted on")
    reference_images: int = Field(ge=0, description="images the p-value tables were set on (`fisher` only)")
    held_out_images: int = Field(ge=0, description="in-distribution images neither fit nor calibration saw")
    held_out_reject_rate: Unit | None = Field(default=None, description="their share rejected at the threshold")
    seed: int


class ModelMetadata(_Strict):
    schema_version: Literal[1] = SCHEMA_VERSION
    name: Name
    version: str = Field(min_length=1, max_length=64)
    method: str = Field(min_length=1, max_length=64, description="informational only: the service never branches on it")
    score: str = Field(min_length=1, max_length=128, description="what ood_score is, e.g. '1 - max softmax'")
    classes: list[str] = Field(min_length=2, max_length=100_000)
    input: InputSpec
    dataset: str = Field(min_length=1, max_length=256)
    calibration: Calibration
    evaluation: Evaluation = Field(default_factory=Evaluation)
    architecture: str | None = None
    created: str | None = None
    precision: Literal["fp32", "int8"] = Field(
        default="fp32",
        description="the network's arithmetic: int8 for a file quantized by `training.export "
        "--quantize int8` (softmax, score and input-domain guard stay float32)",
    )
    quantized_from: Annotated[str, Field(pattern=r"^[^/\\]{1,255}(/[^/\\]{1,255})?$")] | None = Field(
        default=None,
        description="for an int8 file: the checkpoint its float32 graph was exported from, as "
        "RUN/FILE (never an absolute path)",
    )
    training_negatives: list[Annotated[str, Field(max_length=512)]] | None = Field(
        default=None,
        max_length=64,
        description="the kinds of out-of-distribution input training showed the network, in words (noise "
        "families, outlier images, ...); empty: none; null: not recorded",
    )
    recalibration: Recalibration | None = None
    posthoc: PostHoc | None = None

    @model_validator(mode="after")
    def _quantized_from_only_when_quantized(self) -> ModelMetadata:
        if self.quantized_from is not None and self.precision == "fp32":
            raise ValueError("quantized_from is set but precision is 'fp32'")
        return self

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> ModelMetadata:
        try:
            return cls.model_validate_json(text)
        except ValidationError as e:
            raise InvalidModelFile(_describe(e)) from None


def _describe(e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(document)"
        parts.append(f"metadata field '{field}': {err['msg']}")
    return "; ".join(parts)


def metadata_from_props(props: dict[str, str]) -> ModelMetadata:
    """Validate the ``metadata_props`` of an ONNX file (as a plain dict)."""
    if METADATA_KEY not in props:
        raise InvalidModelFile(f"metadata field '{METADATA_KEY}' is missing: not an oodserve model file")
    raw = props[METADATA_KEY]
    try:
        json.loads(raw)
    except json.JSONDecodeError as e:
        raise InvalidModelFile(f"metadata field '{METADATA_KEY}' is not valid JSON: {e}") from None
    return ModelMetadata.from_json(raw)
