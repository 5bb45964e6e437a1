"""Batch normalization over the last (channel) axis (Keras BatchNormalization,
axis=-1) on the GPU. Same names, arguments, errors and out= convention as
fastconv/kernels/reference/batchnorm.py (the formulas are stated there) and
cpu/batchnorm.py. float32 only; device arrays in and out (host arrays are copied in,
a host out= is filled on return; the moving update writes host arrays back).

x (..., C) float32 C-contiguous, seen as rows (M, C), M = x.size / C.

Statistics (training forward; backward's dgamma and dbeta the same way), deterministic
and without atomics, two launches:
  1. bn_stats_part / bn_grad_part: grid (channel tiles, row chunks), blocks of
     _launch.BN threads shaped (tc, tp) as global pooling's: tc = min(_launch.BN_C, C
     rounded up to a power of two) channels fastest (threadIdx.x; a warp reads 32
     consecutive floats of a row: coalesced), tp row lanes. Chunk k holds rows
     [k * R, (k + 1) * R) (R = ceil(M / chunks)); lane r of it reads rows r, r + tp, ...
     and accumulates in float32 registers; the tp lanes meet in a shared-memory tree in
     a fixed order, and the block writes its two sums to part (2, chunks, C).
  2. bn_stats_final / bn_grad_final: one thread per channel adds the chunks' partial
     sums in chunk order (grid-stride over C) and computes the (C,) results.
The chunk count is min(_launch.BN_CHUNKS, ceil(M / (tp * _launch.BN_ROWS))): it depends
on M, C and the launch constants only, so the sums are bitwise the same run to run (not
the cpu's float64 sums: both are within rtol 1e-5 of the reference at test sizes).

Forward is one pass over x for the statistics, shifted: every lane of channel c
accumulates s1 = sum(x - k_c) and s2 = sum((x - k_c)^2) with the shift k_c = x[0, c]
(the first row), then mean = k_c + s1 / M and var = max(s2 / M - (s1 / M)^2, 0). The
shift removes the catastrophic cancellation of the plain sum(x^2) / M - mean^2: the
relative error of var is a few float32 ulps times (1 + (mean - k_c)^2 / var), and k_c
is a sample of the channel, typically within a few standard deviations of the mean.
Backward needs no shift: mean is known, so s1 = sum(dy), s2 = sum(dy * (x - mean)),
dbeta = s1 and dgamma = s2 / sqrt(var + epsilon).

The elementwise passes (normalize, dx, the inference forward) are grid-stride over the
flat (M * C) array, consecutive threads on consecutive floats, reading the (C,) factors
computed once per call (scratch: _mem.workspace, per thread and context). All index
math is uint32 (operands below 2**31 elements, check_int32_indexable). Device code is
float32 only (no float64 in the PTX: tests/test_cuda_ptx.py).

The fused BatchNormalization -> ReLU pair (batchnorm_relu_*) launches the same kernels
but for bn_relu_apply (y = max(., 0) in the normalize pass) and, backward,
bn_relu_grad_part / bn_relu_grad_x, which read dy only where y > 0.

Host-side value checks: batchnorm_infer_forward refuses moving_variance + epsilon <= 0
as the reference does when moving_variance is a host array; a device one is not read
back (that would copy it), and a channel with moving_variance + epsilon <= 0 then gives
NaN or inf in its column of y.

batchnorm_moving_update takes guard=stats (fit's device-side step, see
kernels/cuda/optimizers.py): the update is skipped on the device when the step
accumulator says this or an earlier step's loss was not finite, as the host backends
never run a non-finite step's update.
"""
import math

import numpy as np
from numba import cuda, float32, int32, uint32

from .. import _validate
from .._norm_checks import check_bn_x, check_channel_vectors, check_number
from . import _launch
from ._launch import BN_MAX
from ._mem import (blocks_for, check_float32, check_int32_indexable, checkable, device_in,
                   finish, flat, is_device_array, out_buffers, workspace)
from ._spec import KernelSpec
from .losses import BAD as _BAD         # the step accumulator's non-finite flag

_F1 = float32[::1]


