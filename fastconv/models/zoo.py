"""Ready-made models. small_convnet: the classic Keras cats-vs-dogs convnet (docs/contract.md);
keras_io_xception: the small Xception of keras.io's "Image classification from scratch"."""
from __future__ import annotations

from .. import layers as L
from ..optimizers import Adam, RMSprop
from .functional import Functional
from .sequential import Sequential


def _num_classes(fn, num_classes):
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"{fn}: num_classes must be an integer >= 2, received "
                         f"{num_classes!r}")
    return num_classes


def _finish(model, optimizer, binary, weights):
    """Compile with `optimizer` (None: leave uncompiled), binary or sparse categorical
    cross-entropy and accuracy; then load `weights` (a path) if given."""
    if optimizer is not None:
        model.compile(optimizer=optimizer, loss="binary_crossentropy" if binary
                      else "sparse_categorical_crossentropy", metrics=["accuracy"])
    if weights is not None:
        model.load_weights(weights)
    return model


def small_convnet(input_shape=(150, 150, 3), device="cpu", seed=None, compile=True, weights=None,
                  num_classes=2):
    """The seed network, layer for layer (separate Activation layers, as the seed):

    Conv2D 32 3x3 > relu > MaxPool 3 > Conv2D 32 3x3 > relu > MaxPool 2 > Conv2D 64 3x3 >
    relu > MaxPool 2 > Flatten > Dense 64 > relu > Dropout 0.5 > Dense 1 > sigmoid;
    438,369 parameters at 150x150x3. Compiled with binary cross-entropy, RMSprop
    (learning_rate 1e-4) and accuracy unless compile=False. weights: a path to
    load, either a fastconv weights/model file or a Keras HDF5 weights file of
    this architecture (e.g. the seed's own first_try.h5). num_classes: 2 keeps the
    seed's head (Dense 1 > sigmoid); K > 2 ends in Dense K > softmax, compiled with
    sparse categorical cross-entropy (integer labels).
    """
    binary = _num_classes("small_convnet", num_classes) == 2
    model = Sequential([
        L.Conv2D(32, (3, 3), input_shape=tuple(input_shape)),
        L.Activation("relu"),
        L.MaxPooling2D(pool_size=(3, 3)),
        L.Conv2D(32, (3, 3)),
        L.Activation("relu"),
        L.MaxPooling2D(pool_size=(2, 2)),
        L.Conv2D(64, (3, 3)),
        L.Activation("relu"),
        L.MaxPooling2D(pool_size=(2, 2)),
        L.Flatten(),
        L.Dense(64),
        L.Activation("relu"),
        L.Dropout(0.5),
        L.Dense(1 if binary else num_classes),
        L.Activation("sigmoid" if binary else "softmax"),
    ], device=device, seed=seed)
    return _finish(model, RMSprop(learning_rate=1e-4) if compile else None, binary, weights)


def keras_io_xception(input_shape=(180, 180, 3), num_classes=2, width=1.0, dropout=0.25,
                      rescale=1.0 / 255, device="cpu", seed=None, compile=True, weights=None):
    """The network of keras.io's "Image classification from scratch" (cats vs dogs),
    layer for layer, as a Functional model:

    Rescaling(1/255) > Conv2D 128 3x3 stride 2 same > BN > relu; for size in 256, 512,
    728: relu > SeparableConv2D(size, 3, same) > BN > relu > SeparableConv2D(size, 3, same)
    > BN > MaxPooling2D(3, strides 2, same), added to Conv2D(size, 1, strides 2, same) of
    the block's input; SeparableConv2D 1024 3 same > BN > relu > GlobalAveragePooling2D >
    Dropout 0.25 > Dense.

    2,731,065 parameters at (180, 180, 3) with 2 classes (2,722,777 trainable; the rest
    are BatchNormalization's moving statistics), as the Keras model. The head: Keras's
    example ends in Dense(1) logits trained with BinaryCrossentropy(from_logits=True);
    fastconv's losses take the logits before a final sigmoid (folded into the loss, the
    same computation), so num_classes=2 ends in Dense(1, activation="sigmoid") (same
    weights; predict returns probabilities instead of logits) and num_classes K > 2 in
    Dense(K, activation="softmax") (sparse categorical cross-entropy). Compiled with
    Adam(3e-4), as the example, and accuracy unless compile=False.

    width > 0 scales every filter count (round(f * width), at least 1) for small
    versions; 1.0 is the example. dropout: the rate of the Dropout before the head (the
    example's 0.25). rescale: the scale of the first layer, Rescaling(rescale) (1/255: the
    model takes raw pixels, as the example; `fastconv train`, whose data pipeline scales
    pixels by 1/255 for every model its commands open, passes 1.0: the layer stays, as an
    identity). weights: a path to load, a fastconv weights/model file or a Keras 3
    .weights.h5 file of this architecture (keras_weights.load_into).
    """
    num_classes = _num_classes("keras_io_xception", num_classes)
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0:
        raise ValueError(f"keras_io_xception: width must be a number > 0, received "
                         f"{width!r}")

    def f(filters):
        return max(1, int(round(filters * width)))
    inputs = L.Input(tuple(input_shape))
    x = L.Rescaling(rescale)(inputs)
    x = L.Conv2D(f(128), 3, strides=2, padding="same")(x)
    x = L.BatchNormalization()(x)
    x = L.Activation("relu")(x)
    previous_block_activation = x
    for size in (256, 512, 728):
        x = L.Activation("relu")(x)
        x = L.SeparableConv2D(f(size), 3, padding="same")(x)
        x = L.BatchNormalization()(x)
        x = L.Activation("relu")(x)
        x = L.SeparableConv2D(f(size), 3, padding="same")(x)
        x = L.BatchNormalization()(x)
        x = L.MaxPooling2D(3, strides=2, padding="same")(x)
        residual = L.Conv2D(f(size), 1, strides=2, padding="same")(previous_block_activation)
        x = L.Add()([x, residual])
        previous_block_activation = x
    x = L.SeparableConv2D(f(1024), 3, padding="same")(x)
    x = L.BatchNormalization()(x)
    x = L.Activation("relu")(x)
    x = L.GlobalAveragePooling2D()(x)
    x = L.Dropout(dropout)(x)
    binary = num_classes == 2
    outputs = L.Dense(1 if binary else num_classes,
                      activation="sigmoid" if binary else "softmax")(x)
    model = Functional(inputs, outputs, device=device, seed=seed)
    return _finish(model, Adam(learning_rate=3e-4) if compile else None, binary, weights)
