"""``python -m training.mcd``: MCD (two heads, discrepancy fine-tuning, L1 score), see docs/mcd.md.

Two runs of the shared loop: pre-training (cross-entropy on both heads; ``--epochs``, ``--lr`` and the
usual step schedule) into ``OUT/pretrain/``, then fine-tuning (steps A and B on every batch, SGD
``--finetune-lr`` 0.01, momentum 0.9, constant) into ``OUT/``, which holds the final checkpoint and
is what ``--export`` exports. ``--init-from CKPT`` skips pre-training and fine-tunes CKPT (an MCD
checkpoint); ``--resume`` continues whichever phase was interrupted. The method is
``training/methods/mcd.py``.

    python -m training.mcd --dataset svhn --unlabeled noise
    python -m training.mcd --dataset mnist5k --model lenet --epochs 4 --batch-size 64 --finetune-epochs 1
"""

from __future__ import annotations

from . import cli


def main(argv: list[str] | None = None) -> None:
    cli.main("mcd", argv)


if __name__ == "__main__":
    main()
