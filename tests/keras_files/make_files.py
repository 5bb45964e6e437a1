"""Write the Keras 3 .keras files and expected outputs of tests/test_keras_file.py.

Run with a Keras 3 + JAX environment (not a fastconv dependency), from anywhere:

    python -m venv /tmp/kvenv && /tmp/kvenv/bin/pip install keras jax
    KERAS_BACKEND=jax JAX_PLATFORMS=cpu /tmp/kvenv/bin/python tests/keras_files/make_files.py

seq.keras: a small seed-like Sequential (Conv2D relu, MaxPooling2D, Conv2D 'same' with
strides 2, Flatten, Dense relu, Dropout(0) so a training step is deterministic, Dense
sigmoid), compiled with RMSprop(1e-3) and accuracy, saved after one train_on_batch so
the file holds optimizer state. fun.keras: a Functional model (Rescaling, strided
'same' Conv2D, BatchNormalization with moving statistics away from their initial
values, ReLU, a residual Add, MaxPooling2D 3/2 'same', GlobalAveragePooling2D and
GlobalMaxPooling2D joined by Concatenate, Dense softmax), compiled with Adam and
sparse categorical cross-entropy, never trained. new_layers.keras: the augmentation
layers (identities in inference), SeparableConv2D (relu, depth_multiplier 2),
DepthwiseConv2D (strides 2, no bias), BatchNormalization, AveragePooling2D 'same', never
compiled. seed.keras: the seed network layer for layer (separate Activation layers) at
40x40x3, compiled as the seed (RMSprop 1e-4, binary cross-entropy, accuracy).
expected.npz: inputs, Keras's predictions of all three, and seq's weights
after a second train_on_batch. About 270 KB.
"""
import os

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "jax")
import keras  # noqa: E402
from keras import layers  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    seq = keras.Sequential([
        keras.Input((12, 11, 3)),
        layers.Conv2D(4, 3, activation="relu"),
        layers.MaxPooling2D(2),
        layers.Conv2D(5, 3, strides=2, padding="same"),
        layers.Flatten(),
        layers.Dense(6, activation="relu"),
        layers.Dropout(0.0),
        layers.Dense(1, activation="sigmoid")])
    seq.compile(optimizer=keras.optimizers.RMSprop(1e-3), loss="binary_crossentropy",
                metrics=["accuracy"])
    x = rng.uniform(0, 1, (4, 12, 11, 3)).astype(np.float32)
    y = np.array([0, 1, 1, 0], np.float32)
    seq.train_on_batch(x, y)
    seq.save(os.path.join(HERE, "seq.keras"))
    seq_pred = seq.predict(x, verbose=0)
    seq.train_on_batch(x, y)
    seq_after = seq.get_weights()

    inp = keras.Input((9, 10, 3))
    t = layers.Rescaling(1 / 127.5, offset=-1.0)(inp)
    t = layers.Conv2D(6, 3, strides=2, padding="same")(t)
    t = layers.BatchNormalization()(t)
    t = layers.Activation("relu")(t)
    r = layers.Conv2D(6, 1, activation="relu")(t)
    t = layers.Add()([t, r])
    t = layers.MaxPooling2D(3, strides=2, padding="same")(t)
    t = layers.Concatenate()([layers.GlobalAveragePooling2D()(t),
                              layers.GlobalMaxPooling2D()(t)])
    out = layers.Dense(3, activation="softmax")(t)
    fun = keras.Model(inp, out)
    bn = fun.layers[3]
    bn.set_weights([rng.uniform(0.5, 1.5, 6), rng.normal(0, 0.3, 6), rng.normal(0, 0.3, 6),
                    rng.uniform(0.5, 1.5, 6)])
    fun.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                metrics=["accuracy"])
    fun.save(os.path.join(HERE, "fun.keras"))
    x2 = rng.uniform(0, 255, (5, 9, 10, 3)).astype(np.float32)

    new = keras.Sequential([
        keras.Input((16, 15, 3)),
        layers.RandomFlip("horizontal"), layers.RandomRotation(0.1), layers.RandomZoom(0.1),
        layers.RandomTranslation(0.1, 0.1), layers.Rescaling(1 / 255),
        layers.SeparableConv2D(8, 3, padding="same", depth_multiplier=2, activation="relu"),
        layers.DepthwiseConv2D(3, strides=2, use_bias=False),
        layers.BatchNormalization(),
        layers.AveragePooling2D(2, padding="same"),
        layers.GlobalAveragePooling2D(),
        layers.Dense(2, activation="softmax")])
    new.layers[7].set_weights([rng.uniform(0.5, 1.5, 8), rng.normal(0, 0.3, 8),
                               rng.normal(0, 0.3, 8), rng.uniform(0.5, 1.5, 8)])
    new.save(os.path.join(HERE, "new_layers.keras"))
    x3 = rng.uniform(0, 255, (3, 16, 15, 3)).astype(np.float32)

    seed_net = keras.Sequential([        # the seed network, layer for layer, at 40x40x3
        keras.Input((40, 40, 3)),
        layers.Conv2D(32, (3, 3)), layers.Activation("relu"), layers.MaxPooling2D((3, 3)),
        layers.Conv2D(32, (3, 3)), layers.Activation("relu"), layers.MaxPooling2D((2, 2)),
        layers.Conv2D(64, (3, 3)), layers.Activation("relu"), layers.MaxPooling2D((2, 2)),
        layers.Flatten(), layers.Dense(64), layers.Activation("relu"), layers.Dropout(0.5),
        layers.Dense(1), layers.Activation("sigmoid")])
    seed_net.compile(loss="binary_crossentropy", optimizer=keras.optimizers.RMSprop(1e-4),
                     metrics=["accuracy"])
    seed_net.save(os.path.join(HERE, "seed.keras"))
    x4 = rng.uniform(0, 1, (4, 40, 40, 3)).astype(np.float32)
    np.savez(os.path.join(HERE, "expected.npz"), x=x, y=y, seq_pred=seq_pred, x2=x2,
             fun_pred=fun.predict(x2, verbose=0), x3=x3, new_pred=new.predict(x3, verbose=0),
             x4=x4, seed_pred=seed_net.predict(x4, verbose=0),
             **{f"seq_after_{k}": w for k, w in enumerate(seq_after)})


if __name__ == "__main__":
    main()
