"""Write separable_model.npz: Keras 3's own outputs for tests/test_keras_oracle_separable.py.

Run with a Keras 3 + JAX environment (not a fastconv dependency), from anywhere:

    KERAS_BACKEND=jax JAX_PLATFORMS=cpu /work/kvenv/bin/python tests/keras_oracle/make_separable.py

The model: Input (11, 11, 3) -> SeparableConv2D(6, 3, strides=2, padding="same",
depth_multiplier=2) -> BatchNormalization -> ReLU -> DepthwiseConv2D(3, strides=2,
padding="same", depth_multiplier=2, activation="relu") -> BatchNormalization(momentum=0.9)
-> GlobalAveragePooling2D -> Dense(1, sigmoid), with random weights (moving statistics too,
so inference differs from training). Saved, as make_vectors.py: the input x, labels y, every
weight in Keras's order (w0, w1, ...), Keras's predict(x) (inference mode), and after one
SGD(0.1) train_on_batch(x, y) (BatchNormalization in training mode): the loss and every
weight again (a0, a1, ...). A few KB.
"""
import os

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "jax")
import keras  # noqa: E402
from keras import layers  # noqa: E402
from make_vectors import keras_step, random_weights, save  # noqa: E402  (this folder)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "separable_model.npz")


def build():
    return keras.Sequential([
        keras.Input((11, 11, 3)),
        layers.SeparableConv2D(6, 3, strides=2, padding="same", depth_multiplier=2),
        layers.BatchNormalization(),
        layers.Activation("relu"),
        layers.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2,
                               activation="relu"),
        layers.BatchNormalization(momentum=0.9),
        layers.GlobalAveragePooling2D(),
        layers.Dense(1, activation="sigmoid"),
    ])


def main():
    rng = np.random.default_rng(151)
    model = build()
    weights = random_weights(model, rng)
    x = rng.standard_normal((5, 11, 11, 3)).astype(np.float32)
    y = np.array([0, 1, 1, 0, 1], np.float32)
    pred, loss, after = keras_step(model, x, y, 0.1)
    save(OUT, x, y, pred, loss, weights, after)


if __name__ == "__main__":
    main()
