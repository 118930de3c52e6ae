"""The README's photo examples, asked of the real service: ``python scripts/photo_examples.py``.

Starts ``python -m service`` on a free loopback port with the bundled models (``models/``), waits until
``/readyz`` says ready, posts each of ``docs/examples/`` cat.jpg, coffee.jpg, text-page.png and digit-7.png to a
bundled CIFAR-10 model (``top_k=2``; the photo model's v3 unless another is named: ``python
scripts/photo_examples.py cifar10-acet-oe-fastnet``), prints each response as the README quotes it, and stops the
server.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ("cat.jpg", "coffee.jpg", "text-page.png", "digit-7.png")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, path: Path) -> dict:
    boundary = uuid.uuid4().hex
    kind = "image/jpeg" if path.suffix == ".jpg" else "image/png"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
            f"Content-Type: {kind}\r\n\r\n"
        ).encode()
        + path.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(url, body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def bundled_service() -> Iterator[str]:
    """``python -m service`` with the bundled models on a free loopback port, ready; yields its URL."""
    port = free_port()
    env = {
        **os.environ,
        "OODSERVE_MODEL_DIR": str(ROOT / "models"),
        "OODSERVE_HOST": "127.0.0.1",
        "OODSERVE_PORT": str(port),
    }
    server = subprocess.Popen([sys.executable, "-m", "service"], cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not ready(url):
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"error: the service did not become ready on {url}")
            time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    model = sys.argv[1] if len(sys.argv) > 1 else "cifar10-photo-v3"
    with bundled_service() as url:
        for name in EXAMPLES:
            answer = post(f"{url}/predict?model={model}&top_k=2", ROOT / "docs" / "examples" / name)
            # as a user asks `make serve`'s default address; this server's own port is a free one
            print(f"$ curl -s -F file=@docs/examples/{name} 'http://127.0.0.1:8000/predict?model={model}&top_k=2'")
            print(json.dumps(answer, separators=(",", ":")))


if __name__ == "__main__":
    main()
