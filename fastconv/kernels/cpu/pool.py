"""2-D max pooling, NHWC, Numba CPU.

Same names, arguments, errors and out= convention as
fastconv/kernels/reference/pool.py, and the same argmax: an int32 array shaped
like y with the flat spatial index h * W + w of the winner in the unpadded x,
the first maximum in row-major window order (a later pixel wins only if
strictly greater; padding never wins).

Loop order: one parallel task per output row (n, oh); the channel loop is
innermost and contiguous, and the running max/argmax are updated with selects
rather than branches so LLVM vectorizes it over channels.
"""
import numpy as np
from numba import prange

from .. import _validate
from ._common import Target, check_float32, contiguous, kernel

NEG_INF = np.float32(-np.inf)
F0 = np.float32(0.0)


@kernel
def _pool_fwd(x, ph, pw, sh, sw, pt, pl, y, arg):
    n, h, w, c = x.shape
    oh, ow = y.shape[1], y.shape[2]
    for task in prange(n * oh):
        b = task // oh
        r = task - b * oh
        r0 = r * sh - pt
        rs, re = max(r0, 0), min(r0 + ph, h)       # the window's real rows
        for q in range(ow):
            q0 = q * sw - pl
            qs, qe = max(q0, 0), min(q0 + pw, w)
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
