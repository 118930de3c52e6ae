"""``python -m training.isomax``: IsoMax+ (prototype head, entropic scale, min-distance score).

``--acet`` adds the ACET noise term on top (no published system combines the two; the benchmark
measures it). The method is ``training/methods/isomax.py``.
"""

from __future__ import annotations

from . import cli


def main(argv: list[str] | None = None) -> None:
    cli.main("isomax+", argv)


if __name__ == "__main__":
    main()
