"""Model files: round trips, and clear errors for truncated, pickled, foreign and tampered files;
an interrupted save leaves the previous file intact."""
import json
import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import fastconv
from fastconv import layers as L
from fastconv.models import saving
from fastconv.models.file_format import ModelFileError

from .model_helpers import discs_and_squares, tiny_convnet


@pytest.fixture
def trained(tmp_path):
    rng = np.random.default_rng(0)
    x, y = discs_and_squares(32, rng, size=12)
    model = tiny_convnet(seed=2, input_shape=(12, 12, 1))
    model.compile(optimizer=fastconv.optimizers.Adam(0.01), loss="binary_crossentropy",
                  metrics=["accuracy"])
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    path = tmp_path / "model.npz"
    model.save(path)
    return model, path, x, y


def test_round_trip_gives_identical_predictions_and_config(trained):
    model, path, x, y = trained
    loaded = fastconv.load_model(path, device="reference")
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert loaded.get_config() == model.get_config()
    assert [l.name for l in loaded.layers] == [l.name for l in model.layers]
    assert loaded.loss == "binary_crossentropy" and loaded.metrics == ["accuracy"]
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    assert loaded.count_params() == model.count_params()


def test_optimizer_state_round_trips_so_training_resumes_identically(trained):
    model, path, x, y = trained
    loaded = fastconv.load_model(path, device="reference")
    a = model.train_on_batch(x[:8], y[:8])
    b = loaded.train_on_batch(x[:8], y[:8])
    assert a == b
    assert loaded.optimizer.iterations == model.optimizer.iterations == 9
    for u, v in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(u, v)


def test_save_without_optimizer_and_uncompiled_models(tmp_path, trained):
    model, _, x, _ = trained
    model.save(tmp_path / "noopt.npz", include_optimizer=False)
    loaded = fastconv.load_model(tmp_path / "noopt.npz", device="reference")
    assert loaded.compiled and loaded.optimizer.iterations == 0
    bare = tiny_convnet(seed=1, input_shape=(12, 12, 1))
    bare.save(tmp_path / "bare.npz")
    again = fastconv.load_model(tmp_path / "bare.npz", device="reference")
    assert not again.compiled
    np.testing.assert_array_equal(again.predict(x), bare.predict(x))


def test_save_weights_and_load_weights(tmp_path, trained):
    model, _, x, _ = trained
    model.save_weights(tmp_path / "w.npz")
    other = tiny_convnet(seed=99, input_shape=(12, 12, 1))
    other.load_weights(tmp_path / "w.npz")
    np.testing.assert_array_equal(other.predict(x), model.predict(x))
    with pytest.raises(ModelFileError, match=r"w\.npz: holds only weights"):
        fastconv.load_model(tmp_path / "w.npz")


def test_small_convnet_round_trip(tmp_path):
    model = fastconv.small_convnet(input_shape=(40, 40, 3), device="reference", seed=0)
    model.save(tmp_path / "seed.npz")
    loaded = fastconv.load_model(tmp_path / "seed.npz", device="reference")
    lines_a, lines_b = [], []
    model.summary(print_fn=lines_a.append)
    loaded.summary(print_fn=lines_b.append)
    assert lines_a == lines_b
    x = np.random.default_rng(0).random((2, 40, 40, 3), np.float32)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


def test_load_model_without_the_backend_installed_is_lazy(trained):
    """Loading is backend-free: the device is resolved at first use."""
    _, path, _, _ = trained
    model = fastconv.load_model(path, device="cuda")
    assert model.device == "cuda" and model.count_params() > 0


# ------------------------------------------------------------------ damaged files

