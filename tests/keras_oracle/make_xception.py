"""Write xception_small.npz: Keras 3's outputs for a width-reduced keras.io Xception
(tests/test_keras_oracle_separable.py checks fastconv.models.keras_io_xception against it).

    KERAS_BACKEND=jax JAX_PLATFORMS=cpu /work/kvenv/bin/python tests/keras_oracle/make_xception.py

make_model() is the keras.io "Image classification from scratch" network, with every
filter count scaled by WIDTH (round(f * width), at least 1, as keras_io_xception) on a
(32, 32, 3) input, Dropout(0) so that one training step is deterministic, and
Dense(1, sigmoid) (the example's Dense(1) logits + from_logits cross-entropy, in the form
fastconv trains). Random weights (moving statistics too). Saved: x (pixels 0..255, uint8), y,
the weights in Keras's order raveled into one array w, predict(x), and after one SGD(0.05)
train_on_batch(x, y): the loss and the weights (a, as w). About 45 KB.
"""
import os

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "jax")
import keras  # noqa: E402
from keras import layers  # noqa: E402
from make_vectors import keras_step  # noqa: E402  (this script's folder)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "xception_small.npz")
WIDTH = 1 / 32
INPUT_SHAPE = (32, 32, 3)


def make_model(input_shape=INPUT_SHAPE, width=WIDTH, dropout=0.0):
    def f(filters):
        return max(1, int(round(filters * width)))
    inputs = keras.Input(shape=input_shape)
    x = layers.Rescaling(1.0 / 255)(inputs)
    x = layers.Conv2D(f(128), 3, strides=2, padding="same")(x)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    previous_block_activation = x
    for size in [256, 512, 728]:
        x = layers.Activation("relu")(x)
        x = layers.SeparableConv2D(f(size), 3, padding="same")(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
        x = layers.SeparableConv2D(f(size), 3, padding="same")(x)
        x = layers.BatchNormalization()(x)
        x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
        residual = layers.Conv2D(f(size), 1, strides=2, padding="same")(
            previous_block_activation)
        x = layers.add([x, residual])
        previous_block_activation = x
    x = layers.SeparableConv2D(f(1024), 3, padding="same")(x)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(1, activation="sigmoid")(x)
    return keras.Model(inputs, outputs)


def main():
    rng = np.random.default_rng(1515)
    model = make_model()
    weights = []
    for w in model.get_weights():
        if w.ndim == 1 and np.all(w == 1.0):          # gamma, moving_variance: around 1
            weights.append((1.0 + 0.3 * rng.random(w.shape)).astype(np.float32))
        elif w.ndim == 1:
            weights.append((0.2 * rng.standard_normal(w.shape)).astype(np.float32))
        else:                                         # kernels: glorot-sized, random
            weights.append(np.asarray(keras.initializers.GlorotUniform(
                seed=int(rng.integers(1 << 30)))(w.shape), np.float32))
    model.set_weights(weights)
    x8 = rng.integers(0, 256, (4, *INPUT_SHAPE)).astype(np.uint8)       # stored as uint8
    x = x8.astype(np.float32)
    y = np.array([0, 1, 1, 0], np.float32)
    pred, loss, after = keras_step(model, x, y, 0.05)
    arrays = {"x": x8, "y": y, "pred": pred, "loss": np.float32(loss)}
    # every weight array raveled and concatenated in Keras's order (one zip entry each:
    # 126 small entries cost more than the data); the test splits them by the model's shapes
    arrays["w"] = np.concatenate([w.ravel() for w in weights])
    arrays["a"] = np.concatenate([np.asarray(w, np.float32).ravel() for w in after])
    np.savez_compressed(OUT, keras_version=np.array(keras.__version__),
                        layer_names=np.array([l.name for l in model.layers if l.weights]),
                        **arrays)
    print(f"wrote {OUT}: keras {keras.__version__}, loss {loss:.6f}, pred {pred.ravel()}, "
          f"{len(weights)} weights, {model.count_params()} params")


if __name__ == "__main__":
    main()
