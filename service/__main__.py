"""``python -m service``: run the app under uvicorn with the ``OODSERVE_*`` settings.

On SIGTERM uvicorn stops accepting connections, lets every accepted request finish (each is
bounded by ``deadline_ms``), runs the app's shutdown (batchers drain, metrics files released) and
exits.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import uvicorn

from service.settings import Settings


def _prepare_metrics_dir(workers: int) -> None:
    """Several workers share metrics through files; give them a clean directory before any starts."""
    configured = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if configured:
        directory = Path(configured)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):  # a previous run's values would be summed in
            stale.unlink()
    elif workers > 1:
        directory = Path(tempfile.mkdtemp(prefix="oodserve-metrics-"))
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
        atexit.register(shutil.rmtree, directory, ignore_errors=True)


def main() -> None:
    settings = Settings()
    _prepare_metrics_dir(settings.workers)
    uvicorn.run(
        "service.app:app",
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
    )


if __name__ == "__main__":
    main()
