"""Finite-difference checks of every reference backward op and loss, in float64.

Each case builds small random inputs, defines L = sum(forward(...) * r) for a
fixed random r, and compares the reference backward op's gradient with
central differences of L. Used by the test suite and by `fastconv selftest`.
"""
from __future__ import annotations

import numpy as np

from ..kernels import float64_allowed
from ..kernels import reference as R
from .compare import check_gradient

F64 = np.float64


def _away_from_zero(rng, shape, gap=0.05):
    """Random values with |x| >= gap, so ReLU's kink is never straddled by h."""
    x = rng.uniform(gap, 1.0, shape) * rng.choice([-1.0, 1.0], shape)
    return x.astype(F64)


def _distinct(rng, shape):
    """A random permutation of well-separated values, so pooling has no near-ties."""
    return (rng.permutation(int(np.prod(shape))).reshape(shape) * 0.01 - 1.0).astype(F64)


def _conv_case(shape, k, c_out, stride, padding):
    def run(rng, rtol, tamper=None):
        x = rng.standard_normal(shape)
        w = rng.standard_normal(k + (shape[3], c_out)) * 0.5
        b = rng.standard_normal(c_out)
        y = R.conv2d_forward(x, w, b, stride, padding)
        r = rng.standard_normal(y.shape)
        dx, dw, db = R.conv2d_backward(x, w, r, stride, padding)
        if tamper:
            dw = tamper(dw)
        loss = lambda: float(np.sum(R.conv2d_forward(x, w, b, stride, padding) * r))  # noqa: E731
        return max(check_gradient(loss, x, dx, "conv2d dx", rtol),
                   check_gradient(loss, w, dw, "conv2d dw", rtol),
                   check_gradient(loss, b, db, "conv2d db", rtol))
    return (f"conv2d x{shape} k{k} F{c_out} s{stride} {padding}", run)


def _fused_case(shape, f, pool):
    """conv + relu + maxpool as one op: the gradient the fused CPU/CUDA kernels must give."""
    def run(rng, rtol, tamper=None):
        x = rng.standard_normal(shape)
        w = rng.standard_normal((3, 3, shape[3], f)) * 0.5
        b = rng.standard_normal(f) * 0.1
        y, arg = R.conv2d_relu_maxpool_forward(x, w, b, pool=pool)
        r = rng.standard_normal(y.shape)
        dx, dw, db = R.conv2d_relu_maxpool_backward(x, w, r, y, arg)
        if tamper:
            dx = tamper(dx)
        loss = lambda: float(np.sum(R.conv2d_relu_maxpool_forward(x, w, b, pool=pool)[0] * r))  # noqa
        return max(check_gradient(loss, x, dx, "conv2d_relu_maxpool dx", rtol),
                   check_gradient(loss, w, dw, "conv2d_relu_maxpool dw", rtol),
                   check_gradient(loss, b, db, "conv2d_relu_maxpool db", rtol))
    return (f"conv2d+relu+maxpool x{shape} F{f} pool {pool}", run)


def _pool_case(shape, pool, stride, padding):
    def run(rng, rtol, tamper=None):
        x = _distinct(rng, shape)
        y, arg = R.maxpool2d_forward(x, pool, stride, padding)
        r = rng.standard_normal(y.shape)
        dx = R.maxpool2d_backward(r, arg, x.shape)
        if tamper:
            dx = tamper(dx)
        loss = lambda: float(np.sum(R.maxpool2d_forward(x, pool, stride, padding)[0] * r))  # noqa
        return check_gradient(loss, x, dx, "maxpool2d dx", rtol)
    return (f"maxpool2d x{shape} pool {pool} stride {stride} {padding}", run)


