"""Fully connected layer (Keras Dense), Numba CPU.

x (N, IN), w (IN, OUT), b (OUT,), y (N, OUT), all float32 C-contiguous; the
same names, arguments, errors and out= convention as
fastconv/kernels/reference/dense.py. Every output is overwritten whole.

The seed's dense1 is (32, 6400) x (6400, 64): tall and thin, so each product is
a loop over IN with the OUT axis innermost and contiguous (vector FMAs over 64
outputs), and the work is split along the axis that owns its outputs, never
along a reduction: every output element is summed by one thread in a fixed
order, so results are bitwise the same with any thread count.
fastmath={'contract'} lets LLVM fuse multiply-adds (FMA), which changes
rounding only within float32's last bit; dx's row dot products also allow
'reassoc' so the 64-term sums vectorize (a fixed order per compiled kernel).
"""
import numpy as np
from numba import njit, prange

from .. import _validate
from ._common import OPTS, Target, check_float32, contiguous, kernel

F0 = np.float32(0.0)
ROWS = 4        # rows of x sharing each loaded row of w in the forward product


@kernel(fastmath={"contract"})
def _forward(x, w, b, y):
    """y[r, :] = b + sum_k x[r, k] * w[k, :], ROWS rows of x per task.

    Four k per pass over y[r, :]: one load and store of the accumulator per four
    FMAs. The sum is still added term by term in k order, so the result is
    bitwise what the plain k loop gives."""
    n, d_in = x.shape
    d_out = w.shape[1]
    k4 = d_in - d_in % 4
    for blk in prange((n + ROWS - 1) // ROWS):
        r0 = blk * ROWS
        r1 = min(r0 + ROWS, n)
        for r in range(r0, r1):
            for o in range(d_out):
                y[r, o] = b[o]
        for k in range(0, k4, 4):
            for r in range(r0, r1):
                x0, x1, x2, x3 = x[r, k], x[r, k + 1], x[r, k + 2], x[r, k + 3]
                for o in range(d_out):
                    y[r, o] = (y[r, o] + x0 * w[k, o] + x1 * w[k + 1, o]
                               + x2 * w[k + 2, o] + x3 * w[k + 3, o])
        for k in range(k4, d_in):
            for r in range(r0, r1):
                xv = x[r, k]
                for o in range(d_out):
                    y[r, o] += xv * w[k, o]


@kernel(fastmath={"contract"})
def _grad_w(x, dy, dw):
    """dw[k, :] = sum_n x[n, k] * dy[n, :], one task per 64 rows of dw; four n per
    pass over dw[k, :], added in n order (as _forward)."""
    n, d_in = x.shape
    d_out = dy.shape[1]
    n4 = n - n % 4
    chunk = 64
    for blk in prange((d_in + chunk - 1) // chunk):
        for k in range(blk * chunk, min(blk * chunk + chunk, d_in)):
            for o in range(d_out):
                dw[k, o] = F0
            for r in range(0, n4, 4):
                x0, x1, x2, x3 = x[r, k], x[r + 1, k], x[r + 2, k], x[r + 3, k]
                for o in range(d_out):
                    dw[k, o] = (dw[k, o] + x0 * dy[r, o] + x1 * dy[r + 1, o]
                                + x2 * dy[r + 2, o] + x3 * dy[r + 3, o])
            for r in range(n4, n):
                xv = x[r, k]
                for o in range(d_out):
                    dw[k, o] += xv * dy[r, o]


@kernel(fastmath={"contract", "reassoc"})
def _grad_x(dy, w, dx):
    """dx[n, k] = dot(dy[n, :], w[k, :]), one task per 64 columns of dx."""
    n, d_out = dy.shape
    d_in = w.shape[0]
    chunk = 64
    for blk in prange((d_in + chunk - 1) // chunk):
        for k in range(blk * chunk, min(blk * chunk + chunk, d_in)):
            for r in range(n):
                s = F0
                for o in range(d_out):
                    s += dy[r, o] * w[k, o]
                dx[r, k] = s


@njit(**OPTS)
def _grad_b(dy, db):
    n, d_out = dy.shape
    for o in range(d_out):
        db[o] = F0
    for r in range(n):
        for o in range(d_out):
            db[o] += dy[r, o]


def dense_forward(x, w, b, out=None):
    """y = x @ w + b: x (N, IN), w (IN, OUT), b (OUT,) -> y (N, OUT), overwritten."""
    op = "dense_forward"
    _validate.dense_check(op, x, w)
    _validate.check_bias(op, b, w.shape[1], x.dtype)
    check_float32(op, "x", x)              # w, b: x's dtype, checked above
    x, w, b = contiguous(x), contiguous(w), contiguous(b)
    t = Target(op, "out", out, (x.shape[0], w.shape[1]), x.dtype)
    _forward(x.shape[0] * w.size, x, w, b, t.buf)
    return t.result()


def dense_backward(x, w, dy, need_dx=True, out=None):
    """Returns (dx = dy @ w.T or None, dw = x.T @ dy, db = sum_n dy), each overwritten.

    dy (N, OUT). need_dx=False skips dx (and ignores out[0]).
    out=(dx or None, dw or None, db or None).
    """
    op = "dense_backward"
    _validate.dense_check(op, x, w)
    _validate.check_dy(op, dy, (x.shape[0], w.shape[1]), x.dtype)
    check_float32(op, "x", x)              # w, dy: x's dtype, checked above
    o_dx, o_dw, o_db = _validate.out_tuple(op, out, 3)
    x, w, dy = contiguous(x), contiguous(w), contiguous(dy)
    work = x.shape[0] * w.size
    tdw = Target(op, "out[1]", o_dw, w.shape, x.dtype)
    tdb = Target(op, "out[2]", o_db, (w.shape[1],), x.dtype)
    tdx = Target(op, "out[0]", o_dx, x.shape, x.dtype) if need_dx else None
    _grad_w(work, x, dy, tdw.buf)
    _grad_b(dy, tdb.buf)
    if need_dx:
        _grad_x(work, dy, w, tdx.buf)
    return (tdx.result() if need_dx else None), tdw.result(), tdb.result()
