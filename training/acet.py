"""``python -m training.acet``: ACET (default), CEDA (``--pgd-steps 0``) or plain (``--at-frac 0``).

Defaults are the paper's: resnet_small, 100 epochs, SGD momentum 0.9, lr 0.1 divided by 10 at
50/75/90 % of training, batch 128, at_frac 1, PGD 40 steps in an L-inf ball of 0.3. The method is
``training/methods/acet.py``.
"""

from __future__ import annotations

from . import cli


def main(argv: list[str] | None = None) -> None:
    cli.main("acet", argv)


if __name__ == "__main__":
    main()
