"""``python -m modelfile``: commands on model files that need no torch.

    python -m modelfile recalibrate MODEL.onnx --images DIR [--tpr 0.95] [--seed 0] --out NEW.onnx

Each refusal is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .imagefolder import RefusedImages
from .propsfile import NotProtobuf
from .recalibrate import HOLDOUT, TooFewImages, describe, recalibrate
from .schema import InvalidModelFile


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m modelfile", description=__doc__.splitlines()[0])
    commands = p.add_subparsers(dest="command", required=True)
    r = commands.add_parser(
        "recalibrate",
        help="set the threshold again on your own in-distribution images",
        description=f"Run MODEL on the images below --images, set a new threshold and p-value table on "
        f"{1 - HOLDOUT:.0%} of them and print the reject rate on the other {HOLDOUT:.0%} (seeded), "
        "before and after; the new file is MODEL with only its metadata changed.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    r.add_argument("model", type=Path, metavar="MODEL.onnx")
    r.add_argument(
        "--images",
        type=Path,
        required=True,
        metavar="DIR",
        help="in-distribution images (PNG, JPEG, GIF, BMP, TIFF, WebP; sub-folders included)",
    )
    r.add_argument("--tpr", type=float, default=0.95, help="share of in-distribution images the threshold keeps")
    r.add_argument("--seed", type=int, default=0, help="which images are held out")
    r.add_argument("--out", type=Path, required=True, metavar="NEW.onnx")
    args = p.parse_args(argv)
    if not 0.0 < args.tpr < 1.0:
        return _refuse(f"--tpr {args.tpr:g}: must lie strictly between 0 and 1")
    try:
        result = recalibrate(args.model, args.images, args.out, tpr=args.tpr, seed=args.seed)
    except (FileNotFoundError, InvalidModelFile, NotProtobuf, RefusedImages, TooFewImages) as e:
        return _refuse(str(e) if not isinstance(e, NotProtobuf) else f"{args.model}: not an ONNX file ({e})")
    print(describe(result, args.out))
    return 0


def _refuse(message: str) -> int:
    print(f"error: {' '.join(message.split())}", file=sys.stderr)  # one line, whatever the message held
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
