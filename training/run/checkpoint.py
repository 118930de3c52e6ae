"""A run's checkpoint, ``OUT/last.pt``: written by the loop after every epoch, read to resume, to fine-tune
(``--init-from``), to export and to evaluate.

Plain tensors and builtins only (the config and the method's spec are stored as dicts), so
``torch.load(weights_only=True)`` reads it and a checkpoint can never run code. Reading one that is
missing, truncated or not a checkpoint raises ``UnreadableCheckpoint`` with one line naming the file.
"""

from __future__ import annotations

import os
import pickle
import random
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import methods
from ..config import TrainConfig
from ..data import datasets
from ..nets import models

REQUIRED = ("model", "config", "dataset")


class UnreadableCheckpoint(RuntimeError):
    """The file is missing or is not a training checkpoint; the message is one line naming it."""


def payload(model: nn.Module, method: methods.Method, cfg: TrainConfig, info: datasets.DatasetInfo, **extra) -> dict:
    """The run's config with the method's complete spec (every option, defaults included), which
    ``build_model`` rebuilds the method from."""
    config = {**asdict(cfg), "method": method.spec()}
    return {"model": model.state_dict(), "config": config, "dataset": info.to_dict(), **extra}


def save(payload: dict, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)  # a kill mid-write must never leave a half-written last.pt


def load(path: str | Path, map_location="cpu") -> dict:
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise UnreadableCheckpoint(f"{path}: no such checkpoint file") from None
    except Exception as e:  # pickle, zip and torch errors alike: the file is not what it claims to be
        raise UnreadableCheckpoint(f"{path}: not a readable training checkpoint ({_reason(e)})") from None
    missing = [k for k in REQUIRED if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise UnreadableCheckpoint(f"{path}: not a training checkpoint (no {', '.join(missing)})")
    return ckpt


def _reason(e: Exception) -> str:
    """torch's messages run to paragraphs (and suggest weights_only=False, which we never do): the gist."""
    text = str(e)
    if isinstance(e, pickle.UnpicklingError):
        _, found, detail = text.partition("WeightsUnpickler error:")
        detail = detail.strip().split("\n")[0] if found else ""
        what = "not a torch checkpoint, or one holding more than tensors and plain data"
        return f"{what}: {detail}" if detail else what
    if "zip archive" in text or "central directory" in text:
        return "truncated, or not a torch zip archive"
    return (text.strip().splitlines() or [type(e).__name__])[0][:160]


def build_model(ckpt: dict) -> tuple[nn.Module, methods.Method, datasets.DatasetInfo]:
    """Rebuild (model, method, dataset info) from a checkpoint dict."""
    info = datasets.DatasetInfo.from_dict(ckpt["dataset"])
    method = methods.build(ckpt["config"]["method"])
    model = models.build(ckpt["config"]["model"], info, method.make_head)
    model.load_state_dict(ckpt["model"])
    return model, method, info


def data_splits(ckpt: dict, data_root: str | None = None) -> datasets.Splits:
    """The run's own train / validation / test splits again (same data set, fraction and seed), never downloading."""
    cfg = ckpt["config"]
    return datasets.load(
        cfg["dataset"],
        data_root or cfg["data_root"],
        val_fraction=cfg["val_fraction"],
        seed=cfg["seed"],
        download=False,
        image_size=cfg.get("image_size"),
        workers=cfg.get("workers", 2),
        cache_mb=cfg.get("cache_mb", 1024),
    )


# -- random number generators: saved with every checkpoint so that a resumed run is bit-exact --


def rng_states(generator: torch.Generator | None) -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "method": generator.get_state() if generator is not None else None,
    }


def restore_rng_states(states: dict, generator: torch.Generator | None) -> None:
    torch.set_rng_state(states["torch"].cpu())
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in states["cuda"]])
    name, keys, *rest = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if generator is not None and states["method"] is not None:
        generator.set_state(states["method"].cpu())
