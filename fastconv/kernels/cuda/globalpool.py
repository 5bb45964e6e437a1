"""Global 2-D pooling (Keras GlobalAveragePooling2D, GlobalMaxPooling2D) on the GPU,
NHWC: x (N, H, W, C) float32 -> y (N, C) float32.

Same names, arguments, errors and out= convention as
fastconv/kernels/reference/globalpool.py and cpu/globalpool.py:
  mean:  y[n, c] = (sum over the H * W pixels of x[n, :, :, c]) / (H * W);
  max:   y[n, c] = max over the pixels, argmax[n, c] (int32) the flat index h * W + w of
         its first occurrence (a later pixel wins only if strictly greater; a NaN at
         pixel 0 gives (NaN, 0), a later NaN never wins: the reference's running
         `x > best` rule, exactly);
  backward: dx = dy / (H * W) at every pixel; dy at the argmax pixel, 0 elsewhere.
  Every element of dx is written (no separate zeroing pass, no atomics).

Forward: one block per (channel tile, image), blocks of _launch.GPOOL threads shaped
(tc, tp): tc = min(_launch.GPOOL_C, C rounded up to a power of two) channels fastest
(threadIdx.x), tp = GPOOL / tc pixel lanes. Lane r reads pixels r, r + tp, ... of its
channel, so a warp reads 32 consecutive floats (32 channels of one pixel, or tp-lane
groups of consecutive pixels when C < 32): coalesced. Each lane keeps its partial in
a register; the tp partials meet in a shared-memory tree, in a fixed order: the sum is
bitwise the same run to run (it depends on (tc, tp), fixed by C and the launch size,
not on the batch or the scheduling). It is not the cpu's row-major order (float32 sums
in another order differ in the last bits; both are within rtol 1e-5 of the float64
reference at these sizes). The max's tree keeps the smallest index among equal
maxima, so it equals the sequential rule whatever the order. Images beyond the grid's
65535 rows loop (gridDim.y stride, uniform per block, so the barriers are safe).

Backward: grid-stride elementwise over dx (consecutive threads on consecutive floats),
each thread reading its (n, c) entry of dy (and argmax): loads of dy hit the cache.

All index math is uint32 (operands below 2**31 elements, check_int32_indexable;
unsigned indices skip Numba's negative-index wrap-around).
"""
import numpy as np
from numba import cuda, float32, int32, uint32

from .. import _validate
from .._globalpool_checks import check_argmax, check_grad, check_x
from . import _launch
from ._launch import GPOOL_MAX
from ._mem import (blocks_for, check_float32, check_int32_indexable, checkable, device_in,
                   finish, flat, is_device_array, out_buffer, out_buffers)
from ._spec import KernelSpec

_F1 = float32[::1]
_I1 = int32[::1]


