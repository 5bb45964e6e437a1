"""Writes depthwise.npz: Keras 3's DepthwiseConv2D outputs and gradients (JAX backend, CPU),
the oracle of tests/test_depthwise.py. Needs keras and jax (not fastconv's dependencies):

    KERAS_BACKEND=jax python tests/keras_vectors/make_depthwise.py

Per case k: x{k}, w{k} (KH, KW, C, M), b{k}, stride{k}, padding{k}; y{k} the layer's
output (weights set with set_weights([w, b])); dy{k} a random output gradient and
dx{k}, dw{k}, db{k} the vector-Jacobian product of keras.ops.depthwise_conv + b by JAX.
"""
import os

import jax
import keras
import numpy as np

CASES = [((2, 9, 8, 3), (3, 3), 2, (2, 2), "same"),
         ((1, 8, 11, 7), (3, 2), 3, (2, 1), "valid"),
         ((2, 7, 6, 5), (5, 5), 1, (1, 1), "same"),
         ((1, 10, 10, 4), (2, 2), 2, (2, 2), "same")]


def main():
    assert keras.backend.backend() == "jax", "run with KERAS_BACKEND=jax"
    rng = np.random.default_rng(0)
    out = {}
    for k, (shape, kernel, m, stride, padding) in enumerate(CASES):
        x = rng.standard_normal(shape).astype(np.float32)
        w = rng.standard_normal(kernel + (shape[3], m)).astype(np.float32)
        b = rng.standard_normal(shape[3] * m).astype(np.float32)
        layer = keras.layers.DepthwiseConv2D(kernel, strides=stride, padding=padding,
                                             depth_multiplier=m)
        layer.build(shape)
        layer.set_weights([w, b])
        y = np.asarray(layer(x))

        def f(x_, w_, b_):
            return keras.ops.depthwise_conv(x_, w_, strides=stride, padding=padding) + b_
        y2, vjp = jax.vjp(f, x, w, b)
        assert np.allclose(y, y2, atol=1e-5)
        dy = rng.standard_normal(y.shape).astype(np.float32)
        dx, dw, db = (np.asarray(g) for g in vjp(dy))
        out.update({f"x{k}": x, f"w{k}": w, f"b{k}": b, f"stride{k}": np.array(stride),
                    f"padding{k}": np.array(padding), f"y{k}": y, f"dy{k}": dy,
                    f"dx{k}": dx, f"dw{k}": dw, f"db{k}": db})
    out["keras_version"] = np.array(keras.__version__)
    np.savez_compressed(os.path.join(os.path.dirname(os.path.abspath(__file__)), "depthwise.npz"),
                        **out)


if __name__ == "__main__":
    main()
