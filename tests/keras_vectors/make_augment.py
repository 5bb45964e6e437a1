"""Writes augment.npz: Keras 3's RandomRotation, RandomZoom and RandomTranslation at
degenerate factor ranges (lower == upper, so the draw is fixed and the output does not
depend on Keras's random stream), the geometry oracle of tests/test_augmentation.py.
Needs keras and jax (not fastconv's dependencies):

    KERAS_BACKEND=jax JAX_PLATFORMS=cpu python tests/keras_vectors/make_augment.py

Per case k: x{k} (1, H, W, C), layer{k} (the class name), config{k} (a JSON string of
the constructor's arguments), y{k} the layer's output with training=True.
"""
import json
import os

import keras
import numpy as np

CASES = [("RandomRotation", dict(factor=(0.25, 0.25))),
         ("RandomRotation", dict(factor=(0.1, 0.1))),
         ("RandomRotation", dict(factor=(-0.07, -0.07), fill_mode="constant", fill_value=0.5)),
         ("RandomRotation", dict(factor=(0.3, 0.3), fill_mode="wrap")),
         ("RandomZoom", dict(height_factor=(0.3, 0.3))),
         ("RandomZoom", dict(height_factor=(-0.4, -0.4), width_factor=(0.2, 0.2),
                             fill_mode="nearest")),
         ("RandomTranslation", dict(height_factor=(0.2, 0.2), width_factor=(-0.3, -0.3))),
         ("RandomTranslation", dict(height_factor=(-0.15, -0.15), width_factor=(0.1, 0.1),
                                    fill_mode="constant"))]


def main():
    assert keras.backend.backend() == "jax", "run with KERAS_BACKEND=jax"
    rng = np.random.default_rng(0)
    out = {}
    for k, (name, kwargs) in enumerate(CASES):
        x = rng.standard_normal((1, 7, 9, 2)).astype(np.float32)
        layer = getattr(keras.layers, name)(**kwargs)
        out.update({f"x{k}": x, f"layer{k}": np.array(name),
                    f"config{k}": np.array(json.dumps(kwargs)),
                    f"y{k}": np.asarray(layer(x, training=True))})
    out["keras_version"] = np.array(keras.__version__)
    np.savez_compressed(os.path.join(os.path.dirname(os.path.abspath(__file__)), "augment.npz"),
                        **out)


if __name__ == "__main__":
    main()
