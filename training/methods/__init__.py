"""Training methods, one module each; ``from_state`` rebuilds one from a checkpoint's plain data."""

from __future__ import annotations

from .acet import ACET
from .isomax import IsoMaxPlus
from .mcd import MCD
from .plain import Plain

__all__ = ["ACET", "MCD", "IsoMaxPlus", "Plain", "from_state"]


def from_state(state: dict):
    kind = state["name"]
    if kind == "plain":
        return Plain()
    if kind == "isomax+":
        return IsoMaxPlus(state.get("entropic_scale", 10.0))
    if kind == "acet":
        opts = {k: v for k, v in state.items() if k not in ("name", "base")}
        return ACET(from_state(state["base"]), **opts)
    if kind == "mcd":
        return MCD(**{k: v for k, v in state.items() if k != "name"})
    raise ValueError(f"unknown method {kind!r} in checkpoint")
