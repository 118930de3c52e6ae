"""docs/results/serving.md from one run of bench/serve_bench.py: the tables, the issue's targets, the breakdown."""

from __future__ import annotations

import statistics

from service.settings import Settings

DEFAULTS = Settings()
MAIN = "oodserve defaults"
NAIVE = "naive FastAPI + onnxruntime"
FLOOR = "HTTP floor (multipart parsed)"
BENTOML = "BentoML adaptive batching (max 32)"


def _fmt(x: float | None, digits: int = 0) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def _verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def limit(model: dict, c: int) -> tuple[float, dict]:
    """The one-core limit (req/s): 1 / (HTTP floor + decode + onnxruntime per image at the served batch)."""
    raw = model["raw"]
    point = model["closed"][MAIN][c]
    m = point.get("metrics", {})
    batch = m["oodserve_batch_size_sum"] / m["oodserve_batch_size_count"] if m.get("oodserve_batch_size_count") else 1
    nearest = min((1, 8, 32), key=lambda b: abs(b - batch))
    floor_us = 1e6 / model["closed"][FLOOR][32]["rps"]
    parts = {
        "floor_us": floor_us,
        "decode_us": raw["load_image_us"],
        "ort_us": raw[f"ort_us_per_image_b{nearest}"],
        "batch": batch,
        "ort_batch": nearest,
    }
    return 1e6 / (floor_us + raw["load_image_us"] + parts["ort_us"]), parts


def closed_table(model: dict) -> list[str]:
    cs = sorted({c for pts in model["closed"].values() for c in pts})
    lines = [
        "| server | " + " | ".join(f"c={c} req/s (p50 / p99 ms)" for c in cs) + " | non-2xx |",
        "|---|" + "---|" * (len(cs) + 1),
    ]
    for name, pts in model["closed"].items():
        cells = [f"{_fmt(pts[c]['rps'])} ({_fmt(pts[c]['p50'], 2)} / {_fmt(pts[c]['p99'], 1)})" for c in cs]
        non2xx = sum(pts[c]["non2xx"] + pts[c]["errors"] for c in cs)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {non2xx} |")
    return lines


def breakdown(model: dict, c: int) -> list[str]:
    point = model["closed"][MAIN][c]
    m = point.get("metrics")
    if not m or not m.get("oodserve_request_duration_seconds_count"):
        return ["(no metrics scraped)"]
    req = m["oodserve_request_duration_seconds_sum"] / m["oodserve_request_duration_seconds_count"] * 1e3
    wait = m["oodserve_queue_wait_seconds_sum"] / max(m["oodserve_queue_wait_seconds_count"], 1) * 1e3
    infer = m["oodserve_inference_duration_seconds_sum"] / max(m["oodserve_inference_duration_seconds_count"], 1) * 1e3
    batch = m["oodserve_batch_size_sum"] / max(m["oodserve_batch_size_count"], 1)
    cpu_us = point["server_cores"] / point["rps"] * 1e6 if point["rps"] else 0
    return [
        f"From the service's own metrics over the c={c} point ({point['rps']:,.0f} req/s, "
        f"server CPU {point['server_cores']:.2f} cores = {cpu_us:,.0f} us per request):",
        "",
        "| part of a request (mean) | ms |",
        "|---|---|",
        f"| whole request, as the service times it | {req:.2f} |",
        f"| waiting in the batcher's queue | {wait:.2f} |",
        f"| the batch's inference (mean batch {batch:.1f} images; {infer / batch * 1e3:,.0f} us per image) "
        f"| {infer:.2f} |",
        f"| the rest: body read, decode, verdicts, response, event-loop turns | {max(req - wait - infer, 0):.2f} |",
    ]


