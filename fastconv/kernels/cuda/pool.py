"""2-D max and average pooling on the GPU (Keras MaxPooling2D, AveragePooling2D), NHWC.

Max pooling comes with the reference's argmax; average pooling is the mean over
each window's real pixels (padding not counted, Keras's 'same').

argmax convention (fastconv/kernels/reference/pool.py): an int32 array shaped
like y holding the flat spatial index h * W + w of the winning pixel of the
unpadded input; the winner is the first maximum in row-major window order and
padding never wins.

Forward: one thread per output (n, oh, ow, c), channels fastest, so a warp
reads 32 consecutive channels of one pixel (coalesced for C >= 32) and writes
32 consecutive outputs. Grid-stride over the flattened output.

Backward: dx is zeroed, then one thread per output adds its dy into the
winning pixel with a float atomic add (the backward op is not told the pool
geometry, only argmax, so a gather per input pixel cannot find its windows).
With stride >= pool (the seed model) every pixel receives at most one
contribution, and with two the sum is still exact in any order (float
addition is commutative); only overlapping windows that route three or more
outputs to one pixel can differ from run to run, in the last bits. The same
kernel, with a mask (y > 0), forms the fused conv+relu+pool backward's
conv-grid gradient (fused.py calls scatter_grad).

Average pooling: forward one thread per output (n, oh, ow, c), channels fastest,
summing the window's real pixels and dividing by their count. Backward gathers:
one thread per input element (n, h, w, c), channels fastest, summing dy / count
over exactly the windows that cover its pixel (closed ranges of output rows and
columns computed from h, w): every element of dx is written once, no zeroing
pass, no atomics, the same bits run to run. Flat arrays and uint32 index math
(sizes below 2**31, check_int32_indexable).

Every kernel here that visits a window gets its real rows and columns from _real,
which keeps the window's start in padded coordinates (r * sh, never negative), so
nothing needs a signed index.
"""
import numpy as np
from numba import cuda, float32, int32, uint32

from .. import _validate
from . import _launch
from ._mem import (blocks_for, check_float32, check_int32_indexable, checkable, device_in,
                   finish, flat, is_device_array, out_buffer, out_buffers)
from ._spec import KernelSpec
from .activations import zero_launches

_F4 = float32[:, :, :, ::1]
_I4 = int32[:, :, :, ::1]


@cuda.jit(device=True, inline="always")
def _real(o, s, p, k, n):
    """[start, end) in x: the real pixels, along one axis of n pixels, of output o's window
    (size k, stride s, padding p before the first pixel), uint32. The window starts at
    o * s in padded coordinates, so nothing is negative; empty when start >= end."""
    o0 = uint32(o * s)
    return uint32(max(o0, p) - p), uint32(min(uint32(o0 + k), uint32(n + p)) - p)


@cuda.jit
def maxpool_fwd(x, y, arg, ph, pw, sh, sw, pt, pl):
    """y, arg (N, OH, OW, C) from x (N, H, W, C); window (ph, pw) at (oh*sh - pt, ow*sw - pl)."""
    h = x.shape[1]
    w = x.shape[2]
    c = x.shape[3]
    oh = y.shape[1]
    ow = y.shape[2]
    for i in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        ch = i % c
        t = i // c
        q = t % ow
        t = t // ow
        r = t % oh
        n = t // oh
        rs, re = _real(r, sh, pt, ph, h)              # the window's real rows [rs, re)
        qs, qe = _real(q, sw, pl, pw, w)
        best = np.float32(-np.inf)
        where = int32(-1)
        hh = rs
        while hh < re:
            ww = qs
            while ww < qe:
                val = x[n, hh, ww, ch]
                if where < 0 or val > best:           # first maximum wins ties
                    best = val
                    where = int32(hh * uint32(w) + ww)
                ww = uint32(ww + 1)
            hh = uint32(hh + 1)
        y[n, r, q, ch] = best
        arg[n, r, q, ch] = where


