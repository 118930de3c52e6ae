"""The method interface (training/methods/api.py): a method is one module, registered by name; the CLI,
the benchmark and docs/model-format.md follow the registry; a new method needs no edit elsewhere."""

from __future__ import annotations

import re
import runpy
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from servers import ServerThread, settings_for

from modelfile import INPUT_NAME, OUTPUT_NAMES, open_session, read_metadata
from training import cli, methods
from training.data import datasets
from training.methods import build, spec
from training.methods.plain import Plain
from training.run.checkpoint import build_model
from training.run.checkpoint import load as load_checkpoint

REPO = Path(__file__).resolve().parents[2]


class Energy(Plain):
    """A toy method, all of it here: a plain classifier scored by its energy (Liu et al. 2020)."""

    name = "energy-toy"
    score = "energy: -logsumexp of the logits"
    labels = ("energy-toy",)

    def ood_score(self, logits: torch.Tensor, probabilities: torch.Tensor) -> torch.Tensor:
        return -torch.logsumexp(logits.float(), 1)


@pytest.fixture
def energy():
    methods.register(Energy)
    yield Energy
    del methods.REGISTRY[Energy.name]


def test_a_method_defined_in_a_test_trains_through_the_cli_exports_and_is_served(energy, tmp_path):
    onnx = tmp_path / "models" / "energy.onnx"
    cli.main(
        "energy-toy",
        [
            "--dataset",
            "mnist5k",
            "--model",
            "lenet",
            "--epochs",
            "1",
            "--max-steps",
            "30",
            "--batch-size",
            "64",
            "--device",
            "cpu",
            "--no-progress",
            "--out",
            str(tmp_path / "run"),
            "--export",
            str(onnx),
        ],
    )
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["config"]["method"] == {"name": "energy-toy"} and ckpt["step"] == 30
    meta = read_metadata(onnx)
    assert meta.method == "energy-toy" and meta.score == Energy.score
    model, method, _ = build_model(ckpt)
    assert isinstance(method, Energy)
    x = datasets.as_float(datasets.load("mnist5k").test.x[:16])
    with torch.no_grad():
        _, want, _ = method.outputs(model.eval(), x)
    _, got, _ = open_session(onnx).run(list(OUTPUT_NAMES), {INPUT_NAME: x.numpy()})
    assert np.abs(got - want.numpy()).max() <= 1e-4
    assert np.all(got < 0)  # -logsumexp of a trained model's logits: an energy, not 1 - max softmax
    digit = sorted((REPO / "tests" / "data" / "mnist-t10k-heldout").glob("*.png"))[0]
    with (
        ServerThread(settings_for(onnx.parent, default_model="energy")) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        [listed] = client.get("/models").json()["models"]
        [answer] = client.post("/predict", files={"file": (digit.name, digit.read_bytes(), "image/png")}).json()[
            "predictions"
        ]
    assert (listed["method"], listed["score"], listed["dataset"]) == ("energy-toy", Energy.score, "mnist5k")
    x = np.asarray(Image.open(digit).convert("L"), np.float32)[None, None] / 255
    assert answer["ood_score"] == pytest.approx(
        float(open_session(onnx).run(["ood_score"], {INPUT_NAME: x})[0][0]), abs=1e-5
    )


def test_a_method_without_a_cli_of_its_own_has_the_shared_flags_and_is_in_the_usage_line(energy, capsys):
    with pytest.raises(SystemExit) as e:
        run_training_module(["energy-toy", "--help"])
    assert e.value.code == 0
    help_text = capsys.readouterr().out
    assert "the energy-toy method" in help_text and "--dataset" in help_text and "--export" in help_text
    run_training_module(["--help"])
    usage = capsys.readouterr().out
    assert "energy-toy" in usage and "acet" in usage  # the usage line lists them all


def run_training_module(argv: list[str]) -> None:
    """``python -m training ARGV`` in this process, where the test's method is registered."""
    saved = sys.argv
    sys.argv = ["python -m training", *argv]
    try:
        runpy.run_module("training", run_name="__main__")
    finally:
        sys.argv = saved


def test_method_is_model_maths_and_its_command_line_is_declared_beside_it():
    assert not [
        a
        for a in ("add_options", "spec_from_args", "runs", "variants", "description", "find_unused_parameters")
        if hasattr(methods.Method, a)
    ]
    shipped = {name for name, cls in methods.REGISTRY.items() if cls.__module__.startswith("training.methods")}
    assert set(methods.CLIS) == shipped
    assert all(methods.CLIS[name].__module__ == methods.REGISTRY[name].__module__ for name in shipped)


def flags_to_spec(name: str, flags: list[str]) -> dict:
    cls = methods.cli_of(name)
    p = cli.parser("test")
    cls.add_options(p)
    return cls.spec_from_args(p.parse_args(flags))


def test_cli_flags_store_the_method_the_model_is():
    assert flags_to_spec("acet", ["--at-frac", "0"]) == methods.spec("plain")  # not an "acet" that is plain
    assert methods.build(flags_to_spec("acet", ["--pgd-steps", "0"])).label == "ceda"
    assert methods.build(flags_to_spec("isomax+", ["--acet"])).label == "isomax+acet"  # not isomax++acet
    assert flags_to_spec("isomax+", ["--acet", "--at-frac", "0"]) == methods.spec("isomax+")
    spec = flags_to_spec("mcd", ["--margin", "1.0", "--unlabeled", "imagefolder:/x", "--data-root", "/d"])
    assert (
        methods.build(spec).spec()
        == spec
        == methods.spec("mcd", margin=1.0, unlabeled="imagefolder:/x", data_root="/d")
    )
    with pytest.raises(ValueError, match="no option"):
        methods.spec("acet", at_frack=1.0)


def test_every_label_a_method_writes_is_in_the_docs_and_the_benchmark_trains_every_variant():
    table = (REPO / "docs" / "model-format.md").read_text()
    documented = set(re.findall(r"`([^`]+)`", next(line for line in table.splitlines() if "| `method` |" in line)))
    shipped = {name: cls for name, cls in methods.REGISTRY.items() if cls.__module__.startswith("training.methods")}
    for name, cls in shipped.items():
        assert set(cls.labels) <= documented, (name, cls.labels)
        if isinstance(cls.score, str):  # ACET's is the wrapped method's
            rows = [line for line in table.splitlines() if line.startswith(f"| `{cls.labels[0]}`")]
            assert len(rows) == 1 and cls.score in rows[0], (name, cls.score)
    for label, name, flags in methods.benchmark_variants():
        assert methods.build(flags_to_spec(name, list(flags))).label in {
            lab for c in shipped.values() for lab in c.labels
        }, label
    bench = runpy.run_path(str(REPO / "bench" / "ood_benchmark.py"), run_name="ood_benchmark")
    assert [(m.label, m.name, m.flags) for m in bench["METHODS"]] == methods.benchmark_variants()


def test_score_flag_is_refused_before_training_for_a_method_with_one_score(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main("acet", ["--dataset", "mnist5k", "--at-frac", "0", "--score", "entropy", "--out", str(tmp_path)])
    assert e.value.code == 2 and "one OOD score" in capsys.readouterr().err
    assert not (tmp_path / "last.pt").exists()
    assert flags_to_spec("isomax+", ["--score", "auto"]) == methods.spec("isomax+")  # an export choice, not a run's


def test_a_method_names_the_negatives_it_trains_on_never_the_path_they_lay_at():
    """What a model file's `training_negatives` holds: noise families, PGD or not, the outlier file by its name."""
    assert build(spec("plain")).negatives == () and build(spec("isomax+")).negatives == ()
    acet = build(spec("acet", pgd_steps=10))
    assert acet.negatives == tuple(f"{f} noise moved by PGD towards confident answers" for f in acet.config.noise)
    oe = build(
        spec("acet", pgd_steps=0, noise=("strokes",), outliers="/home/me/secret/walls.zip#a+b", outlier_holdout=("c",))
    )
    assert oe.negatives == ("strokes noise", "outlier images from walls.zip (a, b), except c, kept unseen")
    assert build(spec("acet", at_frac=0.0, base=spec("isomax+"))).negatives == ()
    mcd = build(spec("mcd", phase="finetune", unlabeled="imagefolder:/data/private/street"))
    assert "street" in mcd.negatives[0] and "/data" not in mcd.negatives[0]
    assert build(spec("mcd", phase="pretrain")).negatives == ()
