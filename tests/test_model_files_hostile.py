"""Hostile model files: NaN/inf weights, zip bombs, configs declaring huge layers, .h5
datasets of strings or of huge declared shapes, and Keras 3 files whose layer names carry
no order. Each is refused (or loaded right) before memory is spent on it."""
import hashlib
import json
import struct
import subprocess
import sys
import warnings
import zlib

import numpy as np
import pytest

import fastconv
from fastconv.models.keras_weights import KerasWeightsError
from fastconv.models.file_format import ModelFileError

from .model_helpers import tiny_convnet

h5py = pytest.importorskip("h5py")


def _model(seed=2):
    model = tiny_convnet(seed=seed, input_shape=(12, 12, 1))
    model.compile(optimizer=fastconv.optimizers.Adam(0.01), loss="binary_crossentropy",
                  metrics=["accuracy"])
    x = np.random.default_rng(0).normal(size=(4, 12, 12, 1)).astype(np.float32)
    model.train_on_batch(x, np.array([0, 1, 0, 1], np.float32))
    return model


def _rewrite(src, dst, mutate):
    """Copy a fastconv file with mutate(arrays, meta) applied, checksums made to match."""
    arrays = dict(np.load(src))
    meta = json.loads(arrays.pop("fastconv_meta").tobytes())
    mutate(arrays, meta)
    entries = list(meta["weights"]) + list((meta.get("optimizer_state") or {}).get("arrays", []))
    for e in entries:
        if e["key"] in arrays:
            e["sha256"] = hashlib.sha256(np.ascontiguousarray(arrays[e["key"]]).tobytes()
                                         ).hexdigest()
    arrays["fastconv_meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    with open(dst, "wb") as f:      # np.savez would append .npz to the name
        np.savez(f, **arrays)
    return dst


# ------------------------------------------------------------------ NaN and inf (item 3)

def test_nan_or_inf_weight_with_a_matching_checksum_is_refused(tmp_path):
    model = _model()
    model.save(tmp_path / "ok.fcm")

    def poison(arrays, meta):
        arrays["w0002"] = arrays["w0002"].copy()
        arrays["w0002"][0, 0, 0, 1] = np.nan
        arrays["w0002"][1, 0, 0, 1] = np.inf
    bad = _rewrite(tmp_path / "ok.fcm", tmp_path / "nan.fcm", poison)
    with pytest.raises(ModelFileError, match=r"nan\.fcm: weight conv2d_2/kernel \(entry "
                                             r"'w0002', shape \(3, 3, 8, 12\)\) holds 2 "
                                             r"non-finite value\(s\) \(NaN or inf\)"):
        fastconv.load_model(bad)
    target = tiny_convnet(seed=5, input_shape=(12, 12, 1))
    before = target.get_weights()
    with pytest.raises(ModelFileError, match=r"weight conv2d_2/kernel .* non-finite"):
        target.load_weights(bad)
    for a, b in zip(before, target.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_non_finite_optimizer_state_is_refused(tmp_path):
    model = _model()
    model.save(tmp_path / "ok.fcm")

    def poison(arrays, meta):
        arrays["o0003"] = np.full_like(arrays["o0003"], np.inf)
    bad = _rewrite(tmp_path / "ok.fcm", tmp_path / "opt.fcm", poison)
    with pytest.raises(ModelFileError, match=r"opt\.fcm: optimizer state 3 \(entry 'o0003'.*"
                                             r"non-finite"):
        fastconv.load_model(bad)
    fastconv.load_model(bad, compile=False)     # the weights themselves are fine


def test_set_weights_refuses_nan_naming_the_layer_and_changes_nothing():
    model = tiny_convnet(seed=1, input_shape=(12, 12, 1))
    before = model.get_weights()
    weights = [w.copy() for w in before]
    weights[5][3] = np.nan          # dense_1's bias
    with pytest.raises(ValueError, match=r"set_weights: layer 'dense_1' \(Dense\) bias holds "
                                         r"NaN or inf"):
        model.set_weights(weights)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_predict_on_non_finite_input_warns_once_per_model():
    model = tiny_convnet(seed=1, input_shape=(12, 12, 1))
    x = np.zeros((3, 12, 12, 1), np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.predict(x)                 # finite input: no warning
    x[1, 2, 3, 0] = np.inf
    with pytest.warns(RuntimeWarning, match=r"sequential: x holds NaN or inf values"):
        p = model.predict(x)
    assert np.isfinite(p[0]).all() and np.isfinite(p[2]).all()
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*holds NaN or inf")
        model.predict(x)                 # the same model warns once
    other = tiny_convnet(seed=1, input_shape=(12, 12, 1))
    with pytest.warns(RuntimeWarning):
        other.predict_on_batch(np.full((2, 12, 12, 1), np.nan, np.float32))


# ------------------------------------------------------------------ Keras .h5 files

def _keras2(path, layers, dtype=np.float32):
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [n.encode() for n, _ in layers]
        for name, ws in layers:
            g = f.create_group(name)
            wn = [f"{name}/kernel:0", f"{name}/bias:0"][:len(ws)]
            g.attrs["weight_names"] = [w.encode() for w in wn]
            for w, a in zip(wn, ws):
                g[w] = a


def _tiny_weights(seed=0):
    return [w for w in tiny_convnet(seed=seed, input_shape=(12, 12, 1)).get_weights()]


def test_h5_with_nan_weights_is_refused_naming_the_layer(tmp_path):
    w = _tiny_weights(3)
    w[6] = w[6].copy()
    w[6][4, 0] = np.nan
    path = tmp_path / "nan.h5"
    _keras2(path, [("c1", w[0:2]), ("c2", w[2:4]), ("d1", w[4:6]), ("d2", w[6:8])])
    model = tiny_convnet(seed=1, input_shape=(12, 12, 1))
    before = model.get_weights()
    with pytest.raises(KerasWeightsError, match=r"nan\.h5: layer 'd2' weight 0 \(shape "
                                                r"\(16, 1\)\) holds 1 non-finite value"):
        model.load_weights(path)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_h5_holding_strings_says_so(tmp_path):
    w = _tiny_weights()
    path = tmp_path / "text.h5"
    layers = [("c1", [np.array([b"hello"] * 72).reshape(3, 3, 1, 8), w[1]]), ("c2", w[2:4]),
              ("d1", w[4:6]), ("d2", w[6:8])]
    _keras2(path, layers)
    model = tiny_convnet(seed=1, input_shape=(12, 12, 1))
    with pytest.raises(KerasWeightsError, match=r"text\.h5: layer 'c1' weight 0 holds strings "
                                                r"\(dtype \|S5, shape \(3, 3, 1, 8\)\), "
                                                r"expected float32 of shape \(3, 3, 1, 8\)"):
        model.load_weights(path)


def _keras3(path, named, track_order=False):
    with h5py.File(path, "w", track_order=track_order) as f:
        layers = f.create_group("layers", track_order=track_order)
        for name, ws in named:
            g = layers.create_group(f"{name}/vars")
            for k, a in enumerate(ws):
                g[str(k)] = a
        f.create_group("optimizer/vars")


def test_keras3_file_with_custom_layer_names_loads_the_right_weights(tmp_path):
    w = _tiny_weights(4)
    path = tmp_path / "custom.weights.h5"
    # alphabetical and name-suffix order both put these in the wrong order
    _keras3(path, [("my_first_conv", w[0:2]), ("b_conv", w[2:4]), ("zz_dense", w[4:6]),
                   ("a_dense", w[6:8])])
    model = tiny_convnet(seed=1, input_shape=(12, 12, 1))
    model.load_weights(path)
    for a, b in zip(w, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_keras3_file_with_tracked_order_keeps_it_for_layers_of_equal_shapes(tmp_path):
    model2 = fastconv.Sequential([fastconv.layers.Dense(8, input_shape=(8,)),
                                  fastconv.layers.Dense(8), fastconv.layers.Dense(8)],
                                 device="reference", seed=3)
    w = model2.get_weights()
    path = tmp_path / "tracked.weights.h5"
    _keras3(path, [("zeta", w[0:2]), ("alpha", w[2:4]), ("mid", w[4:6])], track_order=True)
    target = fastconv.Sequential([fastconv.layers.Dense(8, input_shape=(8,)),
                                  fastconv.layers.Dense(8), fastconv.layers.Dense(8)],
                                 device="reference", seed=9)
    target.load_weights(path)
    for a, b in zip(w, target.get_weights()):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------ memory bounds (item 8)

def _write_zip(path, entries):
    """A zip from (name, stored bytes, method, crc32, uncompressed size) entries, written
    by hand so that a member can hold a pre-compressed deflate stream."""
    out, central = bytearray(), bytearray()
    for name, raw, method, crc, size in entries:
        offset = len(out)
        nb = name.encode()
        out += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, method, 0, 33, crc, len(raw),
                           size, len(nb), 0) + nb + raw
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, method, 0, 33, crc,
                               len(raw), size, len(nb), 0, 0, 0, 0, 0, offset) + nb
    eocd = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(entries), len(entries),
                       len(central), len(out), 0)
    path.write_bytes(bytes(out + central + eocd))


def _zeros_npy_deflated(nbytes):
    """(deflate stream, crc32, size) of a float32 .npy of `nbytes` data bytes, all zero,
    built from repeated fully flushed blocks (a few MB for a GiB, in a fraction of a second)."""
    chunk = 1 << 24
    count = nbytes // 4
    header = bytearray(b"\x93NUMPY\x01\x00")
    text = ("{'descr': '<f4', 'fortran_order': False, 'shape': (%d,), }" % count).encode()
    text += b" " * (127 - 10 - len(text)) + b"\n"
    header += struct.pack("<H", len(text)) + text
    header = bytes(header)
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = co.compress(header + bytes(chunk - len(header))) + co.flush(zlib.Z_FULL_FLUSH)
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = co.compress(bytes(chunk)) + co.flush(zlib.Z_FULL_FLUSH)
    blocks = (len(header) + nbytes) // chunk
    tail = len(header) + nbytes - blocks * chunk
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    last = co.compress(bytes(tail)) + co.flush(zlib.Z_FINISH)
    crc = zlib.crc32(header + bytes(chunk - len(header)))
    zero = bytes(chunk)
    for _ in range(blocks - 1):
        crc = zlib.crc32(zero, crc)
    crc = zlib.crc32(bytes(tail), crc)
    return first + block * (blocks - 1) + last, crc, len(header) + nbytes


def _stored(name, data):
    return (name, data, 0, zlib.crc32(data), len(data))


_PROBE = r"""
import json, resource, sys
import numpy as np
import fastconv
from fastconv.models import keras_weights
from tests.model_helpers import tiny_convnet
model = tiny_convnet(seed=1, input_shape=(12, 12, 1))
def rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
out = {}
base = rss()
for case, path in json.loads(sys.argv[1]).items():
    try:
        if case.startswith("h5"):
            model.load_weights(path)
        else:
            fastconv.load_model(path)
        out[case] = ["loaded", rss() - base]
    except Exception as exc:
        out[case] = [f"{type(exc).__name__}: {exc}", rss() - base]
print(json.dumps(out))
"""


def test_hostile_files_are_refused_before_memory_is_spent(tmp_path):
    model = _model()
    ok = tmp_path / "ok.fcm"
    model.save(ok)
    import zipfile
    with zipfile.ZipFile(ok) as z:
        members = [_stored(i.filename, z.read(i)) for i in z.infolist()]
    cases = {}
    # a zip bomb: an extra member inflating to 1 GiB from about 1 MB
    raw, crc, size = _zeros_npy_deflated(1 << 30)
    cases["bomb"] = tmp_path / "bomb.fcm"
    _write_zip(cases["bomb"], members + [("pad.npy", raw, 8, crc, size)])
    # the same bomb under a weight's name (known names are size-checked too)
    cases["bomb_w"] = tmp_path / "bomb_w.fcm"
    _write_zip(cases["bomb_w"], members + [("w0999.npy", raw, 8, crc, size)])

    def huge(arrays, meta):        # Dense(16) -> Dense(3,000,000), weights left as they were
        for spec in meta["config"]["layers"]:
            if spec["class_name"] == "Dense" and spec["config"]["units"] == 16:
                spec["config"]["units"] = 3_000_000
    cases["dense3e6"] = _rewrite(ok, tmp_path / "dense3e6.fcm", huge)
    # a Keras 3 .h5 declaring a 1.6 GB dataset that is never written (the file stays small)
    cases["h5huge"] = tmp_path / "huge.weights.h5"
    with h5py.File(cases["h5huge"], "w") as f:
        f.create_group("layers/conv2d/vars").create_dataset(
            "0", shape=(20000, 20000), dtype="f4", chunks=(1000, 1000))
        f["layers/conv2d/vars/1"] = np.zeros(8, np.float32)
    for path in cases.values():
        assert path.stat().st_size < 3 << 20
    root = str(__import__("pathlib").Path(__file__).resolve().parents[1])
    res = subprocess.run([sys.executable, "-c", _PROBE,
                          json.dumps({k: str(v) for k, v in cases.items()})],
                         capture_output=True, text=True, timeout=120, cwd=root)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout.strip().splitlines()[-1])
    expect = {"bomb": r"bomb\.fcm: holds an unknown entry 'pad\.npy'",
              "bomb_w": r"bomb_w\.fcm: its entries would inflate to 1,07\d,\d{3},\d{3} bytes, more than 10x",
              "dense3e6": r"dense3e6\.fcm: its config declares 42,000,957 parameters",
              "h5huge": r"huge\.weights\.h5: its weight datasets declare 1,600,000,032 bytes"}
    import re
    for case, pattern in expect.items():
        message, grew_mb = got[case]
        assert re.search(pattern, message), (case, message)
        assert grew_mb < 80, (case, grew_mb, message)


