"""The merge ops of the Functional API (Keras Add, Concatenate), Numba CPU.

Same names, arguments, errors and out= convention as
fastconv/kernels/reference/merge.py. float32 only. add_forward sums the inputs
in their order, element by element (float32 accumulation: within rtol 1e-6 of
the reference's float64 sum for a few inputs); the same order at every thread
count, so results are bitwise equal at 1 and 2 threads. The concat ops copy
rows of the flattened (rows, C) view: each row's channel blocks are contiguous.
"""
from numba import prange

from .. import _validate
from ._common import Target, check_float32, contiguous, flat, kernel


@kernel
def _add_into(a, y):
    for i in prange(y.size):
        y[i] += a[i]


@kernel
def _add2(a, b, y):
    for i in prange(y.size):
        y[i] = a[i] + b[i]


@kernel
def _copy_channels(src, dst, c0):
    # src (rows, c) into dst[:, c0:c0 + c]; rows split over threads, a row's copy is contiguous
    rows, c = src.shape
    for r in prange(rows):
        for j in range(c):
            dst[r, c0 + j] = src[r, j]


@kernel
def _take_channels(src, dst, c0):
    # src[:, c0:c0 + c] into dst (rows, c)
    rows, c = dst.shape
    for r in prange(rows):
        for j in range(c):
            dst[r, j] = src[r, c0 + j]


def add_forward(xs, out=None):
    """y = xs[0] + xs[1] + ... for n >= 2 float32 arrays of one shape, summed in
    that order. Writes out= (xs[0]'s shape, float32) or a new array."""
    op = "add_forward"
    xs = _validate.check_merge_inputs(op, xs, same="shape")
    for k, x in enumerate(xs):
        check_float32(op, f"xs[{k}]", x)
    t = Target(op, "out", out, xs[0].shape)
    y = flat(t.buf)
    n = y.size
    _add2(n, flat(contiguous(xs[0])), flat(contiguous(xs[1])), y)
    for x in xs[2:]:
        _add_into(n, flat(contiguous(x)), y)
    return t.result()


def concat_forward(xs, out=None):
    """xs (n >= 2 float32 arrays (N, C_k) or (N, H, W, C_k), equal but for C_k)
    joined over the last axis in order. Writes out= ((..., sum C_k), float32) or
    a new array."""
    op = "concat_forward"
    xs = _validate.check_merge_inputs(op, xs, same="leading")
    for k, x in enumerate(xs):
        check_float32(op, f"xs[{k}]", x)
    total = sum(x.shape[-1] for x in xs)
    t = Target(op, "out", out, xs[0].shape[:-1] + (total,))
    y = t.buf.reshape(-1, total)
    c0 = 0
    for x in xs:
        c = x.shape[-1]
        _copy_channels(x.size, contiguous(x).reshape(-1, c), y, c0)
        c0 += c
    return t.result()


def concat_backward(dy, channels, out=None):
    """dy (..., sum(channels)) float32 split over its last axis: a tuple of
    len(channels) arrays (..., channels[k]), written into out= (a tuple of that
    many arrays or None) or new arrays."""
    op = "concat_backward"
    channels = _validate.check_concat_split(op, dy, channels)
    check_float32(op, "dy", dy)
    out = _validate.out_tuple(op, out, len(channels))
    lead = dy.shape[:-1]
    src = contiguous(dy).reshape(-1, dy.shape[-1])
    grads, c0 = [], 0
    for k, c in enumerate(channels):
        t = Target(op, f"out[{k}]", out[k], lead + (c,))
        _take_channels(src.shape[0] * c, src, t.buf.reshape(-1, c), c0)
        grads.append(t.result())
        c0 += c
    return tuple(grads)


def accumulate_grad(dst, src):
    """dst += src in place (float32 arrays of one shape); returns None. A dst that
    is not C-contiguous is summed in a staging copy and written back."""
    op = "accumulate_grad"
    _validate.check_accumulate(op, dst, src)
    check_float32(op, "dst", dst)
    buf = contiguous(dst)
    _add_into(dst.size, flat(contiguous(src)), flat(buf))
    if buf is not dst:
        dst[...] = buf
