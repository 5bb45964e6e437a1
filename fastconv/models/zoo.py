"""Ready-made models. small_convnet: the classic Keras cats-vs-dogs convnet (docs/contract.md)."""
from __future__ import annotations

from .. import layers as L
from ..optimizers import RMSprop
from .sequential import Sequential


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
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"small_convnet: num_classes must be an integer >= 2, received "
                         f"{num_classes!r}")
    binary = num_classes == 2
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
    if compile:
        model.compile(optimizer=RMSprop(learning_rate=1e-4), loss="binary_crossentropy" if binary
                      else "sparse_categorical_crossentropy", metrics=["accuracy"])
    if weights is not None:
        model.load_weights(weights)
    return model
