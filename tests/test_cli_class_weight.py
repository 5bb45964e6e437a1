"""`fastconv train --class-weight balanced` on an unbalanced folder, `--label-smoothing`
and `--early-stopping` (reference device): printed and recorded in history.json, the
loss weighted / smoothed, and --resume continuing the run bitwise (and refusing a
different setting); `fastconv evaluate`'s per-class precision and recall."""
import json
import os

import numpy as np
import pytest

from fastconv.cli import main

import fastconv

from .test_cli_train import FAST, _interrupt_at, _three_class_folder, _weights_equal

data = pytest.importorskip("fastconv.data")


@pytest.fixture(scope="module")
def unbalanced(tmp_path_factory):
    """12 horizontal and 4 vertical training images (3:1), 6 + 6 for validation."""
    root = tmp_path_factory.mktemp("cw") / "demo"
    data.write_demo_data(str(root), train_per_class=12, validation_per_class=6,
                         image_size=32, seed=0)
    folder = os.path.join(root, "train", "vertical")
    for name in sorted(os.listdir(folder))[4:]:
        os.remove(os.path.join(folder, name))
    return str(root)


def test_class_weight_balanced_is_recorded_weighted_and_resumed(unbalanced, tmp_path,
                                                                capsys, monkeypatch):
    args = ["train", unbalanced, *FAST, "--epochs", "2", "--seed", "3"]
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for d in (a, b, c):
        d.mkdir()
    assert main(args + ["--class-weight", "balanced", "--out", str(a / "m.fcm")]) == 0
    out = capsys.readouterr().out
    # 16 images, 2 classes: 16 / (2 * 12) and 16 / (2 * 4)
    assert "class weights (balanced): horizontal 0.6667, vertical 2" in out
    ha = json.loads((a / "history.json").read_text())
    assert ha["settings"]["class_weight"] == "balanced"
    assert main(args + ["--out", str(c / "m.fcm")]) == 0
    assert "class weights" not in capsys.readouterr().out
    hc = json.loads((c / "history.json").read_text())
    assert hc["settings"]["class_weight"] == "none"
    assert hc["history"]["loss"] != ha["history"]["loss"]
    # the validation loss is unweighted: both runs start from the same weights, so
    # their first epochs differ only through the weighted training steps
    assert np.isfinite(ha["history"]["val_loss"]).all()

    # Ctrl-C in epoch 2, then --resume without the flag: the stored setting is used
    _interrupt_at(monkeypatch, 2 + 1)
    assert main(args + ["--class-weight", "balanced", "--out", str(b / "m.fcm")]) == 130
    capsys.readouterr()
    monkeypatch.undo()
    assert main(args + ["--out", str(b / "m.fcm"), "--resume", "--class-weight", "none"]) == 1
    assert "--resume: the checkpoint was trained with --class-weight balanced, not none" in \
        capsys.readouterr().err
    assert main(args + ["--out", str(b / "m.fcm"), "--resume"]) == 0
    assert "class weights (balanced)" in capsys.readouterr().out
    assert _weights_equal(a / "m.fcm.ckpt", b / "m.fcm.ckpt")
    hb = json.loads((b / "history.json").read_text())
    assert hb["settings"] == ha["settings"]
    assert hb["history"]["loss"] == ha["history"]["loss"]


def test_label_smoothing_is_recorded_saved_and_resumed(unbalanced, tmp_path, capsys,
                                                       monkeypatch):
    args = ["train", unbalanced, *FAST, "--epochs", "2", "--seed", "1",
            "--label-smoothing", "0.1"]
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    assert main(args + ["--out", str(a / "m.fcm")]) == 0
    assert "label smoothing 0.1" in capsys.readouterr().out
    ha = json.loads((a / "history.json").read_text())
    assert ha["settings"]["label_smoothing"] == 0.1
    model = fastconv.load_model(str(a / "m.fcm.ckpt"), device="reference")
    assert model.loss == "binary_crossentropy" and model._loss.label_smoothing == 0.1
    _interrupt_at(monkeypatch, 2 + 1)
    assert main(args + ["--out", str(b / "m.fcm")]) == 130
    capsys.readouterr()
    monkeypatch.undo()
    resume = ["train", unbalanced, *FAST, "--epochs", "2", "--seed", "1", "--out",
              str(b / "m.fcm"), "--resume"]
    assert main(resume + ["--label-smoothing", "0.2"]) == 1
    assert "trained with --label-smoothing 0.1, not 0.2" in capsys.readouterr().err
    assert main(resume) == 0
    capsys.readouterr()
    assert _weights_equal(a / "m.fcm.ckpt", b / "m.fcm.ckpt")
    assert json.loads((b / "history.json").read_text())["history"]["loss"] == \
        ha["history"]["loss"]
    assert main(args[:-2] + ["--label-smoothing", "1.5", "--out", str(a / "x.fcm")]) == 1
    assert "--label-smoothing must lie between 0 and 1, received 1.5" in \
        capsys.readouterr().err