@cuda.jit
def maxpool_bwd(dy, arg, mask, masked, dx):
    """dx (N, H, W, C), zeroed by the caller, += dy (N, OH, OW, C) at each output's argmax;
    where masked != 0, only for outputs whose mask (dy's shape) is > 0.

    masked is one scalar for the whole launch: without a mask every thread takes the same
    branch and mask (any array of dy's shape) is never read, so the plain max-pool
    backward pays no load for it. Float atomics (see the module docstring). Indices
    outside [0, H*W) are skipped, so a corrupt argmax cannot write outside dx."""
    hw = dx.shape[1] * dx.shape[2]
    w = dx.shape[2]
    c = dy.shape[3]
    oh = dy.shape[1]
    ow = dy.shape[2]
    for i in range(cuda.grid(1), dy.size, cuda.gridsize(1)):
        ch = i % c
        t = i // c
        q = t % ow
        t = t // ow
        r = t % oh
        n = t // oh
        k = arg[n, r, q, ch]
        if k >= 0 and k < hw and (masked == 0 or mask[n, r, q, ch] > float32(0.0)):
            cuda.atomic.add(dx, (n, k // w, k % w, ch), dy[n, r, q, ch])


@cuda.jit
def avgpool_fwd(x, y, h, w, c, oh, ow, ph, pw, sh, sw, pt, pl):
    """y (N*OH*OW*C,) = the mean over the real pixels of each window of x (N*H*W*C,);
    window (ph, pw) at padded (oh*sh, ow*sw), i.e. (oh*sh - pt, ow*sw - pl) in x."""
    i = uint32(cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x)
    step = uint32(cuda.gridDim.x * cuda.blockDim.x)
    size = uint32(y.size)
    while i < size:
        t = uint32(i // c)
        ch = uint32(i - t * c)
        u = uint32(t // ow)
        q = uint32(t - u * ow)
        b = uint32(u // oh)
        r = uint32(u - b * oh)
        rs, re = _real(r, sh, pt, ph, h)              # the window's real rows [rs, re)
        qs, qe = _real(q, sw, pl, pw, w)
        s = float32(0.0)
        a = rs
        while a < re:
            base = uint32((b * h + a) * w)
            j = qs
            while j < qe:
                s += x[uint32((base + j) * c + ch)]
                j = uint32(j + 1)
            a = uint32(a + 1)
        y[i] = s / float32(max(uint32((re - rs) * (qe - qs)), uint32(1)))
        i = uint32(i + step)


@cuda.jit
def avgpool_bwd(dy, dx, h, w, c, oh, ow, ph, pw, sh, sw, pt, pl):
    """dx (N*H*W*C,), written whole: dx[n, i, j, ch] = the sum over the windows (r, q)
    covering (i, j) of dy[n, r, q, ch] / (the window's real pixel count); dy (N*OH*OW*C,)."""
    k = uint32(cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x)
    step = uint32(cuda.gridDim.x * cuda.blockDim.x)
    size = uint32(dx.size)
    while k < size:
        t = uint32(k // c)
        ch = uint32(k - t * c)
        u = uint32(t // w)
        j = uint32(t - u * w)
        b = uint32(u // h)
        i = uint32(u - b * h)
        ip = uint32(i + pt)                           # the pixel in padded coordinates
        jp = uint32(j + pl)
        # windows r with r*sh <= ip < r*sh + ph: r in [ceil((ip + 1 - ph) / sh), ip / sh]
        r_lo = uint32(0) if ip + 1 <= ph else uint32((ip + 1 - ph + sh - 1) // sh)
        r_hi = uint32(min(uint32(ip // sh), uint32(oh - 1)))
        q_lo = uint32(0) if jp + 1 <= pw else uint32((jp + 1 - pw + sw - 1) // sw)
        q_hi = uint32(min(uint32(jp // sw), uint32(ow - 1)))
        s = float32(0.0)
        r = r_lo
        while r <= r_hi:
            rs, re = _real(r, sh, pt, ph, h)
            rows = uint32(re - rs)
            base = uint32((b * oh + r) * ow)
            q = q_lo
            while q <= q_hi:
                qs, qe = _real(q, sw, pl, pw, w)
                cols = uint32(qe - qs)
                s += dy[uint32((base + q) * c + ch)] / float32(max(uint32(rows * cols),
                                                                   uint32(1)))
                q = uint32(q + 1)
            r = uint32(r + 1)
        dx[k] = s
        k = uint32(k + step)


_F1 = float32[::1]
_AVG_SIG = (_F1, _F1) + (uint32,) * 11

KERNELS = [
    KernelSpec("maxpool_fwd", maxpool_fwd, (_F4, _F4, _I4) + (int32,) * 6, _launch.POOL),
    KernelSpec("maxpool_bwd", maxpool_bwd, (_F4, _I4, _F4, int32, _F4), _launch.POOL),
    KernelSpec("avgpool_fwd", avgpool_fwd, _AVG_SIG, _launch.POOL),
    KernelSpec("avgpool_bwd", avgpool_bwd, _AVG_SIG, _launch.POOL),
]


def _launch_over(kernel, n, *args):
    threads = _launch.POOL
    kernel[blocks_for(n, threads, _launch.MAX_BLOCKS), threads](*args)


def scatter_grad_launches(dy, argmax, dx, mask=None):
    """The launches of scatter_grad (not launched): [(kernel, (grid, block), arguments)]."""
    launches = zero_launches(dx)
    if dy.size:
        masked = mask is not None
        threads = _launch.POOL
        launches.append((maxpool_bwd, (blocks_for(dy.size, threads, _launch.MAX_BLOCKS), threads),
                         (dy, argmax, mask if masked else dy, np.int32(masked), dx)))
    return launches


def scatter_grad(dy, argmax, dx, mask=None):
    """dx zeroed, then each dy added at its argmax (only where mask > 0 when a mask is
    given): the max-pool backward, and with mask=y the fused backward's conv-grid
    gradient. Device arrays: dy, argmax (int32) and mask of one shape (N, OH, OW, C),
    dx (N, H, W, C)."""
    _launch.run(scatter_grad_launches(dy, argmax, dx, mask))


def maxpool2d_forward(x, pool=2, stride=None, padding="valid", out=None):
    """y[n, oh, ow, c] = max over the pool window, and its argmax (the reference's rule).

    x (N, H, W, C) float32 device array; pool and stride int or pair (stride defaults to
    pool); padding 'valid' or 'same'. Returns (y (N, OH, OW, C) float32, argmax
    (N, OH, OW, C) int32), written into out=(y, argmax) buffers when given.
    """
    op = "maxpool2d_forward"
    check_float32(op, "x", x, 4)
    (ph, pw), (sh, sw), oh, ow, pt, pl = _validate.pool2d_geometry(
        op, checkable(x), pool, stride, padding)
    out_y, out_arg = _validate.out_tuple(op, out, 2)
    shape = (x.shape[0], oh, ow, x.shape[3])
    (y, host_y), (arg, host_arg) = out_buffers(
        op, ("out[0]", out_y, shape, np.float32), ("out[1]", out_arg, shape, np.int32))
    x = device_in(op, "x", x)
    _launch_over(maxpool_fwd, y.size, x, y, arg, *(np.int32(s) for s in (ph, pw, sh, sw, pt, pl)))
    return finish(y, host_y), finish(arg, host_arg)


def maxpool2d_backward(dy, argmax, x_shape, out=None):
    """dx (x_shape) with dx[n, h, w, c] = the sum of dy over the outputs whose argmax is (h, w).

    dy (N, OH, OW, C) float32 and argmax (N, OH, OW, C) int32 from maxpool2d_forward;
    writes out (x_shape, float32; overwritten, not accumulated into) or a new array.
    A host argmax is range-checked like the reference's; a device one is not (that
    would copy it back), its out-of-range entries are skipped.
    """
    op = "maxpool2d_backward"
    check_float32(op, "dy", dy, 4)
    x_shape = _validate.check_pool_grad(op, dy, argmax, x_shape, is_array=is_device_array)
    n, h, w, c = x_shape
    if isinstance(argmax, np.ndarray):
        _validate.check_argmax_range(op, argmax, h * w)
    dx, host = out_buffer(op, "out", out, x_shape, np.float32)
    dy = device_in(op, "dy", dy)
    argmax = device_in(op, "argmax", argmax, np.int32)
    scatter_grad(dy, argmax, dx)
    return finish(dx, host)


def _avg_args(x_shape, y_shape, ph, pw, sh, sw, pt, pl):
    _, h, w, c = x_shape
    return tuple(np.uint32(v) for v in (h, w, c, y_shape[1], y_shape[2], ph, pw, sh, sw, pt, pl))


def avgpool2d_forward(x, pool=2, stride=None, padding="valid", out=None):
    """y[n, oh, ow, c] = the mean over the real pixels of the pool window (padding not
    counted). x (N, H, W, C) float32 device array; pool and stride int or pair (stride
    defaults to pool); padding 'valid' or 'same'. y (N, OH, OW, C) float32 is written
    whole, into out= when given.
    """
    op = "avgpool2d_forward"
    check_float32(op, "x", x, 4)
    (ph, pw), (sh, sw), oh, ow, pt, pl = _validate.pool2d_geometry(
        op, checkable(x), pool, stride, padding)
    shape = (x.shape[0], oh, ow, x.shape[3])
    check_int32_indexable(op, tuple(x.shape), shape)
    y, host = out_buffer(op, "out", out, shape, np.float32)
    x = device_in(op, "x", x)
    _launch_over(avgpool_fwd, y.size, flat(x), flat(y),
                 *_avg_args(x.shape, shape, ph, pw, sh, sw, pt, pl))
    return finish(y, host)


def avgpool2d_backward(dy, x_shape, pool=2, stride=None, padding="valid", out=None):
    """dx (x_shape) float32: each window's dy / (its real pixel count) summed into every
    real pixel of the window, gathered per dx element (written whole, no atomics).
    dy (N, OH, OW, C) float32, avgpool2d_forward's shape for x_shape under the same
    pool, stride and padding.
    """
    op = "avgpool2d_backward"
    check_float32(op, "dy", dy, 4)
    x_shape, (ph, pw), (sh, sw), oh, ow, pt, pl = _validate.avgpool2d_grad_geometry(
        op, checkable(dy), x_shape, pool, stride, padding)
    check_int32_indexable(op, x_shape, tuple(dy.shape))
    dx, host = out_buffer(op, "out", out, x_shape, np.float32)
    dy = device_in(op, "dy", dy)
    _launch_over(avgpool_bwd, dx.size, flat(dy), flat(dx),
                 *_avg_args(x_shape, dy.shape, ph, pw, sh, sw, pt, pl))
    return finish(dx, host)
