"""Write the Keras 2 full-model .h5 files and expected outputs of tests/test_keras_file.py.

Run with TensorFlow and tf_keras (Keras 2; not fastconv dependencies), from anywhere:

    python -m venv /tmp/k2venv && /tmp/k2venv/bin/pip install tensorflow-cpu tf_keras
    TF_USE_LEGACY_KERAS=1 /tmp/k2venv/bin/python tests/keras_files/make_keras2_files.py

seq2.h5: a Sequential (Conv2D relu with input_shape, MaxPooling2D, Conv2D 'same'
strides 2, BatchNormalization with moving statistics away from their initial values,
Flatten, Dense relu, Dropout, Dense sigmoid) compiled with RMSprop and accuracy;
fun2.h5: a Functional model (strided 'same' Conv2D, ReLU, a residual Add with a 1x1
conv, GlobalAveragePooling2D, Dense softmax), uncompiled. keras2_expected.npz: the
inputs and Keras 2's predictions of both. About 60 KB in all.
"""
import os

import numpy as np

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
import tf_keras as keras  # noqa: E402
from tf_keras import layers  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    keras.utils.set_random_seed(1)
    rng = np.random.default_rng(1)
    seq = keras.Sequential([
        layers.Conv2D(4, 3, activation="relu", input_shape=(12, 11, 3)),
        layers.MaxPooling2D(2),
        layers.Conv2D(5, 3, strides=2, padding="same"),
        layers.BatchNormalization(),
        layers.Flatten(),
        layers.Dense(6, activation="relu"),
        layers.Dropout(0.5),
        layers.Dense(1, activation="sigmoid")])
    seq.layers[3].set_weights([rng.uniform(0.5, 1.5, 5), rng.normal(0, 0.3, 5),
                               rng.normal(0, 0.3, 5), rng.uniform(0.5, 1.5, 5)])
    seq.compile(optimizer=keras.optimizers.RMSprop(1e-3), loss="binary_crossentropy",
                metrics=["accuracy"])
    seq.save(os.path.join(HERE, "seq2.h5"))
    inp = keras.Input((9, 10, 3))
    t = layers.Conv2D(6, 3, strides=2, padding="same")(inp)
    t = layers.Activation("relu")(t)
    r = layers.Conv2D(6, 1, activation="relu")(t)
    t = layers.Add()([t, r])
    t = layers.GlobalAveragePooling2D()(t)
    fun = keras.Model(inp, layers.Dense(3, activation="softmax")(t))
    fun.save(os.path.join(HERE, "fun2.h5"))
    x = rng.uniform(0, 1, (4, 12, 11, 3)).astype(np.float32)
    x2 = rng.uniform(0, 1, (5, 9, 10, 3)).astype(np.float32)
    np.savez(os.path.join(HERE, "keras2_expected.npz"), x=x, seq_pred=seq.predict(x, verbose=0),
             x2=x2, fun_pred=fun.predict(x2, verbose=0))


if __name__ == "__main__":
    main()
