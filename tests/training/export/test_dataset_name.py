"""A model file names its data set without the training machine's paths: ``GET /models`` shows every client
the metadata's ``dataset``, so a model trained on ``imagefolder:/home/someone/data/flowers`` says
``imagefolder:flowers``."""

from __future__ import annotations

from cifar10_fixture import write_cifar10_files

from modelfile import read_metadata
from training.config import TrainConfig
from training.export import export_checkpoint
from training.run.loop import train


def test_an_imagefolder_model_file_names_the_folder_not_its_path(tmp_path):
    folder = write_cifar10_files(tmp_path / "somewhere" / "flowers", n_train=4, n_test=2)
    ckpt = train(
        TrainConfig(
            dataset=f"imagefolder:{folder}",
            model="lenet",
            method={"name": "plain"},
            epochs=1,
            max_steps=2,
            batch_size=8,
            lr=0.05,
            out=str(tmp_path / "run"),
            progress=False,
            device="cpu",
            download=False,
        )
    )
    onnx = tmp_path / "flowers.onnx"
    meta = export_checkpoint(ckpt, onnx)
    assert meta.dataset == read_metadata(onnx).dataset == "imagefolder:flowers"
    assert meta.evaluation.test_split.startswith("imagefolder:flowers test")
    assert str(tmp_path) not in onnx.read_bytes().decode("latin-1")  # nowhere in the file
