"""What a training method is, declared once: the loop, the exporter, evaluation and the CLI use nothing else.

A method (pytorch-ood's detector shape: one small class, higher score = more OOD) is one module in this
package holding a config dataclass and a ``Method`` subclass decorated with ``@register``: the model maths
(head, loss, updates, exported outputs). Its *spec*, ``{"name": NAME, **asdict(config)}``, is plain data: the
run's config and checkpoint store it, ``build(spec)`` rebuilds the method from it.

How the command line trains it (flags, the spec they make, the runs of the loop, the benchmark's variants) is
its ``Cli`` companion, declared beside it in the same module and decorated with ``@register_cli``; a method
without one trains with the shared flags alone. Adding a method is adding one module (and its test).
"""

from __future__ import annotations

import argparse
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import ClassVar

import torch
from torch import nn

from ..config import TrainConfig

# (loss, stats): the scalar one optimiser step minimises, and floats to log
LossAndStats = tuple[torch.Tensor, dict[str, torch.Tensor]]
Update = Callable[[nn.Module, torch.Tensor, torch.Tensor], LossAndStats]


@dataclass
class NoOptions:
    """The config of a method without options."""


class Method(ABC):
    name: ClassVar[str]  # the registry key, and ``spec["name"]``
    Config: ClassVar[type] = NoOptions  # the method's own options, a dataclass of plain values
    score: ClassVar[str]  # what ``ood_score`` is, in words (goes into the model file)
    # the scores the exporter may choose between (``training.export --score NAME``); () = ``score`` only
    score_options: ClassVar[tuple[str, ...]] = ()
    labels: ClassVar[tuple[str, ...]] = ()  # every ``label`` it can write (docs/model-format.md lists them)

    def __init__(self, config=None):
        self.config = config if config is not None else self.Config()
        # set by the trainer, seeded per rank; a method draws all its randomness (noise, PGD starts) from it
        self.generator: torch.Generator | None = None
        self.label_smoothing = 0.0  # of every cross-entropy to the class labels; the run's, set by smooth_labels

    def smooth_labels(self, amount: float) -> None:
        """Set the run's label smoothing (the trainer calls this; a wrapping method passes it on)."""
        self.label_smoothing = amount

    # -- what a trained model is called and what it computes --

    @property
    def label(self) -> str:
        """The method as the model file names it (``method`` in the metadata)."""
        return self.name

    @property
    def negatives(self) -> tuple[str, ...]:
        """The kinds of out-of-distribution input training showed the network, in words (the model file's
        ``training_negatives``): none for a method that learns from the labelled data alone."""
        return ()

    @abstractmethod
    def make_head(self, in_features: int, num_classes: int) -> nn.Module:
        """The classifier head the model is built with."""

    @abstractmethod
    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> LossAndStats:
        """One training batch. ``model`` is the bare model (the loop handles DDP around the call)."""

    @property
    def updates(self) -> tuple[Update, ...]:
        """The optimiser steps each batch takes, in order (MCD's fine-tuning: two)."""
        return (self.loss,)

    @abstractmethod
    def outputs(self, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(probabilities, ood_score, logits): what the exported graph returns."""

    def with_score(self, name: str) -> Method:
        """This method with ``ood_score`` = the score ``name``, one of ``score_options``."""
        raise ValueError(f"method {self.label!r} has one OOD score ({self.score}); it cannot export {name!r}")

    # -- plain data in and out --

    def spec(self) -> dict:
        return {"name": self.name, **asdict(self.config)}


class Cli:
    """How ``python -m training NAME`` trains the method ``name``; subclassed beside the method it serves."""

    name: ClassVar[str]  # the registered method this command line trains
    description: ClassVar[str] = ""  # one line for ``--help``
    # (column label, extra CLI flags) pairs: what the benchmark trains with this method's CLI (None: one
    # run, labelled with the method's name; (): none, e.g. plain, which ``training.acet --at-frac 0`` trains)
    variants: ClassVar[tuple[tuple[str, tuple[str, ...]], ...] | None] = None

    @classmethod
    def add_options(cls, parser: argparse.ArgumentParser) -> None:
        """The method's own command-line flags (none by default)."""
        return

    @classmethod
    def spec_from_args(cls, args: argparse.Namespace) -> dict:
        """The spec the CLI trains, from the parsed flags."""
        return spec(cls.name)

    @classmethod
    def runs(cls, cfg: TrainConfig, args: argparse.Namespace) -> list[TrainConfig]:
        """The runs of the shared loop one CLI call makes, in order; the last one is exported."""
        return [cfg]


REGISTRY: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make the method known by its ``name`` to the CLI, checkpoints and the benchmark."""
    return _enter(REGISTRY, cls, "methods named")


CLIS: dict[str, type[Cli]] = {}


def register_cli(cls: type[Cli]) -> type[Cli]:
    """Class decorator: the command line of the method ``cls.name`` (declared in that method's module)."""
    return _enter(CLIS, cls, "command lines for")


def _enter(registry: dict, cls: type, what: str) -> type:
    """Key ``cls`` by its ``name``; a second class under a taken name would silently replace the first."""
    if cls.name in registry and registry[cls.name] is not cls:
        raise ValueError(f"two {what} {cls.name!r}: {registry[cls.name].__module__} and {cls.__module__}")
    registry[cls.name] = cls
    return cls


def cli_of(name: str) -> type[Cli]:
    """The command line of a registered method: its own ``Cli``, or the shared flags alone."""
    method_class(name)  # an unknown name fails here, naming the registered ones
    return CLIS.get(name) or type(f"Cli[{name}]", (Cli,), {"name": name})


def benchmark_variants() -> list[tuple[str, str, tuple[str, ...]]]:
    """(column label, method name, extra CLI flags) of every registered method's variants."""
    rows = []
    for name in REGISTRY:
        variants = cli_of(name).variants
        rows += [(label, name, flags) for label, flags in (variants if variants is not None else ((name, ()),))]
    return rows


def method_class(name: str) -> type[Method]:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; registered: {', '.join(sorted(REGISTRY))}") from None


def spec(name: str, **options) -> dict:
    """A complete spec: the method's config defaults, overridden by ``options`` (unknown ones refused)."""
    cls = method_class(name)
    return {"name": name, **asdict(cls.Config(**_known(cls, options)))}


def build(method_spec: dict) -> Method:
    """Rebuild a method from its spec (a checkpoint's ``config["method"]``)."""
    cls = method_class(method_spec["name"])
    return cls(cls.Config(**_known(cls, {k: v for k, v in method_spec.items() if k != "name"})))


def _known(cls: type[Method], options: dict) -> dict:
    known = {f.name for f in fields(cls.Config)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(
            f"method {cls.name!r} has no option(s) {', '.join(unknown)}; it has {', '.join(sorted(known)) or 'none'}"
        )
    return options
