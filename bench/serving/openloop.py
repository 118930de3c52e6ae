"""An open-loop HTTP load generator: requests leave on a fixed schedule, whether or not answers came back.

    python bench/serving/openloop.py --port P --body FILE --content-type CT --phase RATE:SECONDS [--phase ...]

Closed-loop clients (wrk) slow down with the server, which hides queueing; here each request is
due at ``start + i / rate`` and its latency counts from that moment, so a server that falls behind
is charged for the wait (no coordinated omission). Requests go over keep-alive connections: an idle
one if there is one, else a new one (at most ``--max-connections``; a request finding none is
counted as ``unsent``). Prints one JSON object: per phase the offered and sent rates, the answers
by status, latency percentiles of the 200s and of the 503s, whether every 503 had Retry-After,
and per second the 200s and their p99. ``lag_ms`` (how late the client sent, p99) shows whether
the client kept up; uvloop is used when installed.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import time
from pathlib import Path

import numpy as np


class Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    async def request(self, payload: bytes) -> tuple[int, bool, bool]:
        """(status, has Retry-After, keep-alive)."""
        self.writer.write(payload)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length, retry_after, close = 0, False, False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"retry-after":
                retry_after = True
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        if length:
            await self.reader.readexactly(length)
        return status, retry_after, not close


class Phase:
    def __init__(self, rate: float, seconds: float):
        self.rate, self.seconds = rate, seconds
        self.sent = self.unsent = self.errors = 0
        self.latencies: dict[int, list[float]] = collections.defaultdict(list)
        self.no_retry_after = 0
        self.lags: list[float] = []
        self.per_second: dict[int, list[float]] = collections.defaultdict(list)
        self.t0 = 0.0
        self.ok_done: list[float] = []  # completion times of the 200s of every phase (shared)

    def summary(self) -> dict:
        ok = np.array(self.latencies.get(200, []))
        shed = np.array(self.latencies.get(503, []))

        def pct(a: np.ndarray) -> dict:
            if not len(a):
                return {}
            return {f"p{q}": round(float(np.percentile(a, q)) * 1000, 2) for q in (50, 90, 99)}

        return {
            "offered_rps": self.rate,
            "seconds": self.seconds,
            "sent_rps": round(self.sent / self.seconds, 1),
            "unsent": self.unsent,
            "errors": self.errors,
            "status": {str(k): len(v) for k, v in sorted(self.latencies.items())},
            # 200s completed within the phase's window (whichever phase sent them): what the server delivered.
            "goodput_rps": round(sum(self.t0 <= t < self.t0 + self.seconds for t in self.ok_done) / self.seconds, 1),
            "ok_ms": pct(ok),
            "shed_ms": pct(shed),
            "shed_without_retry_after": self.no_retry_after,
            "lag_ms_p99": round(float(np.percentile(self.lags, 99)) * 1000, 2) if self.lags else None,
            "per_second": [
                {"s": s, "ok": len(v), "p99_ms": round(float(np.percentile(v, 99)) * 1000, 1) if v else None}
                for s, v in sorted(self.per_second.items())
            ],
        }


class Client:
    """Keep-alive connections to the server: an idle one if there is one, else a new one up to ``max_connections``."""

    def __init__(self, port: int, payload: bytes, max_connections: int):
        self.port, self.payload, self.max_connections = port, payload, max_connections
        self.idle: list[Conn] = []
        self.open_conns = 0
        self.ok_done: list[float] = []  # completion times of the 200s of every phase

    async def connect(self) -> Conn:
        self.open_conns += 1
        try:
            return Conn(*await asyncio.open_connection("127.0.0.1", self.port))
        except OSError:
            self.open_conns -= 1
            raise

    def close(self, conn: Conn) -> None:
        conn.writer.close()
        self.open_conns -= 1

    async def exchange(self, conn: Conn | None) -> tuple[Conn, tuple[int, bool, bool]]:
        """The connection used and its answer: on ``conn`` if given, else on a new one."""
        if conn is not None:
            try:
                return conn, await self._answer_on(conn)
            except (OSError, asyncio.IncompleteReadError):
                # The server closed this idle keep-alive connection (its idle timeout): retry on a new one,
                # as HTTP clients do.
                pass
        conn = await self.connect()
        return conn, await self._answer_on(conn)

    async def _answer_on(self, conn: Conn) -> tuple[int, bool, bool]:
        """The answer on ``conn``; a connection that fails is closed before the error goes on."""
        try:
            return await conn.request(self.payload)
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            self.close(conn)
            raise

    async def one(self, phase: Phase, due: float, t0: float) -> None:
        """One request due at ``due``, its outcome counted in ``phase``."""
        conn = self.idle.pop() if self.idle else None
        if conn is None and self.open_conns >= self.max_connections:
            phase.unsent += 1
            return
        phase.sent += 1
        try:
            conn, (status, retry_after, keep) = await self.exchange(conn)
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            phase.errors += 1
            return
        done = time.perf_counter()
        phase.latencies[status].append(done - due)
        if status == 503 and not retry_after:
            phase.no_retry_after += 1
        if status == 200:
            self.ok_done.append(done)
            phase.per_second[int(due - t0)].append(done - due)
        if keep:
            self.idle.append(conn)
        else:
            self.close(conn)


async def run_phase(client: Client, spec: str, tasks: set[asyncio.Task]) -> Phase:
    """Send a phase's requests on schedule (``RATE:SECONDS``), without waiting for their answers."""
    rate, seconds = (float(x) for x in spec.split(":"))
    phase = Phase(rate, seconds)
    t0 = phase.t0 = time.perf_counter()
    phase.ok_done = client.ok_done
    i = 0
    n = int(rate * seconds)
    while i < n:
        now = time.perf_counter()
        while i < n and t0 + i / rate <= now:
            due = t0 + i / rate
            phase.lags.append(now - due)
            task = asyncio.create_task(client.one(phase, due, t0))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
        await asyncio.sleep(0.0005)  # the schedule's tick, not synchronisation
    return phase


async def main(args: argparse.Namespace) -> None:
    body = Path(args.body).read_bytes()
    payload = (
        f"POST {args.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {args.content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    client = Client(args.port, payload, args.max_connections)
    tasks: set[asyncio.Task] = set()
    phases = [await run_phase(client, spec, tasks) for spec in args.phase]
    deadline = time.perf_counter() + args.drain_s
    while tasks and time.perf_counter() < deadline:
        await asyncio.wait(set(tasks), timeout=max(deadline - time.perf_counter(), 0.001))
    for task in tasks:
        task.cancel()
    print(json.dumps({"phases": [p.summary() for p in phases], "unanswered": len(tasks)}))


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default="/predict")
    p.add_argument("--body", required=True)
    p.add_argument("--content-type", required=True)
    p.add_argument("--phase", action="append", required=True, help="RATE:SECONDS, in order")
    p.add_argument("--max-connections", type=int, default=4000)
    p.add_argument("--drain-s", type=float, default=15.0, help="how long to wait for answers after the last send")
    args = p.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main(args))
