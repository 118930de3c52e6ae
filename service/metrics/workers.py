"""Metrics across worker processes.

With several uvicorn workers, each worker is its own process with its own counters. When
``PROMETHEUS_MULTIPROC_DIR`` is set (``python -m service`` sets it for ``workers > 1``),
prometheus-client writes every value to a per-process file there and ``/metrics`` merges all
workers' files, so a scrape that lands on any worker sees the whole service.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from prometheus_client import multiprocess


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, dead but not yet reaped by its parent, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: trust kill()
    return stat.rpartition(")")[2].split()[0] != "Z"


def drop_dead_workers(directory: str) -> None:
    """Drop the live-only gauges (``livesum``/``livemax``) of worker processes that died.

    A worker that exits normally drops its own (``Metrics.process_exiting``); one that is killed
    cannot, and its last queue depth would be summed in for ever. uvicorn's supervisor replaces a
    dead worker without telling anyone, so each scrape checks the pids in the file names.
    Counters and histograms of dead workers stay: they are part of the service's totals.
    """
    pids = {int(m.group(1)) for p in Path(directory).glob("gauge_live*_*.db") if (m := _PID.search(p.name))}
    for pid in pids:
        if not pid_alive(pid):
            with contextlib.suppress(FileNotFoundError):  # another worker's scrape was quicker
                multiprocess.mark_process_dead(pid, directory)


_PID = re.compile(r"_(\d+)\.db$")
