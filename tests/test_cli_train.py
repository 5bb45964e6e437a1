"""`fastconv train`, `evaluate` and `predict` end to end on a tiny generated data set
(32x32 images, a few dozen of them, 1-3 epochs on the reference device)."""
import json
import os
import shutil
import stat

import numpy as np
import pytest

import fastconv
from fastconv.cli import _train_run
from fastconv.cli import main
from fastconv.models import Sequential

data = pytest.importorskip("fastconv.data")

SIZE = 32
FAST = ["--image-size", str(SIZE), "--batch-size", "8", "--device", "reference",
        "--lr", "1e-3", "--no-augment"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli") / "demo"
    data.write_demo_data(str(root), train_per_class=12, validation_per_class=6,
                         image_size=SIZE, seed=0)
    return str(root)


def _weights_equal(a, b):
    wa, wb = fastconv.load_model(a, device="reference").get_weights(), \
        fastconv.load_model(b, device="reference").get_weights()
    return len(wa) == len(wb) and all(np.array_equal(x, y) for x, y in zip(wa, wb))


def test_train_writes_model_checkpoint_and_history_then_evaluate_and_predict(
        demo, tmp_path, capsys):
    out = tmp_path / "model.fcm"
    assert main(["train", demo, *FAST, "--epochs", "2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "24 training images, 12 validation images" in text
    assert f"classes 0 = {data.DEMO_CLASSES[0]}, 1 = {data.DEMO_CLASSES[1]}" in text
    assert text.count("img/s") == 2 and text.count("data wait") == 2 and "skipped 0" in text
    assert "final validation accuracy:" in text
    assert out.is_file() and (tmp_path / "model.fcm.ckpt").is_file()
    hist = json.loads((tmp_path / "history.json").read_text())
    h = hist["history"]
    assert h["epoch"] == [1, 2]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "data_wait_seconds"):
        assert len(h[key]) == 2 and all(np.isfinite(h[key])), key
    assert all(w >= 0 for w in h["data_wait_seconds"])
    assert hist["best_val_loss"] == min(h["val_loss"])
    best = hist["best_epoch"]
    assert h["val_loss"][best - 1] == hist["best_val_loss"]
    assert (f"final validation accuracy: {h['val_accuracy'][best - 1]:.4f} ({out}: epoch "
            f"{best}, the best by val_loss") in text
    assert hist["class_names"] == list(data.DEMO_CLASSES)
    model = fastconv.load_model(str(out), device="reference")
    assert model.class_names == list(data.DEMO_CLASSES)
    assert model.input_shape == (None, SIZE, SIZE, 3)
    # history.png exactly when matplotlib is importable
    try:
        import matplotlib  # noqa: F401
        assert (tmp_path / "history.png").is_file()
    except ImportError:
        assert not (tmp_path / "history.png").exists()
        assert "fastconv[plot]" in text

    # evaluate on the validation/ folder: the same loss as the best epoch's val_loss
    assert main(["evaluate", str(out), demo, "--device", "reference", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == 12
    assert report["loss"] == pytest.approx(hist["best_val_loss"], rel=1e-5)
    m = np.array(report["confusion_matrix"])
    assert m.shape == (2, 2) and m.sum() == 12 and m.sum(axis=1).tolist() == [6, 6]
    assert report["accuracy"] == pytest.approx(np.trace(m) / 12)
    for k, name in enumerate(data.DEMO_CLASSES):
        assert report["per_class"][name]["accuracy"] == pytest.approx(m[k, k] / 6)
    assert main(["evaluate", str(out), demo, "--device", "reference"]) == 0
    text = capsys.readouterr().out
    assert "confusion matrix" in text and "per-class accuracy" in text
    assert f"accuracy {report['accuracy']:.4f}" in text

    # predict a folder and a file; --json parses and agrees with model.predict
    folder = os.path.join(demo, "validation", data.DEMO_CLASSES[1])
    assert main(["predict", str(out), folder, "--device", "reference", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["class_names"] == list(data.DEMO_CLASSES) and not report["errors"]
    paths = [p["path"] for p in report["predictions"]]
    assert len(paths) == 6 and paths == sorted(paths)
    x = np.stack([data.load_image(p, (SIZE, SIZE)) for p in paths]) / np.float32(255)
    expected = model.predict(x.astype(np.float32))[:, 0]
    got = [p["probabilities"][data.DEMO_CLASSES[1]] for p in report["predictions"]]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    assert main(["predict", str(out), paths[0], "--device", "reference"]) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    assert line.startswith(paths[0]) and report["predictions"][0]["class"] in line


def test_predict_reports_unreadable_images_and_predicts_the_rest(demo, tmp_path, capsys):
    out = tmp_path / "model.fcm"
    assert main(["train", demo, *FAST, "--epochs", "1", "--out", str(out)]) == 0
    capsys.readouterr()
    good = os.path.join(demo, "train", data.DEMO_CLASSES[0], sorted(
        os.listdir(os.path.join(demo, "train", data.DEMO_CLASSES[0])))[0])
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"this is not a jpeg")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    assert main(["predict", str(out), str(bad), good, str(empty), "--device", "reference",
                 "--json"]) == 1
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert [p["path"] for p in report["predictions"]] == [good]
    assert [e["path"] for e in report["errors"]] == [str(bad), str(empty)]
    assert f"cannot read {bad}" in captured.err and f"cannot read {empty}" in captured.err
    assert "2 of 3 images could not be read" in captured.err


def _interrupt_at(monkeypatch, step):
    """Raise KeyboardInterrupt (as Ctrl-C does) at the start of training step `step`."""
    real = Sequential._train_step
    calls = []

    def step_or_interrupt(self, plan, guard_snaps=None):
        calls.append(1)
        if len(calls) == step:
            raise KeyboardInterrupt
        return real(self, plan, guard_snaps)
    monkeypatch.setattr(Sequential, "_train_step", step_or_interrupt)


@pytest.mark.parametrize("augment", ["--no-augment", "--augment"])
def test_ctrl_c_then_resume_gives_the_uninterrupted_result(demo, tmp_path, capsys,
                                                           monkeypatch, augment):
    args = ["train", demo, *FAST, augment, "--epochs", "3", "--seed", "5"]
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    assert main(args + ["--out", str(a / "m.fcm")]) == 0
    capsys.readouterr()
    _interrupt_at(monkeypatch, 3 + 2)      # 24 images / batch 8 = 3 steps per epoch
    assert main(args + ["--out", str(b / "m.fcm")]) == 130
    captured = capsys.readouterr()
    assert "model after epoch 1" in captured.err and "--resume" in captured.err
    state = json.loads((b / "m.fcm.ckpt.json").read_text())
    assert state["epochs_done"] == 1
    monkeypatch.undo()
    assert main(args + ["--out", str(b / "m.fcm"), "--resume"]) == 0
    assert "continuing after epoch 1" in capsys.readouterr().out
    assert _weights_equal(a / "m.fcm.ckpt", b / "m.fcm.ckpt")
    assert _weights_equal(a / "m.fcm", b / "m.fcm")
    ha = json.loads((a / "history.json").read_text())["history"]
    hb = json.loads((b / "history.json").read_text())["history"]
    for key in ("epoch", "loss", "accuracy", "val_loss", "val_accuracy"):
        assert ha[key] == hb[key], key
    # a finished run extends with a larger --epochs, and not otherwise
    assert main(args + ["--out", str(b / "m.fcm"), "--resume"]) == 1
    assert "pass --epochs N with N > 3" in capsys.readouterr().err


def test_resume_errors(demo, tmp_path, capsys):
    out = str(tmp_path / "m.fcm")
    assert main(["train", demo, *FAST, "--epochs", "1", "--out", out, "--resume"]) == 1
    assert "no checkpoint to continue" in capsys.readouterr().err
    assert main(["train", demo, *FAST, "--epochs", "1", "--out", out]) == 0
    capsys.readouterr()
    assert main(["train", demo, *FAST, "--epochs", "2", "--out", out, "--resume",
                 "--batch-size", "4"]) == 1
    assert "--batch-size 8, not 4" in capsys.readouterr().err
    # the checkpoint holds its own state (issue 12): a damaged one is refused, naming it
    ckpt = bytearray(open(out + ".ckpt", "rb").read())
    ckpt[_middle_of_largest_entry(out + ".ckpt")] ^= 0xFF     # a weight, not a zip header
    with open(out + ".ckpt", "wb") as fh:
        fh.write(ckpt)
    assert main(["train", demo, *FAST, "--epochs", "2", "--out", out, "--resume"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"fastconv train: error: --resume: {out}.ckpt: ")


def _middle_of_largest_entry(path):
    """The offset of the middle byte of the largest entry's data in a zip (.npz) file:
    flipping the file's middle byte could land in a local header field no reader checks
    (a file-size-dependent test)."""
    import zipfile
    with zipfile.ZipFile(path) as zf:
        info = max(zf.infolist(), key=lambda i: i.compress_size)
        raw = open(path, "rb").read(info.header_offset + 30)
        name_len = int.from_bytes(raw[info.header_offset + 26:info.header_offset + 28], "little")
        extra_len = int.from_bytes(raw[info.header_offset + 28:info.header_offset + 30],
                                   "little")
        return info.header_offset + 30 + name_len + extra_len + info.compress_size // 2


def test_class_folders_are_split_by_validation_split(demo, tmp_path, capsys):
    flat = tmp_path / "flat"
    shutil.copytree(os.path.join(demo, "train"), flat)
    out = tmp_path / "m.fcm"
    assert main(["train", str(flat), *FAST, "--epochs", "1", "--validation-split", "0.25",
                 "--out", str(out)]) == 0
    assert "18 training images, 6 validation images" in capsys.readouterr().out


def test_train_without_data_uses_the_cached_demo_set(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setitem(data.demo.DEMO, "train_per_class", 8)
    monkeypatch.setitem(data.demo.DEMO, "validation_per_class", 4)
    monkeypatch.setitem(data.demo.DEMO, "image_size", SIZE)
    monkeypatch.setitem(data.demo.DEMO, "epochs", 1)
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--device", "reference"]) == 0
    text = capsys.readouterr().out
    assert "generating the demo data set" in text and "on the demo data set" in text
    assert "16 training images, 8 validation images" in text
    assert "final validation accuracy" in text and (tmp_path / "model.fcm").is_file()
    # a second run in the same folder replaces history.json: only when asked (issue 12)
    assert main(["train", "--device", "reference", "--out", "again.fcm", "--overwrite"]) == 0
    assert "generating" not in capsys.readouterr().out        # generated once, reused
    assert _weights_equal(tmp_path / "model.fcm", tmp_path / "again.fcm")   # seed 0 default


def test_train_data_errors(demo, tmp_path, capsys):
    assert main(["train", str(tmp_path / "nowhere"), *FAST]) == 1
    err = capsys.readouterr().err
    assert err == f"fastconv train: error: data folder not found: {tmp_path / 'nowhere'}\n"
    one = tmp_path / "one"          # three or more train a softmax head (test below)
    shutil.copytree(os.path.join(demo, "train", data.DEMO_CLASSES[0]), one / "a")
    assert main(["train", str(one), *FAST, "--out", str(tmp_path / "m.fcm")]) == 1
    err = capsys.readouterr().err
    assert err == f"fastconv train: error: {one} needs at least 2 class folders, found 1: a\n"
    assert main(["train", demo, *FAST, "--image-size", "20"]) == 1
    assert "too small" in capsys.readouterr().err
    assert main(["train", demo, *FAST, "--out", str(tmp_path / "no" / "m.fcm")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_evaluate_errors(demo, tmp_path, capsys):
    out = tmp_path / "m.fcm"
    assert main(["train", demo, *FAST, "--epochs", "1", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(out), str(tmp_path / "nowhere"), "--device", "reference"]) == 1
    assert "data folder not found" in capsys.readouterr().err
    other = tmp_path / "other"
    (other / "x").mkdir(parents=True)
    (other / "y").mkdir()
    assert main(["evaluate", str(out), str(other), "--device", "reference"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("fastconv evaluate: error: ") and "the model's classes are" in err


def test_demo_data_command(tmp_path, capsys):
    out = tmp_path / "d"
    assert main(["demo-data", str(out), "--train-per-class", "3", "--validation-per-class",
                 "2", "--image-size", str(SIZE)]) == 0
    assert "fastconv train" in capsys.readouterr().out
    for split, n in (("train", 3), ("validation", 2)):
        for name in data.DEMO_CLASSES:
            assert len(os.listdir(out / split / name)) == n
    assert main(["demo-data", str(out)]) == 1            # not empty: refuse
    assert "not empty" in capsys.readouterr().err


def test_ctrl_c_in_a_real_process_exits_cleanly_with_a_checkpoint(demo, tmp_path):
    import signal
    import subprocess
    import sys
    out = tmp_path / "m.fcm"
    proc = subprocess.Popen([sys.executable, "-m", "fastconv", "train", demo, *FAST,
                             "--epochs", "10000", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            if line.startswith("epoch 2/"):
                break
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "--resume" in err and "Traceback" not in err
    state = json.loads((tmp_path / "m.fcm.ckpt.json").read_text())
    assert state["epochs_done"] >= 2
    assert len(fastconv.load_model(str(out) + ".ckpt", device="reference").get_weights()) == 10


def test_unreadable_training_images_are_skipped_counted_and_named(demo, tmp_path, capsys):
    root = tmp_path / "data"
    shutil.copytree(demo, root)
    bad = root / "train" / data.DEMO_CLASSES[0] / "truncated.png"
    good = sorted((root / "train" / data.DEMO_CLASSES[0]).iterdir())[0]
    bad.write_bytes(good.read_bytes()[:60])
    (root / "train" / data.DEMO_CLASSES[1] / "README.txt").write_text("not an image")
    assert main(["train", str(root), *FAST, "--epochs", "2", "--out",
                 str(tmp_path / "m.fcm")]) == 0
    captured = capsys.readouterr()
    lines = [l for l in captured.out.splitlines() if l.startswith("epoch ")]
    assert len(lines) == 2 and all("skipped 1" in l for l in lines)
    warned = [l for l in captured.err.splitlines() if str(bad) in l]
    assert len(warned) == 1 and warned[0].startswith("fastconv train: warning: ")
    assert "README.txt" not in captured.err                 # not an image: ignored


def test_a_nan_loss_stops_training_and_keeps_the_last_good_files(demo, tmp_path, capsys,
                                                                 monkeypatch):
    out = tmp_path / "m.fcm"
    real = Sequential._train_step
    calls = []

    def nan_in_epoch_2(self, plan, guard_snaps=None):
        calls.append(1)
        if len(calls) == 3 + 2:
            return float("nan"), None
        return real(self, plan, guard_snaps)
    monkeypatch.setattr(Sequential, "_train_step", nan_in_epoch_2)
    assert main(["train", demo, *FAST, "--epochs", "3", "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "training stopped: the loss became non-finite in epoch 2" in captured.err
    assert "fastconv train: warning: " in captured.err and "loss became nan" in captured.err
    state = json.loads((tmp_path / "m.fcm.ckpt.json").read_text())
    assert state["epochs_done"] == 1
    text = (tmp_path / "history.json").read_text()
    assert "NaN" not in text and "Infinity" not in text           # strict JSON
    hist = json.loads(text)
    assert hist["history"]["loss"][1] is None and hist["best_epoch"] == 1


def test_a_fresh_train_refuses_to_replace_an_earlier_run(demo, tmp_path, capsys):
    out = tmp_path / "m.fcm"
    assert main(["train", demo, *FAST, "--epochs", "1", "--out", str(out)]) == 0
    capsys.readouterr()
    files = {p: p.read_bytes() for p in tmp_path.iterdir() if p.name != "history.png"}
    assert {p.name for p in files} >= {"m.fcm", "m.fcm.ckpt", "m.fcm.ckpt.json",
                                       "history.json"}
    assert main(["train", demo, *FAST, "--epochs", "1", "--out", str(out), "--seed", "3"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""                       # refused before any work
    err = captured.err
    assert err.startswith("fastconv train: error: --out: ") and "--overwrite" in err
    for name in ("m.fcm", "m.fcm.ckpt", "m.fcm.ckpt.json", "history.json"):
        assert str(tmp_path / name) in err, name
    assert all(p.read_bytes() == b for p, b in files.items())      # nothing replaced
    # only the history of another run in the same folder: refused too
    assert main(["train", demo, *FAST, "--epochs", "1", "--out", str(tmp_path / "n.fcm")]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'history.json'}" in err and "already exist" in err
    assert main(["train", demo, *FAST, "--epochs", "1", "--out", str(out), "--seed", "3",
                 "--overwrite"]) == 0
    assert files[out] != out.read_bytes()


def test_out_that_is_not_a_regular_file_is_refused_before_training(demo, tmp_path, capsys):
    folder = tmp_path / "model.fcm"
    folder.mkdir()
    fifo = tmp_path / "pipe.fcm"
    os.mkfifo(fifo)
    os.mkfifo(tmp_path / "history.json")
    (tmp_path / "sub").mkdir()
    for out, why in ((folder, "it is a folder"), (fifo, "it is a FIFO"),
                     (tmp_path / "sub" / "m.fcm", None)):
        if why is None:     # a fine --out, but its history.json is a FIFO
            (tmp_path / "sub" / "history.json").symlink_to(tmp_path / "history.json")
            why = "it is a FIFO"
        assert main(["train", demo, *FAST, "--epochs", "1", "--out", str(out),
                     "--overwrite"]) == 1
        captured = capsys.readouterr()
        assert captured.out == "", out               # found at start, before training
        assert captured.err.startswith("fastconv train: error: --out: refusing to save")
        assert why in captured.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.json", "model.fcm",
                                                          "pipe.fcm", "sub"]
    assert folder.is_dir() and not os.listdir(folder) and stat.S_ISFIFO(fifo.lstat().st_mode)


class _Killed(BaseException):
    """Stands for kill -9: nothing after it runs (main() does not catch it)."""


def test_a_kill_between_checkpoint_and_state_file_still_resumes_exactly(demo, tmp_path,
                                                                        capsys, monkeypatch):
    """The checkpoint and its training state are one file: a kill after the checkpoint
    of epoch 2 was renamed into place, before the state file beside it was, resumes."""
    args = ["train", demo, *FAST, "--epochs", "3", "--seed", "2"]
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    assert main(args + ["--out", str(a / "m.fcm")]) == 0
    real, writes = _train_run.write_json_atomic, []

    def killed_on_the_third_state_write(path, obj):
        if path.endswith(".ckpt.json"):
            writes.append(path)
            if len(writes) == 3:            # states of epochs 0, 1, then 2: killed there
                raise _Killed
        real(path, obj)
    monkeypatch.setattr(_train_run, "write_json_atomic", killed_on_the_third_state_write)
    with pytest.raises(_Killed):
        main(args + ["--out", str(b / "m.fcm")])
    monkeypatch.undo()
    assert json.loads((b / "m.fcm.ckpt.json").read_text())["epochs_done"] == 1   # stale
    capsys.readouterr()
    assert main(args + ["--out", str(b / "m.fcm"), "--resume"]) == 0
    assert "continuing after epoch 2" in capsys.readouterr().out
    assert _weights_equal(a / "m.fcm.ckpt", b / "m.fcm.ckpt")
    assert _weights_equal(a / "m.fcm", b / "m.fcm")
    assert json.loads((a / "history.json").read_text())["history"]["val_loss"] == \
        json.loads((b / "history.json").read_text())["history"]["val_loss"]


def test_the_smallest_image_size_is_derived_from_the_architecture(demo, tmp_path, capsys):
    for px in (30, 31):         # passed the old constant 30, then failed in the last pool
        assert main(["train", demo, *FAST, "--image-size", str(px), "--epochs", "1",
                     "--out", str(tmp_path / "m.fcm")]) == 1
        err = capsys.readouterr().err
        assert f"--image-size {px} is too small" in err and "the smallest is 32" in err
        assert not (tmp_path / "m.fcm.ckpt").exists()
    assert main(["train", demo, *FAST, "--image-size", "32", "--epochs", "1",
                 "--out", str(tmp_path / "m.fcm")]) == 0
    assert fastconv.load_model(tmp_path / "m.fcm").input_shape == (None, 32, 32, 3)


@pytest.mark.parametrize("code", [28, 13, 30])          # ENOSPC, EACCES, EROFS
def test_a_full_or_read_only_disk_is_one_line_naming_the_file(demo, tmp_path, capsys,
                                                              monkeypatch, code):
    from fastconv.models import saving

    def fail(fileobj, arrays):
        raise OSError(code, os.strerror(code))
    monkeypatch.setattr(saving, "_write_arrays", fail)
    out = tmp_path / "m.fcm"
    assert main(["train", demo, *FAST, "--epochs", "1", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"fastconv train: error: cannot write {out}.ckpt: "
                          f"{os.strerror(code)}") and err.count("\n") == 1
    assert "--debug" not in err and "while training" in err


def test_out_of_memory_and_an_unwritable_folder_are_plain_errors(demo, tmp_path, capsys,
                                                                 monkeypatch):
    def no_memory(self, plan, guard_snaps=None):
        raise MemoryError
    monkeypatch.setattr(Sequential, "_train_step", no_memory)
    assert main(["train", demo, *FAST, "--epochs", "1", "--out", str(tmp_path / "m.fcm")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("fastconv train: error: out of memory while training")
    assert "--batch-size" in err and "--debug" not in err
    monkeypatch.undo()
    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, m, **kw: False if os.fspath(p) == str(ro)
                        else real(p, m, **kw))
    assert main(["train", demo, *FAST, "--epochs", "1", "--out", str(ro / "m.fcm")]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and f"cannot write in folder {ro}" in captured.err


def test_a_set_of_unreadable_images_is_refused_before_training(demo, tmp_path, capsys):
    for which, split in (("training", "train"), ("validation", "validation")):
        root = tmp_path / which
        shutil.copytree(demo, root)
        n = 0
        for png in (root / split).rglob("*.png"):
            png.write_bytes(b"not a png")
            n += 1
        assert main(["train", str(root), *FAST, "--epochs", "1", "--out",
                     str(root / "m.fcm")]) == 1
        captured = capsys.readouterr()
        assert "epoch 1/" not in captured.out, which       # no epoch trained first
        assert f"{root / split}: none of the {n} {which} images can be read" in captured.err
        assert "one-shot generator" not in captured.err
        assert not (root / "m.fcm.ckpt").exists()


def test_a_checkpoint_of_another_architecture_is_refused_before_resuming(demo, tmp_path,
                                                                         capsys):
    from fastconv.models import saving
    from fastconv.cli._train_run import read_state, paths_for
    a, b = str(tmp_path / "a.fcm"), str(tmp_path / "sub" / "b.fcm")
    (tmp_path / "sub").mkdir()
    assert main(["train", demo, *FAST, "--epochs", "1", "--out", a]) == 0
    assert main(["train", demo, *FAST, "--image-size", "40", "--epochs", "1", "--out", b]) == 0
    state = read_state(paths_for(a))                 # a's state, b's 40x40 model
    other = fastconv.load_model(b + ".ckpt", device="reference")
    saving.save_model(other, a + ".ckpt", train_state=state)
    capsys.readouterr()
    assert main(["train", demo, *FAST, "--epochs", "2", "--out", a, "--resume"]) == 1
    captured = capsys.readouterr()
    assert "resuming" not in captured.out and captured.out == ""
    assert f"--resume: {a}.ckpt holds a model of another architecture (input 40x40x3" in \
        captured.err and "at 32x32x3" in captured.err


def test_a_wrong_data_folder_is_named_before_an_earlier_runs_files(tmp_path, capsys,
                                                                   monkeypatch):
    """CI runs the README's `fastconv train` in the checkout, then the suite there."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model.fcm").write_bytes(b"an earlier run")
    assert main(["train", str(tmp_path / "nowhere"), *FAST]) == 1
    assert capsys.readouterr().err == \
        f"fastconv train: error: data folder not found: {tmp_path / 'nowhere'}\n"


def _three_class_folder(root, per_class=6, size=20):
    """train/ and validation/ of three classes (red, green, blue-ish noise PNGs)."""
    from PIL import Image
    rng = np.random.default_rng(0)
    names = ["ant", "bee", "cat"]
    for split, n in (("train", per_class), ("validation", 3)):
        for c, name in enumerate(names):
            os.makedirs(os.path.join(root, split, name))
            for i in range(n):
                img = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
                img[..., c] += 150
                Image.fromarray(img).save(os.path.join(root, split, name, f"{i}.png"))
    return names


def test_three_class_folders_train_a_softmax_head_then_evaluate_and_predict(
        tmp_path, capsys):
    root = str(tmp_path / "data")
    names = _three_class_folder(root)
    out = tmp_path / "model.fcm"
    assert main(["train", root, *FAST, "--epochs", "1", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "classes 0 = ant, 1 = bee, 2 = cat (softmax head)" in text
    model = fastconv.load_model(str(out), device="reference")
    assert model.class_names == names and model.output_shape == (None, 3)
    assert type(model.layers[-1]).__name__ == "Activation"
    assert model.layers[-1].get_config()["activation"] == "softmax"

    assert main(["evaluate", str(out), root, "--device", "reference", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == 9 and report["class_names"] == names
    assert np.array(report["confusion_matrix"]).shape == (3, 3)
    assert main(["evaluate", str(out), root, "--device", "reference"]) == 0
    text = capsys.readouterr().out
    assert all(n in text for n in names)

    folder = os.path.join(root, "validation", "bee")
    assert main(["predict", str(out), folder, "--device", "reference", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["class_names"] == names and not report["errors"]
    paths = [p["path"] for p in report["predictions"]]
    x = np.stack([data.load_image(p, (SIZE, SIZE)) for p in paths]) / np.float32(255)
    expected = model.predict(x.astype(np.float32))
    for pred, row in zip(report["predictions"], expected):
        np.testing.assert_allclose([pred["probabilities"][n] for n in names], row,
                                   rtol=0, atol=1e-6)
        assert [t["class"] for t in pred["top"]] == [names[i] for i in np.argsort(-row)]
    assert main(["predict", str(out), folder, "--device", "reference"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "top 3" in lines[0] and len(lines) == 4
    assert all(all(n in line for n in names) for line in lines[1:])


@pytest.mark.parametrize("flags", [
    ["--lr-schedule", "cosine", "--warmup-epochs", "1", "--weight-decay", "0.01"],
    ["--lr-schedule", "exponential"],
    ["--reduce-lr-on-plateau", "--weight-decay", "0.004"],
], ids=["cosine-warmup-wd", "exponential", "plateau-wd"])
def test_lr_flags_are_recorded_and_resume_gives_the_uninterrupted_result(
        demo, tmp_path, capsys, monkeypatch, flags):
    """--lr-schedule/--warmup-epochs/--reduce-lr-on-plateau/--weight-decay: in
    history.json's settings, the rate per epoch in its history, and a Ctrl-C in epoch 2
    then --resume (no flags repeated) is bitwise the uninterrupted run."""
    args = ["train", demo, *FAST, "--epochs", "3", "--seed", "2"]
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    assert main(args + flags + ["--out", str(a / "m.fcm")]) == 0
    out = capsys.readouterr().out
    hist = json.loads((a / "history.json").read_text())
    s, h = hist["settings"], hist["history"]
    assert s["lr_schedule"] == (flags[1] if flags[0] == "--lr-schedule" else "constant")
    assert s["warmup_epochs"] == (1 if "--warmup-epochs" in flags else 0)
    assert s["reduce_lr_on_plateau"] == ("--reduce-lr-on-plateau" in flags)
    wd = float(flags[flags.index("--weight-decay") + 1]) if "--weight-decay" in flags else 0
    assert s["weight_decay"] == wd
    lr = h["learning_rate"]
    assert len(lr) == 3 and "learning_rate" in out
    model = fastconv.load_model(str(a / "m.fcm.ckpt"), device="reference")
    opt = model.optimizer
    assert model.optimizer_state()[0] == 9 and (opt.weight_decay or 0) == wd
    if s["lr_schedule"] == "cosine":       # warmup 1 epoch (3 steps), cosine over 2 epochs
        assert opt.schedule.get_config()["warmup_steps"] == 3
        assert lr[0] == pytest.approx(1e-3) and lr[2] == pytest.approx(0.0, abs=1e-12)
    elif s["lr_schedule"] == "exponential":  # lr/10 after 9 steps; epoch ends at 3, 6, 9
        assert lr == pytest.approx([1e-3 * 0.1 ** (k / 3) for k in (1, 2, 3)])
    else:
        assert opt.schedule is None and lr == [1e-3] * 3
    _interrupt_at(monkeypatch, 3 + 2)
    assert main(args + flags + ["--out", str(b / "m.fcm")]) == 130
    capsys.readouterr()
    monkeypatch.undo()
    assert main(args + ["--out", str(b / "m.fcm"), "--resume"]) == 0
    capsys.readouterr()
    assert _weights_equal(a / "m.fcm.ckpt", b / "m.fcm.ckpt")
    hb = json.loads((b / "history.json").read_text())
    assert hb["settings"] == s
    sa, sb = (json.loads((d / "m.fcm.ckpt.json").read_text()) for d in (a, b))
    assert sa.get("reduce_lr") == sb.get("reduce_lr")      # the plateau's counters too
    assert ("reduce_lr" in sa) == s["reduce_lr_on_plateau"]
    for key in ("loss", "val_loss", "learning_rate"):
        assert hb["history"][key] == h[key], key


def test_lr_flag_errors(demo, tmp_path, capsys):
    out = str(tmp_path / "m.fcm")
    base = ["train", demo, *FAST, "--epochs", "2", "--out", out]
    assert main(base + ["--lr-schedule", "exponential", "--warmup-epochs", "1"]) == 1
    assert "--warmup-epochs works with --lr-schedule constant or cosine" in \
        capsys.readouterr().err
    assert main(base + ["--lr-schedule", "cosine", "--reduce-lr-on-plateau"]) == 1
    assert "--reduce-lr-on-plateau needs a constant learning rate" in capsys.readouterr().err
    assert main(base + ["--warmup-epochs", "2"]) == 1
    assert "--warmup-epochs must be >= 0 and less than --epochs 2, received 2" in \
        capsys.readouterr().err
    assert main(base + ["--weight-decay", "-1"]) == 1
    assert "--weight-decay must be a number >= 0, received -1.0" in capsys.readouterr().err
    # a schedule is laid out over --epochs: a resumed run cannot change them
    assert main(base + ["--lr-schedule", "cosine"]) == 0
    capsys.readouterr()
    assert main(["train", demo, *FAST, "--epochs", "3", "--out", out, "--resume"]) == 1
    assert "--epochs 2, not 3 (its learning-rate schedule was laid out" in \
        capsys.readouterr().err


XCEPTION = ["--model", "keras-io-xception", "--width", "0.03"]


def test_a_tiny_keras_io_xception_trains_then_resumes_evaluates_and_predicts(
        demo, tmp_path, capsys):
    """--model keras-io-xception --width 0.03 (4,075 params at 32x32): one epoch, then
    --resume --epochs 2 (the model and width come from the checkpoint) is bitwise the
    two-epoch run; evaluate and predict open the Functional model file."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    args = ["train", demo, *FAST, "--augment", *XCEPTION]
    assert main(args + ["--epochs", "2", "--out", str(a / "m.fcm")]) == 0
    text = capsys.readouterr().out
    assert "training the keras.io Xception (width 0.03) (4,075 params, 32x32x3, rgb)" in text
    assert "adam lr 0.001" in text and "final validation accuracy:" in text
    hist = json.loads((a / "history.json").read_text())
    assert hist["settings"]["model"] == "keras-io-xception"
    assert hist["settings"]["width"] == 0.03
    assert all(np.isfinite(hist["history"]["loss"]))
    model = fastconv.load_model(str(a / "m.fcm"), device="reference")
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds.count("SeparableConv2D") == 7 and model.count_params() == 4075
    assert model.layers[1].scale == 1.0          # the pipeline already scaled by 1/255
    assert main(args + ["--epochs", "1", "--out", str(b / "m.fcm")]) == 0
    assert main(["train", demo, "--epochs", "2", "--out", str(b / "m.fcm"), "--resume",
                 "--device", "reference"]) == 0
    assert "resuming the keras.io Xception (width 0.03)" in capsys.readouterr().out
    assert _weights_equal(a / "m.fcm.ckpt", b / "m.fcm.ckpt")
    assert main(["evaluate", str(a / "m.fcm"), demo, "--device", "reference"]) == 0
    assert "per-class accuracy" in capsys.readouterr().out
    folder = os.path.join(demo, "validation", data.DEMO_CLASSES[0])
    assert main(["predict", str(a / "m.fcm"), folder, "--device", "reference"]) == 0
    assert data.DEMO_CLASSES[0] in capsys.readouterr().out


def test_model_flag_errors(demo, tmp_path, capsys):
    from fastconv.cli._train_models import smallest_image_size
    assert smallest_image_size("keras-io-xception") == 1        # 'same' padding throughout
    assert smallest_image_size("small-convnet") == 32            # as train's own check
    out = str(tmp_path / "m.fcm")
    base = ["train", demo, *FAST, "--epochs", "1", "--out", out]
    assert main(base + ["--width", "0.5"]) == 1
    assert "--width scales --model keras-io-xception only; small-convnet has one size" in \
        capsys.readouterr().err
    assert main(base + ["--model", "keras-io-xception", "--width", "0"]) == 1
    assert "--width must be a positive number, received 0.0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(base + ["--model", "resnet"])
    assert "invalid choice: 'resnet'" in capsys.readouterr().err
    # a checkpoint's model cannot change on --resume
    assert main(base + XCEPTION) == 0
    capsys.readouterr()
    assert main(["train", demo, *FAST, "--epochs", "2", "--out", out, "--resume",
                 "--model", "small-convnet"]) == 1
    assert ("--resume: the checkpoint was trained with --model keras-io-xception, not "
            "small-convnet") in capsys.readouterr().err
    assert main(["train", demo, *FAST, "--epochs", "2", "--out", out, "--resume",
                 "--width", "0.05"]) == 1
    assert "trained with --width 0.03, not 0.05" in capsys.readouterr().err
