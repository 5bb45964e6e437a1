"""Global 2-D pooling (Keras GlobalAveragePooling2D, GlobalMaxPooling2D), NHWC,
Numba CPU: x (N, H, W, C) float32 -> y (N, C) float32.

Same names, arguments, errors and out= convention as
fastconv/kernels/reference/globalpool.py. The mean sums in row-major pixel order
(float32 accumulator, then / (H * W)); the max's argmax is the flat index
h * W + w of the first maximum (a later pixel wins only if strictly greater).

Loop order: one parallel task per image, so no sum is split across threads
(bitwise the same at any thread count); the channel loop is innermost and
contiguous, with selects instead of branches, so LLVM vectorizes it over C.
"""
import numpy as np
from numba import prange

from .. import _validate
from .._globalpool_checks import check_argmax, check_grad, check_x
from ._common import F32, Target, check_float32, contiguous, kernel


@kernel
def _avg_fwd(x, y):
    """y (N, C) = mean over p of x (N, H*W, C)."""
    n, hw, c = x.shape
    scale = F32(hw)
    for b in prange(n):
        for ch in range(c):
            y[b, ch] = F32(0.0)
        for p in range(hw):
            for ch in range(c):
                y[b, ch] += x[b, p, ch]
        for ch in range(c):
            y[b, ch] = y[b, ch] / scale


@kernel
def _avg_bwd(dy, dx):
    """dx (N, H*W, C) = dy (N, C) / (H*W) at every pixel."""
    n, hw, c = dx.shape
    scale = F32(hw)
    for b in prange(n):
        for p in range(hw):
            for ch in range(c):
                dx[b, p, ch] = dy[b, ch] / scale


@kernel
def _max_fwd(x, y, arg):
    """(y, arg) (N, C) = max and first argmax over p of x (N, H*W, C)."""
    n, hw, c = x.shape
    for b in prange(n):
        for ch in range(c):
            y[b, ch] = x[b, 0, ch]
            arg[b, ch] = np.int32(0)
        for p in range(1, hw):
            idx = np.int32(p)
            for ch in range(c):
                val = x[b, p, ch]
                cur = y[b, ch]
                better = val > cur
                y[b, ch] = val if better else cur
                arg[b, ch] = idx if better else arg[b, ch]


@kernel
def _max_bwd(dy, arg, dx):
    """dx (N, H*W, C) = 0, then dy at each argmax; returns how many indices were
    outside [0, H*W) (those are skipped; the caller raises)."""
    n, hw, c = dx.shape
    bad = 0
    for b in prange(n):
        for p in range(hw):
            for ch in range(c):
                dx[b, p, ch] = F32(0.0)
        for ch in range(c):
            k = arg[b, ch]
            if k < 0 or k >= hw:
                bad += 1
            else:
                dx[b, k, ch] = dy[b, ch]
    return bad


def global_avgpool2d_forward(x, out=None):
    """y (N, C) float32 = mean over H, W of x (N, H, W, C) float32; out= a (N, C) buffer."""
    op = "global_avgpool2d_forward"
    check_x(op, x)
    check_float32(op, "x", x)
    x = contiguous(x)
    n, h, w, c = x.shape
    t = Target(op, "out", out, (n, c), x.dtype)
    _avg_fwd(x.size, x.reshape(n, h * w, c), t.buf)
    return t.result()


def global_avgpool2d_backward(dy, input_shape, out=None):
    """dx (input_shape) float32 = dy (N, C) / (H * W) at every pixel, written whole."""
    op = "global_avgpool2d_backward"
    n, h, w, c = check_grad(op, dy, input_shape)
    check_float32(op, "dy", dy)
    dy = contiguous(dy)
    t = Target(op, "out", out, (n, h, w, c), dy.dtype)
    _avg_bwd(t.buf.size, dy, t.buf.reshape(n, h * w, c))
    return t.result()


def global_maxpool2d_forward(x, out=None):
    """(y, argmax) (N, C): the max over H, W of x (N, H, W, C) float32 and the flat
    index h * W + w of its first occurrence (int32). out=(y or None, argmax or None)."""
    op = "global_maxpool2d_forward"
    check_x(op, x)
    check_float32(op, "x", x)
    o_y, o_arg = _validate.out_tuple(op, out, 2)
    x = contiguous(x)
    n, h, w, c = x.shape
    ty = Target(op, "out[0]", o_y, (n, c), x.dtype)
    ta = Target(op, "out[1]", o_arg, (n, c), np.int32)
    _max_fwd(x.size, x.reshape(n, h * w, c), ty.buf, ta.buf)
    return ty.result(), ta.result()


def global_maxpool2d_backward(dy, argmax, input_shape, out=None):
    """dx (input_shape) float32: dy (N, C) at the pixel argmax (N, C, int32) names, zeros
    elsewhere; written whole."""
    op = "global_maxpool2d_backward"
    n, h, w, c = check_grad(op, dy, input_shape)
    check_argmax(op, dy, argmax)
    check_float32(op, "dy", dy)
    dy, argmax = contiguous(dy), contiguous(argmax)
    t = Target(op, "out", out, (n, h, w, c), dy.dtype)
    bad = _max_bwd(t.buf.size, dy, argmax, t.buf.reshape(n, h * w, c))
    if bad:
        raise ValueError(f"{op}: argmax holds indices outside [0, {h * w})")
    return t.result()
