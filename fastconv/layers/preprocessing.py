"""Rescaling: y = x * scale + offset (Keras layers.Rescaling), e.g. Rescaling(1 / 255)."""
from __future__ import annotations

import math

from .._args import is_number
from .base import Layer


def _finite(arg, value):
    if not is_number(value) or not math.isfinite(float(value)):
        raise ValueError(f"Rescaling: `{arg}` must be a finite number (a scalar; per-channel "
                         f"scales are not supported), received {arg}={value!r}")
    return float(value)


class Rescaling(Layer):
    """Rescaling(scale, offset=0.0): y = x * scale + offset, any input shape, no weights.

    Computed in float32 with scale and offset rounded to float32, as Keras's float32
    layer does. Its backward (dx = dy * scale) runs only when a layer before it trains."""

    prefix = "rescaling"

    def __init__(self, scale, offset=0.0, name=None, input_shape=None):
        self.scale = _finite("scale", scale)
        self.offset = _finite("offset", offset)
        super().__init__(name=name, input_shape=input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(scale=self.scale, offset=self.offset)
        return config
