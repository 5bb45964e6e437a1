"""Fully connected layer (Keras Dense), the reference.

x (N, IN), w (IN, OUT), b (OUT,), y (N, OUT).
"""
import numpy as np

from .. import _validate


def dense_forward(x, w, b):
    """y = x @ w + b, a new array of x's dtype."""
    op = "dense_forward"
    _validate.dense_check(op, x, w)
    _validate.check_bias(op, b, w.shape[1], x.dtype)
    y = x.astype(np.float64) @ w.astype(np.float64) + b
    return y.astype(x.dtype)


def dense_backward(x, w, dy, need_dx=True):
    """Returns (dx = dy @ w.T or None, dw = x.T @ dy, db = sum_n dy), new arrays."""
    op = "dense_backward"
    _validate.dense_check(op, x, w)
    _validate.check_dy(op, dy, (x.shape[0], w.shape[1]), x.dtype)
    dy64 = dy.astype(np.float64)
    dx = (dy64 @ w.astype(np.float64).T).astype(x.dtype) if need_dx else None
    dw = (x.astype(np.float64).T @ dy64).astype(x.dtype)
    db = dy64.sum(axis=0).astype(x.dtype)
    return dx, dw, db
