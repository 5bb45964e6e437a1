"""The argument checks of the normalization ops (Keras Rescaling and
BatchNormalization), shared by every backend so errors read the same word for word.

Layout: channels last. Rescaling takes any float32 array; BatchNormalization takes
x (..., C) of rank >= 2 (NHWC after a Conv2D, (N, C) after a Dense) and per-channel
vectors (C,): gamma, beta, the batch mean and variance, the moving statistics.
"""
import math

import numpy as np

from . import _validate


def check_number(op, name, value, positive=False, unit=False):
    """`value` a finite real number (> 0 with positive; in [0, 1] with unit), as a float."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer,
                                                                      np.floating)):
        raise TypeError(f"{op}: {name} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{op}: {name} must be finite, got {value!r}")
    if positive and v <= 0:
        raise ValueError(f"{op}: {name} must be > 0, got {value!r}")
    if unit and not 0.0 <= v <= 1.0:
        raise ValueError(f"{op}: {name} must be in [0, 1], got {value!r}")
    return v


def check_bn_x(op, name, x):
    """x a float32 (..., C) array of rank >= 2 with at least one row; returns (M, C),
    M the product of the leading axes (the count each channel's statistics are over)."""
    _validate.check_float_array(op, name, x)
    if x.ndim < 2:
        raise ValueError(f"{op}: {name} must have rank >= 2 (batch, ..., channels), got rank "
                         f"{x.ndim} (shape {x.shape})")
    c = x.shape[-1]
    m = x.size // c if c else 0
    if m < 1 or c < 1:
        raise ValueError(f"{op}: {name} must not be empty, got shape {x.shape}")
    return m, c


def check_channel_vectors(op, c, dtype, of="x's channels", **vectors):
    """Each keyword a float array of shape (C,) and x's dtype (of: what C counts, for the
    message)."""
    for name, v in vectors.items():
        _validate.check_float_array(op, name, v, 1)
        if v.shape != (c,) or v.dtype != dtype:
            raise ValueError(f"{op}: {name} must be {np.dtype(dtype)} of shape ({c},) ({of}), "
                             f"got {v.dtype} of shape {v.shape}")