@cuda.jit
def gavg_fwd(x, y, n, hw, c):
    """y (n * c,) = the mean over the hw pixels of x (n * hw * c,) viewed (n, hw, c).
    Block (tc, tp), tc * tp <= GPOOL_MAX and tp a power of two; grid (ceil(c / tc), <= n)."""
    sh = cuda.shared.array(GPOOL_MAX, float32)
    tx = uint32(cuda.threadIdx.x)
    ty = uint32(cuda.threadIdx.y)
    tc = uint32(cuda.blockDim.x)
    tp = uint32(cuda.blockDim.y)
    ch = uint32(cuda.blockIdx.x * tc + tx)
    active = ch < c
    slot = uint32(ty * tc + tx)
    scale = float32(hw)
    b = uint32(cuda.blockIdx.y)
    while b < n:                                   # block-uniform: the barriers are safe
        s = float32(0.0)
        if active:
            base = uint32(b * hw * c + ch)
            p = ty
            while p < hw:
                s += x[uint32(base + p * c)]
                p = uint32(p + tp)
        sh[slot] = s
        cuda.syncthreads()
        half = uint32(tp // 2)
        while half > 0:                            # a fixed-order tree over the lanes
            if ty < half:
                sh[slot] += sh[uint32(slot + half * tc)]
            cuda.syncthreads()
            half = uint32(half // 2)
        if ty == 0 and active:
            y[uint32(b * c + ch)] = sh[tx] / scale
        cuda.syncthreads()                         # sh[tx] read before the next image
        b = uint32(b + cuda.gridDim.y)


@cuda.jit
def gmax_fwd(x, y, arg, n, hw, c):
    """(y, arg) (n * c,): the max over the hw pixels of x (n * hw * c,) viewed (n, hw, c)
    and the index of its first occurrence (the reference's rule, NaN included). Launched
    as gavg_fwd."""
    shv = cuda.shared.array(GPOOL_MAX, float32)
    sha = cuda.shared.array(GPOOL_MAX, int32)
    tx = uint32(cuda.threadIdx.x)
    ty = uint32(cuda.threadIdx.y)
    tc = uint32(cuda.blockDim.x)
    tp = uint32(cuda.blockDim.y)
    ch = uint32(cuda.blockIdx.x * tc + tx)
    active = ch < c
    slot = uint32(ty * tc + tx)
    b = uint32(cuda.blockIdx.y)
    while b < n:
        best = float32(-np.inf)
        where = int32(-1)                          # -1: this lane has no candidate yet
        base = uint32(b * hw * c + ch)
        if active:
            p = ty
            while p < hw:
                v = x[uint32(base + p * c)]
                # strictly greater wins; a lane's first non-NaN value is its first candidate
                if v > best or (where < 0 and v == v):
                    best = v
                    where = int32(p)
                p = uint32(p + tp)
        shv[slot] = best
        sha[slot] = where
        cuda.syncthreads()
        half = uint32(tp // 2)
        while half > 0:
            if ty < half:
                other = uint32(slot + half * tc)
                v = shv[other]
                a = sha[other]
                cur = shv[slot]
                ca = sha[slot]
                # the larger value, the smaller index among equal ones: order-independent
                if a >= 0 and (ca < 0 or v > cur or (v == cur and a < ca)):
                    shv[slot] = v
                    sha[slot] = a
            cuda.syncthreads()
            half = uint32(half // 2)
        if ty == 0 and active:
            first = x[base]
            out = uint32(b * c + ch)
            if first != first:                     # NaN at pixel 0: nothing is greater
                y[out] = first
                arg[out] = int32(0)
            else:                                  # lane 0 holds pixel 0: a candidate exists
                y[out] = shv[tx]
                arg[out] = sha[tx]
        cuda.syncthreads()
        b = uint32(b + cuda.gridDim.y)


@cuda.jit
def gavg_bwd(dy, dx, hwc, c, scale):
    """dx (n * hwc,) viewed (n, hw, c): dx[b, p, ch] = dy[b, ch] / scale; dy (n * c,)."""
    i = uint32(cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x)
    step = uint32(cuda.gridDim.x * cuda.blockDim.x)
    size = uint32(dx.size)
    while i < size:
        b = uint32(i // hwc)
        dx[i] = dy[uint32(b * c + i % c)] / scale
        i = uint32(i + step)


@cuda.jit
def gmax_bwd(dy, arg, dx, hw, c):
    """dx (n * hw * c,) viewed (n, hw, c): dy[b, ch] where arg[b, ch] == p, else 0; dy, arg
    (n * c,). An arg outside [0, hw) matches no pixel (that column of dx stays 0)."""
    i = uint32(cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x)
    step = uint32(cuda.gridDim.x * cuda.blockDim.x)
    size = uint32(dx.size)
    while i < size:
        t = uint32(i // c)
        b = uint32(t // hw)
        k = uint32(b * c + (i - t * c))
        dx[i] = dy[k] if arg[k] == int32(t - b * hw) else float32(0.0)
        i = uint32(i + step)


_U3 = (uint32, uint32, uint32)
KERNELS = [
    KernelSpec("gavg_fwd", gavg_fwd, (_F1, _F1) + _U3, _launch.GPOOL),
    KernelSpec("gmax_fwd", gmax_fwd, (_F1, _F1, _I1) + _U3, _launch.GPOOL),
    KernelSpec("gavg_bwd", gavg_bwd, (_F1, _F1, uint32, uint32, float32), _launch.ELEMENTWISE),
    KernelSpec("gmax_bwd", gmax_bwd, (_F1, _I1, _F1, uint32, uint32), _launch.ELEMENTWISE),
]


def block_shape(c):
    """(tc, tp) of the forward kernels for C channels: tc the smallest power of two >= C,
    capped at _launch.GPOOL_C; tp = GPOOL // tc pixel lanes (a power of two)."""
    threads = _launch.GPOOL
    if threads > GPOOL_MAX or threads & (threads - 1):
        raise ValueError(f"_launch.GPOOL must be a power of two <= {GPOOL_MAX}, got {threads}")
    tc = 1
    while tc < min(int(c), _launch.GPOOL_C, threads):
        tc *= 2
    return tc, threads // tc


def _launch_fwd(kernel, x, n, hw, c, *outs):
    tc, tp = block_shape(c)
    grid = (-(-c // tc), max(1, min(n, _launch.MAX_BLOCKS)))
    kernel[grid, (tc, tp)](flat(x), *(flat(o) for o in outs), np.uint32(n), np.uint32(hw),
                           np.uint32(c))


def _launch_bwd(kernel, size, *args):
    threads = _launch.ELEMENTWISE
    kernel[blocks_for(size, threads, _launch.MAX_BLOCKS), threads](*args)


def _check_x(op, x):
    check_x(op, checkable(x))
    check_float32(op, "x", x)
    check_int32_indexable(op, x.shape)
    return tuple(int(s) for s in x.shape)


def global_avgpool2d_forward(x, out=None):
    """y (N, C) float32 = mean over H, W of x (N, H, W, C) float32; out= a (N, C) buffer."""
    op = "global_avgpool2d_forward"
    n, h, w, c = _check_x(op, x)
    y, host = out_buffer(op, "out", out, (n, c))
    if y.size:
        _launch_fwd(gavg_fwd, device_in(op, "x", x), n, h * w, c, y)
    return finish(y, host)


def global_avgpool2d_backward(dy, input_shape, out=None):
    """dx (input_shape) float32 = dy (N, C) / (H * W) at every pixel, written whole."""
    op = "global_avgpool2d_backward"
    n, h, w, c = check_grad(op, checkable(dy), input_shape)
    check_float32(op, "dy", dy)
    check_int32_indexable(op, (n, h, w, c))
    dx, host = out_buffer(op, "out", out, (n, h, w, c))
    if dx.size:
        _launch_bwd(gavg_bwd, dx.size, flat(device_in(op, "dy", dy)), flat(dx),
                    np.uint32(h * w * c), np.uint32(c), np.float32(h * w))
    return finish(dx, host)


def global_maxpool2d_forward(x, out=None):
    """(y, argmax) (N, C): the max over H, W of x (N, H, W, C) float32 and the flat index
    h * W + w of its first occurrence (int32). out=(y or None, argmax or None)."""
    op = "global_maxpool2d_forward"
    n, h, w, c = _check_x(op, x)
    o_y, o_arg = _validate.out_tuple(op, out, 2)
    (y, host_y), (arg, host_arg) = out_buffers(
        op, ("out[0]", o_y, (n, c), np.float32), ("out[1]", o_arg, (n, c), np.int32))
    if y.size:
        _launch_fwd(gmax_fwd, device_in(op, "x", x), n, h * w, c, y, arg)
    return finish(y, host_y), finish(arg, host_arg)


def global_maxpool2d_backward(dy, argmax, input_shape, out=None):
    """dx (input_shape) float32: dy (N, C) at the pixel argmax (N, C, int32) names, zeros
    elsewhere; written whole. A host argmax is range-checked like the reference's; a
    device one is not (that would copy it back): an entry outside [0, H*W) leaves its
    column of dx zero."""
    op = "global_maxpool2d_backward"
    n, h, w, c = check_grad(op, checkable(dy), input_shape)
    check_argmax(op, dy, argmax, is_array=is_device_array)
    check_float32(op, "dy", dy)
    check_int32_indexable(op, (n, h, w, c))
    if isinstance(argmax, np.ndarray):
        _validate.check_argmax_range(op, argmax, h * w)
    dx, host = out_buffer(op, "out", out, (n, h, w, c))
    if dx.size:
        _launch_bwd(gmax_bwd, dx.size, flat(device_in(op, "dy", dy)),
                    flat(device_in(op, "argmax", argmax, np.int32)), flat(dx),
                    np.uint32(h * w), np.uint32(c))
    return finish(dx, host)
