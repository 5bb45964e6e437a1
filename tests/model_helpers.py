"""Synthetic data and tiny models for the model-layer tests (reference engine, small shapes)."""
import numpy as np

import fastconv
from fastconv import Sequential
from fastconv import layers as L


def discs_and_squares(n, rng, size=16, noise=0.25):
    """Bright discs (label 1) and bright squares (label 0) of random size and place on
    Gaussian noise, (n, size, size, 1) float32, labels float32 (n,), balanced."""
    x = rng.normal(0.0, noise, (n, size, size, 1)).astype(np.float32)
    y = np.arange(n) % 2
    rng.shuffle(y)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        r = rng.uniform(3.0, 5.0)
        cy, cx = rng.uniform(r + 0.5, size - r - 0.5, 2)
        if y[i]:
            m = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        else:
            m = (np.abs(yy - cy) <= r) & (np.abs(xx - cx) <= r)
        x[i, m, 0] += 1.0
    return x, y.astype(np.float32)


def tiny_convnet(device="reference", seed=0, input_shape=(16, 16, 1), dropout=0.25,
                 classes=1, filters=(8, 12), units=16):
    """conv-relu-pool x2, dense-relu, dropout, dense-sigmoid (or softmax)."""
    head = "sigmoid" if classes == 1 else "softmax"
    return Sequential([
        L.Conv2D(filters[0], 3, activation="relu", input_shape=input_shape),
        L.MaxPooling2D(2),
        L.Conv2D(filters[1], 3),
        L.Activation("relu"),
        L.MaxPooling2D(2),
        L.Flatten(),
        L.Dense(units, activation="relu"),
        L.Dropout(dropout),
        L.Dense(classes),
        L.Activation(head),
    ], device=device, seed=seed)


def residual_net(device="reference", seed=0, input_shape=(12, 12, 3), filters=4, dropout=0.0,
                 units=1, batchnorm=False):
    """A Functional model with both residual forms: Conv2D -> Conv2D -> Add with the block's
    input (identity shortcut), then the keras.io Xception block: Conv2D -> MaxPooling2D(3,
    strides=2, padding="same") added to a 1x1 stride-2 Conv2D shortcut of the same input;
    Flatten, (Dropout,) Dense(units, sigmoid or softmax). batchnorm: the first conv is
    Conv2D -> BatchNormalization -> ReLU, as the keras.io Xception example's entry."""
    inp = fastconv.Input(input_shape)
    if batchnorm:
        x = L.Activation("relu")(L.BatchNormalization()(L.Conv2D(filters, 3, padding="same")(inp)))
    else:
        x = L.Conv2D(filters, 3, padding="same", activation="relu")(inp)
    y = L.Conv2D(filters, 3, padding="same", activation="relu")(x)
    y = L.Conv2D(filters, 3, padding="same")(y)
    x = L.Activation("relu")(L.Add()([y, x]))
    y = L.Conv2D(2 * filters, 3, padding="same", activation="relu")(x)
    y = L.MaxPooling2D(3, strides=2, padding="same")(y)
    shortcut = L.Conv2D(2 * filters, 1, strides=2, padding="same")(x)
    x = L.Flatten()(L.Add()([y, shortcut]))
    if dropout:
        x = L.Dropout(dropout)(x)
    out = L.Dense(units, activation="sigmoid" if units == 1 else "softmax")(x)
    return fastconv.Model(inp, out, device=device, seed=seed)


def separable_net(device="reference", seed=0, input_shape=(12, 12, 1), filters=4):
    """A keras.io Xception block in small: Conv2D stride 2 > SeparableConv2D relu >
    SeparableConv2D (depth_multiplier 2, no bias) > MaxPooling2D(3, 2, same), added to a
    1x1 stride-2 Conv2D shortcut; DepthwiseConv2D (depth_multiplier 2), global average
    pooling, Dense sigmoid."""
    inp = fastconv.Input(input_shape)
    x = L.Conv2D(filters, 3, strides=2, padding="same", activation="relu")(inp)
    y = L.SeparableConv2D(filters, 3, padding="same", activation="relu")(x)
    y = L.SeparableConv2D(filters, 3, padding="same", depth_multiplier=2, use_bias=False)(y)
    y = L.MaxPooling2D(3, strides=2, padding="same")(y)
    x = L.Add()([y, L.Conv2D(filters, 1, strides=2, padding="same")(x)])
    x = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2, activation="relu")(x)
    out = L.Dense(1, activation="sigmoid")(L.GlobalAveragePooling2D()(x))
    return fastconv.Model(inp, out, device=device, seed=seed)
