"""2-D max and average pooling, NHWC, Numba CPU.

Same names, arguments, errors and out= convention as
fastconv/kernels/reference/pool.py, and the same argmax: an int32 array shaped
like y with the flat spatial index h * W + w of the winner in the unpadded x,
the first maximum in row-major window order (a later pixel wins only if
strictly greater; padding never wins).

Loop order: one parallel task per output row (n, oh); the channel loop is
innermost and contiguous, and the running max/argmax are updated with selects
rather than branches so LLVM vectorizes it over channels.

Average pooling (the reference's rule: the mean over each window's real pixels,
padding not counted). Forward: one task per output row, channels innermost.
Backward gathers: one task per input row (n, h), and each dx pixel sums, channels
innermost, the dy / count of exactly the windows that cover it (their output
rows and columns are closed ranges computed from h, w), so every element of dx
is written once, by one thread: no zeroing pass, no races, the same bits at any
thread count.
"""
import numpy as np
from numba import njit, prange

from .. import _validate
from ._common import F32, OPTS, Target, check_float32, contiguous, kernel

NEG_INF = np.float32(-np.inf)
F0 = np.float32(0.0)


@njit(inline="always", **OPTS)
def _real(o, s, p, k, n):
    """[start, end): the real pixels, along one axis of n pixels, of output o's window
    (size k, stride s, padding p before the first pixel); empty when start >= end."""
    t0 = o * s - p
    return max(t0, 0), min(t0 + k, n)


@kernel
def _pool_fwd(x, ph, pw, sh, sw, pt, pl, y, arg):
    n, h, w, c = x.shape
    oh, ow = y.shape[1], y.shape[2]
    for task in prange(n * oh):
        b = task // oh
        r = task - b * oh
        rs, re = _real(r, sh, pt, ph, h)            # the window's real rows
        for q in range(ow):
            qs, qe = _real(q, sw, pl, pw, w)
            if rs >= re or qs >= qe:                 # no real pixel: as the reference
                for ch in range(c):
                    y[b, r, q, ch] = NEG_INF
                    arg[b, r, q, ch] = -1
                continue
            first = np.int32(rs * w + qs)
            for ch in range(c):                      # the first real pixel starts the max
                y[b, r, q, ch] = x[b, rs, qs, ch]
                arg[b, r, q, ch] = first
            for i in range(rs, re):
                for j in range(qs, qe):
                    if i == rs and j == qs:
                        continue
                    idx = np.int32(i * w + j)
                    for ch in range(c):
                        val = x[b, i, j, ch]
                        cur = y[b, r, q, ch]
                        better = val > cur
                        y[b, r, q, ch] = val if better else cur
                        arg[b, r, q, ch] = idx if better else arg[b, r, q, ch]


@kernel
def _pool_bwd(dy, arg, dx):
    """dx (N, H*W, C) = 0, then += dy at each argmax. One task per image: windows
    may overlap (stride < pool), so only whole images are race-free; each pixel
    sums its contributions in row-major output order, whatever the thread count."""
    n, oh, ow, c = dy.shape
    hw = dx.shape[1]
    bad = 0
    for b in prange(n):
        for p in range(hw):
            for ch in range(c):
                dx[b, p, ch] = F0
        for r in range(oh):
            for q in range(ow):
                for ch in range(c):
                    k = arg[b, r, q, ch]
                    if k < 0 or k >= hw:
                        bad += 1
                    else:
                        dx[b, k, ch] += dy[b, r, q, ch]
    return bad


@kernel
def _avg_fwd(x, ph, pw, sh, sw, pt, pl, y):
    n, h, w, c = x.shape
    oh, ow = y.shape[1], y.shape[2]
    for task in prange(n * oh):
        b = task // oh
        r = task - b * oh
        rs, re = _real(r, sh, pt, ph, h)            # the window's real rows
        for q in range(ow):
            qs, qe = _real(q, sw, pl, pw, w)
            count = F32(max((re - rs) * (qe - qs), 1))
            for ch in range(c):
                y[b, r, q, ch] = F0
            for i in range(rs, re):
                for j in range(qs, qe):
                    for ch in range(c):
                        y[b, r, q, ch] += x[b, i, j, ch]
            for ch in range(c):
                y[b, r, q, ch] = y[b, r, q, ch] / count


