"""CEDA and ACET (Hein, Andriushchenko & Bitterwolf, CVPR 2019): low confidence far from the data.

Every batch is joined by ``at_frac x batch`` noise images (``training.data.noise``). CEDA trains the
model to be unconfident on them; ACET first moves each noise image, by projected gradient ascent
in an L-inf ball of radius eps, to where the model is *most* confident, and trains on that. With
``pgd_steps = 0`` this is CEDA; with ``at_frac = 0`` it is the wrapped method alone (and the CLI then
stores, and the model file names, the wrapped method).

Outlier exposure (Hendrycks et al., ICLR 2019): with ``outliers`` (a folder or zip of images, see
``training.data.outliers``) a share ``outlier_share`` of each noise batch is crops of those images, the rest
the noise families; ``noise_loss="uniform"`` is OE's loss. ``outlier_holdout`` names groups (first
folders) of the outlier images never trained on, kept for evaluation as a source the model never saw.

ACET moves only the families in ``attacked`` (default: blurred-uniform, blurred-permuted, strokes, the noise far
from every image). Images that start near real ones (blended and patch-shuffled training images, outlier photos) are
trained on as drawn: an L-inf ball of 0.3 around a blend of two training images holds images of a class, and
training the model to be unsure there costs accuracy (fastnet on CIFAR-10, one epoch with PGD on every
family: validation accuracy 90.5 -> 80.3 %; docs/results/cifar10-oe.md).

The loss is (sum of clean losses + sum of noise losses) / (n_clean + n_noise). The noise loss is
the log of the max softmax probability (``max_conf``, as in the paper) or cross-entropy to the
uniform label (``uniform``).

PGD step size: eps / steps x ``step_factor`` (default 2.5). A factor of 1 could only just reach the
ball's boundary if every step pointed the same way; with sign steps that oscillate, 2.5 (the
Madry et al. choice) lets the iterate cross the ball within ~40 % of the budget and spend the rest
moving along it, while staying small enough not to skip over narrow confident regions.

ACET wraps another softmax-classifier method (plain or IsoMax+, given as ``base``, a spec): that
method's head, clean loss and score are kept.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from ..data import imagefiles
from ..data.noise import DEFAULT_FAMILIES, FAMILIES, check_families, noise_batch
from ..data.outliers import OutlierImages
from .api import Cli, LossAndStats, Method, build, register, register_cli, spec
from .attacks import max_log_confidence, pgd
from .plain import Plain


@dataclass
class ACETConfig:
    base: dict = field(default_factory=lambda: {"name": "plain"})  # the wrapped method's spec
    at_frac: float = 1.0
    pgd_steps: int = 40
    eps: float = 0.3
    step_factor: float = 2.5
    noise_loss: str = "max_conf"
    noise: tuple[str, ...] = DEFAULT_FAMILIES  # training.data.noise families the noise batch is split over
    outliers: str = ""  # a folder or zip of outlier images ("" = none), as given on the command line
    outlier_share: float = 0.5  # of each noise batch, when there are outliers
    outlier_holdout: tuple[str, ...] = ()  # groups of the outlier images never trained on
    # the families PGD moves; the others, and outlier images, are trained on as drawn (see the module docstring)
    attacked: tuple[str, ...] = ("blurred-uniform", "blurred-permuted", "strokes")


@register
class ACET(Method):
    name = "acet"
    Config = ACETConfig
    labels = ("acet", "ceda", "isomax+acet", "isomax+ceda", "oe", "acet+oe", "isomax+oe", "isomax+acet+oe")

    def __init__(self, config: ACETConfig | None = None):
        super().__init__(config)
        if self.config.noise_loss not in ("max_conf", "uniform"):
            raise ValueError(f"noise_loss must be 'max_conf' or 'uniform', not {self.config.noise_loss!r}")
        self.config.noise = check_families(self.config.noise)  # a spec read back from JSON holds a list
        self.config.outlier_holdout = tuple(self.config.outlier_holdout)
        self.config.attacked = check_families(self.config.attacked)
        if not 0 <= self.config.outlier_share <= 1:
            raise ValueError(f"outlier_share must be in [0, 1], not {self.config.outlier_share}")
        self._outliers: OutlierImages | None = None  # read on the first batch: exporting needs no outlier files
        self.base = build(self.config.base)
        if not isinstance(self.base, Plain):
            raise ValueError(f"ACET wraps a softmax classifier (plain, isomax+), not {self.base.name!r}")

    @property
    def label(self) -> str:
        if self.config.at_frac == 0:
            return self.base.label
        kind = "acet" if self.config.pgd_steps > 0 else "ceda"
        if self.config.outliers:  # CEDA on real outlier images is outlier exposure
            kind = "acet+oe" if kind == "acet" else "oe"
        return kind if self.base.label == "plain" else f"{self.base.label.removesuffix('+')}+{kind}"

    @property
    def negatives(self) -> tuple[str, ...]:
        if self.config.at_frac == 0:
            return self.base.negatives
        moved = self.config.pgd_steps > 0
        kinds = tuple(
            f"{family} noise"
            + (" moved by PGD towards confident answers" if moved and family in self.config.attacked else "")
            for family in self.config.noise
        )
        if not self.config.outliers:
            return kinds
        # a path or zip, with '#group+group' picking its groups: the file's name only, never where it lay
        where, _, groups = self.config.outliers.partition("#")
        photos = f"outlier images from {Path(where).name}" + (f" ({groups.replace('+', ', ')})" if groups else "")
        held = self.config.outlier_holdout
        return (*kinds, photos + (f", except {', '.join(held)}, kept unseen" if held else ""))

    @property
    def score(self) -> str:
        return self.base.score

    @property
    def score_options(self) -> tuple[str, ...]:
        return self.base.score_options

    def with_score(self, name: str) -> ACET:
        return ACET(replace(self.config, base=self.base.with_score(name).spec()))

    def make_head(self, in_features: int, num_classes: int) -> nn.Module:
        return self.base.make_head(in_features, num_classes)

    def smooth_labels(self, amount: float) -> None:
        super().smooth_labels(amount)
        self.base.smooth_labels(amount)  # the clean loss is the wrapped method's

    def noise_term(self, logits: torch.Tensor) -> torch.Tensor:
        log_p = torch.log_softmax(logits.float(), 1)
        if self.config.noise_loss == "max_conf":
            return log_p.max(1).values.sum()
        return -log_p.mean(1).sum()

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> LossAndStats:
        c = self.config
        n_noise = round(c.at_frac * len(x))
        if n_noise == 0:
            return self.base.loss(model, x, y)
        noise = self.noise(model, x, n_noise)
        logits = model(torch.cat([x, noise]))
        clean, on_noise = logits[: len(x)], logits[len(x) :]
        loss = (self.base.clean_loss(clean, y) + self.noise_term(on_noise)) / (len(x) + n_noise)
        with torch.no_grad():
            stats = {
                "loss": loss.detach(),
                "acc": (clean.argmax(1) == y).float().mean(),
                "noise_mmc": torch.softmax(on_noise.float(), 1).max(1).values.mean(),
            }
        return loss, stats

    def noise(self, model: nn.Module, x: torch.Tensor, n: int) -> torch.Tensor:
        """``n`` noise images: the attacked families moved by PGD (ACET), then the rest as drawn."""
        c, g, outliers = self.config, self.generator, self.outliers()
        moved = [f for f in c.noise if f in c.attacked] if c.pgd_steps > 0 else []
        if not moved or (len(moved) == len(c.noise) and outliers is None):  # CEDA, or every image moved
            return self.attack(model, noise_batch(x, n, g, c.noise, outliers, c.outlier_share), moved)
        n_real = round(c.outlier_share * n) if outliers is not None else 0
        n_moved = round((n - n_real) * len(moved) / len(c.noise))
        rest = [f for f in c.noise if f not in moved]
        as_drawn = noise_batch(x, n - n_moved, g, rest, outliers, n_real / max(1, n - n_moved))
        return torch.cat([self.attack(model, noise_batch(x, n_moved, g, moved), moved), as_drawn])

    def attack(self, model: nn.Module, noise: torch.Tensor, moved: list[str]) -> torch.Tensor:
        c = self.config
        if not moved or len(noise) == 0:
            return noise
        return pgd(
            model,
            noise,
            max_log_confidence,
            eps=c.eps,
            steps=c.pgd_steps,
            step_size=c.eps / c.pgd_steps * c.step_factor,
            generator=self.generator,
            clip=(0.0, 1.0) if noise.ndim == 4 else None,
        )  # images live in [0,1]; toy points don't

    def outliers(self) -> OutlierImages | None:
        if self.config.outliers and self._outliers is None:
            self._outliers = OutlierImages.read(self.config.outliers, holdout=self.config.outlier_holdout)
        return self._outliers

    def outputs(self, model: nn.Module, x: torch.Tensor):
        return self.base.outputs(model, x)


@register_cli
class ACETCli(Cli):
    name = "acet"
    description = "Train a classifier with ACET / CEDA / plain cross-entropy."
    variants = (("plain", ("--at-frac", "0")), ("CEDA", ("--pgd-steps", "0")), ("ACET", ()))

    @classmethod
    def add_options(cls, parser: argparse.ArgumentParser) -> None:
        add_noise_options(parser)

    @classmethod
    def spec_from_args(cls, args: argparse.Namespace) -> dict:
        return wrap(spec("plain"), args)


def add_noise_options(parser: argparse.ArgumentParser) -> None:
    d = ACETConfig()
    g = parser.add_argument_group("CEDA / ACET noise training")
    g.add_argument(
        "--at-frac",
        type=float,
        default=d.at_frac,
        help="noise images per clean image in each batch (0 = no noise term: the wrapped method alone)",
    )
    g.add_argument("--pgd-steps", type=int, default=d.pgd_steps, help="PGD steps on the noise (0 = CEDA)")
    g.add_argument("--eps", type=float, default=d.eps, help="L-inf radius of the attack on the noise")
    g.add_argument("--step-factor", type=float, default=d.step_factor, help="PGD step = eps / steps x this")
    g.add_argument(
        "--noise-loss",
        default=d.noise_loss,
        choices=("max_conf", "uniform"),
        help="loss on noise: log max-softmax, or cross-entropy to the uniform label",
    )
    g.add_argument(
        "--noise",
        default=",".join(d.noise),
        type=families,
        help=f"comma-separated noise families (training.data.noise): {', '.join(FAMILIES)}; strokes are "
        "random pen strokes, a negative for filled-shape data (never for digits)",
    )
    g.add_argument(
        "--attacked",
        default=",".join(d.attacked),
        type=families,
        help="the noise families ACET's PGD moves; the others and --outliers are trained on as drawn",
    )
    g.add_argument(
        "--outliers",
        default=d.outliers,
        metavar="PATH",
        help="outlier exposure: a folder or .zip of images that are none of the classes (any size; "
        "cropped at random scales); they fill --outlier-share of each noise batch",
    )
    g.add_argument(
        "--outlier-share", type=float, default=d.outlier_share, help="share of each noise batch taken from --outliers"
    )
    g.add_argument(
        "--outlier-holdout",
        default="",
        type=names,
        metavar="GROUP,GROUP",
        help="first folders of --outliers never trained on (kept as an unseen OOD source)",
    )


def families(text: str) -> tuple[str, ...]:
    try:
        return check_families(t.strip() for t in text.split(",") if t.strip())
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{e} (comma-separated)") from None


def names(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def check_outliers(args: argparse.Namespace) -> None:
    """Read ``--outliers`` once before training starts, so a bad path fails in one line, not at the first batch."""
    if args.outliers:
        try:
            OutlierImages.read(args.outliers, holdout=args.outlier_holdout)
        except imagefiles.NoImages as e:
            raise SystemExit(f"error: --outliers: {e}") from None
    elif args.outlier_holdout:
        raise SystemExit("error: --outlier-holdout needs --outliers")


def wrap(base: dict, args: argparse.Namespace) -> dict:
    """``base`` inside ACET with the noise flags; ``--at-frac 0`` is ``base`` itself, and is stored as such."""
    if args.at_frac == 0:
        return base
    check_outliers(args)
    return spec(
        "acet",
        base=base,
        at_frac=args.at_frac,
        pgd_steps=args.pgd_steps,
        eps=args.eps,
        step_factor=args.step_factor,
        noise_loss=args.noise_loss,
        noise=args.noise,
        attacked=args.attacked,
        outliers=args.outliers,
        outlier_share=args.outlier_share,
        outlier_holdout=args.outlier_holdout,
    )
