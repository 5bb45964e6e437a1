"""The argument checks of the global pooling ops (Keras GlobalAveragePooling2D and
GlobalMaxPooling2D), shared by every backend so errors read the same word for word.

Layout: x (N, H, W, C) NHWC -> y (N, C); the backward ops take the forward's
input shape as `input_shape`. argmax (global max) is int32 (N, C) holding the flat
spatial index h * W + w of the winner, as maxpool2d's argmax does.
"""
import numpy as np

from . import _validate


def check_x(op, x):
    """x a float32 (N, H, W, C) array with at least one pixel (an empty mean or max
    has no value)."""
    _validate.check_float_array(op, "x", x, 4)
    if x.shape[1] < 1 or x.shape[2] < 1:
        raise ValueError(f"{op}: x must have H >= 1 and W >= 1, got shape {x.shape}")


def check_grad(op, dy, input_shape):
    """dy a float32 (N, C) array matching `input_shape` (N, H, W, C) in N and C, with
    H, W >= 1. Returns input_shape as a tuple of ints."""
    _validate.check_float_array(op, "dy", dy, 2)
    try:
        input_shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        raise TypeError(f"{op}: input_shape must be a tuple of 4 ints (N, H, W, C), got "
                        f"{input_shape!r}") from None
    if len(input_shape) != 4 or min(input_shape) < 0:
        raise ValueError(f"{op}: input_shape must be (N, H, W, C), got {input_shape}")
    n, h, w, c = input_shape
    if h < 1 or w < 1:
        raise ValueError(f"{op}: input_shape must have H >= 1 and W >= 1, got {input_shape}")
    if dy.shape != (n, c):
        raise ValueError(f"{op}: dy must have shape (N, C) = {(n, c)} for input_shape "
                         f"{input_shape}, got {dy.shape}")
    return input_shape


def check_argmax(op, dy, argmax, is_array=None):
    """argmax an int32 ndarray (or whatever `is_array` accepts: cuda's device arrays) of
    dy's shape (its range is each backend's to check, with
    _validate.check_argmax_range's message)."""
    if not (isinstance(argmax, np.ndarray) or (is_array is not None and is_array(argmax))) \
            or argmax.dtype != np.int32:
        raise TypeError(f"{op}: argmax must be an int32 ndarray, got "
                        f"{getattr(argmax, 'dtype', type(argmax).__name__)}")
    _validate.check_same_shape(op, "dy", dy, "argmax", argmax)
