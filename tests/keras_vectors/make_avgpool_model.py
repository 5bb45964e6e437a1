"""Writes avgpool_model.npz: Keras 3's own outputs for the model oracle in
tests/test_model_avgpool.py. Needs keras and jax (not fastconv's dependencies):

    KERAS_BACKEND=jax JAX_PLATFORMS=cpu python tests/keras_vectors/make_avgpool_model.py

The model: Input (9, 9, 2) -> RandomFlip -> RandomRotation(0.2) -> Conv2D(3, 3, same,
relu) -> AveragePooling2D(3, strides=2, same) -> Conv2D(2, 2) -> AveragePooling2D((2, 3),
strides=(1, 2)) -> Flatten -> Dense(1, sigmoid), random weights. Saved: x, y, the weights
(w0, w1, ...), Keras's predict(x) (inference: the augmentation layers pass x through),
and after one SGD(0.1) train_on_batch(x, y) of the same model without the augmentation
layers (in training they draw from Keras's own random stream): the loss and the weights
(a0, a1, ...).
"""
import os

import keras
import numpy as np
from keras import layers

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "avgpool_model.npz")


def build(augment):
    return keras.Sequential([keras.Input((9, 9, 2))]
                            + ([layers.RandomFlip(), layers.RandomRotation(0.2)] if augment
                               else [])
                            + [layers.Conv2D(3, 3, padding="same", activation="relu"),
                               layers.AveragePooling2D(3, strides=2, padding="same"),
                               layers.Conv2D(2, 2),
                               layers.AveragePooling2D((2, 3), strides=(1, 2)),
                               layers.Flatten(),
                               layers.Dense(1, activation="sigmoid")])


def main():
    assert keras.backend.backend() == "jax", "run with KERAS_BACKEND=jax"
    rng = np.random.default_rng(21)
    model = build(True)
    weights = [(0.5 * rng.standard_normal(w.shape)).astype(np.float32)
               for w in model.get_weights()]
    model.set_weights(weights)
    x = rng.random((5, 9, 9, 2)).astype(np.float32)
    y = np.array([0, 1, 1, 0, 1], np.float32)
    pred = np.asarray(model.predict(x, verbose=0))
    plain = build(False)
    plain.set_weights(weights)
    plain.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1),
                  loss="binary_crossentropy")
    loss = float(plain.train_on_batch(x, y))
    arrays = {"x": x, "y": y, "pred": pred, "loss": np.float32(loss)}
    arrays.update({f"w{k}": w for k, w in enumerate(weights)})
    arrays.update({f"a{k}": np.asarray(w) for k, w in enumerate(plain.get_weights())})
    np.savez_compressed(OUT, keras_version=np.array(keras.__version__), **arrays)


if __name__ == "__main__":
    main()