@kernel
def _avg_bwd(dy, ph, pw, sh, sw, pt, pl, dx):
    """dx (N, H, W, C), written whole: dx[b, i, j] = sum over the windows (r, q) that
    cover (i, j) of dy[b, r, q] / (the window's real pixel count)."""
    n, h, w, c = dx.shape
    oh, ow = dy.shape[1], dy.shape[2]
    for task in prange(n * h):
        b = task // h
        i = task - b * h
        t = i + pt - ph + 1                          # windows r with r*sh - pt <= i < ... + ph
        r_lo = 0 if t <= 0 else (t + sh - 1) // sh
        r_hi = min((i + pt) // sh, oh - 1)
        for j in range(w):
            u = j + pl - pw + 1
            q_lo = 0 if u <= 0 else (u + sw - 1) // sw
            q_hi = min((j + pl) // sw, ow - 1)
            for ch in range(c):
                dx[b, i, j, ch] = F0
            for r in range(r_lo, r_hi + 1):
                rs, re = _real(r, sh, pt, ph, h)
                for q in range(q_lo, q_hi + 1):
                    qs, qe = _real(q, sw, pl, pw, w)
                    count = F32(max((re - rs) * (qe - qs), 1))
                    for ch in range(c):
                        dx[b, i, j, ch] += dy[b, r, q, ch] / count


def maxpool2d_forward(x, pool=2, stride=None, padding="valid", out=None):
    """(y, argmax) = max over each pool window of x (N, H, W, C) float32.

    pool and stride int or pair (stride defaults to pool); padding 'valid'
    (floor) or 'same' (ceil). y (N, OH, OW, C) float32 and argmax (N, OH, OW, C)
    int32 are written whole. out=(y or None, argmax or None).
    """
    op = "maxpool2d_forward"
    (ph, pw), (sh, sw), oh, ow, pt, pl = _validate.pool2d_geometry(op, x, pool, stride, padding)
    check_float32(op, "x", x)
    o_y, o_arg = _validate.out_tuple(op, out, 2)
    x = contiguous(x)
    shape = (x.shape[0], oh, ow, x.shape[3])
    ty = Target(op, "out[0]", o_y, shape, x.dtype)
    ta = Target(op, "out[1]", o_arg, shape, np.int32)
    _pool_fwd(x.size, x, ph, pw, sh, sw, pt, pl, ty.buf, ta.buf)
    return ty.result(), ta.result()


def maxpool2d_backward(dy, argmax, x_shape, out=None):
    """dx (x_shape) with dx[n, h, w, c] = sum of dy over the outputs whose argmax is (h, w).

    dy (N, OH, OW, C) float32, argmax int32 of dy's shape (maxpool2d_forward's).
    dx is overwritten whole (zeros where no window's max was).
    """
    op = "maxpool2d_backward"
    _validate.check_float_array(op, "dy", dy, 4)
    x_shape = _validate.check_pool_grad(op, dy, argmax, x_shape)
    n, h, w, c = x_shape
    check_float32(op, "dy", dy)
    dy, argmax = contiguous(dy), contiguous(argmax)
    t = Target(op, "out", out, x_shape, dy.dtype)
    bad = _pool_bwd(t.buf.size, dy, argmax, t.buf.reshape(n, h * w, c))
    if bad:
        raise ValueError(f"{op}: argmax holds indices outside [0, {h * w})")
    return t.result()


def avgpool2d_forward(x, pool=2, stride=None, padding="valid", out=None):
    """y = the mean over each pool window's real pixels of x (N, H, W, C) float32.

    pool and stride int or pair (stride defaults to pool); padding 'valid' (floor)
    or 'same' (ceil; the padding is not counted). y (N, OH, OW, C) float32 is written
    whole (out= a buffer of that shape).
    """
    op = "avgpool2d_forward"
    (ph, pw), (sh, sw), oh, ow, pt, pl = _validate.pool2d_geometry(op, x, pool, stride, padding)
    check_float32(op, "x", x)
    x = contiguous(x)
    t = Target(op, "out", out, (x.shape[0], oh, ow, x.shape[3]), x.dtype)
    _avg_fwd(x.size, x, ph, pw, sh, sw, pt, pl, t.buf)
    return t.result()


def avgpool2d_backward(dy, x_shape, pool=2, stride=None, padding="valid", out=None):
    """dx (x_shape) float32: each window's dy / (its real pixel count) summed into every
    real pixel of the window. dy (N, OH, OW, C) float32, avgpool2d_forward's shape for
    x_shape under the same pool, stride, padding. dx is overwritten whole.
    """
    op = "avgpool2d_backward"
    _validate.check_float_array(op, "dy", dy, 4)
    x_shape, (ph, pw), (sh, sw), oh, ow, pt, pl = _validate.avgpool2d_grad_geometry(
        op, dy, x_shape, pool, stride, padding)
    check_float32(op, "dy", dy)
    dy = contiguous(dy)
    t = Target(op, "out", out, x_shape, dy.dtype)
    _avg_bwd(t.buf.size, dy, ph, pw, sh, sw, pt, pl, t.buf)
    return t.result()