def test_truncated_files_give_a_clear_error_naming_the_file(trained, tmp_path):
    _, path, _, _ = trained
    data = path.read_bytes()
    for keep in (len(data) // 2, len(data) - 30, 100, 0):
        bad = tmp_path / f"cut{keep}.npz"
        bad.write_bytes(data[:keep])
        with pytest.raises(ModelFileError, match=str(bad).replace(".", r"\.") + ": "):
            fastconv.load_model(bad)


def test_pickle_inside_is_refused(tmp_path, trained):
    _, path, _, _ = trained
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(ModelFileError, match=r"raw\.pkl: holds pickled data"):
        fastconv.load_model(raw)
    # a real model file with one weight replaced by an object array (a pickle)
    arrays = dict(np.load(path))
    arrays["w0000"] = np.array([{"evil": 1}], dtype=object)
    evil = tmp_path / "evil.npz"
    np.savez(evil, **arrays)
    with pytest.raises(ModelFileError, match=r"evil\.npz: entry 'w0000' holds pickled data"):
        fastconv.load_model(evil)


def test_foreign_files_and_other_model_types(tmp_path, trained):
    _, path, _, _ = trained
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, a=np.zeros(3), b=np.ones(2))
    with pytest.raises(ModelFileError, match=r"foreign\.npz: not a fastconv model file: it "
                                             r"has no 'fastconv_meta' entry \(entries: a, b\)"):
        fastconv.load_model(foreign)
    keras = tmp_path / "model.keras"
    with zipfile.ZipFile(keras, "w") as z:
        z.writestr("config.json", "{}")
        z.writestr("model.weights.h5", b"\x89HDF")
    from fastconv.models.keras_file import KerasFileError    # read as a .keras file now
    with pytest.raises(KerasFileError, match=r"model\.keras: its architecture cannot be read: "
                                             r"config\.json must hold a model dict"):
        fastconv.load_model(keras)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ModelFileError, match=r"notes\.txt: not a fastconv model file"):
        fastconv.load_model(text)
    npy = tmp_path / "one.npy"
    np.save(npy, np.zeros(3))
    with pytest.raises(ModelFileError, match=r"one\.npy: holds a single \.npy array"):
        fastconv.load_model(npy)
    # a fastconv file of another model class
    arrays = dict(np.load(path))
    meta = json.loads(arrays["fastconv_meta"].tobytes())
    meta["class_name"] = "Subclassed"         # a class fastconv does not load
    arrays["fastconv_meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    other = tmp_path / "subclassed.npz"
    np.savez(other, **arrays)
    with pytest.raises(ModelFileError, match=r"subclassed\.npz: holds a model of type "
                                             r"'Subclassed'"):
        fastconv.load_model(other)
    # weights of another architecture
    wide = fastconv.Sequential([L.Dense(3, input_shape=(4,)), L.Dense(1, activation="sigmoid")],
                               device="reference")
    wide.save_weights(tmp_path / "wide.npz")
    model = tiny_convnet(seed=1, input_shape=(12, 12, 1))
    with pytest.raises(ModelFileError, match=r"wide\.npz: holds 4 weight arrays but model "
                                             r"'sequential' has 8"):
        model.load_weights(tmp_path / "wide.npz")
    narrow = tiny_convnet(seed=1, input_shape=(14, 14, 1))
    narrow.save_weights(tmp_path / "narrow.npz")
    with pytest.raises(ModelFileError, match=r"narrow\.npz: weight dense_1/kernel has shape "
                                             r"\(48, 16\) but layer 'dense_1' kernel expects "
                                             r"\(12, 16\)"):
        model.load_weights(tmp_path / "narrow.npz")
    with pytest.raises(FileNotFoundError, match=r"missing\.npz: no such model file"):
        fastconv.load_model(tmp_path / "missing.npz")


def test_tampered_files_are_detected(tmp_path, trained):
    _, path, _, _ = trained
    arrays = dict(np.load(path))
    changed = dict(arrays)
    changed["w0002"] = arrays["w0002"].copy()
    changed["w0002"][0, 0, 0, 0] += 1.0
    bad = tmp_path / "tampered.npz"
    np.savez(bad, **changed)
    with pytest.raises(ModelFileError, match=r"tampered\.npz: weight conv2d_2/kernel entry "
                                             r"'w0002' does not match its SHA-256"):
        fastconv.load_model(bad)
    changed = dict(arrays)
    changed["w0001"] = arrays["w0001"].astype(np.float64)
    np.savez(bad, **changed)
    with pytest.raises(ModelFileError, match="has dtype float64, expected float32"):
        fastconv.load_model(bad)
    changed = dict(arrays)
    del changed["w0005"]
    np.savez(bad, **changed)
    with pytest.raises(ModelFileError, match="entry 'w0005' is missing"):
        fastconv.load_model(bad)
    changed = dict(arrays)
    changed["fastconv_meta"] = np.frombuffer(b"{not json", np.uint8)
    np.savez(bad, **changed)
    with pytest.raises(ModelFileError, match="is not valid JSON"):
        fastconv.load_model(bad)
    # flip one byte inside a stored array: the zip CRC or the checksum catches it
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match=r"tampered\.npz: "):
        fastconv.load_model(bad)


# ------------------------------------------------------------------ atomic saves

def test_a_failed_save_keeps_the_previous_file_and_leaves_no_temp(trained, monkeypatch):
    model, path, x, _ = trained
    before = path.read_bytes()

    def half_then_fail(fileobj, arrays):
        fileobj.write(b"PK\x03\x04 partial")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(saving, "_write_arrays", half_then_fail)
    model.train_on_batch(x[:8], np.zeros(8))
    with pytest.raises(OSError, match="disk full"):
        model.save(path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(path.parent)) == ["model.npz"]
    fastconv.load_model(path, device="reference")


def test_a_crash_mid_save_keeps_the_previous_file(trained, tmp_path):
    """A process killed while writing (os._exit, no cleanup) leaves the old file whole."""
    _, path, x, _ = trained
    before = path.read_bytes()
    script = f"""
import os, sys
import numpy as np
import fastconv
from fastconv.models import saving
model = fastconv.load_model({str(path)!r}, device="reference")
def crash(fileobj, arrays):
    fileobj.write(b"PK\\x03\\x04" + b"x" * 1000)
    fileobj.flush()
    os._exit(17)
saving._write_arrays = crash
model.save({str(path)!r})
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 17, proc.stderr
    assert path.read_bytes() == before
    loaded = fastconv.load_model(path, device="reference")
    assert loaded.predict(x).shape == (32, 1)
    leftovers = [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    assert leftovers and all(p.startswith(".model.npz.") for p in leftovers)


def test_saved_file_is_a_plain_npz_readable_without_pickle(trained):
    _, path, _, _ = trained
    with np.load(path, allow_pickle=False) as npz:
        meta = json.loads(npz["fastconv_meta"].tobytes())
        assert meta["format"] == "fastconv" and meta["kind"] == "model"
        assert [e["layer"] for e in meta["weights"]][:2] == ["conv2d_1", "conv2d_1"]
        assert npz["w0000"].shape == (3, 3, 1, 8)
