"""Writes avgpool.npz: Keras 3's AveragePooling2D outputs and gradients (JAX backend, CPU),
the oracle of tests/test_avgpool.py. Needs keras and jax (not fastconv's dependencies):

    KERAS_BACKEND=jax JAX_PLATFORMS=cpu python tests/keras_vectors/make_avgpool.py

Per case k: x{k}, pool{k}, stride{k}, padding{k}; y{k} the layer's output; dy{k} a random
output gradient and dx{k} the vector-Jacobian product of the layer by JAX. 'same' cases
have windows that overhang the edge, where Keras divides by the real pixels only.
"""
import os

import jax
import keras
import numpy as np

CASES = [((2, 7, 9, 3), (2, 2), (1, 1), "valid"),
         ((1, 9, 11, 5), (3, 3), (2, 2), "valid"),
         ((2, 7, 8, 4), (2, 3), (2, 3), "valid"),
         ((2, 7, 9, 3), (3, 3), (1, 1), "same"),
         ((1, 9, 11, 5), (3, 3), (2, 2), "same"),
         ((2, 7, 8, 4), (3, 2), (2, 3), "same"),
         ((1, 5, 5, 2), (2, 2), None, "same")]


def main():
    assert keras.backend.backend() == "jax", "run with KERAS_BACKEND=jax"
    rng = np.random.default_rng(0)
    out = {}
    for k, (shape, pool, stride, padding) in enumerate(CASES):
        x = rng.standard_normal(shape).astype(np.float32)
        layer = keras.layers.AveragePooling2D(pool, strides=stride, padding=padding)
        y, vjp = jax.vjp(lambda x_: layer(x_), x)
        dy = rng.standard_normal(y.shape).astype(np.float32)
        (dx,) = vjp(dy)
        out.update({f"x{k}": x, f"pool{k}": np.array(pool),
                    f"stride{k}": np.array(stride if stride is not None else pool),
                    f"padding{k}": np.array(padding), f"y{k}": np.asarray(y), f"dy{k}": dy,
                    f"dx{k}": np.asarray(dx)})
    out["keras_version"] = np.array(keras.__version__)
    np.savez_compressed(os.path.join(os.path.dirname(os.path.abspath(__file__)), "avgpool.npz"),
                        **out)


if __name__ == "__main__":
    main()
