"""The seed's own Keras weights, read from HDF5 and run on the reference engine."""
import os

import numpy as np
import pytest

from fastconv.models.keras_weights import KerasWeightsError, read_keras_weights
from fastconv.kernels import reference as R

SEED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "seed")
H5 = os.path.join(SEED, "first_try.h5")
h5py = pytest.importorskip("h5py")
needs_seed = pytest.mark.skipif(not os.path.exists(H5), reason=f"{H5} not found")


@needs_seed
def test_first_try_h5_lists_the_five_weight_layers_in_order():
    layers = read_keras_weights(H5)
    assert [layer.name for layer in layers] == [
        "conv2d_33", "conv2d_34", "conv2d_35", "dense_2", "dense_3"]
    assert [w.shape for w in layers[0].weights] == [(3, 3, 3, 32), (32,)]
    assert [w.shape for w in layers[3].weights] == [(6400, 64), (64,)]
    assert sum(w.size for layer in layers for w in layer.weights) == 438369


@needs_seed
def test_reference_engine_reproduces_keras_on_the_seed_weights():
    """The reference forward pass, op by op, against Keras's own outputs (atol 1e-5)."""
    (k1, b1), (k2, b2), (k3, b3), (k4, b4), (k5, b5) = [
        layer.weights for layer in read_keras_weights(H5)]
    data = np.load(os.path.join(SEED, "expected.npz"))
    h = data["x"]
    for (k, b), pool in (((k1, b1), 3), ((k2, b2), 2), ((k3, b3), 2)):
        h = R.maxpool2d_forward(R.relu_forward(R.conv2d_forward(h, k, b)), pool)[0]
    flat = h.reshape(h.shape[0], -1)
    np.testing.assert_allclose(flat, data["flatten_keras"], atol=1e-5, rtol=0)
    p = R.sigmoid_forward(R.dense_forward(R.relu_forward(R.dense_forward(flat, k4, b4)), k5, b5))
    np.testing.assert_allclose(p, data["p_keras"], atol=1e-5, rtol=0)


def test_keras3_layout_is_ordered_by_kind_and_suffix(tmp_path):
    path = tmp_path / "m.weights.h5"
    rng = np.random.default_rng(0)
    shapes = {"conv2d": [(3, 3, 3, 4), (4,)], "conv2d_1": [(3, 3, 4, 4), (4,)],
              "conv2d_10": [(3, 3, 4, 2), (2,)], "dense": [(8, 3), (3,)], "dense_1": [(3, 1), (1,)]}
    with h5py.File(path, "w") as f:
        for name, ss in shapes.items():
            g = f.create_group(f"layers/{name}/vars")
            for k, s in enumerate(ss):
                g[str(k)] = rng.standard_normal(s).astype(np.float32)
        f.create_group("layers/max_pooling2d/vars")
        f.create_group("optimizer/vars")
    layers = read_keras_weights(path)
    assert [layer.name for layer in layers] == ["conv2d", "conv2d_1", "conv2d_10", "dense",
                                                "dense_1"]


def test_bad_files_give_clear_errors(tmp_path):
    text = tmp_path / "notes.h5"
    text.write_text("hello")
    with pytest.raises(KerasWeightsError, match="notes.h5 is not an HDF5 file"):
        read_keras_weights(text)
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        read_keras_weights(tmp_path / "missing.h5")
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["data"] = np.zeros(3)
    with pytest.raises(KerasWeightsError, match="other.h5 is an HDF5 file but not a Keras"):
        read_keras_weights(other)


@needs_seed
def test_truncated_file_is_named(tmp_path):
    cut = tmp_path / "cut.h5"
    cut.write_bytes(open(H5, "rb").read()[:300_000])
    with pytest.raises(KerasWeightsError, match="cut.h5.*truncated or damaged"):
        for layer in read_keras_weights(cut):
            pass


def test_missing_h5py_says_what_to_install(tmp_path, monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_h5py(name, *args, **kwargs):
        if name == "h5py":
            raise ImportError("No module named 'h5py'")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_h5py)
    f = tmp_path / "w.h5"
    f.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    with pytest.raises(ImportError, match=r"pip install 'fastconv\[keras\]'"):
        read_keras_weights(f)


def _backends():
    from .backends import available_backends
    return [b for b in available_backends()[0] if b in ("reference", "cpu")]


@needs_seed
@pytest.mark.parametrize("device", _backends())
def test_small_convnet_with_keras_weights_predicts_like_keras(device):
    import fastconv
    from fastconv import layers as L
    data = np.load(os.path.join(SEED, "expected.npz"))
    model = fastconv.models.small_convnet(weights=H5, device=device)
    p = model.predict(data["x"], batch_size=4, verbose=0)
    np.testing.assert_allclose(p, data["p_keras"], atol=1e-5, rtol=0)
    # the Flatten output: the conv stack alone, with the same weights
    stack = fastconv.Sequential(
        [L.deserialize(L.serialize(layer)) for layer in model.layers[:10]],
        device=device)
    stack.build((None, 150, 150, 3))
    stack.set_weights(model.get_weights()[:6])
    flat = stack.predict(data["x"], batch_size=6, verbose=0)
    np.testing.assert_allclose(flat, data["flatten_keras"], atol=1e-5, rtol=0)


def _write_keras2(path, shapes, names):
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [n.encode() for n in names]
        for name, ss in zip(names, shapes):
            g = f.create_group(name)
            wn = [f"{name}/kernel:0".encode(), f"{name}/bias:0".encode()] if ss else []
            g.attrs["weight_names"] = wn
            for w, s in zip(wn, ss):
                g[w.decode()] = np.zeros(s, np.float32)


def test_another_architecture_names_the_first_layer_that_differs(tmp_path):
    import fastconv
    model = fastconv.models.small_convnet(device="reference")
    path = tmp_path / "other.h5"
    shapes = [[(3, 3, 3, 32), (32,)], [(3, 3, 32, 16), (16,)], [(3, 3, 16, 64), (64,)],
              [(6400, 64), (64,)], [(64, 1), (1,)]]
    _write_keras2(path, shapes, ["c1", "c2", "c3", "d1", "d2"])
    before = model.get_weights()
    with pytest.raises(KerasWeightsError, match=r"file layer 'c2' \(conv2d, weights "
                       r"\[\(3, 3, 32, 16\), \(16,\)\]\) does not fit model layer 'conv2d_2'"):
        model.load_weights(path)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)  # nothing was half-loaded
    shapes[1] = [(3, 3, 32, 32), (32,)]
    shapes[2] = [(3, 3, 32, 64), (64,)]
    _write_keras2(path, shapes[:4], ["c1", "c2", "c3", "d1"])
    with pytest.raises(KerasWeightsError, match="nothing in the file for layer 'dense_2'"):
        model.load_weights(path)
