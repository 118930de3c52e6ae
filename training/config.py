"""One training run, as plain data: what the CLI builds, the loop runs and the checkpoint stores.

The field defaults are the one source of every training default: the command's flags default to them
(``training.cli``) and the ``paper`` recipe is them (``training.run.recipes``). They are the ACET paper's
training (Hein et al., CVPR 2019): resnet_small, SGD with momentum at batch 128, lr divided by 10 at 50/75/90 %
of the steps, fp32. This module sits beside the rooms, not in ``run/``, because methods read it too
(``Cli.runs`` turns one config into the runs a method needs) and the ``run`` room reads the methods.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TrainConfig:
    dataset: str = "svhn"
    data_root: str = "data"
    model: str = "resnet_small"
    method: dict = field(default_factory=lambda: {"name": "plain"})  # a method spec (training.methods.api)
    epochs: int = 100
    max_steps: int | None = None
    batch_size: int = 128
    lr: float | None = None  # None: the architecture's (LR_BY_MODEL)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_milestones: tuple[float, ...] = (0.5, 0.75, 0.9)
    nesterov: bool = False
    lr_schedule: str = "step"  # "step": / 10 at each milestone; "triangle": linear warm-up, then linear decay
    warmup: float = 0.23  # triangle: share of the steps spent rising from lr x lr_start to lr ...
    lr_start: float = 0.2
    lr_end: float = 0.07  # ... then falling to lr x lr_end at the last step
    bias_lr_scale: float = 1.0  # BatchNorm biases train at lr x this (their weight decay divided by it)
    label_smoothing: float = 0.0
    lookahead: int = 0  # pull toward a slow copy of the weights every N steps (training.run.lookahead); 0: off
    translate: int = 4  # augmentation: random shifts of up to N pixels ...
    pad_mode: str = "constant"  # ... filling the border with zeros, or by reflection ("reflect")
    flip: str = "random"  # "random": each image flipped with p 1/2; "alternating": flipped every other epoch
    cutout: int = 0  # augmentation: a random square of this side set to grey in each training image; 0: off
    recipe: str | None = None  # the named recipe (training.run.recipes) the run started from, for the record
    val_fraction: float = 0.1
    seed: int = 0
    device: str = "auto"
    amp: bool = False  # mixed precision: bf16 + channels_last on a CPU with native bf16, bf16/fp16 on CUDA
    out: str = "runs/default"
    resume: bool = False
    download: bool = True
    export: str | None = None  # the CLI exports the final checkpoint here once training is done
    init_from: str | None = None
    progress: bool = True
    # fine-tuning a pretrained network (--model efficientnet-lite0 | torchvision:NAME | timm:NAME; training.run.phases)
    image_size: int | None = None  # train (and export) at N x N: images resized once, folders decoded at N
    weights: str | None = None  # the pretrained network's ImageNet weights from this state_dict file
    head_epochs: float = 0.0  # the first epochs train the head alone, the body frozen (linear probe, then fine-tune)
    body_lr_scale: float = 1.0  # the body trains at lr x this (the head at lr)
    bn: str = "train"  # "frozen": the body's BatchNorm statistics stay the pretrained ones throughout
    workers: int = 2  # image folders: decoding processes
    cache_mb: int = 1024  # image folders: decoded images kept in memory (MiB, all workers together)

    def __post_init__(self) -> None:
        if self.lr is None:
            if is_pretrained(self.model):
                self.lr = FINE_TUNE_LR
            elif self.model in LR_BY_MODEL:
                self.lr = LR_BY_MODEL[self.model]
            else:
                raise ValueError(f"no learning rate known for model {self.model!r}: give lr")


# The SGD learning rate each architecture trains at unless a flag or a recipe names one: its peak under the
# triangle schedule, its start under the step schedule.
LR_BY_MODEL = {
    "lenet": 0.05,
    "mlp": 0.05,
    "resnet_small": 0.1,
    "resnet18": 0.1,
    "fastnet": 0.75,
    "fastnet_relu": 0.75,
    "fastnet_wide": 0.65,
    "fastnet_wide_relu": 0.65,
}
FINE_TUNE_LR = 0.01  # every pretrained network's (training.nets.pretrained): its head's; the body's is x body_lr_scale


def is_pretrained(model: str) -> bool:
    """``training.nets.pretrained.is_pretrained``, without importing torch into the config."""
    return model == "efficientnet-lite0" or model.startswith(("torchvision:", "timm:"))
