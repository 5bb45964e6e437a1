"""Keras 3 itself as the oracle for Rescaling, Conv2D, BatchNormalization,
GlobalAveragePooling2D and Dense: tests/keras_oracle/bn_model.npz holds Keras's
predictions and one SGD step's weights for the model of make_vectors.py (which
wrote it, with Keras 3 on JAX; Keras is no dependency of fastconv, so the vectors are
committed). Same weights must give Keras's predictions in inference mode (moving
statistics), and one train_on_batch with BatchNormalization in training mode must
give Keras's loss and move every weight as Keras did, moving statistics included."""
import os

import numpy as np
import pytest

from fastconv import Sequential
from fastconv import layers as L
from fastconv import optimizers as O

from . import simulator

VECTORS = os.path.join(os.path.dirname(__file__), "keras_oracle", "bn_model.npz")


def build(device):
    """make_vectors.build(), layer for layer, in fastconv."""
    return Sequential([
        L.Input((9, 9, 3)),
        L.Rescaling(1 / 127.5, offset=-1.0),
        L.Conv2D(4, 3, padding="same"),
        L.BatchNormalization(),
        L.Activation("relu"),
        L.GlobalAveragePooling2D(),
        L.Dense(5),
        L.BatchNormalization(momentum=0.9),
        L.Activation("relu"),
        L.Dense(1, activation="sigmoid"),
    ], device=device, seed=0)


@pytest.fixture(scope="module")
def keras_run():
    with np.load(VECTORS) as f:
        return {k: f[k] for k in f.files}


def _weights(run, prefix):
    return [run[f"{prefix}{k}"] for k in range(sum(1 for n in run if n[0] == prefix
                                                    and n[1:].isdigit()))]


@pytest.mark.parametrize("device", ["reference", "cpu"])
def test_same_weights_give_keras_predictions(keras_run, device):
    model = build(device)
    model.set_weights(_weights(keras_run, "w"))
    np.testing.assert_allclose(model.predict(keras_run["x"]), keras_run["pred"], rtol=1e-4,
                               atol=1e-4)


@pytest.mark.parametrize("device", ["reference", "cpu"])
def test_one_training_step_moves_the_weights_as_keras(keras_run, device):
    """Loss to 1e-5; each weight's change (after - before) to 1e-4 of the largest
    change of that array plus 1e-6: float32 on both sides, Keras's loss clips
    probabilities where fastconv's works on logits (equal here: no output is near 0 or 1)."""
    before = _weights(keras_run, "w")
    model = build(device)
    model.set_weights(before)
    model.compile(O.SGD(learning_rate=0.1), "binary_crossentropy")
    loss = model.train_on_batch(keras_run["x"], keras_run["y"])
    assert abs(loss - float(keras_run["loss"])) < 1e-5
    moved = moved_as_keras(model, before, _weights(keras_run, "a"))
    # a bias right before a BatchNormalization gets no gradient (the batch mean removes
    # it): Keras leaves the dense one exactly in place; every other array moves
    assert len(moved) >= 12, moved


def moved_as_keras(model, before, after):
    """Check that each of the model's weights moved from `before` as Keras's did to
    `after`: the change to 1e-4 of the largest change of that array plus 1e-6. Returns
    the names (layer.weight) of the arrays Keras moved by more than 1e-4."""
    names = [f"{layer.name}.{w}" for layer in model.layers for w in layer.weight_names]
    moved = []
    for name, b, mine, keras in zip(names, before, model.get_weights(), after):
        want = keras.astype(np.float64) - b
        got = mine.astype(np.float64) - b
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * np.abs(want).max() + 1e-6,
                                   err_msg=name)
        if np.abs(want).max() > 1e-4:
            moved.append(name)
    return moved


CUDA_SCRIPT = simulator.CUDA_SKIP + """
from fastconv import optimizers as O
from tests.test_keras_oracle import VECTORS, _weights, build
with np.load(VECTORS) as f:
    run = {k: f[k] for k in f.files}
model = build("cuda")
model.set_weights(_weights(run, "w"))
pred = model.predict(run["x"])
model.compile(O.SGD(learning_rate=0.1), "binary_crossentropy")
loss = model.train_on_batch(run["x"], run["y"])
print("RESULT:" + json.dumps({"pred": pred.tolist(), "loss": loss,
                              "after": [w.tolist() for w in model.get_weights()]}))
"""


def test_cuda_under_the_simulator_matches_keras(keras_run):
    """The same two checks on device='cuda' (the cuda batchnorm, rescaling and global
    pooling kernels at their real launch sizes) under the simulator, same tolerances."""
    pytest.importorskip("numba.cuda", reason="numba-cuda is not installed")
    got = simulator.run(CUDA_SCRIPT, timeout=600)
    np.testing.assert_allclose(np.array(got["pred"]), keras_run["pred"], rtol=1e-4, atol=1e-4)
    assert abs(got["loss"] - float(keras_run["loss"])) < 1e-5
    before = _weights(keras_run, "w")
    for k, (b, mine, keras) in enumerate(zip(before, got["after"], _weights(keras_run, "a"))):
        want = keras.astype(np.float64) - b
        np.testing.assert_allclose(np.array(mine, np.float64) - b, want, rtol=0,
                                   atol=1e-4 * np.abs(want).max() + 1e-6, err_msg=f"weight {k}")
