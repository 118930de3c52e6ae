"""A model file's threshold set again on the user's own in-distribution images, without torch or training data.

A file's promise (about ``1 - tpr`` of in-distribution images rejected) holds for images like its validation
split. At a site whose images differ a little (another camera, another scanner) the realised reject rate drifts;
this runs the file on a folder of the site's images, holds a seeded ``HOLDOUT`` of them out, sets the threshold
and the p-value table on the rest with the exporter's own rule (``Calibration.from_scores``) and measures both
the old and the new threshold on the held-out part. The new file is the old one byte for byte but for its
metadata (``modelfile.propsfile``), which says where and on how many images it was recalibrated.

Fields of ``evaluation`` that described the old threshold on the exporter's test split (``id_reject_rate``,
``id_p_value_uniformity``, each OOD set's ``accepted``) are cleared: the file no longer has that threshold, and
the test split is not here to measure the new one. Threshold-free figures (accuracy, AUROC, FPR at 95 % TPR)
stay.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .imagefolder import image_files, read_images
from .propsfile import write_metadata
from .schema import Calibration, ModelMetadata, Recalibration
from .session import open_session, read_metadata
from .signature import INPUT_NAME, OOD_SCORE

HOLDOUT = 0.3  # share of the images held out to measure the new threshold
# Both parts must expect at least this many rejections at the target rate: then the threshold lies below
# that many calibration scores (not set by the one or two most extreme images), and the held-out rate has a
# binomial standard error of at most a third of the target (1.5 points at 95 % TPR).
MIN_EXPECTED_REJECTS = 10
BATCH = 256


class TooFewImages(ValueError):
    """The folder has fewer images than the chosen TPR needs; the message says how many it needs."""


@dataclass(frozen=True)
class Recalibrated:
    meta: ModelMetadata  # the new file's metadata
    previous: Calibration


def minimum_images(tpr: float) -> int:
    """The fewest images for which both the calibrating and the held-out part expect ``MIN_EXPECTED_REJECTS``
    rejections at ``1 - tpr``."""
    need = math.ceil(MIN_EXPECTED_REJECTS / (1.0 - tpr) - 1e-9)
    n = need
    while min(held_out_count(n), n - held_out_count(n)) < need:
        n += 1
    return n


def held_out_count(n: int) -> int:
    return round(n * HOLDOUT)


def recalibrate(model: Path, folder: Path, out: Path, *, tpr: float = 0.95, seed: int = 0) -> Recalibrated:
    """Write ``out``: ``model`` with its threshold and p-value table set on ``folder``'s images."""
    if not model.is_file():
        raise FileNotFoundError(f"{model}: no such file")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"--out {out}: no such folder {out.parent}")
    meta = read_metadata(model)
    files = image_files(folder)
    if len(files) < minimum_images(tpr):
        raise TooFewImages(
            f"{len(files)} images in {folder.name!r}; recalibrating at TPR {tpr:g} needs at least "
            f"{minimum_images(tpr)} ({MIN_EXPECTED_REJECTS} expected rejections in the calibrating part and in "
            f"the {HOLDOUT:.0%} held out)"
        )
    scores = score_images(model, files, meta, folder)
    perm = np.random.default_rng(seed).permutation(len(files))
    held, calibrating = perm[: held_out_count(len(files))], perm[held_out_count(len(files)) :]
    name = folder.resolve().name
    calibration = Calibration.from_scores(
        scores[calibrating], tpr, split=f"recalibration: {len(calibrating)} of the {len(files)} images in {name!r}"
    )
    record = Recalibration(
        folder=name,
        images=len(files),
        held_out=len(held),
        seed=seed,
        previous_threshold=meta.calibration.threshold,
        held_out_reject_rate_before=meta.calibration.rejected_share(scores[held]),
        held_out_reject_rate_after=calibration.rejected_share(scores[held]),
        created=dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
    )
    evaluation = meta.evaluation.model_dump()
    evaluation.update(id_reject_rate=None, id_p_value_uniformity=None)
    for result in evaluation["ood"].values():
        result["accepted"] = None
    new = ModelMetadata.model_validate(
        {
            **meta.model_dump(),
            "calibration": calibration.model_dump(),
            "evaluation": evaluation,
            "recalibration": record.model_dump(),
        }
    )
    write_metadata(out, new, source=model)
    return Recalibrated(new, meta.calibration)


def score_images(model: Path, files: list[Path], meta: ModelMetadata, folder: Path) -> np.ndarray:
    """The file's ``ood_score`` of each image, decoded a batch at a time (a folder of large inputs need not fit
    in memory at once)."""
    sess = open_session(model)
    batches = (read_images(files[i : i + BATCH], meta.input, folder) for i in range(0, len(files), BATCH))
    return np.concatenate([sess.run([OOD_SCORE.name], {INPUT_NAME: x})[0] for x in batches])


def describe(result: Recalibrated, out: Path) -> str:
    """What a user reads: the old and new threshold and the reject rate each gives on the held-out images."""
    meta, record = result.meta, result.meta.recalibration
    target = 1.0 - meta.calibration.tpr
    return "\n".join(
        [
            f"recalibrated {meta.name} on {record.images} images in {record.folder!r}: threshold set on "
            f"{meta.calibration.n}, {record.held_out} held out (seed {record.seed})",
            f"threshold {result.previous.threshold:.6g} -> {meta.calibration.threshold:.6g} "
            f"at TPR {meta.calibration.tpr:g}",
            f"held-out reject rate: {record.held_out_reject_rate_before:.2%} before, "
            f"{record.held_out_reject_rate_after:.2%} after (target {target:.2%})",
            f"wrote {out}",
        ]
    )
