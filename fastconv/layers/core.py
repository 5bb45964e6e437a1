"""Core layers: Input, Activation, Flatten, Dense, Dropout."""
from __future__ import annotations

import numpy as np

from .. import _random
from .._args import is_number
from .base import (ACTIVATIONS, BIAS_INITIALIZERS, KERNEL_INITIALIZERS, Layer, LayerError,
                   _activation, _choice, _init_kernel, _positive_int, _shape)
from . import regularizers
from .graph import KerasTensor


class InputLayer(Layer):
    """The model's input: shape without the batch axis. Shown in no summary (as Keras's
    Sequential), holds no weights and computes nothing."""

    prefix = "input"
    is_input = True

    def __init__(self, shape, name=None):
        super().__init__(name=name)
        self.shape = _shape("Input", "shape", shape)
        self.input_shape_arg = self.shape

    def get_config(self):
        return {"name": self.name, "shape": list(self.shape)}

    @classmethod
    def from_config(cls, config):
        return cls(shape=tuple(config["shape"]), name=config.get("name"))


def Input(shape, name=None):
    """Keras's `Input(shape)`: a KerasTensor (None, *shape) made by an InputLayer; start
    a Functional model with it (layers.graph), or put it first in a Sequential to declare
    the input shape."""
    layer = InputLayer(shape, name=name)
    return KerasTensor((None,) + layer.shape, layer)


class Activation(Layer):
    """Activation("relu" | "sigmoid" | "softmax" | "linear"). softmax acts on (None, K)."""

    prefix = "activation"

    def __init__(self, activation, name=None, input_shape=None):
        if activation is None:
            raise ValueError("Activation: `activation` must be one of "
                             f"{', '.join(ACTIVATIONS)}, received activation=None")
        self.activation = _activation("Activation", activation)
        super().__init__(name=name, input_shape=input_shape)

    def compute_output_shape(self, input_shape):
        if self.activation == "softmax":
            self._expect_rank(input_shape, 2, "(batch, classes) for softmax")
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config["activation"] = self.activation
        return config


class Flatten(Layer):
    """(None, d1, d2, ...) -> (None, d1 * d2 * ...), a view: costs nothing."""

    prefix = "flatten"

    def __init__(self, name=None, input_shape=None, data_format="channels_last"):
        _choice("Flatten", "data_format", data_format, ("channels_last",))
        super().__init__(name=name, input_shape=input_shape)

    def compute_output_shape(self, input_shape):
        if len(input_shape) < 2:
            raise LayerError(f"Flatten layer '{self.name}' needs an input with a batch axis and "
                             f"at least one more, received input shape {tuple(input_shape)}")
        return (None, int(np.prod(input_shape[1:])))


class Dense(Layer):
    """Dense(units, activation=None, input_shape=None): y = x @ kernel + bias on (None, IN)."""

    prefix = "dense"
    has_weights = True

    def __init__(self, units, activation=None, input_shape=None, name=None,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, bias_regularizer=None):
        cls = "Dense"
        self.kernel_regularizer = regularizers.get(kernel_regularizer,
                                                   f"{cls}: kernel_regularizer")
        self.bias_regularizer = regularizers.get(bias_regularizer, f"{cls}: bias_regularizer")
        self.units = _positive_int(cls, "units", units)
        self.activation = _activation(cls, activation)
        self.kernel_initializer = _choice(cls, "kernel_initializer", kernel_initializer,
                                          KERNEL_INITIALIZERS)
        self.bias_initializer = _choice(cls, "bias_initializer", bias_initializer,
                                        BIAS_INITIALIZERS)
        super().__init__(name=name, input_shape=input_shape)
        self.weight_names = ("kernel", "bias")

    def _input_rank(self):
        return 1

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 2:
            raise LayerError(
                f"Dense layer '{self.name}' expects a 2-D input (batch, features), received "
                f"input shape {tuple(input_shape)}; add a Flatten() layer before it")
        return (None, self.units)

    def weight_shapes_for(self, input_shape):
        return [(int(input_shape[1]), self.units), (self.units,)]

    def _make_weights(self, input_shape, rng):
        n_in = input_shape[1]
        kernel = _init_kernel(self.kernel_initializer, (n_in, self.units), rng, n_in, self.units)
        return [kernel, np.zeros(self.units, np.float32)]

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, activation=self.activation,
                      kernel_initializer=self.kernel_initializer,
                      bias_initializer=self.bias_initializer)
        config.update(regularizers.configs(self))
        return config


class Dropout(Layer):
    """Dropout(rate): inverted dropout in training (masks from the model's seeded
    generator, drawn on the host so every backend sees the same mask); identity otherwise."""

    prefix = "dropout"

    def __init__(self, rate, name=None, input_shape=None, seed=None):
        if not is_number(rate) or not 0 <= float(rate) < 1:
            raise ValueError(f"Dropout: `rate` must be a float in [0, 1), received rate={rate!r}")
        self.rate = float(rate)
        self.seed = _random.check_seed("Dropout", seed)
        super().__init__(name=name, input_shape=input_shape)

    def get_config(self):
        config = super().get_config()
        config["rate"] = self.rate
        if self.seed is not None:
            config["seed"] = self.seed
        return config
