"""Write bn_model.npz: Keras 3's own outputs for tests/test_keras_oracle.py.

Run with a Keras 3 + JAX environment (not a fastconv dependency), from anywhere:

    python -m venv /tmp/kvenv && /tmp/kvenv/bin/pip install keras jax
    KERAS_BACKEND=jax JAX_PLATFORMS=cpu /tmp/kvenv/bin/python tests/keras_oracle/make_vectors.py

The model: Input (9, 9, 3) -> Rescaling(1/127.5, offset=-1) -> Conv2D(4, 3, same) ->
BatchNormalization -> ReLU -> GlobalAveragePooling2D -> Dense(5) ->
BatchNormalization(momentum=0.9) -> ReLU -> Dense(1, sigmoid), with random weights
(moving statistics too, so inference differs from training). Saved: the input x
(pixels 0..255), labels y, every weight in Keras's order (w0, w1, ...), Keras's
predict(x) (inference mode), and after one SGD(0.1) train_on_batch(x, y) (BatchNormalization in
training mode): the loss and every weight again (a0, a1, ...). About 10 KB.
"""
import os

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "jax")
import keras  # noqa: E402
from keras import layers  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bn_model.npz")


def build():
    return keras.Sequential([
        keras.Input((9, 9, 3)),
        layers.Rescaling(1 / 127.5, offset=-1.0),
        layers.Conv2D(4, 3, padding="same"),
        layers.BatchNormalization(),
        layers.Activation("relu"),
        layers.GlobalAveragePooling2D(),
        layers.Dense(5),
        layers.BatchNormalization(momentum=0.9),
        layers.Activation("relu"),
        layers.Dense(1, activation="sigmoid"),
    ])


def random_weights(model, rng):
    """Random weights for every array of the model, set and returned: gamma and
    moving_variance (initially ones) around 1, the rest N(0, 0.4^2)."""
    weights = []
    for w in model.get_weights():
        if w.ndim == 1 and np.all(w == 1.0):          # gamma, moving_variance: around 1
            weights.append((1.0 + 0.3 * rng.random(w.shape)).astype(np.float32))
        else:
            weights.append((0.4 * rng.standard_normal(w.shape)).astype(np.float32))
    model.set_weights(weights)
    return weights


def keras_step(model, x, y, learning_rate):
    """(predict(x), the loss of one SGD train_on_batch(x, y), the weights after it)."""
    pred = np.asarray(model.predict(x, verbose=0))
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=learning_rate),
                  loss="binary_crossentropy")
    loss = float(model.train_on_batch(x, y))
    return pred, loss, model.get_weights()


def main():
    rng = np.random.default_rng(15)
    model = build()
    weights = random_weights(model, rng)
    x = rng.integers(0, 256, (6, 9, 9, 3)).astype(np.float32)
    y = np.array([0, 1, 1, 0, 1, 0], np.float32)
    pred, loss, after = keras_step(model, x, y, 0.1)
    save(OUT, x, y, pred, loss, weights, after)


def save(path, x, y, pred, loss, weights, after):
    """The vectors file: x, y, pred, loss, the weights before (w0, ...) and after the
    step (a0, ...), and Keras's version."""
    arrays = {"x": x, "y": y, "pred": pred, "loss": np.float32(loss)}
    arrays.update({f"w{k}": w for k, w in enumerate(weights)})
    arrays.update({f"a{k}": np.asarray(w) for k, w in enumerate(after)})
    np.savez_compressed(path, keras_version=np.array(keras.__version__), **arrays)
    print(f"wrote {path}: keras {keras.__version__}, loss {loss:.6f}, "
          f"{len(weights)} weights {[tuple(w.shape) for w in weights]}")


if __name__ == "__main__":
    main()
