"""`--color-mode grayscale` on `fastconv train`, `evaluate` and `predict`: a model with a
1-channel input trained from the CLI on a tiny folder of grey images, evaluated and
predicted with the mode read from the model's input, and clear refusals of a mode that
does not fit the model or the checkpoint."""
import json
import os

import numpy as np
import pytest
from PIL import Image

import fastconv
from fastconv.cli import main

data = pytest.importorskip("fastconv.data")

SIZE = 32
FAST = ["--image-size", str(SIZE), "--batch-size", "8", "--device", "reference",
        "--lr", "1e-3", "--no-augment"]


def _grey_folder(root):
    """train/ and validation/ of bright discs and dark squares, 8-bit grey PNGs (and one
    RGB file, which grayscale reads through its luma)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for split, n in (("train", 8), ("validation", 4)):
        for name in ("disc", "square"):
            folder = os.path.join(root, split, name)
            os.makedirs(folder)
            for i in range(n):
                cy, cx = rng.integers(10, SIZE - 10, 2)
                if name == "disc":
                    img = np.where((yy - cy) ** 2 + (xx - cx) ** 2 < 49, 220, 30)
                else:
                    img = np.where((abs(yy - cy) < 6) & (abs(xx - cx) < 6), 90, 30)
                img = (img + rng.integers(0, 20, img.shape)).astype(np.uint8)
                pil = Image.fromarray(img, "L")
                if i == 0:
                    pil = pil.convert("RGB")
                pil.save(os.path.join(folder, f"{i}.png"))


@pytest.fixture(scope="module")
def grey_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grey")
    root = str(tmp / "data")
    _grey_folder(root)
    out = str(tmp / "model.fcm")
    assert main(["train", root, *FAST, "--epochs", "1", "--color-mode", "grayscale",
                 "--out", out]) == 0
    return root, out


def test_train_makes_a_one_channel_model_and_records_the_mode(grey_run, capsys):
    root, out = grey_run
    model = fastconv.load_model(out, device="reference")
    assert model.input_shape == (None, SIZE, SIZE, 1)
    with open(os.path.join(os.path.dirname(out), "history.json")) as fh:
        assert json.load(fh)["settings"]["color_mode"] == "grayscale"


def test_evaluate_and_predict_read_grey_for_a_one_channel_model(grey_run, capsys):
    root, out = grey_run
    capsys.readouterr()
    assert main(["evaluate", out, root, "--device", "reference", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 8
    assert main(["evaluate", out, root, "--device", "reference", "--color-mode",
                 "grayscale"]) == 0
    capsys.readouterr()
    folder = os.path.join(root, "validation", "disc")
    assert main(["predict", out, folder, "--device", "reference", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["preprocessing"].startswith("grayscale") and not report["errors"]
    model = fastconv.load_model(out, device="reference")
    paths = [p["path"] for p in report["predictions"]]
    x = np.stack([data.load_image(p, (SIZE, SIZE), "grayscale") for p in paths])
    want = model.predict((x / np.float32(255)).astype(np.float32))
    got = [p["probabilities"][model.class_names[1]] for p in report["predictions"]]
    np.testing.assert_allclose(got, want[:, 0], rtol=0, atol=1e-6)


def test_a_mode_that_does_not_fit_the_model_or_the_checkpoint_is_refused(grey_run, capsys):
    root, out = grey_run
    capsys.readouterr()
    folder = os.path.join(root, "validation", "disc")
    assert main(["predict", out, folder, "--device", "reference", "--color-mode",
                 "rgb"]) == 1
    err = capsys.readouterr().err
    assert "--color-mode rgb reads 3-channel images but" in err
    assert "takes 1 channel (use --color-mode grayscale)" in err
    assert main(["evaluate", out, root, "--device", "reference", "--color-mode",
                 "rgb"]) == 1
    assert "--color-mode rgb reads 3-channel images" in capsys.readouterr().err
    assert main(["train", root, *FAST, "--epochs", "2", "--color-mode", "rgb", "--out", out,
                 "--resume"]) == 1
    assert "trained with --color-mode grayscale, not rgb" in capsys.readouterr().err