def test_entry_declaring_more_bytes_than_its_shape_needs_is_refused(tmp_path):
    model = _model()
    ok = tmp_path / "ok.fcm"
    model.save(ok)
    import zipfile
    with zipfile.ZipFile(ok) as z:
        members = [_stored(i.filename, z.read(i)) for i in z.infolist()]
    bad = []
    for name, data, method, crc, size in members:
        if name == "w0001.npy":
            data = data + bytes(64)
            crc, size = zlib.crc32(data), len(data)
        bad.append((name, data, method, crc, size))
    path = tmp_path / "long.fcm"
    _write_zip(path, bad)
    with pytest.raises(ModelFileError, match=r"long\.fcm: entry 'w0001' declares 224 bytes but "
                                             r"its shape \(8,\) needs 160"):
        fastconv.load_model(path)
    big_meta = tmp_path / "meta.fcm"
    text = b"{" + b" " * (5 << 20) + b"}"
    arr = np.frombuffer(text, np.uint8)
    with open(big_meta, "wb") as f:
        np.savez(f, fastconv_meta=arr)
    with pytest.raises(ModelFileError, match=r"'fastconv_meta' entry declares 5,24\d,\d{3} bytes, more than the 4,194,304 bytes"):
        fastconv.load_model(big_meta)
