"""The models an evaluation compares, behind one interface: ``outputs(images) -> Outputs``.

A checkpoint is run by torch (and can be attacked); an exported file by onnxruntime, exactly as the
service runs it. ``parse_models`` turns ``[LABEL=]PATH`` arguments into side-by-side candidates.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from modelfile import (
    DOMAIN_TOLERANCE,
    INPUT_NAME,
    OUT_OF_DOMAIN_SCORE,
    OUTPUT_NAMES,
    Calibration,
    metadata_from_props,
    open_session,
)

from ..data import datasets
from ..run import checkpoint
from .ood_sets import InputShape


@dataclass
class Outputs:
    """What the graph returns for a batch of images, as numpy arrays."""

    probabilities: np.ndarray
    ood_score: np.ndarray
    logits: np.ndarray

    @property
    def confidence(self) -> np.ndarray:
        return -self.ood_score.astype(np.float64)

    @property
    def tie_breaker(self) -> np.ndarray:
        """float64 log max-softmax from the logits: resolves exact ties of a saturated float32 score."""
        z = self.logits.astype(np.float64)
        m = z.max(1, keepdims=True)
        return (m - (m + np.log(np.exp(z - m).sum(1, keepdims=True))))[:, 0]

    def select(self, mask: np.ndarray) -> Outputs:
        return Outputs(self.probabilities[mask], self.ood_score[mask], self.logits[mask])

    @staticmethod
    def concat(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> Outputs:
        return Outputs(*(np.concatenate([p[i] for p in parts]) for i in range(3)))


def batches(n: int, batch_size: int, desc: str, progress: bool):
    bar = tqdm(total=n, desc=desc, unit="img", leave=False, dynamic_ncols=True, disable=not progress)
    for i in range(0, n, batch_size):
        yield slice(i, min(n, i + batch_size))
        bar.update(min(n, i + batch_size) - i)
    bar.close()


class TorchModel:
    """A training checkpoint: the model, its method, and where its data came from."""

    def __init__(self, path: str | Path, device: str = "cpu"):
        self.path = Path(path)
        self.ckpt = checkpoint.load(self.path)
        self.model, self.method, self.info = checkpoint.build_model(self.ckpt)
        self.device = torch.device(device)
        self.model.to(self.device).eval()
        self.config = self.ckpt["config"]

    @property
    def shape(self) -> InputShape:
        return InputShape(self.info.channels, self.info.height, self.info.width)

    @property
    def method_name(self) -> str:
        return self.method.label

    @torch.no_grad()
    def outputs(self, images: torch.Tensor, batch_size: int, desc: str, progress: bool) -> Outputs:
        parts = []
        for s in batches(len(images), batch_size, desc, progress):
            x = datasets.as_float(images[s]).to(self.device)
            p, score, logits = self.method.outputs(self.model, x)
            score = guarded(x, score)  # as the exported file scores it
            parts.append((p.float().cpu().numpy(), score.float().cpu().numpy(), logits.float().cpu().numpy()))
        return Outputs.concat(parts)


class OnnxModel:
    """An exported model file run through onnxruntime, described by its metadata."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.session = open_session(self.path)
        self.meta = metadata_from_props(self.session.get_modelmeta().custom_metadata_map)

    @property
    def shape(self) -> InputShape:
        return InputShape(self.meta.input.channels, self.meta.input.height, self.meta.input.width)

    @property
    def method_name(self) -> str:
        return self.meta.method

    def outputs(self, images: torch.Tensor, batch_size: int, desc: str, progress: bool) -> Outputs:
        return session_outputs(self.session, images, batch_size, desc, progress)


def session_outputs(
    session, images: torch.Tensor, batch_size: int = 512, desc: str = "", progress: bool = False
) -> Outputs:
    """uint8 or float images through an onnxruntime session of a model file, in batches: what the service computes.
    (The exporter runs the file before it has metadata, so this takes a session, not an ``OnnxModel``.)"""
    parts = []
    for s in batches(len(images), batch_size, desc, progress):
        x = datasets.as_float(images[s]).numpy()
        parts.append(tuple(session.run(list(OUTPUT_NAMES), {INPUT_NAME: x})))
    return Outputs.concat(parts)


@dataclass
class Candidate:
    """One column of the table: a checkpoint, an ONNX file, or both (ONNX scores, checkpoint attacks)."""

    label: str
    checkpoint: TorchModel | None = None
    onnx: OnnxModel | None = None

    @property
    def scorer(self) -> TorchModel | OnnxModel:
        return self.onnx or self.checkpoint

    @property
    def source(self) -> str:
        return "+".join(k for k, v in (("onnx", self.onnx), ("checkpoint", self.checkpoint)) if v is not None)

    @property
    def shape(self) -> InputShape:
        return self.scorer.shape

    @property
    def dataset(self) -> str:
        return self.checkpoint.info.name if self.checkpoint else self.onnx.meta.dataset

    @property
    def calibration(self) -> Calibration | None:
        """The reject rule the model file stores (a checkpoint has none until it is exported)."""
        return self.onnx.meta.calibration if self.onnx else None


def default_label(path: Path) -> str:
    return path.parent.name if path.stem in ("last", "best") else path.stem


def parse_models(checkpoints: list[str], onnx_files: list[str], device: str = "cpu") -> list[Candidate]:
    """``[LABEL=]PATH`` arguments -> candidates, merged by label, in the order first named."""
    found: dict[str, Candidate] = {}
    for kind, args in (("checkpoint", checkpoints), ("onnx", onnx_files)):
        for arg in args:
            label, _, path = arg.rpartition("=") if "=" in arg else ("", "", arg)
            path = Path(path)
            if not path.is_file():
                raise SystemExit(f"error: --{kind} {path}: no such file")
            label = label or default_label(path)
            cand = found.setdefault(label, Candidate(label))
            if getattr(cand, kind) is not None:
                raise SystemExit(f"error: two --{kind} files under the label {label!r}; name them LABEL=PATH")
            setattr(cand, kind, TorchModel(path, device) if kind == "checkpoint" else OnnxModel(path))
    for c in found.values():
        if c.checkpoint and c.onnx and c.checkpoint.shape != c.onnx.shape:
            raise SystemExit(f"error: {c.label}: checkpoint and ONNX file take different input shapes")
    return list(found.values())


def guarded(images: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """The file's input-domain guard (``training.export.domain_guard``) in torch: a checkpoint scored as its
    exported file scores."""
    flat = images.flatten(1)
    outside = (flat.amin(1) < -DOMAIN_TOLERANCE) | (flat.amax(1) > 1.0 + DOMAIN_TOLERANCE)
    return torch.where(outside, torch.full_like(scores, OUT_OF_DOMAIN_SCORE), scores)