def targets(run: dict) -> list[str]:
    lines = ["| # | target | model | measured | verdict |", "|---|---|---|---|---|"]
    delay = DEFAULTS.max_delay_ms
    for model in run["results"]:
        key, closed = model["model"], model["closed"]
        main, naive = closed[MAIN], closed[NAIVE]
        r = main[1]["p50"] / naive[1]["p50"]
        lines.append(
            f"| 1 | c=1 p50 <= 1.2x naive | {key} | {main[1]['p50']:.2f} / {naive[1]['p50']:.2f} ms = "
            f"{r:.2f}x | {_verdict(r <= 1.2)} |"
        )
        for c in (c for c in (32, 128) if c in main):
            lim, _ = limit(model, c)
            rl, rn = main[c]["rps"] / lim, main[c]["rps"] / naive[c]["rps"]
            # wrk prints no percentile it could not measure (every request of a point timed out): none is worst.
            lower = (main[c]["p99"] or float("inf")) < (naive[c]["p99"] or float("inf"))
            lines.append(
                f"| 2 | c={c}: >= 0.85x one-core limit | {key} | {main[c]['rps']:,.0f} / {lim:,.0f} = "
                f"{rl:.2f}x | {_verdict(rl >= 0.85)} |"
            )
            lines.append(
                f"| 2 | c={c}: >= 1.5x naive, lower p99 | {key} | {rn:.2f}x; p99 {_fmt(main[c]['p99'])} vs "
                f"{_fmt(naive[c]['p99'])} ms | {_verdict(rn >= 1.5 and lower)} |"
            )
        bento = closed.get(BENTOML)
        for c in (c for c in (32, 128) if c in main):
            if bento is None or not bento[c]["rps"]:
                lines.append(f"| 2 | c={c}: >= 2x BentoML | {key} | BentoML not measured | n/a |")
                continue
            rb = main[c]["rps"] / bento[c]["rps"]
            lines.append(
                f"| 2 | c={c}: >= 2x BentoML | {key} | {main[c]['rps']:,.0f} / {bento[c]['rps']:,.0f} = "
                f"{rb:.2f}x | {_verdict(rb >= 2)} |"
            )
        if MAIN in model["open"]:
            o = model["open"][MAIN]
            bound = 2 * (main[1]["p50"] + delay)
            p99 = o["half"]["ok_ms"].get("p99", float("inf"))
            lines.append(
                f"| 3 | p99 at half capacity ({o['half']['goodput_rps']:,.0f} req/s, open loop) <= "
                f"2x (c=1 p50 + {delay:g} ms) = {bound:.1f} ms | {key} | {p99:.1f} ms | "
                f"{_verdict(p99 <= bound)} |"
            )
            lines += overload_rows(key, o)
        if "workers" in model:
            w = model["workers"]
            ratio = statistics.mean(w["2 workers"]) / statistics.mean(w["1 worker"])
            lines.append(
                f"| 5 | 2 workers >= 1.6x 1 worker at c=128 | {key} | "
                f"{statistics.mean(w['2 workers']):,.0f} / {statistics.mean(w['1 worker']):,.0f} = "
                f"{ratio:.2f}x | {_verdict(ratio >= 1.6)} |"
            )
    return lines


def recovery_s(o: dict) -> float | None:
    """Seconds after the overload until every later second's p99 of 200s is within 2x the half-load p99."""
    base = o["half"]["ok_ms"].get("p99")
    after = o["overload"]["phases"][2]["per_second"]
    if base is None or not after:
        return None
    for i, sec in enumerate(after):
        if all(s["p99_ms"] is not None and s["p99_ms"] <= 2 * base for s in after[i:]):
            return float(sec["s"])
    return None


# A refusal is "fast" when its p99 is under this: a client told 503 seconds late has waited anyway.
FAST_REFUSAL_MS = 100.0


def overload_rows(key: str, o: dict) -> list[str]:
    ph = o["overload"]["phases"][1]
    goodput = ph["goodput_rps"] / o["capacity"]
    other = {k: v for k, v in ph["status"].items() if k not in ("200", "503")}
    shed_p99 = ph["shed_ms"].get("p99")
    clean = (
        not other
        and not ph["errors"]
        and not ph["unsent"]
        and not ph["shed_without_retry_after"]
        and (shed_p99 is None or shed_p99 <= FAST_REFUSAL_MS)
    )
    ok_p99 = ph["ok_ms"].get("p99", float("inf"))
    rec = recovery_s(o)
    deadline = DEFAULTS.deadline_ms
    return [
        f"| 4 | overload goodput >= 0.9x capacity | {key} | {ph['goodput_rps']:,.0f} / {o['capacity']:,.0f} = "
        f"{goodput:.2f}x | {_verdict(goodput >= 0.9)} |",
        f"| 4 | every refusal a fast (p99 <= {FAST_REFUSAL_MS:.0f} ms) 503 + Retry-After | {key} | "
        f"503s: {ph['status'].get('503', 0)}, p99 "
        f"{_fmt(shed_p99, 1)} ms; other: {other or 'none'}, errors {ph['errors']}, unsent {ph['unsent']}, "
        f"no Retry-After {ph['shed_without_retry_after']} | {_verdict(clean)} |",
        f"| 4 | accepted p99 under the deadline ({deadline:,.0f} ms) | {key} | {ok_p99:,.0f} ms | "
        f"{_verdict(ok_p99 < deadline)} |",
        f"| 4 | back to baseline within 5 s | {key} | {'never' if rec is None else f'{rec:g} s'} | "
        f"{_verdict(rec is not None and rec <= 5)} |",
    ]


