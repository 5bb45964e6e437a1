"""Elementwise activations and dropout, the reference.

Backward ops take the forward *output* y (what a fused engine keeps), not x.
"""
import numpy as np

from .. import _validate
from .._host import dropout_mask


def relu_forward(x):
    """y = max(x, 0), a new array."""
    _validate.check_float_array("relu_forward", "x", x)
    return np.maximum(x, 0).astype(x.dtype)


def relu_backward(dy, y):
    """dx = dy where y > 0, else 0 (Keras: the gradient at 0 is 0). New array."""
    op = "relu_backward"
    _validate.check_float_array(op, "dy", dy)
    _validate.check_float_array(op, "y", y)
    _validate.check_same_shape(op, "dy", dy, "y", y)
    return np.where(y > 0, dy, 0).astype(dy.dtype)


def sigmoid_forward(x):
    """y = 1 / (1 + exp(-x)), computed without overflow. New array."""
    _validate.check_float_array("sigmoid_forward", "x", x)
    x64 = x.astype(np.float64)
    e = np.exp(-np.abs(x64))
    y = np.where(x64 >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    return y.astype(x.dtype)


def sigmoid_backward(dy, y):
    """dx = dy * y * (1 - y). New array."""
    op = "sigmoid_backward"
    _validate.check_float_array(op, "dy", dy)
    _validate.check_float_array(op, "y", y)
    _validate.check_same_shape(op, "dy", dy, "y", y)
    y64 = y.astype(np.float64)
    return (dy * y64 * (1.0 - y64)).astype(dy.dtype)


def softmax_forward(x):
    """Softmax over the last axis of x (N, K), max-shifted. New array."""
    _validate.check_float_array("softmax_forward", "x", x, 2)
    z = x.astype(np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(x.dtype)


def softmax_backward(dy, y):
    """dx = y * (dy - sum_k dy * y), per row. New array."""
    op = "softmax_backward"
    _validate.check_float_array(op, "dy", dy, 2)
    _validate.check_float_array(op, "y", y, 2)
    _validate.check_same_shape(op, "dy", dy, "y", y)
    y64 = y.astype(np.float64)
    dy64 = dy.astype(np.float64)
    return (y64 * (dy64 - (dy64 * y64).sum(axis=1, keepdims=True))).astype(dy.dtype)


def dropout_forward(x, rate, rng):
    """Inverted dropout (Keras, training mode): returns (y = x * mask, mask), new arrays.

    rate in [0, 1); rng a numpy.random.Generator. rate 0 gives mask of ones.
    """
    op = "dropout_forward"
    _validate.check_float_array(op, "x", x)
    rate = _validate.check_rate(op, rate)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"{op}: rng must be a numpy.random.Generator, got {type(rng).__name__}")
    mask = dropout_mask(x.shape, rate, rng, x.dtype)
    return (x * mask).astype(x.dtype), mask


def dropout_backward(dy, mask):
    """dx = dy * mask. New array."""
    op = "dropout_backward"
    _validate.check_float_array(op, "dy", dy)
    _validate.check_float_array(op, "mask", mask)
    _validate.check_same_shape(op, "dy", dy, "mask", mask)
    return (dy * mask).astype(dy.dtype)
