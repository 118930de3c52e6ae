"""One source of defaults: the training flags default to ``TrainConfig``'s fields, the export flags to
``export_checkpoint``'s keyword arguments, so a default changed in one place is changed everywhere."""

from __future__ import annotations

import inspect
from dataclasses import fields

import pytest

from training import cli
from training.config import TrainConfig
from training.export import exporter

# flags whose default is decided elsewhere: --lr by the model (cli.DEFAULT_LR), --out by the run's name
DERIVED = {"lr", "out"}


def test_every_training_flag_that_is_a_config_field_defaults_to_the_config():
    args = vars(cli.parser("test").parse_args([]))
    shared = {f.name for f in fields(TrainConfig)} & set(args) - DERIVED
    assert len(shared) >= 25
    assert {k: args[k] for k in shared} == {k: getattr(TrainConfig(), k) for k in shared}


def test_every_export_flag_defaults_to_export_checkpoint(capsys):
    with pytest.raises(SystemExit):
        exporter.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    params = inspect.signature(exporter.export_checkpoint).parameters
    for flag in ("version", "tpr", "resize", "data_root", "score", "tta", "fp16_weights"):
        option = f"--{flag.replace('_', '-')}"
        help_of_flag = text[text.index(option, text.index("options:")):].split(" --")[0]
        assert f"(default: {params[flag].default})" in help_of_flag, (flag, help_of_flag)
