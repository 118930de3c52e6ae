"""``python -m training METHOD [flags]``: train any registered method (``training.methods``) with the shared
CLI (``training.cli``); ``python -m training METHOD --help`` lists its flags. ``python -m training.acet`` is
``python -m training acet``, and so on (``training`` says how)."""

from __future__ import annotations

import sys

from . import cli, methods

USAGE = f"usage: python -m training METHOD [flags]; METHOD is one of {', '.join(methods.REGISTRY)}"

if len(sys.argv) >= 2 and sys.argv[1] in ("-h", "--help"):
    print(USAGE)
elif len(sys.argv) < 2 or sys.argv[1] not in methods.REGISTRY:
    raise SystemExit(USAGE)
else:
    cli.main(sys.argv[1], sys.argv[2:])