def test_label_smoothing_of_three_classes_is_categorical(tmp_path, capsys):
    root = str(tmp_path / "data")
    _three_class_folder(root)
    out = tmp_path / "model.fcm"
    assert main(["train", root, *FAST, "--epochs", "1", "--label-smoothing", "0.2",
                 "--out", str(out)]) == 0
    capsys.readouterr()
    model = fastconv.load_model(str(out), device="reference")
    assert model.loss == "categorical_crossentropy" and model._loss.label_smoothing == 0.2
    assert main(["evaluate", str(out), root, "--device", "reference"]) == 0
    text = capsys.readouterr().out
    assert "per-class precision and recall (one class against the rest)" in text
    assert main(["evaluate", str(out), root, "--device", "reference", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    m = np.array(report["confusion_matrix"], np.float64)
    for c, name in enumerate(report["class_names"]):
        entry = report["per_class"][name]
        want_p = m[c, c] / m[:, c].sum() if m[:, c].sum() else None
        want_r = m[c, c] / m[c].sum()
        assert entry["recall"] == pytest.approx(want_r)
        assert (entry["precision"] is None) == (want_p is None)
        if want_p is not None:
            assert entry["precision"] == pytest.approx(want_p)
        assert entry["predicted"] == int(m[:, c].sum())


def test_precision_recall_from_a_fixed_confusion_matrix():
    from fastconv.cli.evaluate import precision_recall
    m = np.array([[5, 1, 0], [2, 3, 1], [0, 0, 0]])   # rows true, columns predicted
    assert precision_recall(m, 0) == (5 / 7, 5 / 6)
    assert precision_recall(m, 1) == (3 / 4, 3 / 6)
    assert precision_recall(m, 2) == (0.0, None)       # predicted once, never true


def test_early_stopping_stops_is_recorded_and_resumes_exactly(tmp_path, capsys, monkeypatch):
    """--early-stopping 1 with a rate that overshoots (adam lr 0.05, seed 2): val_loss
    falls for 4 epochs, rises in the 5th, and the run stops there (of 8); a Ctrl-C in
    epoch 5 then --resume stops at the same epoch with the same weights; a stopped run
    does not resume."""
    root = str(tmp_path / "demo")
    data.write_demo_data(root, train_per_class=12, validation_per_class=6, image_size=32,
                         seed=0)
    args = ["train", root, *FAST, "--lr", "0.05", "--optimizer", "adam", "--epochs", "8",
            "--early-stopping", "1", "--seed", "2"]
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    assert main(args + ["--out", str(a / "m.fcm")]) == 0
    out = capsys.readouterr().out
    ha = json.loads((a / "history.json").read_text())
    assert ha["settings"]["early_stopping"] == 1
    vl = ha["history"]["val_loss"]
    assert len(vl) < 8 and "early stopping patience 1" in out
    # Keras's rule, patience 1: the last epoch is the first that did not improve
    assert vl[-1] >= min(vl[:-1]) and all(v < min(vl[:k]) for k, v in enumerate(vl[:-1])
                                          if k)
    assert f"stopped after epoch {len(vl)} of 8" in out
    # 3 steps an epoch: a Ctrl-C in epoch 5, so only the saved counters (best = epoch
    # 4's val_loss) make the resumed run stop there
    _interrupt_at(monkeypatch, 4 * 3 + 1)
    assert main(args + ["--out", str(b / "m.fcm")]) == 130
    capsys.readouterr()
    monkeypatch.undo()
    resume = ["train", root, *FAST, "--lr", "0.05", "--optimizer", "adam", "--epochs", "8",
              "--seed", "2", "--out", str(b / "m.fcm"), "--resume"]
    assert main(resume) == 0
    assert f"stopped after epoch {len(vl)} of 8" in capsys.readouterr().out
    assert _weights_equal(a / "m.fcm.ckpt", b / "m.fcm.ckpt")
    assert _weights_equal(a / "m.fcm", b / "m.fcm")
    hb = json.loads((b / "history.json").read_text())
    assert hb["history"]["val_loss"] == vl
    assert main(resume) == 1
    assert f"--resume: the run stopped early after epoch {len(vl)}" in capsys.readouterr().err
    assert main(args[:-4] + ["--early-stopping", "-1", "--out", str(a / "x.fcm")]) == 1
    assert "--early-stopping must be a patience >= 0" in capsys.readouterr().err
