"""Kill a training command at a point its own output names: the kill-and-resume tests' one way to interrupt a run."""

from __future__ import annotations

import subprocess


def kill_after_line(cmd: list[str], prefix: str, env: dict[str, str]) -> None:
    """Start ``cmd`` and SIGKILL it as soon as it prints a line starting with ``prefix`` (blocking on its output,
    no sleeps); fail if it ends before printing one."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        for line in proc.stdout:
            if line.startswith(prefix):
                return
        raise AssertionError(f"the run ended before printing a line starting with {prefix!r}")
    finally:
        proc.kill()
        proc.wait()