def _dense_case(n, d_in, d_out):
    def run(rng, rtol, tamper=None):
        x = rng.standard_normal((n, d_in))
        w = rng.standard_normal((d_in, d_out))
        b = rng.standard_normal(d_out)
        r = rng.standard_normal((n, d_out))
        dx, dw, db = R.dense_backward(x, w, r)
        if tamper:
            dx = tamper(dx)
        loss = lambda: float(np.sum(R.dense_forward(x, w, b) * r))  # noqa: E731
        return max(check_gradient(loss, x, dx, "dense dx", rtol),
                   check_gradient(loss, w, dw, "dense dw", rtol),
                   check_gradient(loss, b, db, "dense db", rtol))
    return (f"dense {n}x{d_in} -> {d_out}", run)


def _unary_case(name, forward, backward, make_x):
    def run(rng, rtol, tamper=None):
        x = make_x(rng)
        y = forward(x)
        r = rng.standard_normal(y.shape)
        dx = backward(r, y)
        if tamper:
            dx = tamper(dx)
        return check_gradient(lambda: float(np.sum(forward(x) * r)), x, dx, f"{name} dx", rtol)
    return (name, run)


def _dropout_case():
    def run(rng, rtol, tamper=None):
        x = rng.standard_normal((3, 4, 5))
        _, mask = R.dropout_forward(x, 0.4, np.random.default_rng(1))
        r = rng.standard_normal(x.shape)
        dx = R.dropout_backward(r, mask)
        if tamper:
            dx = tamper(dx)
        loss = lambda: float(np.sum(R.dropout_forward(x, 0.4, np.random.default_rng(1))[0] * r))  # noqa
        return check_gradient(loss, x, dx, "dropout dx", rtol)
    return ("dropout rate 0.4", run)


def _bce_case(shape):
    def run(rng, rtol, tamper=None):
        z = rng.standard_normal(shape) * 3
        y = (rng.random(shape) > 0.5).astype(F64)
        _, dz = R.binary_crossentropy(y, z)
        if tamper:
            dz = tamper(dz)
        return check_gradient(lambda: R.binary_crossentropy(y, z)[0], z, dz, "bce dlogits", rtol)
    return (f"binary_crossentropy {shape}", run)


def _softmax_ce_case(n, k):
    def run(rng, rtol, tamper=None):
        z = rng.standard_normal((n, k)) * 3
        y = rng.integers(0, k, n)
        _, dz = R.softmax_crossentropy(y, z)
        if tamper:
            dz = tamper(dz)
        return check_gradient(lambda: R.softmax_crossentropy(y, z)[0], z, dz,
                              "softmax_crossentropy dlogits", rtol)
    return (f"softmax_crossentropy {n}x{k}", run)


CASES = dict([
    _conv_case((2, 5, 6, 3), (3, 3), 4, 1, "valid"),
    _conv_case((1, 7, 6, 1), (3, 2), 3, 2, "same"),
    _conv_case((1, 6, 5, 2), (2, 3), 2, (2, 1), "valid"),
    _conv_case((1, 5, 5, 3), (1, 1), 2, 1, "same"),
    _fused_case((2, 8, 9, 2), 3, 3),
    _pool_case((2, 7, 6, 3), 2, None, "valid"),
    _pool_case((1, 8, 7, 2), 3, 2, "valid"),
    _pool_case((1, 5, 7, 2), 2, None, "same"),
    _dense_case(3, 7, 5),
    _dense_case(1, 4, 1),
    _unary_case("relu", R.relu_forward, R.relu_backward,
                lambda rng: _away_from_zero(rng, (2, 3, 4, 5))),
    _unary_case("sigmoid", R.sigmoid_forward, R.sigmoid_backward,
                lambda rng: rng.standard_normal((4, 3)) * 3),
    _unary_case("softmax", R.softmax_forward, R.softmax_backward,
                lambda rng: rng.standard_normal((4, 5)) * 2),
    _dropout_case(),
    _bce_case((6, 1)),
    _bce_case((5,)),
    _softmax_ce_case(5, 4),
])


def run_case(name, seed=0, rtol=1e-6, tamper=None):
    """Run one case; returns its worst normwise relative error or raises MismatchError.

    tamper(grad) -> grad lets a test corrupt one analytic gradient and see the
    check fail.
    """
    with float64_allowed():
        return CASES[name](np.random.default_rng(seed), rtol, tamper)
