"""Start a command under torchrun with every rank's stdout and stderr in files of its own, so what a test reads
from one rank never depends on how the ranks' output interleaves on a shared stream."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass
class RankedRun:
    returncode: int
    stdout: dict[int, str]  # rank -> what it printed
    stderr: dict[int, str]
    launcher_stderr: str  # torchrun's own

    def failure(self) -> str:
        ranks = [f"--- rank {r} stderr\n{text[-2000:]}" for r, text in sorted(self.stderr.items())]
        return "\n".join([*ranks, f"--- torchrun\n{self.launcher_stderr[-2000:]}"])


def torchrun(args: list[str], logs: Path, env: dict[str, str], ranks: int = 2, timeout: float = 300) -> RankedRun:
    """``torchrun --standalone`` (a free rendezvous port) on one machine, where local rank = rank."""
    launcher = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run(
        [
            str(launcher),
            "--standalone",
            "--nproc_per_node",
            str(ranks),
            "--log-dir",
            str(logs),
            "--redirects",
            "3",
            *args,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    streams = {
        name: {int(p.parent.name): p.read_text() for p in logs.glob(f"*/attempt_0/*/{name}.log")}
        for name in ("stdout", "stderr")
    }
    return RankedRun(proc.returncode, streams["stdout"], streams["stderr"], proc.stderr)