@cuda.jit(device=True)
def _store_partials(sh1, sh2, s1, s2, part, tx, ty, tc, tp, ch, k, c):
    """Sum s1 and s2 over the tp row lanes of each channel of the block in a fixed-order
    shared-memory tree (the result depends only on (tc, tp)) and store the totals as
    chunk k's part[0, k, ch], part[1, k, ch]. Every thread calls it: it synchronises."""
    slot = uint32(ty * tc + tx)
    sh1[slot] = s1
    sh2[slot] = s2
    cuda.syncthreads()
    half = uint32(tp // 2)
    while half > 0:
        if ty < half:
            other = uint32(slot + half * tc)
            sh1[slot] += sh1[other]
            sh2[slot] += sh2[other]
        cuda.syncthreads()
        half = uint32(half // 2)
    if ty == 0 and ch < c:
        part[uint32(k * c + ch)] = sh1[tx]
        part[uint32((cuda.gridDim.y + k) * c + ch)] = sh2[tx]


@cuda.jit(device=True, inline="always")
def _tile(rows, m):
    """The statistics block's coordinates: (tx, ty, tc, tp, ch, k, r0, r1), this lane's
    channel ch (blockIdx.x tiles of tc) and its chunk k (blockIdx.y) of rows [r0, r1)."""
    tx = uint32(cuda.threadIdx.x)
    ty = uint32(cuda.threadIdx.y)
    tc = uint32(cuda.blockDim.x)
    tp = uint32(cuda.blockDim.y)
    ch = uint32(cuda.blockIdx.x * tc + tx)
    k = uint32(cuda.blockIdx.y)
    r0 = uint32(k * rows)
    return tx, ty, tc, tp, ch, k, r0, uint32(min(m, uint32(r0 + rows)))


@cuda.jit(device=True, inline="always")
def _chunk_sums(part, chunks, c, ch):
    """The chunks' two partial sums of channel ch, added in chunk order (part (2, chunks,
    c))."""
    s1 = float32(0.0)
    s2 = float32(0.0)
    k = uint32(0)
    while k < chunks:
        s1 += part[uint32(k * c + ch)]
        s2 += part[uint32((chunks + k) * c + ch)]
        k = uint32(k + 1)
    return s1, s2


@cuda.jit
def bn_stats_part(x, part, m, c, rows):
    """part (2, chunks, c): the chunk's sums of (x - x[0, ch]) and (x - x[0, ch])^2 per
    channel, x (m * c,) viewed (m, c); chunk blockIdx.y = rows [k * rows, (k + 1) * rows).
    Block (tc, tp), tc * tp <= BN_MAX, tp a power of two; grid (ceil(c / tc), chunks)."""
    sh1 = cuda.shared.array(BN_MAX, float32)
    sh2 = cuda.shared.array(BN_MAX, float32)
    tx, ty, tc, tp, ch, k, r0, end = _tile(rows, m)
    s1 = float32(0.0)
    s2 = float32(0.0)
    if ch < c:
        shift = x[ch]
        r = uint32(r0 + ty)
        while r < end:
            d = x[uint32(r * c + ch)] - shift
            s1 += d
            s2 += d * d
            r = uint32(r + tp)
    _store_partials(sh1, sh2, s1, s2, part, tx, ty, tc, tp, ch, k, c)


@cuda.jit
def bn_grad_part(dy, x, mean, part, m, c, rows):
    """part (2, chunks, c): the chunk's sums of dy and dy * (x - mean[ch]) per channel;
    dy, x (m * c,). Launched as bn_stats_part."""
    sh1 = cuda.shared.array(BN_MAX, float32)
    sh2 = cuda.shared.array(BN_MAX, float32)
    tx, ty, tc, tp, ch, k, r0, end = _tile(rows, m)
    s1 = float32(0.0)
    s2 = float32(0.0)
    if ch < c:
        mu = mean[ch]
        r = uint32(r0 + ty)
        while r < end:
            i = uint32(r * c + ch)
            g = dy[i]
            s1 += g
            s2 += g * (x[i] - mu)
            r = uint32(r + tp)
    _store_partials(sh1, sh2, s1, s2, part, tx, ty, tc, tp, ch, k, c)


@cuda.jit
def bn_stats_final(part, x, gamma, chunks, m, eps, mean, var, scale):
    """Per channel: the chunks' sums in chunk order, then mean = x[0, ch] + s1 / m,
    var = max(s2 / m - (s1 / m)^2, 0), scale = gamma / sqrt(var + eps). (C,) outputs;
    part (2, chunks, C); m, eps float32. Grid-stride over C."""
    c = uint32(mean.size)
    ch = uint32(cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x)
    step = uint32(cuda.gridDim.x * cuda.blockDim.x)
    while ch < c:
        s1, s2 = _chunk_sums(part, chunks, c, ch)
        d = s1 / m
        v = max(s2 / m - d * d, float32(0.0))
        mean[ch] = x[ch] + d
        var[ch] = v
        scale[ch] = gamma[ch] / math.sqrt(v + eps)
        ch = uint32(ch + step)


@cuda.jit
def bn_grad_final(part, gamma, var, chunks, m, eps, dgamma, dbeta, fac):
    """Per channel: dbeta = s1, dgamma = s2 * inv (inv = 1 / sqrt(var + eps)), and dx's
    factors fac (4, C) = (inv, gamma * inv, dbeta / m, dgamma / m). Grid-stride over C."""
    c = uint32(var.size)
    ch = uint32(cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x)
    step = uint32(cuda.gridDim.x * cuda.blockDim.x)
    while ch < c:
        s1, s2 = _chunk_sums(part, chunks, c, ch)
        inv = float32(1.0) / math.sqrt(var[ch] + eps)
        dg = s2 * inv
        dbeta[ch] = s1
        dgamma[ch] = dg
        fac[ch] = inv
        fac[uint32(c + ch)] = gamma[ch] * inv
        fac[uint32(2 * c + ch)] = s1 / m
        fac[uint32(3 * c + ch)] = dg / m
        ch = uint32(ch + step)


@cuda.jit
def bn_infer_scale(gamma, moving_var, eps, scale):
    """scale = gamma / sqrt(moving_var + eps), all (C,). Grid-stride."""
    c = uint32(scale.size)
    ch = uint32(cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x)
    step = uint32(cuda.gridDim.x * cuda.blockDim.x)
    while ch < c:
        scale[ch] = gamma[ch] / math.sqrt(moving_var[ch] + eps)
        ch = uint32(ch + step)


@cuda.jit
def bn_apply(x, center, scale, beta, y, c):
    """y[r, ch] = (x[r, ch] - center[ch]) * scale[ch] + beta[ch]; x, y (m * c,), the
    vectors (c,). Grid-stride over the flat array; y may be x."""
    i = uint32(cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x)
    step = uint32(cuda.gridDim.x * cuda.blockDim.x)
    n = uint32(y.size)
    while i < n:
        ch = uint32(i % c)
        y[i] = (x[i] - center[ch]) * scale[ch] + beta[ch]
        i = uint32(i + step)


@cuda.jit
def bn_grad_x(dy, x, mean, fac, dx, c):
    """dx = a * (dy - dbeta / m - xhat * dgamma / m), xhat = (x - mean) * inv, with
    fac (4, c) = (inv, a, dbeta / m, dgamma / m); dy, x, dx (m * c,). Grid-stride."""
    i = uint32(cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x)
    step = uint32(cuda.gridDim.x * cuda.blockDim.x)
    n = uint32(dx.size)
    while i < n:
        ch = uint32(i % c)
        xhat = (x[i] - mean[ch]) * fac[ch]
        dx[i] = fac[uint32(c + ch)] * (dy[i] - fac[uint32(2 * c + ch)]
                                       - xhat * fac[uint32(3 * c + ch)])
        i = uint32(i + step)


@cuda.jit
def bn_relu_grad_part(dy, y, x, mean, part, m, c, rows):
    """bn_grad_part with dy counted only where y > 0 (the fused BatchNormalization ->
    ReLU's backward, y its forward's output). Launched as bn_stats_part."""
    sh1 = cuda.shared.array(BN_MAX, float32)
    sh2 = cuda.shared.array(BN_MAX, float32)
    tx, ty, tc, tp, ch, k, r0, end = _tile(rows, m)
    s1 = float32(0.0)
    s2 = float32(0.0)
    if ch < c:
        mu = mean[ch]
        r = uint32(r0 + ty)
        while r < end:
            i = uint32(r * c + ch)
            if y[i] > float32(0.0):
                g = dy[i]
                s1 += g
                s2 += g * (x[i] - mu)
            r = uint32(r + tp)
    _store_partials(sh1, sh2, s1, s2, part, tx, ty, tc, tp, ch, k, c)


@cuda.jit
def bn_relu_apply(x, center, scale, beta, y, c):
    """bn_apply then max(., 0): y[r, ch] = max((x[r, ch] - center[ch]) * scale[ch]
    + beta[ch], 0). Grid-stride over the flat array; y may be x."""
    i = uint32(cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x)
    step = uint32(cuda.gridDim.x * cuda.blockDim.x)
    n = uint32(y.size)
    while i < n:
        ch = uint32(i % c)
        y[i] = max((x[i] - center[ch]) * scale[ch] + beta[ch], float32(0.0))
        i = uint32(i + step)


@cuda.jit
def bn_relu_grad_x(dy, y, x, mean, fac, dx, c):
    """bn_grad_x with dy masked by y > 0. Grid-stride."""
    i = uint32(cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x)
    step = uint32(cuda.gridDim.x * cuda.blockDim.x)
    n = uint32(dx.size)
    while i < n:
        ch = uint32(i % c)
        g = dy[i] if y[i] > float32(0.0) else float32(0.0)
        xhat = (x[i] - mean[ch]) * fac[ch]
        dx[i] = fac[uint32(c + ch)] * (g - fac[uint32(2 * c + ch)]
                                       - xhat * fac[uint32(3 * c + ch)])
        i = uint32(i + step)


@cuda.jit
def bn_fold(kernel, bias, gamma, beta, mm, mv, eps, w, b, f):
    """A BatchNormalization folded into the conv before it: w[i] = kernel[i] * s[ch] (ch
    = i % f, kernel and w (rows * f,)), b = (bias - mm) * s + beta (the threads of
    i < f), s = gamma / sqrt(mv + eps) computed where it is used, the same way by every
    thread (one launch, no scratch). Grid-stride."""
    i = uint32(cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x)
    step = uint32(cuda.gridDim.x * cuda.blockDim.x)
    n = uint32(w.size)
    while i < n:
        ch = uint32(i % f)
        s = gamma[ch] / math.sqrt(mv[ch] + eps)
        w[i] = kernel[i] * s
        if i < f:
            b[ch] = (bias[ch] - mm[ch]) * s + beta[ch]
        i = uint32(i + step)


@cuda.jit
def bn_moving(moving_mean, moving_var, mean, var, mom, one_minus_mom, stats, guarded):
    """moving = moving * mom + batch * (1 - mom) for the mean and the variance, all (C,),
    in place; skipped when guarded != 0 and stats[BAD] != 0 (fit's device step; stats is
    the step accumulator, any float32 array when guarded == 0). Grid-stride."""
    if guarded != 0 and stats[_BAD] != float32(0.0):
        return
    c = uint32(moving_mean.size)
    ch = uint32(cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x)
    step = uint32(cuda.gridDim.x * cuda.blockDim.x)
    while ch < c:
        moving_mean[ch] = moving_mean[ch] * mom + mean[ch] * one_minus_mom
        moving_var[ch] = moving_var[ch] * mom + var[ch] * one_minus_mom
        ch = uint32(ch + step)


_U3 = (uint32, uint32, uint32)
KERNELS = [
    KernelSpec("bn_stats_part", bn_stats_part, (_F1, _F1) + _U3, _launch.BN),
    KernelSpec("bn_grad_part", bn_grad_part, (_F1,) * 4 + _U3, _launch.BN),
    KernelSpec("bn_stats_final", bn_stats_final,
               (_F1, _F1, _F1, uint32, float32, float32, _F1, _F1, _F1), _launch.ELEMENTWISE),
    KernelSpec("bn_grad_final", bn_grad_final,
               (_F1, _F1, _F1, uint32, float32, float32, _F1, _F1, _F1), _launch.ELEMENTWISE),
    KernelSpec("bn_infer_scale", bn_infer_scale, (_F1, _F1, float32, _F1), _launch.ELEMENTWISE),
    KernelSpec("bn_apply", bn_apply, (_F1,) * 5 + (uint32,), _launch.ELEMENTWISE),
    KernelSpec("bn_grad_x", bn_grad_x, (_F1,) * 5 + (uint32,), _launch.ELEMENTWISE),
    KernelSpec("bn_relu_grad_part", bn_relu_grad_part, (_F1,) * 5 + _U3, _launch.BN),
    KernelSpec("bn_relu_apply", bn_relu_apply, (_F1,) * 5 + (uint32,), _launch.ELEMENTWISE),
    KernelSpec("bn_relu_grad_x", bn_relu_grad_x, (_F1,) * 6 + (uint32,), _launch.ELEMENTWISE),
    KernelSpec("bn_fold", bn_fold, (_F1,) * 6 + (float32, _F1, _F1, uint32),
               _launch.ELEMENTWISE),
    KernelSpec("bn_moving", bn_moving, (_F1,) * 4 + (float32, float32, _F1, int32),
               _launch.ELEMENTWISE),
]


def block_shape(c):
    """(tc, tp) of the statistics kernels for C channels: tc the smallest power of two
    >= C, capped at _launch.BN_C; tp = BN // tc row lanes (a power of two)."""
    threads = _launch.BN
    if threads > BN_MAX or threads & (threads - 1):
        raise ValueError(f"_launch.BN must be a power of two <= {BN_MAX}, got {threads}")
    tc = 1
    while tc < min(int(c), _launch.BN_C, threads):
        tc *= 2
    return tc, threads // tc


def chunking(m, c):
    """(chunks, rows per chunk) of the statistics for M rows of C channels: enough
    chunks that each of the tp lanes reads at least _launch.BN_ROWS rows, at most
    _launch.BN_CHUNKS. Depends only on (M, C) and the launch constants."""
    _, tp = block_shape(c)
    chunks = max(1, min(_launch.BN_CHUNKS, -(-m // (tp * _launch.BN_ROWS))))
    rows = -(-m // chunks)
    return -(-m // rows), rows          # no empty trailing chunk


def _part(kernel, m, c, *arrays):
    """Launch a statistics kernel over (m, c); returns (part (2 * chunks * c,), chunks)."""
    chunks, rows = chunking(m, c)
    tc, tp = block_shape(c)
    part = workspace("batchnorm_part", (2 * chunks * c,))
    kernel[(-(-c // tc), chunks), (tc, tp)](*arrays, part, np.uint32(m), np.uint32(c),
                                            np.uint32(rows))
    return part, np.uint32(chunks)


def _per_channel(c):
    threads = _launch.ELEMENTWISE
    return blocks_for(c, threads, _launch.MAX_BLOCKS), threads


def _elementwise(size):
    threads = _launch.ELEMENTWISE
    return blocks_for(size, threads, _launch.MAX_BLOCKS), threads


def _check_x(op, x, name="x"):
    m, c = check_bn_x(op, name, checkable(x))
    check_float32(op, name, x)
    check_int32_indexable(op, x.shape)
    return m, c, tuple(int(s) for s in x.shape)


def _refuse_bad_host_variance(op, moving_variance, eps):
    """The reference's moving_variance + epsilon > 0, for a host moving_variance."""
    if isinstance(moving_variance, np.ndarray):
        mv = moving_variance.astype(np.float64) + eps
        if (mv <= 0).any():
            raise ValueError(f"{op}: moving_variance + epsilon must be > 0, got a minimum "
                             f"of {float(mv.min())!r}")


def _vectors(op, c, **vectors):
    """The (C,) vectors checked as the reference does, then as device arrays."""
    check_channel_vectors(op, c, np.float32, **{k: checkable(v) for k, v in vectors.items()})
    return [flat(device_in(op, k, v)) for k, v in vectors.items()]


def _train_forward(x, gamma, beta, epsilon, out, apply):
    """batchnorm_train_forward's checks and statistics, then apply (bn_apply, or
    bn_relu_apply for the fused pair) writes y."""
    op = "batchnorm_train_forward"
    m, c, shape = _check_x(op, x)
    check_channel_vectors(op, c, np.float32, gamma=checkable(gamma), beta=checkable(beta))
    eps = check_number(op, "epsilon", epsilon, positive=True)
    o_y, o_mean, o_var = _validate.out_tuple(op, out, 3)
    (y, host_y), (mean, host_mean), (var, host_var) = out_buffers(
        op, ("out[0]", o_y, shape, np.float32), ("out[1]", o_mean, (c,), np.float32),
        ("out[2]", o_var, (c,), np.float32))
    g, b = _vectors(op, c, gamma=gamma, beta=beta)
    xf = flat(device_in(op, "x", x))
    part, chunks = _part(bn_stats_part, m, c, xf)
    scale = workspace("batchnorm_scale", (c,))
    bn_stats_final[_per_channel(c)](part, xf, g, chunks, np.float32(m), np.float32(eps),
                                    flat(mean), flat(var), scale)
    apply[_elementwise(xf.size)](xf, flat(mean), scale, b, flat(y), np.uint32(c))
    return finish(y, host_y), finish(mean, host_mean), finish(var, host_var)


def batchnorm_train_forward(x, gamma, beta, epsilon=1e-3, out=None):
    """(y, mean, var) as the reference: y (x's shape), mean and var (C,) float32 (var
    biased), device arrays or the out=(y, mean, var) buffers (each one or None)."""
    return _train_forward(x, gamma, beta, epsilon, out, bn_apply)


def batchnorm_relu_train_forward(x, gamma, beta, epsilon=1e-3, out=None):
    """(y, mean, var) as the reference: batchnorm_train_forward with y = max(y, 0) in its
    normalize pass (bn_relu_apply). out= as there."""
    return _train_forward(x, gamma, beta, epsilon, out, bn_relu_apply)


def batchnorm_infer_forward(x, gamma, beta, moving_mean, moving_variance, epsilon=1e-3,
                            out=None):
    """y = (x - moving_mean) / sqrt(moving_variance + epsilon) * gamma + beta, x's shape:
    a device array or the out= buffer. A host moving_variance is checked as the
    reference's (moving_variance + epsilon > 0); a device one is not read back."""
    op = "batchnorm_infer_forward"
    _, c, shape = _check_x(op, x)
    check_channel_vectors(op, c, np.float32, gamma=checkable(gamma), beta=checkable(beta),
                          moving_mean=checkable(moving_mean),
                          moving_variance=checkable(moving_variance))
    eps = check_number(op, "epsilon", epsilon, positive=True)
    _refuse_bad_host_variance(op, moving_variance, eps)
    [(y, host)] = out_buffers(op, ("out", out, shape, np.float32))
    g, b, mm, mv = _vectors(op, c, gamma=gamma, beta=beta, moving_mean=moving_mean,
                            moving_variance=moving_variance)
    xf = flat(device_in(op, "x", x))
    scale = workspace("batchnorm_scale", (c,))
    bn_infer_scale[_per_channel(c)](g, mv, np.float32(eps), scale)
    bn_apply[_elementwise(xf.size)](xf, mm, scale, b, flat(y), np.uint32(c))
    return finish(y, host)


def _backward(dy, x, gamma, mean, var, epsilon, need_dx, out, y=None):
    """batchnorm_backward's checks and launches; y given (the fused pair): dy counts only
    where y > 0 in both passes (relu_backward's checks first, as the reference's
    composition makes them)."""
    op = "batchnorm_backward"
    if y is not None:
        _validate.check_float_array("relu_backward", "dy", checkable(dy))
        _validate.check_float_array("relu_backward", "y", checkable(y))
        _validate.check_same_shape("relu_backward", "dy", checkable(dy), "y", checkable(y))
    m, c, shape = _check_x(op, x)
    _validate.check_float_array(op, "dy", checkable(dy))
    _validate.check_same_shape(op, "x", checkable(x), "dy", checkable(dy))
    check_float32(op, "dy", dy)
    check_channel_vectors(op, c, np.float32, gamma=checkable(gamma), mean=checkable(mean),
                          var=checkable(var))
    eps = check_number(op, "epsilon", epsilon, positive=True)
    o_dx, o_dg, o_db = _validate.out_tuple(op, out, 3)
    specs = [("out[1]", o_dg, (c,), np.float32), ("out[2]", o_db, (c,), np.float32)]
    if need_dx:
        specs.append(("out[0]", o_dx, shape, np.float32))
    bufs = out_buffers(op, *specs)
    (dg, host_dg), (db, host_db) = bufs[:2]
    g, mu, v = _vectors(op, c, gamma=gamma, mean=mean, var=var)
    xf = flat(device_in(op, "x", x))
    dyf = flat(device_in(op, "dy", dy))
    if y is None:
        part, chunks = _part(bn_grad_part, m, c, dyf, xf, mu)
    else:
        check_float32("relu_backward", "y", y)
        yf = flat(device_in("relu_backward", "y", y))
        part, chunks = _part(bn_relu_grad_part, m, c, dyf, yf, xf, mu)
    fac = workspace("batchnorm_fac", (4 * c,))
    bn_grad_final[_per_channel(c)](part, g, v, chunks, np.float32(m), np.float32(eps),
                                   flat(dg), flat(db), fac)
    dx = None
    if need_dx:
        buf, host_dx = bufs[2]
        if y is None:
            bn_grad_x[_elementwise(xf.size)](dyf, xf, mu, fac, flat(buf), np.uint32(c))
        else:
            bn_relu_grad_x[_elementwise(xf.size)](dyf, yf, xf, mu, fac, flat(buf),
                                                  np.uint32(c))
        dx = finish(buf, host_dx)
    return dx, finish(dg, host_dg), finish(db, host_db)


def batchnorm_backward(dy, x, gamma, mean, var, epsilon=1e-3, need_dx=True, out=None):
    """(dx or None, dgamma, dbeta) as the reference: dx (x's shape), dgamma and dbeta
    (C,), device arrays or the out=(dx, dgamma, dbeta) buffers (out[0] is not used
    without need_dx)."""
    return _backward(dy, x, gamma, mean, var, epsilon, need_dx, out)


def batchnorm_relu_backward(dy, y, x, gamma, mean, var, epsilon=1e-3, need_dx=True,
                            out=None):
    """(dx or None, dgamma, dbeta) as the reference: batchnorm_backward of dy masked by
    y > 0 (y the fused forward's output), inside both passes (bn_relu_grad_part,
    bn_relu_grad_x): no masked copy of dy. out= as batchnorm_backward's."""
    return _backward(dy, x, gamma, mean, var, epsilon, need_dx, out, y)


def batchnorm_fold(kernel, bias, gamma, beta, moving_mean, moving_variance, epsilon=1e-3,
                   out=None):
    """(kernel', bias') as the reference: the BN folded into the conv before it (kernel
    (..., F), the vectors (F,)), device arrays or the out=(kernel', bias') buffers; one
    launch (bn_fold). A host moving_variance is checked as the reference's; a device
    one is not read back (a channel with moving_variance + epsilon <= 0 gives NaN/inf)."""
    op = "batchnorm_fold"
    _, f, shape = _check_x(op, kernel, "kernel")
    check_channel_vectors(op, f, np.float32, of="kernel's output channels",
                          bias=checkable(bias), gamma=checkable(gamma), beta=checkable(beta),
                          moving_mean=checkable(moving_mean),
                          moving_variance=checkable(moving_variance))
    eps = check_number(op, "epsilon", epsilon, positive=True)
    _refuse_bad_host_variance(op, moving_variance, eps)
    o_w, o_b = _validate.out_tuple(op, out, 2)
    (w, host_w), (b, host_b) = out_buffers(op, ("out[0]", o_w, shape, np.float32),
                                           ("out[1]", o_b, (f,), np.float32))
    vecs = [flat(device_in(op, name, v)) for name, v in (
        ("bias", bias), ("gamma", gamma), ("beta", beta), ("moving_mean", moving_mean),
        ("moving_variance", moving_variance))]
    kf = flat(device_in(op, "kernel", kernel))
    bn_fold[_elementwise(kf.size)](kf, *vecs, np.float32(eps), flat(w), flat(b), np.uint32(f))
    return finish(w, host_w), finish(b, host_b)


def batchnorm_moving_update(moving_mean, moving_variance, mean, var, momentum=0.99,
                            guard=None):
    """In place: moving = moving * momentum + batch * (1 - momentum) for the mean and the
    variance (float32 arithmetic). All (C,) float32; device arrays are updated where they
    are, host ones through a device copy written back. Returns None. guard: the step
    accumulator (a device array, kernels/cuda/losses.py) of fit's device step: the
    update is skipped on the device once a step's loss was not finite."""
    op = "batchnorm_moving_update"
    _validate.check_float_array(op, "moving_mean", checkable(moving_mean), 1)
    check_float32(op, "moving_mean", moving_mean)
    c = int(moving_mean.shape[0])
    check_channel_vectors(op, c, np.float32, moving_variance=checkable(moving_variance),
                          mean=checkable(mean), var=checkable(var))
    mom = check_number(op, "momentum", momentum, unit=True)
    if guard is not None and not (is_device_array(guard) and guard.dtype == np.float32):
        raise TypeError(f"{op}: guard must be the step accumulator, a float32 device array")
    pairs = [(a, device_in(op, name, a)) for name, a in (
        ("moving_mean", moving_mean), ("moving_variance", moving_variance))]
    mu, v = _vectors(op, c, mean=mean, var=var)
    (mm, dmm), (mv, dmv) = pairs
    bn_moving[_per_channel(c)](flat(dmm), flat(dmv), mu, v, np.float32(mom),
                               np.float32(1.0 - mom), flat(guard if guard is not None else mu),
                               np.int32(guard is not None))
    for a, d in pairs:
        if not is_device_array(a):
            d.copy_to_host(a)
