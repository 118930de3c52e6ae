"""``python -m training.isomax``: IsoMax+ (prototype head, entropic scale, min-distance score).

``--acet`` adds the ACET noise term on top (no published system combines the two; the benchmark
measures it).
"""

from __future__ import annotations

from . import cli


def main(argv: list[str] | None = None) -> None:
    p = cli.parser("Train a classifier with the IsoMax+ loss (optionally plus ACET noise training).")
    p.add_argument("--entropic-scale", type=float, default=10.0, help="IsoMax+ entropic scale in the loss")
    p.add_argument("--acet", action="store_true", help="add the ACET noise term (see the noise flags)")
    cli.add_noise_flags(p, at_frac=1.0)
    args = p.parse_args(argv)
    method = {"name": "isomax+", "entropic_scale": args.entropic_scale}
    if args.acet:
        method = {"name": "acet", "base": method, **cli.noise_options(args)}
    kind = "isomax-acet" if args.acet else "isomax"
    cli.run(args, method, f"{kind}-{args.model}-{args.dataset.replace(':', '_').replace('/', '_')}")


if __name__ == "__main__":
    main()
