"""Keras 3 itself as the oracle for SeparableConv2D and DepthwiseConv2D (strides 2, same
padding, depth_multiplier 2) with BatchNormalization, GlobalAveragePooling2D and Dense
(tests/keras_oracle/separable_model.npz, written by make_separable.py), and for the
keras.io Xception at width 1/32 on 32x32 inputs (xception_small.npz, make_xception.py):
the same weights give Keras's predictions in inference mode (1e-4), and one SGD
train_on_batch with BatchNormalization in training mode gives Keras's loss and moves
every weight as Keras did (moving statistics included). Keras is no dependency of
fastconv: the vectors are committed."""
import os

import numpy as np
import pytest

from fastconv import Sequential
from fastconv import layers as L
from fastconv import optimizers as O
from fastconv.models import keras_io_xception

from .test_keras_oracle import moved_as_keras

HERE = os.path.join(os.path.dirname(__file__), "keras_oracle")


def build_separable(device):
    """make_separable.build(), layer for layer, in fastconv."""
    return Sequential([
        L.Input((11, 11, 3)),
        L.SeparableConv2D(6, 3, strides=2, padding="same", depth_multiplier=2),
        L.BatchNormalization(),
        L.Activation("relu"),
        L.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2, activation="relu"),
        L.BatchNormalization(momentum=0.9),
        L.GlobalAveragePooling2D(),
        L.Dense(1, activation="sigmoid"),
    ], device=device, seed=0)


def build_xception(device):
    """make_xception.make_model(): keras_io_xception at width 1/32, no dropout."""
    return keras_io_xception((32, 32, 3), width=1 / 32, dropout=0.0, device=device, seed=0,
                             compile=False)


def _load(name):
    with np.load(os.path.join(HERE, name)) as f:
        run = {k: f[k] for k in f.files}
    run["x"] = run["x"].astype(np.float32)
    return run


def _split(flat, shapes):
    out, k = [], 0
    for s in shapes:
        size = int(np.prod(s))
        out.append(flat[k:k + size].reshape(s))
        k += size
    assert k == flat.size
    return out


def _weights(run, prefix, model):
    if prefix in run:                           # one raveled array (make_xception.py)
        return _split(run[prefix], [tuple(w.shape) for w in model.get_weights()])
    count = sum(1 for n in run if n[0] == prefix and n[1:].isdigit())
    return [run[f"{prefix}{k}"] for k in range(count)]


CASES = [("separable_model.npz", build_separable, 10),
         ("xception_small.npz", build_xception, 40)]


@pytest.mark.parametrize("vectors,build,_", CASES, ids=["separable", "xception"])
@pytest.mark.parametrize("device", ["reference", "cpu"])
def test_same_weights_give_keras_predictions(vectors, build, _, device):
    run = _load(vectors)
    model = build(device)
    before = _weights(run, "w", model)
    if "layer_names" in run:                    # the same layers, in Keras's weight order
        mine = [layer.__class__.__name__ for layer in model.layers if layer.weight_names]
        keras = [str(n).rsplit("_", 1)[0] if str(n)[-1].isdigit() else str(n)
                 for n in run["layer_names"]]
        want = {"conv2d": "Conv2D", "separable_conv2d": "SeparableConv2D", "dense": "Dense",
                "batch_normalization": "BatchNormalization"}
        assert mine == [want[k] for k in keras]
    model.set_weights(before)
    np.testing.assert_allclose(model.predict(run["x"]), run["pred"], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("vectors,build,min_moved", CASES, ids=["separable", "xception"])
@pytest.mark.parametrize("device", ["reference", "cpu"])
def test_one_training_step_moves_the_weights_as_keras(vectors, build, min_moved, device):
    """Loss to 1e-5; each weight's change (after - before) to 1e-4 of the largest change of
    that array plus 1e-6 (float32 on both sides)."""
    run = _load(vectors)
    model = build(device)
    before = _weights(run, "w", model)
    model.set_weights(before)
    model.compile(O.SGD(learning_rate=0.05 if "xception" in vectors else 0.1),
                  "binary_crossentropy")
    loss = model.train_on_batch(run["x"], run["y"])
    assert abs(loss - float(run["loss"])) < 1e-5
    moved = moved_as_keras(model, before, _weights(run, "a", model))
    assert len(moved) >= min_moved, moved


@pytest.mark.parametrize("device", ["reference", "cpu"])
def test_a_keras3_weights_file_of_the_xception_loads_and_predicts_as_keras(tmp_path, device):
    """The oracle's weights written in Keras 3's .weights.h5 layout (layers/<Keras layer
    name>/vars/0, 1, ...; HDF5 lists the groups alphabetically, with no creation order,
    as Keras 3.15 writes them; checked by hand against a file Keras wrote): load_weights
    pairs each layer by kind, shapes and name suffix (SeparableConv2D, Conv2D and
    BatchNormalization layers of equal shapes among them) and predicts as Keras."""
    h5py = pytest.importorskip("h5py")
    run = _load("xception_small.npz")
    model = build_xception(device)
    shapes = [layer.weight_shapes() for layer in model.layers if layer.weight_names]
    flat = _split(run["w"], [s for ss in shapes for s in ss])
    path = tmp_path / "xception.weights.h5"
    with h5py.File(path, "w") as f:
        k = 0
        for name, ss in zip(run["layer_names"], shapes):
            group = f.create_group(f"layers/{name}/vars")
            for j in range(len(ss)):
                group[str(j)] = flat[k]
                k += 1
        f.create_group("layers/activation/vars")          # weightless layers: empty
        f.create_group("vars")
    model.load_weights(path)
    np.testing.assert_allclose(model.predict(run["x"]), run["pred"], rtol=1e-4, atol=1e-4)
    for mine, want in zip(model.get_weights(), flat):
        np.testing.assert_array_equal(mine, want)
