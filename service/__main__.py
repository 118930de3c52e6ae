"""``python -m service``: run the app under uvicorn with the ``OODSERVE_*`` settings.

The server runs the service's HTTP protocol (service/http/connections.py: header, body and idle
deadlines, header size cap) with uvicorn's own connection limits set from the settings. On SIGTERM
each worker drains (service/http/draining.py): ``/readyz`` says 503 at once, new connections are served
for ``drain_delay_s``, then the listener closes without dropping a connection the kernel accepted,
every accepted request is answered, the batchers drain, and the process exits. SIGINT (Ctrl+C)
skips the drain.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from socket import socket
from types import FrameType

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from service.http.connections import ServiceConfig
from service.metrics.workers import pid_alive
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
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(_own_metrics_dir())


def _own_metrics_dir() -> Path:
    """``$TMPDIR/oodserve-metrics-UID/PID``, removed at exit; a killed parent's is removed at the next start.

    ``atexit`` does not run when the parent is SIGKILLed (or the OOM killer strikes), so the
    directory is named by the parent's pid and every start removes those whose process is gone.
    """
    base = Path(tempfile.gettempdir()) / f"oodserve-metrics-{os.getuid()}"
    base.mkdir(mode=0o700, exist_ok=True)
    for old in base.iterdir():
        if old.name.isdigit() and not pid_alive(int(old.name)):
            shutil.rmtree(old, ignore_errors=True)
    directory = base / str(os.getpid())
    shutil.rmtree(directory, ignore_errors=True)  # a reused pid's leftovers
    directory.mkdir()
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return directory


class Supervisor(Multiprocess):
    """uvicorn's worker supervisor, passing SIGTERM on to the workers at once.

    uvicorn's supervisor looks at its signals every 0.5 s; a worker's ``/readyz`` must say 503
    from the moment the pod is told to stop. uvicorn forwards the signal again a moment later,
    which a draining worker ignores.
    """

    def __init__(self, config: uvicorn.Config, sockets: list[socket]):
        super().__init__(config, sockets)
        signal.signal(signal.SIGTERM, self._forward_sigterm)

    def _forward_sigterm(self, sig: int, frame: FrameType | None) -> None:
        self.signal_queue.append(sig)
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError, TypeError):  # gone, or not started yet
                os.kill(process.pid, signal.SIGTERM)  # type: ignore[arg-type]


def main() -> None:
    settings = Settings()
    _prepare_metrics_dir(settings.workers)
    config = ServiceConfig("service.app:app", settings)
    if settings.workers > 1:
        Supervisor(config, sockets=[config.bind_socket()]).run()
        return
    server = uvicorn.Server(config)
    server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)


if __name__ == "__main__":
    main()
