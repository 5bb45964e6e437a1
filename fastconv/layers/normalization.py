"""BatchNormalization over the channel (last) axis, Keras's arguments and weights.

Weights, in Keras's order: gamma (C,) if scale, beta (C,) if center, then
moving_mean (C,) and moving_variance (C,). gamma and beta train; the moving
statistics do not (summary() counts them as non-trainable): fit updates them from
each batch with Keras's formula moving = moving * momentum + batch * (1 - momentum),
applied with the step's weight update (a step whose loss is not finite changes
neither). Training (fit) normalizes with the batch mean and biased variance,
inference (evaluate, predict) with the moving statistics:
y = (x - mean) / sqrt(var + epsilon) * gamma + beta.
"""
from __future__ import annotations

import math

import numpy as np

from .._args import is_int, is_number
from .base import Layer, LayerError, _flag

INITIALIZERS = {"gamma_initializer": "ones", "beta_initializer": "zeros",
                "moving_mean_initializer": "zeros", "moving_variance_initializer": "ones"}


class BatchNormalization(Layer):
    """BatchNormalization(axis=-1, momentum=0.99, epsilon=1e-3, center=True, scale=True)
    on (None, ..., C): NHWC after a Conv2D, (None, C) after a Dense. Only the channel
    axis (-1, or the last axis's index counting the batch) is supported."""

    prefix = "batch_normalization"
    has_weights = True

    def __init__(self, axis=-1, momentum=0.99, epsilon=1e-3, center=True, scale=True,
                 name=None, input_shape=None, gamma_initializer="ones",
                 beta_initializer="zeros", moving_mean_initializer="zeros",
                 moving_variance_initializer="ones"):
        cls = "BatchNormalization"
        if not is_int(axis):
            raise ValueError(f"{cls}: `axis` must be an int (the channel axis, -1), received "
                             f"axis={axis!r}")
        self.axis = int(axis)
        if not is_number(momentum) or not 0.0 <= float(momentum) <= 1.0:
            raise ValueError(f"{cls}: `momentum` must be a number in [0, 1], received "
                             f"momentum={momentum!r}")
        self.momentum = float(momentum)
        if not is_number(epsilon) or not math.isfinite(float(epsilon)) or float(epsilon) <= 0:
            raise ValueError(f"{cls}: `epsilon` must be a number > 0, received "
                             f"epsilon={epsilon!r}")
        self.epsilon = float(epsilon)
        self.center, self.scale = _flag(cls, "center", center), _flag(cls, "scale", scale)
        given = dict(gamma_initializer=gamma_initializer, beta_initializer=beta_initializer,
                     moving_mean_initializer=moving_mean_initializer,
                     moving_variance_initializer=moving_variance_initializer)
        for arg, value in given.items():
            if value != INITIALIZERS[arg]:
                raise ValueError(f"{cls}: `{arg}` must be {INITIALIZERS[arg]!r} (Keras's "
                                 f"default; others are not supported), received "
                                 f"{arg}={value!r}")
        super().__init__(name=name, input_shape=input_shape)
        self.weight_names = (("gamma",) if self.scale else ()) + (
            ("beta",) if self.center else ()) + ("moving_mean", "moving_variance")

    def trainable_weight_count(self):
        return int(self.scale) + int(self.center)

    def compute_output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        rank = len(input_shape)
        if rank < 2:
            raise LayerError(f"BatchNormalization layer '{self.name}' expects an input "
                             f"(batch, ..., channels), received input shape {input_shape}")
        if self.axis not in (-1, rank - 1):
            raise LayerError(f"BatchNormalization layer '{self.name}': only the channel axis "
                             f"(-1 or {rank - 1}) is supported, received axis={self.axis} "
                             f"for input shape {input_shape}")
        return input_shape

    def weight_shapes_for(self, input_shape):
        return [(int(input_shape[-1]),)] * len(self.weight_names)

    def _make_weights(self, input_shape, rng):
        c = int(input_shape[-1])
        init = {"gamma": np.ones, "beta": np.zeros, "moving_mean": np.zeros,
                "moving_variance": np.ones}
        return [init[w](c, np.float32) for w in self.weight_names]

    def get_config(self):
        config = super().get_config()
        config.update(axis=self.axis, momentum=self.momentum, epsilon=self.epsilon,
                      center=self.center, scale=self.scale)
        return config
