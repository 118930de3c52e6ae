"""Named training recipes: a network, a schedule and a precision, chosen with ``--recipe NAME``.

A recipe is data, the defaults of the training flags it names; a flag given on the command line still wins, and
the run's config stores every value it trained with (and the recipe's name), so any method trains with any
recipe: ``python -m training acet --dataset cifar10 --recipe fast --pgd-steps 0`` is CEDA on the fast network.

- ``paper``: ``TrainConfig``'s defaults (``training.config``), the ACET paper's training, read from there so the
  two cannot drift. A GPU recipe: 90 s an epoch on this project's 2-core CPU (41 s with --amp).
- ``fast``: airbench94's (Keller Jordan, arXiv 2404.00498) on a CPU: fastnet (frozen whitening, dirac init,
  scale-free BatchNorm with 64x bias learning rate), Nesterov SGD with a warm-up then linear decay, lookahead every
  5 steps, label smoothing 0.2, 2-pixel reflected translations and alternating flips, bf16 with channels_last where
  the CPU has native bf16; 32 epochs, 23 minutes on 2 cores. Batch 512, not airbench's 1,024: on a CPU the
  smaller batch costs nothing per image (the loop: 928 vs 894 images/s here) and takes twice the steps (10
  epochs: 10.25 vs 10.41 % test error). Learning rate and weight decay are airbench's converted to a batch-mean
  loss: its 11.5 per 1,024 images with a summed loss and momentum 0.85 is lr 1.5 at batch 1,024, 0.75 at 512 (the
  same step per image); its decoupled weight decay of 0.0153 per 1,024 images is 0.00133 x lr per step.
- ``fast-long``: the same on fastnet_wide (airbench95's widths, 128/384/384, and its lr 10 per 1,024 images) for
  24 epochs, with 12-pixel cutout (airbench96's): the fast recipe ends at 99.7 % training accuracy, so a longer run
  needs more than translations and flips to keep learning. Minutes traded for accuracy.

- ``finetune``: an ImageNet-pretrained EfficientNet-Lite0 fine-tuned at 64 px: the head first, then everything
  (``training.run.phases``). See ``FINETUNE``.

docs/results/cifar10-fast.md has what each reaches on CIFAR-10 here, and in how long.
"""

from __future__ import annotations

from ..config import TrainConfig

# what makes the paper's training; every other flag already defaults to TrainConfig's value
PAPER_FIELDS = ("model", "epochs", "batch_size", "lr", "momentum", "weight_decay", "lr_schedule")

FAST = {
    "model": "fastnet",
    "epochs": 32,
    "batch_size": 512,
    "lr": 0.75,
    "momentum": 0.85,
    "nesterov": True,
    "weight_decay": 0.00133,
    "lr_schedule": "triangle",
    "warmup": 0.23,
    "bias_lr_scale": 64.0,
    "label_smoothing": 0.2,
    "lookahead": 5,
    "translate": 2,
    "pad_mode": "reflect",
    "flip": "alternating",
    "amp": True,
}

# Fine-tuning EfficientNet-Lite0's ImageNet weights (docs/results/finetune.md). Its frozen features separate CIFAR-10's
# classes poorly at these sizes (a logistic-regression probe on 6,000 images: 61.8 % at 64 px, 71.6 % at 96 px), so the
# body must move; half an epoch of the head alone first, so that a random head's gradients do not wreck it, then the
# whole network, the body at half the head's learning rate; SGD with a short warm-up and a linear decay to zero;
# 64 px, the cheapest size to train and to serve; shifts of 8 px (4 at CIFAR's 32) and flips; label smoothing 0.1; a
# light weight decay (pretrained weights are not to be pulled to zero).
FINETUNE = {
    "model": "efficientnet-lite0",
    "image_size": 64,
    "epochs": 12,
    "batch_size": 64,
    "lr": 0.02,
    "momentum": 0.9,
    "nesterov": True,
    "weight_decay": 5e-5,
    "lr_schedule": "triangle",
    "warmup": 0.1,
    "lr_start": 0.1,
    "lr_end": 0.0,
    "head_epochs": 0.5,
    "body_lr_scale": 0.5,
    "bn": "train",
    "label_smoothing": 0.1,
    "translate": 8,
    "pad_mode": "reflect",
    "flip": "random",
    "amp": True,
}

RECIPES: dict[str, dict] = {
    "paper": {k: getattr(TrainConfig(), k) for k in PAPER_FIELDS},
    "fast": FAST,
    "fast-long": {**FAST, "model": "fastnet_wide", "epochs": 24, "lr": 0.65, "cutout": 12},
    "finetune": FINETUNE,
}
