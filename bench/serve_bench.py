"""Serving performance side by side: oodserve against a naive server, the HTTP floor and raw onnxruntime.

    .venv/bin/python bench/serve_bench.py [--quick] [--seconds 5] [--before DIR] [--out docs/results/serving.md]

For each model (the bundled LeNet with a 28x28 PNG upload; the photo model 3x32x32, the bundled CIFAR-10
model or an untrained resnet_small export, with a 32x32 JPEG upload; each followed by its int8 file,
``NAME-int8.onnx``, where the checkout has one) it starts every server for real on a loopback
port, pinned to core 0 with ``taskset``, all at once (idle ones cost nothing), and drives them with
``wrk`` (one thread, pinned to core 1; a Lua script sends the multipart upload) at concurrency 1, 8, 32
and 128, interleaved: for each concurrency every server in turn, so load from elsewhere on the machine
falls on all of them alike. Servers: oodserve with its defaults, oodserve with batching off
(``max_batch_size=1``), the naive FastAPI + onnxruntime server and the HTTP floor
(bench/serving/baselines.py), and with ``--before DIR`` the service from another source tree (the before
of a change). Then, on oodserve, the open-loop client (bench/serving/openloop.py, pinned to core 1)
offers half the measured capacity, and 4x the capacity followed by half of it (overload and recovery).
Then 1 vs 2 workers, unpinned (client sharing the two cores), at c=128. Raw onnxruntime and
``load_image`` are timed in a process pinned to core 0 (bench/serving/rawcost.py). Every ratio in the
report comes from points of this one run. ``uptime``'s load average is recorded at the start and end:
other work on the machine shows there.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.serving import report
from bench.serving.models import LENET, cifar_like_upload, int8_sibling, lenet_upload, photo_model

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
BOUNDARY = "oodservebenchboundary"
BENTOML = "BentoML adaptive batching (max 32)"
LUA = """
local f = io.open(os.getenv("BENCH_BODY"), "rb")
wrk.body = f:read("*a")
f:close()
wrk.method = "POST"
wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE")
"""


@dataclass
class Server:
    name: str
    argv: list[str]
    env: dict[str, str]
    port: int = 0
    process: subprocess.Popen | None = None
    oodserve: bool = False
    ready_path: str = "/openapi.json"
    port_flag: str = "--port"

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@dataclass
class Model:
    key: str
    path: Path
    upload: bytes
    filename: str
    mime: str
    body_file: Path = field(init=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def multipart(model: Model, workdir: Path) -> Path:
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{model.filename}"\r\n'
        f"Content-Type: {model.mime}\r\n\r\n"
    ).encode()
    path = workdir / f"{model.key}.body"
    path.write_bytes(head + model.upload + f"\r\n--{BOUNDARY}--\r\n".encode())
    return path


def oodserve_env(model: Model, workdir: Path, src: Path, **settings: object) -> dict[str, str]:
    model_dir = workdir / f"models-{model.key}"
    model_dir.mkdir(exist_ok=True)
    link = model_dir / model.path.name
    if not link.exists():
        link.symlink_to(model.path)
    env = {"PYTHONPATH": str(src), "OODSERVE_MODEL_DIR": str(model_dir), "OODSERVE_DEFAULT_MODEL": model.path.stem}
    env.update({f"OODSERVE_{k.upper()}": str(v) for k, v in settings.items()})
    return env


def servers_for(model: Model, workdir: Path, args: argparse.Namespace) -> list[Server]:
    oodserve = [PYTHON, "-m", "service"]
    out = [
        Server("oodserve defaults", oodserve, oodserve_env(model, workdir, ROOT), oodserve=True),
        Server(
            "oodserve max batch 1",
            oodserve,
            oodserve_env(model, workdir, ROOT, max_batch_size=1, max_files=1),
            oodserve=True,
        ),
    ]
    if args.before:
        out.append(Server("oodserve before", oodserve, oodserve_env(model, workdir, args.before), oodserve=True))
    uvicorn = [PYTHON, "-m", "uvicorn", "--log-level", "warning", "--no-access-log"]
    baseline_env = {"PYTHONPATH": str(ROOT), "BENCH_MODEL": str(model.path)}
    out.append(Server("naive FastAPI + onnxruntime", [*uvicorn, "bench.serving.baselines:naive"], baseline_env))
    out.append(Server("HTTP floor (multipart parsed)", [*uvicorn, "bench.serving.baselines:floor"], baseline_env))
    if args.bentoml:
        bento = [str(args.bentoml), "-m", "bentoml", "serve", "bench.serving.bento_service:Classifier"]
        env = {**baseline_env, "BENTOML_HOME": str(workdir / "bentoml"), "BENTOML_DO_NOT_TRACK": "true"}
        out.append(Server(BENTOML, bento, env, ready_path="/readyz"))
    return out


def start(server: Server, cpus: str | None, log: Path) -> None:
    server.port = free_port()
    argv = list(server.argv)
    if server.oodserve:
        server.env["OODSERVE_PORT"] = str(server.port)
    else:
        argv += [server.port_flag, str(server.port)]
    if cpus is not None:
        argv = ["taskset", "-c", cpus, *argv]
    env = {**os.environ, **server.env}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    # `python -m` puts the working directory first on sys.path: run in the source tree measured.
    cwd = server.env.get("PYTHONPATH", str(ROOT))
    server.process = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=log.open("ab"))


def wait_ready(server: Server, timeout_s: float = 120.0) -> None:
    path = "/readyz" if server.oodserve else server.ready_path
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.process.returncode}")
        with contextlib.suppress(OSError), urllib.request.urlopen(server.url(path), timeout=1) as r:
            if r.status == 200:
                return
        time.sleep(0.1)  # polling a starting server: there is nothing to wait on
    raise RuntimeError(f"{server.name} not ready after {timeout_s} s")


def stop(server: Server) -> None:
    if server.process and server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(30)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


@contextlib.contextmanager
def running(servers: list[Server], cpus: str | None, log: Path) -> Iterator[None]:
    try:
        for s in servers:
            start(s, cpus, log)
        for s in servers:
            wait_ready(s)
        yield
    finally:
        for s in servers:
            stop(s)


def server_cpu_s(server: Server) -> float:
    """CPU seconds of the server and its children (workers)."""
    pids = [server.process.pid]
    with contextlib.suppress(OSError):
        children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children").read_text().split()
        pids += [int(p) for p in children]
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    return float(m.group(1)) * _UNITS[m.group(2)]


def wrk(server: Server, model: Model, connections: int, seconds: float, cpus: str | None) -> dict:
    argv = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--latency",
        "--timeout",
        "30s",
        "-s",
        str(model.body_file.with_suffix(".lua")),
        server.url("/predict"),
    ]
    if cpus is not None:
        argv = ["taskset", "-c", cpus, *argv]
    env = {
        **os.environ,
        "BENCH_BODY": str(model.body_file),
        "BENCH_CONTENT_TYPE": f"multipart/form-data; boundary={BOUNDARY}",
    }
    cpu0 = server_cpu_s(server)
    text = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=seconds + 60).stdout
    cpu = server_cpu_s(server) - cpu0
    total = int(re.search(r"(\d+) requests in", text).group(1))
    non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", text)) else 0
    errors = (
        sum(int(x) for x in m.groups())
        if (m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text))
        else 0
    )
    pct = {int(q): _ms(v) for q, v in re.findall(r"^\s+(\d+)%\s+(\S+)\s*$", text, re.M)}
    return {
        "rps": (total - non2xx) / seconds,
        "p50": pct.get(50),
        "p99": pct.get(99),
        "non2xx": non2xx,
        "errors": errors,
        "server_cores": cpu / seconds,
    }


def scrape(server: Server) -> dict[str, float]:
    """The service's own histograms' sums and counts (all labels summed)."""
    with urllib.request.urlopen(server.url("/metrics"), timeout=10) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r"^(oodserve_\w+?_(?:sum|count))(\{[^}]*\})? ([0-9.e+-]+)$", line)
        if m and ('endpoint="/predict"' in (m.group(2) or "") or "request" not in m.group(1)):
            out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(3))
    return out


def open_loop(server: Server, model: Model, phases: list[tuple[float, float]], cpus: str) -> dict:
    argv = [
        "taskset",
        "-c",
        cpus,
        PYTHON,
        str(ROOT / "bench" / "serving" / "openloop.py"),
        "--port",
        str(server.port),
        "--body",
        str(model.body_file),
        "--content-type",
        f"multipart/form-data; boundary={BOUNDARY}",
    ]
    for rate, seconds in phases:
        argv += ["--phase", f"{rate:.0f}:{seconds:g}"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=sum(s for _, s in phases) + 90)
    if out.returncode:
        raise RuntimeError(f"open-loop client failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout)


def raw_costs(model: Model, workdir: Path) -> dict:
    image = workdir / f"{model.key}.upload"
    image.write_bytes(model.upload)
    out = subprocess.run(
        ["taskset", "-c", "0", PYTHON, "-m", "bench.serving.rawcost", str(model.path), str(image)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def bench_model(model: Model, workdir: Path, args: argparse.Namespace) -> dict:
    log = workdir / "servers.log"
    model.body_file = multipart(model, workdir)
    model.body_file.with_suffix(".lua").write_text(LUA)
    result: dict = {
        "model": model.key,
        "file": model.path.name,
        "raw": raw_costs(model, workdir),
        "closed": {},
        "open": {},
    }
    servers = servers_for(model, workdir, args)
    with running(servers, "0", log):
        for s in servers:
            wrk(s, model, 32, 1, "1")  # warm-up
        for c in args.concurrency:
            for s in servers:
                before = scrape(s) if s.oodserve else None
                point = wrk(s, model, c, args.seconds, "1")
                if before is not None:
                    after = scrape(s)
                    point["metrics"] = {k: after[k] - before.get(k, 0.0) for k in after}
                result["closed"].setdefault(s.name, {})[c] = point
                print(
                    f"  {model.key} {s.name:32s} c={c:<4d} {point['rps']:8.0f} req/s  p50 {point['p50']} ms  "
                    f"p99 {point['p99']} ms  non-2xx {point['non2xx']}",
                    flush=True,
                )
        for s in servers:
            if not s.oodserve or s.name == "oodserve max batch 1":
                continue
            capacity = max(result["closed"][s.name][c]["rps"] for c in args.concurrency if c >= 32)
            half = open_loop(s, model, [(capacity / 2, args.seconds)], "1")["phases"][0]
            over = open_loop(
                s, model, [(capacity / 2, 2), (capacity * 4, args.seconds), (capacity / 2, args.recovery_s)], "1"
            )
            result["open"][s.name] = {"capacity": capacity, "half": half, "overload": over}
            print(
                f"  {model.key} {s.name}: open loop half {half['goodput_rps']} req/s p99 {half['ok_ms']}; "
                f"overload goodput {over['phases'][1]['goodput_rps']} status {over['phases'][1]['status']}",
                flush=True,
            )
    if not args.quick:
        result["workers"] = workers(model, workdir, args, log)
    return result


def workers(model: Model, workdir: Path, args: argparse.Namespace, log: Path) -> dict:
    """1 vs 2 workers, unpinned, client sharing the cores; two rounds, interleaved."""
    one = Server("1 worker", [PYTHON, "-m", "service"], oodserve_env(model, workdir, ROOT, workers=1), oodserve=True)
    two = Server("2 workers", [PYTHON, "-m", "service"], oodserve_env(model, workdir, ROOT, workers=2), oodserve=True)
    out: dict[str, list[float]] = {one.name: [], two.name: []}
    with running([one, two], None, log):
        for s in (one, two):
            wrk(s, model, 128, 1, None)
        for _ in range(2):
            for s in (one, two):
                out[s.name].append(wrk(s, model, 128, args.seconds, None)["rps"])
    print(f"  {model.key} workers: {out}", flush=True)
    return out


def models(workdir: Path, args: argparse.Namespace) -> list[Model]:
    """LeNet and (unless --quick) the photo model, each followed by its int8 file when the checkout has one."""
    chosen = [("lenet", LENET, lenet_upload(), "digit.png", "image/png")]
    if not args.quick:
        chosen.append(("photo", photo_model(args.cache), cifar_like_upload(), "image.jpg", "image/jpeg"))
    out = []
    for key, path, *upload in chosen:
        out.append(Model(key, path, *upload))
        if (int8 := int8_sibling(path)) is not None:
            out.append(Model(f"{key}-int8", int8, *upload))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="LeNet only, c=1 and 32, 2 s points, no workers phase")
    p.add_argument("--seconds", type=float, default=5.0, help="length of each measured point")
    p.add_argument("--recovery-s", type=float, default=6.0, help="half-capacity load after the overload")
    p.add_argument("--before", type=Path, help="a source tree of the service to measure as 'oodserve before'")
    p.add_argument("--bentoml", type=Path, help="python of a venv with bentoml installed: adds BentoML's server")
    p.add_argument(
        "--cache",
        type=Path,
        default=Path(tempfile.gettempdir()) / "oodserve-bench",
        help="where the untrained resnet_small is exported when the checkout has no photo model",
    )
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "serving.md")
    args = p.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk not found: apt-get install -y wrk")
    args.concurrency = [1, 32] if args.quick else [1, 8, 32, 128]
    if args.quick:
        args.seconds = min(args.seconds, 2.0)
    started = datetime.datetime.now(datetime.UTC)
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        results = [bench_model(m, Path(tmp), args) for m in models(Path(tmp), args)]
    run = {
        "started": started.isoformat(timespec="seconds"),
        "load_start": load_start,
        "load_end": os.getloadavg(),
        "command": " ".join(["python", *sys.argv]),
        "seconds": args.seconds,
        "quick": args.quick,
        "before": str(args.before) if args.before else None,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(run, indent=1))
    args.out.write_text(report.markdown(run))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
