"""``python -m training.acet``: ACET (default), CEDA (``--pgd-steps 0``) or plain (``--at-frac 0``).

Defaults are the paper's: resnet_small, 100 epochs, SGD momentum 0.9, lr 0.1 divided by 10 at
50/75/90 % of training, batch 128, at_frac 1, PGD 40 steps in an L-inf ball of 0.3.
"""

from __future__ import annotations

from . import cli


def main(argv: list[str] | None = None) -> None:
    p = cli.parser("Train a classifier with ACET / CEDA / plain cross-entropy.")
    cli.add_noise_flags(p, at_frac=1.0)
    args = p.parse_args(argv)
    method = {"name": "acet", "base": {"name": "plain"}, **cli.noise_options(args)}
    kind = "plain" if args.at_frac == 0 else ("ceda" if args.pgd_steps == 0 else "acet")
    cli.run(args, method, f"{kind}-{args.model}-{args.dataset.replace(':', '_').replace('/', '_')}")


if __name__ == "__main__":
    main()
