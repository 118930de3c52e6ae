"""Training methods, one module each, behind the interface in ``api.py``.

Every module of this package is imported here, so a method registers itself (``@api.register``) by
existing: adding a method is adding its module. ``attacks`` (PGD towards high confidence) is the one module
that is not a method: ACET trains against it and ``training.evaluation`` measures with it. The room reads
``data``, ``nets`` and ``training.config``; the loop that trains a method is the ``run`` room's, above it.
"""

from __future__ import annotations

import importlib
import pkgutil

from .api import (
    CLIS,
    REGISTRY,
    Cli,
    Method,
    benchmark_variants,
    build,
    cli_of,
    method_class,
    register,
    register_cli,
    spec,
)

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "CLIS",
    "REGISTRY",
    "Cli",
    "Method",
    "benchmark_variants",
    "build",
    "cli_of",
    "method_class",
    "register",
    "register_cli",
    "spec",
]