def open_table(model: dict) -> list[str]:
    lines = [
        "| server | offered req/s | sent req/s | goodput req/s | status counts | 200 p50 / p99 ms | "
        "503 p99 ms | client lag p99 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, o in model["open"].items():
        rows = [
            ("half capacity", o["half"]),
            *list(zip(("before", "4x overload", "after"), o["overload"]["phases"], strict=True)),
        ]
        for label, ph in rows:
            ok = ph["ok_ms"]
            lines.append(
                f"| {name}, {label} | {ph['offered_rps']:,.0f} | {ph['sent_rps']:,.0f} | "
                f"{ph['goodput_rps']:,.0f} | {ph['status']} | {_fmt(ok.get('p50'), 1)} / "
                f"{_fmt(ok.get('p99'), 1)} | {_fmt(ph['shed_ms'].get('p99'), 1)} | {ph['lag_ms_p99']} |"
            )
    return lines


def markdown(run: dict) -> str:
    """The report; ``run`` as serve_bench builds it, or read back from its JSON (concurrencies as strings)."""
    for model in run["results"]:
        model["closed"] = {name: {int(c): p for c, p in pts.items()} for name, pts in model["closed"].items()}
    out = [
        "# Serving performance (bench/serve_bench.py)",
        "",
        f"Run {run['started']}: `{run['command']}`; {run['seconds']:g} s per point. Load average (1/5/15 min) "
        f"at the start {', '.join(f'{x:.2f}' for x in run['load_start'])}, at the end "
        f"{', '.join(f'{x:.2f}' for x in run['load_end'])} on a 2-core machine: anything above ~1 at the start "
        "was other work on the machine, which slows every server of the run alike (points interleaved).",
        "",
        "Servers pinned to core 0, wrk (1 thread) and the open-loop client to core 1. Ratios are of points of "
        "this one run; absolute figures are this machine's at this time.",
    ]
    for model in run["results"]:
        lim32, parts = limit(model, 32) if 32 in model["closed"][MAIN] else (None, None)
        raw = model["raw"]
        out += [
            "",
            f"## {model['model']}",
            "",
            *([f"Model file `{model['file']}`.", ""] if "file" in model else []),
            *closed_table(model),
            "",
            f"Raw onnxruntime (1 thread, core 0), us per image: batch 1 {raw['ort_us_per_image_b1']:.0f}, "
            f"batch 8 {raw['ort_us_per_image_b8']:.0f}, batch 32 {raw['ort_us_per_image_b32']:.0f}; "
            f"`load_image` {raw['load_image_us']:.0f} us.",
        ]
        if parts:
            out += [
                "",
                f"One-core limit at c=32: 1 / ({parts['floor_us']:.0f} us HTTP floor + {parts['decode_us']:.0f}"
                f" us decode + {parts['ort_us']:.0f} us onnxruntime at batch {parts['ort_batch']}; served mean "
                f"batch {parts['batch']:.1f}) = {lim32:,.0f} req/s.",
                "",
                *breakdown(model, 32),
            ]
        if model["open"]:
            out += ["", "Open loop (latency counted from each request's scheduled send):", "", *open_table(model)]
        if "workers" in model:
            out += ["", f"Workers, unpinned, c=128, two rounds each: {model['workers']}"]
    out += ["", "## Targets", "", *targets(run), ""]
    return "\n".join(out)
