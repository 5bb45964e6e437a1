"""predict/evaluate text output with hostile names, FIFOs, huge images and unlistable folders
(issue 12 items 16, 9, 8, 10 at the command line)."""
import json
import os
import threading

import numpy as np
import pytest
from PIL import Image

from fastconv import Sequential, layers as L
from fastconv._text import printable
from fastconv.cli import main
from fastconv.models.saving import save_model

S = 8
RED, NEWLINE = "\x1b[31mred", "new\nline"        # class names a model file may hold


@pytest.fixture
def model_path(tmp_path):
    model = Sequential([L.Conv2D(1, 3, input_shape=(S, S, 3)), L.Flatten(),
                        L.Dense(1, activation="sigmoid")], device="reference", seed=0)
    model.class_names = [RED, NEWLINE]
    path = str(tmp_path / "odd.fcm")
    save_model(model, path)
    return path


def _png(path, value=100):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.full((S, S, 3), value, np.uint8)).save(path)
    return str(path)


def _no_raw_controls(text):
    assert "\x1b" not in text and "\r" not in text, repr(text)


def test_printable_escapes_controls_and_keeps_letters():
    assert printable("chats é 猫 a\\b") == "chats é 猫 a\\b"
    assert printable("\x1b[31mred") == "\\x1b[31mred"
    assert printable("a\nb\rc\td\x7f\u200b\udcff") == "a\\nb\\rc\\td\\x7f\\u200b\\udcff"


def test_predict_escapes_class_and_file_names_in_text_not_json(model_path, tmp_path,
                                                               capsys):
    img = _png(tmp_path / "imgs" / "two\nlines\x1b[2J.png")
    assert main(["predict", model_path, str(tmp_path / "imgs"), "--device", "reference"]) == 0
    out = capsys.readouterr().out
    _no_raw_controls(out)
    rows = out.splitlines()
    assert len(rows) == 2                           # the header and one row: no forged line
    assert rows[1].startswith(printable(img)) and "two\\nlines\\x1b[2J.png" in rows[1]
    assert ("\\x1b[31mred" in rows[1]) or ("new\\nline" in rows[1])
    assert main(["predict", model_path, img, "--device", "reference", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["class_names"] == [RED, NEWLINE]
    assert report["predictions"][0]["path"] == img
    assert report["predictions"][0]["class"] in (RED, NEWLINE)


def test_evaluate_escapes_class_names_in_text_not_json(model_path, tmp_path, capsys):
    data = tmp_path / "data"
    for k, name in enumerate((RED, NEWLINE)):
        _png(data / name / "a.png", 40 + 100 * k)
    assert main(["evaluate", model_path, str(data), "--device", "reference"]) == 0
    out = capsys.readouterr().out
    _no_raw_controls(out)
    assert "\\x1b[31mred" in out and "new\\nline" in out
    assert not any(line.startswith("line") for line in out.splitlines())   # no forged row
    assert main(["evaluate", model_path, str(data), "--device", "reference", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["class_names"] == [RED, NEWLINE] and set(report["per_class"]) == {RED,
                                                                                    NEWLINE}


def test_predict_reports_a_fifo_and_a_huge_image_per_file(model_path, tmp_path, capsys):
    from tests.test_data_hostile import _huge_png_header
    good = _png(tmp_path / "imgs" / "a_good.png")
    fifo = str(tmp_path / "imgs" / "b_fifo.png")
    os.mkfifo(fifo)
    big = _huge_png_header(tmp_path / "imgs" / "c_big.png", 9000, 9000)
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("rc", main(
        ["predict", model_path, str(tmp_path / "imgs"), "--device", "reference", "--json"])),
        daemon=True)
    t.start()
    t.join(20)
    if t.is_alive():                  # the old code: blocked on the FIFO; release it
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        t.join(5)
        pytest.fail("predict blocked on a FIFO")
    assert box["rc"] == 1
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert [p["path"] for p in report["predictions"]] == [good]
    errors = {e["path"]: e["error"] for e in report["errors"]}
    assert set(errors) == {fifo, big}
    assert "not a regular file" in errors[fifo]
    assert "more than the limit of 50,000,000" in errors[big]
    assert "2 of 3 images could not be read" in captured.err


def test_predict_reports_an_unlistable_folder(model_path, tmp_path, capsys, monkeypatch):
    good = _png(tmp_path / "imgs" / "a.png")
    locked = tmp_path / "imgs" / "locked"
    _png(locked / "b.png")
    real = os.scandir

    def scandir(path="."):
        if os.path.abspath(os.fspath(path)) == str(locked):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)
    monkeypatch.setattr(os, "scandir", scandir)
    assert main(["predict", model_path, str(tmp_path / "imgs"), "--device", "reference",
                 "--json"]) == 1
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert [p["path"] for p in report["predictions"]] == [good]
    assert [e["path"] for e in report["errors"]] == [str(locked)]
    assert "cannot list this folder (PermissionError" in report["errors"][0]["error"]
    assert "0 of 1 images could not be read (1 folder could not be listed)" in captured.err


def test_train_escapes_class_folder_names_in_its_text(tmp_path, capsys):
    """Class names come from folder names: train's summary line prints them escaped."""
    root = tmp_path / "data"
    for cls, value in ((RED, 40), ("plain", 200)):
        for split, count in (("train", 4), ("validation", 2)):
            for i in range(count):
                _png(root / split / cls / f"{i}.png", value + i)
    args = ["train", str(root), "--image-size", "32", "--batch-size", "4", "--epochs", "1",
            "--device", "reference", "--no-augment", "--no-progress",
            "--out", str(tmp_path / "m.fcm")]
    assert main(args) == 0
    out = capsys.readouterr().out
    _no_raw_controls(out)
    assert "classes 0 = \\x1b[31mred, 1 = plain" in out
