"""One source of defaults: the training flags default to ``TrainConfig``'s fields and the paper recipe is those
fields, the export flags default to ``export_checkpoint``'s keyword arguments and take their choices from the
contract and the quantizer, so a default changed in one place is changed everywhere."""

from __future__ import annotations

import inspect
import typing
from dataclasses import MISSING, fields, replace

import pytest

from modelfile import InputSpec
from training import cli
from training.config import LR_BY_MODEL, TrainConfig
from training.export import exporter
from training.export.quantize import PRECISIONS
from training.nets.models import ARCHITECTURES
from training.run.recipes import RECIPES

DECLARED = {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}
DERIVED = {"out"}  # the run directory's default is named after the run


def test_every_training_flag_that_is_a_config_field_defaults_to_the_config():
    args = vars(cli.parser("test").parse_args([]))
    shared = set(DECLARED) & set(args) - DERIVED
    assert len(shared) >= 26 and "lr" in shared
    assert {k: args[k] for k in shared} == {k: DECLARED[k] for k in shared}


def test_the_paper_recipe_is_the_config_defaults():
    assert RECIPES["paper"] == {k: getattr(TrainConfig(), k) for k in RECIPES["paper"]}
    assert TrainConfig(**RECIPES["paper"]) == TrainConfig()
    plain_args, method_spec = cli.parse("acet", [])
    paper_args, _ = cli.parse("acet", ["--recipe", "paper"])
    assert replace(cli.train_config(paper_args, method_spec), recipe=None) == cli.train_config(plain_args, method_spec)


def test_every_recipe_names_config_fields_only():
    for name, recipe in RECIPES.items():
        assert set(recipe) <= set(DECLARED), name


def test_every_architecture_has_its_learning_rate():
    assert set(LR_BY_MODEL) == set(ARCHITECTURES)
    assert TrainConfig().lr == LR_BY_MODEL[TrainConfig().model]
    assert cli.train_config(cli.parse("plain", ["--model", "lenet"])[0], {"name": "plain"}).lr == LR_BY_MODEL["lenet"]


def export_help(capsys) -> str:
    with pytest.raises(SystemExit):
        exporter.main(["--help"])
    return " ".join(capsys.readouterr().out.split())


def flag_help(text: str, option: str) -> str:
    return text[text.index(option, text.index("options:")) :].split(" --")[0]


def test_every_export_flag_defaults_to_export_checkpoint(capsys):
    text = export_help(capsys)
    params = inspect.signature(exporter.export_checkpoint).parameters
    flags = {flag: flag for flag in ("version", "tpr", "resize", "data_root", "score", "tta", "fp16_weights")}
    for flag, param in {**flags, "quantize": "precision"}.items():
        help_of_flag = flag_help(text, f"--{flag.replace('_', '-')}")
        assert f"(default: {params[param].default})" in help_of_flag, (flag, help_of_flag)


def test_the_export_choices_are_the_contract_s_and_the_quantizer_s(capsys):
    text = export_help(capsys)
    resize_modes = typing.get_args(InputSpec.model_fields["resize"].annotation)
    assert "{" + ",".join(resize_modes) + "}" in flag_help(text, "--resize")
    params = inspect.signature(exporter.export_checkpoint).parameters
    assert params["resize"].default in resize_modes and params["precision"].default in PRECISIONS
