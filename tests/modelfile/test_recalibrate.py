"""``python -m modelfile recalibrate``, without torch: the bundled digits model recalibrated on blurred
digits rejects about 5 % of held-out blurred digits again; the new file is the old one but for its metadata; each
refusal is one line and exit status 2; the folder is decoded exactly as the service decodes an upload."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
from PIL import Image, ImageFilter
from samples import encode, mnist, photo
from servers import REPO, ServerThread, settings_for

from modelfile import METADATA_KEY, InputSpec, read_metadata
from modelfile.imagefolder import decode
from modelfile.propsfile import replace_entry
from modelfile.recalibrate import HOLDOUT, minimum_images
from service.pipeline.imaging import DecodeLimits, load_image

DIGITS = REPO / "models" / "mnist-acet-lenet.onnx"
PHOTOS = REPO / "models" / "cifar10-acet-oe-fastnet.onnx"


def recalibrate(*args: object) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "modelfile", "recalibrate", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=REPO,
    )


def write_digits(folder: Path, n: int, blur: float = 0.0) -> Path:
    """``n`` real MNIST digits as PNGs, blurred (a site whose scanner is slightly out of focus)."""
    folder.mkdir(parents=True)
    x, _ = mnist()
    for i in np.random.default_rng(0).permutation(len(x))[:n]:
        im = Image.fromarray(x[i])
        (im.filter(ImageFilter.GaussianBlur(blur)) if blur else im).save(folder / f"{i:04d}.png")
    return folder


@pytest.fixture(scope="module")
def blurred(tmp_path_factory) -> Path:
    return write_digits(tmp_path_factory.mktemp("site") / "blurred-scanner", 1000, blur=1.0)


def test_recalibration_brings_the_held_out_reject_rate_of_a_shifted_set_back_to_the_target(blurred, tmp_path):
    out = tmp_path / "recalibrated.onnx"
    run = recalibrate(DIGITS, "--images", blurred, "--out", out)
    assert run.returncode == 0, run.stderr
    old, new = read_metadata(DIGITS), read_metadata(out)
    record = new.recalibration
    assert (record.folder, record.images, record.held_out, record.seed) == ("blurred-scanner", 1000, 300, 0)
    assert new.calibration.n == 700 and new.calibration.tpr == 0.95 and "blurred-scanner" in new.calibration.split
    assert record.previous_threshold == old.calibration.threshold < new.calibration.threshold
    # blur makes the digits look less like the training data: the old threshold rejects far more than 5 %
    assert record.held_out_reject_rate_before > 0.08
    assert abs(record.held_out_reject_rate_after - 0.05) <= 0.03
    before, after = record.held_out_reject_rate_before, record.held_out_reject_rate_after
    assert f"held-out reject rate: {before:.2%} before, {after:.2%} after (target 5.00%)" in run.stdout
    # what described the old threshold is gone; threshold-free figures stay
    assert new.evaluation.id_reject_rate is None and new.evaluation.id_p_value_uniformity is None
    assert all(r.accepted is None for r in new.evaluation.ood.values())
    assert new.evaluation.test_accuracy == old.evaluation.test_accuracy
    assert {k: r.auroc for k, r in new.evaluation.ood.items()} == {k: r.auroc for k, r in old.evaluation.ood.items()}
    assert str(blurred.parent) not in out.read_bytes().decode("latin-1")  # no absolute path in the file


def test_the_service_serves_the_new_threshold_and_says_where_it_was_set(blurred, tmp_path):
    site = tmp_path / "models"
    site.mkdir()
    assert recalibrate(DIGITS, "--images", blurred, "--out", site / "digits-site.onnx").returncode == 0
    new = read_metadata(site / "digits-site.onnx")
    with (
        ServerThread(settings_for(site, default_model=new.name)) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        info = client.get("/models").json()["models"][0]
        image = next(iter(sorted(blurred.glob("*.png"))))
        answer = client.post("/predict", files={"file": (image.name, image.read_bytes(), "image/png")}).json()
    assert info["threshold"] == new.calibration.threshold and info["recalibration"]["folder"] == "blurred-scanner"
    assert info["recalibration"]["images"] == 1000 and "blurred-scanner" in info["calibration_split"]
    assert answer["predictions"][0]["threshold"] == new.calibration.threshold


def test_the_new_file_is_the_old_graph_and_weights_with_new_metadata(blurred, tmp_path):
    out = tmp_path / "recalibrated.onnx"
    assert recalibrate(DIGITS, "--images", blurred, "--out", out).returncode == 0
    old, new = onnx.load(str(DIGITS)), onnx.load(str(out))
    onnx.checker.check_model(new)
    assert new.graph.SerializeToString() == old.graph.SerializeToString()
    assert (new.ir_version, new.doc_string, list(new.opset_import)) == (
        old.ir_version,
        old.doc_string,
        list(old.opset_import),
    )
    assert [p.key for p in new.metadata_props] == [METADATA_KEY]
    assert json.loads(new.metadata_props[0].value)["recalibration"]["folder"] == "blurred-scanner"


def test_replacing_the_entry_keeps_other_entries_and_is_idempotent():
    data = DIGITS.read_bytes()
    proto = onnx.load_from_string(data)
    proto.metadata_props.add(key="other", value="kept")
    with_other = proto.SerializeToString()
    once = replace_entry(with_other, METADATA_KEY, '{"x": 1}')
    twice = replace_entry(once, METADATA_KEY, '{"x": 1}')
    assert once == twice
    props = {p.key: p.value for p in onnx.load_from_string(once).metadata_props}
    assert props == {"other": "kept", METADATA_KEY: '{"x": 1}'}


def test_the_minimum_number_of_images_follows_the_tpr():
    assert minimum_images(0.95) == 665  # 200 held out, 465 calibrating: 10 expected rejections each
    for tpr in (0.5, 0.8, 0.9, 0.95, 0.99):
        n = minimum_images(tpr)
        assert round(n * HOLDOUT) * (1 - tpr) >= 10 - 1e-9 and round((n - 1) * HOLDOUT) * (1 - tpr) < 10 - 1e-9


def refusal(*args: object) -> str:
    run = recalibrate(*args)
    assert run.returncode == 2 and run.stdout == "", (run.returncode, run.stdout, run.stderr)
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr
    return lines[0]


def test_too_few_images_says_how_many_the_tpr_needs(tmp_path):
    few = write_digits(tmp_path / "few", 120)
    line = refusal(DIGITS, "--images", few, "--out", tmp_path / "new.onnx")
    assert line.startswith("error: 120 images in 'few'; recalibrating at TPR 0.95 needs at least 665")
    assert "at least 332" in refusal(DIGITS, "--images", few, "--tpr", "0.9", "--out", tmp_path / "new.onnx")
    assert not (tmp_path / "new.onnx").exists()


def test_colour_images_for_a_grayscale_model_are_refused_naming_the_file(blurred, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for f in blurred.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    photo().resize((64, 48)).save(folder / "zz-cat.jpg")
    line = refusal(DIGITS, "--images", folder, "--out", tmp_path / "new.onnx")
    assert line == "error: mixed/zz-cat.jpg is a colour image (RGB); the model takes grayscale (L) images"


def test_grayscale_images_for_a_colour_model_are_refused(blurred, tmp_path):
    line = refusal(PHOTOS, "--images", blurred, "--out", tmp_path / "new.onnx")
    assert line.endswith("is a grayscale image (L); the model takes colour (RGB) images")


def test_other_refusals(blurred, tmp_path):
    not_a_model = tmp_path / "notes.onnx"
    not_a_model.write_text("not a model")
    assert "not a loadable ONNX model" in refusal(not_a_model, "--images", blurred, "--out", tmp_path / "n.onnx")
    plain = onnx.load(str(DIGITS))
    del plain.metadata_props[:]
    onnx.save(plain, str(tmp_path / "plain.onnx"))
    assert "not an oodserve model file" in refusal(
        tmp_path / "plain.onnx", "--images", blurred, "--out", tmp_path / "n.onnx"
    )
    assert refusal(DIGITS, "--images", tmp_path / "nowhere", "--out", tmp_path / "n.onnx").endswith(
        "nowhere: no such folder"
    )
    assert refusal(tmp_path / "missing.onnx", "--images", blurred, "--out", tmp_path / "n.onnx").endswith(
        "missing.onnx: no such file"
    )
    assert "no such folder" in refusal(DIGITS, "--images", blurred, "--out", tmp_path / "nope" / "n.onnx")
    broken = write_digits(tmp_path / "broken", 700)
    (broken / "0000.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    assert refusal(DIGITS, "--images", broken, "--out", tmp_path / "n.onnx").startswith(
        "error: broken/0000.png: not a readable image"
    )
    assert refusal(DIGITS, "--images", blurred, "--tpr", "1", "--out", tmp_path / "n.onnx") == (
        "error: --tpr 1: must lie strictly between 0 and 1"
    )


def _variety() -> dict[str, bytes]:
    """Images that take each of the decoder's paths: reduction, JPEG draft, EXIF rotation, transparency,
    palettes, 16 bits."""
    cat = photo()
    exif = Image.Exif()
    exif[0x0112] = 6
    rgba = cat.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(cat.size))
    sixteen = Image.fromarray((np.asarray(cat.convert("L"), np.uint16) * 257).astype(np.uint16))
    return {
        "digit.png": encode(Image.fromarray(mnist()[0][7])),
        "cat.jpg": encode(cat, "JPEG", quality=90),
        "rotated.jpg": encode(cat, "JPEG", quality=90, exif=exif),
        "alpha.png": encode(rgba),
        "palette.gif": encode(cat.convert("P")),
        "gray16.png": encode(sixteen),
        "cmyk.tif": encode(cat.convert("CMYK"), "TIFF"),
        "tiny.bmp": encode(cat.resize((5, 3)), "BMP"),
    }


@pytest.mark.parametrize("resize", ["stretch", "letterbox", "center_crop"])
@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_the_folder_is_decoded_exactly_as_the_service_decodes_an_upload(resize, mode):
    spec = InputSpec(channels=1 if mode == "L" else 3, height=28, width=36, color_mode=mode, resize=resize)
    for name, data in _variety().items():
        with Image.open(io.BytesIO(data)) as im:
            ours = decode(im, spec)
        np.testing.assert_array_equal(ours, load_image(data, spec, DecodeLimits(10**8)), err_msg=name)
