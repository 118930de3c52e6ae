"""``python -m training METHOD [flags]``: train any registered method (``training.methods``) with the
shared CLI; ``python -m training.acet`` is ``python -m training acet``, and so on."""

from __future__ import annotations

import sys

from . import cli, methods

if len(sys.argv) < 2 or sys.argv[1] not in methods.REGISTRY:
    raise SystemExit(f"usage: python -m training METHOD [flags]; METHOD is one of {', '.join(methods.REGISTRY)}")
cli.main(sys.argv[1], sys.argv[2:])
