"""Peak memory of ``python -m service`` for one hostile upload: the figures in docs/service.md.

Starts a fresh server from the repository (or ``--repo``, e.g. another checkout to compare), posts
one RGBA PNG whose pixel data compresses to almost nothing (``--size 1x50000000`` or ``7071x7071``),
``--parallel`` times at once or ``--files`` times in one request, and prints the server's VmHWM
before and after. Extra ``OODSERVE_*`` settings come from the environment.

    python bench/decode_peak_rss.py --size 1x50000000
    python bench/decode_peak_rss.py --size 7071x7071 --parallel 4
    python bench/decode_peak_rss.py --size 7071x7071 --files 16
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def rgba_png(width: int, height: int) -> bytes:
    """A valid RGBA PNG of identical rows, compressed as it streams (never held as pixels)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    row = b"\x00" + b"\x10\x20\x30\xff" * width
    per_feed = max(1, (1 << 20) // len(row))
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row * per_feed) for _ in range(height // per_feed))
    idat += compressor.compress(row * (height % per_feed)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc (Linux only)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, data: bytes, files: int) -> httpx.Response:
    if files:
        parts = [("files", (f"{i}.png", data, "image/png")) for i in range(files)]
        return httpx.post(f"{url}/predict", files=parts, timeout=600)
    return httpx.post(f"{url}/predict", content=data, headers={"content-type": "image/png"}, timeout=600)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1x50000000", help="WIDTHxHEIGHT of the RGBA PNG")
    parser.add_argument("--parallel", type=int, default=1, help="requests at once")
    parser.add_argument("--files", type=int, default=0, help="send the image this many times in one request")
    parser.add_argument("--repo", type=Path, default=REPO, help="checkout whose service to run")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    data = rgba_png(width, height)
    port = free_port()
    env = {
        "OODSERVE_MODEL_DIR": str(args.repo / "models"),
        "OODSERVE_THREADS": "1",
        "OODSERVE_LOG_LEVEL": "warning",
        **os.environ,
        "OODSERVE_HOST": "127.0.0.1",
        "OODSERVE_PORT": str(port),
        "PYTHONPATH": str(args.repo),
    }
    server = subprocess.Popen([sys.executable, "-m", "service"], cwd=args.repo, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the server did not become ready")
            time.sleep(0.1)  # polling interval while the server starts
        idle = peak_rss_kb(server.pid)
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(args.parallel) as pool:
            responses = list(pool.map(lambda _: post(url, data, args.files), range(args.parallel)))
        elapsed = time.monotonic() - started
        peak = peak_rss_kb(server.pid)
        print(f"{args.size} RGBA PNG, {len(data):,} bytes, x{args.parallel} at once, {args.files or 1} per request")
        print(f"statuses {[r.status_code for r in responses]} in {elapsed:.1f} s: {responses[0].text[:160]}")
        print(f"VmHWM {idle / 1024:,.0f} MiB after start-up, {peak / 1024:,.0f} MiB after the request(s)")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
