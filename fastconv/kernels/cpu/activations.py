"""Elementwise activations and dropout, Numba CPU.

Same names, arguments, errors and out= convention as
fastconv/kernels/reference/activations.py. Arrays are float32 of any shape
(softmax: (N, K)); every op writes a new array or the caller's `out=` buffer
(overwritten, never accumulated into) and allocates nothing when `out=` is a
C-contiguous buffer. Backward ops take the forward output y, not x.

Work is split over the flat element range: a parallel launch only pays above
`_common.PARALLEL_MIN` elements, so small tensors (the dense layers' (N, 64))
run the serial build of the same loop.
"""
import numpy as np
from numba import prange

from .. import _validate
from .._host import dropout_mask
from ._common import Target, check_float32, contiguous, flat, kernel

F0 = np.float32(0.0)
F1 = np.float32(1.0)


@kernel
def _relu(x, y):
    for i in prange(x.size):
        # `not (x < 0)` keeps NaN, as np.maximum(x, 0) does in the reference
        y[i] = x[i] if not x[i] < F0 else F0


@kernel
def _relu_grad(dy, y, dx):
    for i in prange(dy.size):
        dx[i] = dy[i] if y[i] > F0 else F0


@kernel
def _sigmoid(x, y):
    for i in prange(x.size):
        xi = x[i]
        e = np.exp(-abs(xi))   # <= 1: never overflows, whatever the sign of x
        y[i] = F1 / (F1 + e) if xi >= F0 else e / (F1 + e)


@kernel
def _sigmoid_grad(dy, y, dx):
    for i in prange(dy.size):
        dx[i] = dy[i] * y[i] * (F1 - y[i])


@kernel
def _mul(a, b, y):
    for i in prange(a.size):
        y[i] = a[i] * b[i]


@kernel
def _softmax(x, y):
    n, k = x.shape
    for r in prange(n):
        m = x[r, 0]
        for j in range(1, k):
            m = max(m, x[r, j])
        s = 0.0                                  # float64: K terms summed exactly enough
        for j in range(k):
            e = np.exp(x[r, j] - m)
            y[r, j] = e
            s += e
        inv = 1.0 / s
        for j in range(k):
            y[r, j] = np.float32(y[r, j] * inv)


@kernel
def _softmax_grad(dy, y, dx):
    n, k = dy.shape
    for r in prange(n):
        s = 0.0                                  # float64 row sum of dy * y
        for j in range(k):
            s += np.float64(dy[r, j]) * y[r, j]
        for j in range(k):
            dx[r, j] = np.float32(y[r, j] * (dy[r, j] - s))


def _unary(op, fn, x, out, ndim=None):
    """Check x, then run fn on it into out (or a new array): the forward ops."""
    _validate.check_float_array(op, "x", x, ndim)
    check_float32(op, "x", x)
    x = contiguous(x)
    t = Target(op, "out", out, x.shape)
    if ndim is None:
        fn(x.size, flat(x), flat(t.buf))
    else:
        fn(x.size, x, t.buf)
    return t.result()


def _binary(op, fn, dy, name, y, out, ndim=None):
    """Check dy and its partner (y or the dropout mask, `name`), then run fn on them
    into out (or a new array): the backward ops."""
    _validate.check_float_array(op, "dy", dy, ndim)
    _validate.check_float_array(op, name, y, ndim)
    _validate.check_same_shape(op, "dy", dy, name, y)
    check_float32(op, "dy", dy)
    check_float32(op, name, y)
    dy, y = contiguous(dy), contiguous(y)
    t = Target(op, "out", out, dy.shape)
    if ndim is None:
        fn(dy.size, flat(dy), flat(y), flat(t.buf))
    else:
        fn(dy.size, dy, y, t.buf)
    return t.result()


def relu_forward(x, out=None):
    """y = max(x, 0) (NaN stays NaN), shaped like x."""
    return _unary("relu_forward", _relu, x, out)


def relu_backward(dy, y, out=None):
    """dx = dy where y > 0, else 0 (the gradient at 0 is 0, as Keras)."""
    return _binary("relu_backward", _relu_grad, dy, "y", y, out)


def sigmoid_forward(x, out=None):
    """y = 1 / (1 + exp(-x)) in float32, in a form that never overflows."""
    return _unary("sigmoid_forward", _sigmoid, x, out)


def sigmoid_backward(dy, y, out=None):
    """dx = dy * y * (1 - y)."""
    return _binary("sigmoid_backward", _sigmoid_grad, dy, "y", y, out)


def softmax_forward(x, out=None):
    """Softmax over the last axis of x (N, K), max-shifted; sums in float64."""
    return _unary("softmax_forward", _softmax, x, out, ndim=2)


def softmax_backward(dy, y, out=None):
    """dx = y * (dy - sum_k dy * y), per row of (N, K)."""
    return _binary("softmax_backward", _softmax_grad, dy, "y", y, out, ndim=2)


def dropout_forward(x, rate, rng, out=None):
    """Inverted dropout (training mode): returns (y = x * mask, mask).

    The mask is `_host.dropout_mask(x.shape, rate, rng)`, drawn on the host,
    so the same generator state gives the same mask (and bit-identical y) on
    every backend. out=(y or None, mask or None).
    """
    op = "dropout_forward"
    _validate.check_float_array(op, "x", x)
    check_float32(op, "x", x)
    rate = _validate.check_rate(op, rate)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"{op}: rng must be a numpy.random.Generator, got {type(rng).__name__}")
    o_y, o_mask = _validate.out_tuple(op, out, 2)
    x = contiguous(x)
    t = Target(op, "out[0]", o_y, x.shape)
    tm = Target(op, "out[1]", o_mask, x.shape) if o_mask is not None else None
    mask = dropout_mask(x.shape, rate, rng, x.dtype)
    _mul(x.size, flat(x), flat(mask), flat(t.buf))
    if tm is not None:
        tm.buf[...] = mask
        mask = tm.result()
    return t.result(), mask


def dropout_backward(dy, mask, out=None):
    """dx = dy * mask (the model layer also applies a host-drawn mask forward with it)."""
    return _binary("dropout_backward", _mul, dy, "mask", mask, out)
