"""Batch normalization over the last (channel) axis (Keras BatchNormalization,
axis=-1), Numba CPU. Same names, arguments, errors and out= convention as
fastconv/kernels/reference/batchnorm.py (the formulas are stated there).

x (..., C) float32 C-contiguous, seen as rows (M, C). The statistics are one pass:
each of NCHUNK fixed blocks of rows sums x and x^2 (backward: dy and dy * x) per
channel in float64, in parallel, and the blocks' partial sums are added in block
order afterwards, so the result is the same at any thread count (the block split
depends on M only). var = sum(x^2) / M - mean^2 in float64: for float32 inputs the
cancellation costs at most ~1e-16 * mean^2 / var relative, far below float32's
rounding. The elementwise pass (normalize, or dx) is parallel over the same row
blocks with the channel loop innermost and contiguous, so it vectorizes over C.
"""
import numpy as np
from numba import prange

from .. import _validate
from .._norm_checks import check_bn_x, check_channel_vectors, check_number
from ._common import F32, Target, check_float32, contiguous, kernel

NCHUNK = 64     # row blocks of the statistics (enough tasks for 16 threads, fixed)


@kernel
def _sums(a, b, s_a, s_ab, use_b):
    """s_a[c] = sum_r a[r, c], s_ab[c] = sum_r a[r, c] * (b[r, c] if use_b else a[r, c]),
    float64, by NCHUNK row blocks added in block order."""
    m, c = a.shape
    nch = min(NCHUNK, m)
    part = np.zeros((nch, 2, c))
    for k in prange(nch):
        r0 = (m * k) // nch
        r1 = (m * (k + 1)) // nch
        for r in range(r0, r1):
            for ch in range(c):
                va = np.float64(a[r, ch])
                vb = np.float64(b[r, ch]) if use_b else va
                part[k, 0, ch] += va
                part[k, 1, ch] += va * vb
    for ch in range(c):
        s_a[ch] = 0.0
        s_ab[ch] = 0.0
    for k in range(nch):
        for ch in range(c):
            s_a[ch] += part[k, 0, ch]
            s_ab[ch] += part[k, 1, ch]


@kernel
def _normalize(x, center, scale, beta, y):
    """y[r, c] = (x[r, c] - center[c]) * scale[c] + beta[c] (float32), by row blocks."""
    m, c = x.shape
    nch = min(NCHUNK, m)
    for k in prange(nch):
        for r in range((m * k) // nch, (m * (k + 1)) // nch):
            for ch in range(c):
                y[r, ch] = (x[r, ch] - center[ch]) * scale[ch] + beta[ch]


@kernel
def _grad_x(dy, x, mean, inv, a, db_m, dg_m, dx):
    """dx = a * (dy - dbeta / M - xhat * dgamma / M), xhat = (x - mean) * inv."""
    m, c = x.shape
    nch = min(NCHUNK, m)
    for k in prange(nch):
        for r in range((m * k) // nch, (m * (k + 1)) // nch):
            for ch in range(c):
                xhat = (x[r, ch] - mean[ch]) * inv[ch]
                dx[r, ch] = a[ch] * (dy[r, ch] - db_m[ch] - xhat * dg_m[ch])


def _rows(a):
    return a.reshape(a.size // a.shape[-1], a.shape[-1])


def _channel_scratch(c):
    """Per-call (C,) vectors: scratch belongs to the call (thread-safe), and C floats
    cost nothing next to the (M, C) passes."""
    return np.empty((4, c), np.float32), np.empty((2, c), np.float64)


def batchnorm_train_forward(x, gamma, beta, epsilon=1e-3, out=None):
    """(y, mean, var) as the reference: y (x's shape), mean and var (C,) float32.
    out=(y, mean, var), each a buffer or None."""
    op = "batchnorm_train_forward"
    m, c = check_bn_x(op, "x", x)
    check_float32(op, "x", x)
    check_channel_vectors(op, c, x.dtype, gamma=gamma, beta=beta)
    eps = check_number(op, "epsilon", epsilon, positive=True)
    o_y, o_mean, o_var = _validate.out_tuple(op, out, 3)
    x = contiguous(x)
    ty = Target(op, "out[0]", o_y, x.shape)
    tm = Target(op, "out[1]", o_mean, (c,))
    tv = Target(op, "out[2]", o_var, (c,))
    vec, sums = _channel_scratch(c)
    xr = _rows(x)
    _sums(x.size, xr, xr, sums[0], sums[1], False)
    mean64 = sums[0] / m
    var64 = np.maximum(sums[1] / m - mean64 * mean64, 0.0)
    tm.buf[:] = mean64
    tv.buf[:] = var64
    scale = vec[0]
    scale[:] = np.asarray(gamma, np.float64) / np.sqrt(var64 + eps)
    _normalize(x.size, xr, tm.buf, scale, contiguous(beta), _rows(ty.buf))
    return ty.result(), tm.result(), tv.result()


def batchnorm_infer_forward(x, gamma, beta, moving_mean, moving_variance, epsilon=1e-3,
                            out=None):
    """y = (x - moving_mean) / sqrt(moving_variance + epsilon) * gamma + beta, x's shape."""
    op = "batchnorm_infer_forward"
    _, c = check_bn_x(op, "x", x)
    check_float32(op, "x", x)
    check_channel_vectors(op, c, x.dtype, gamma=gamma, beta=beta, moving_mean=moving_mean,
                          moving_variance=moving_variance)
    eps = check_number(op, "epsilon", epsilon, positive=True)
    x = contiguous(x)
    mv = moving_variance.astype(np.float64) + eps
    if (mv <= 0).any():
        raise ValueError(f"{op}: moving_variance + epsilon must be > 0, got a minimum of "
                         f"{float(mv.min())!r}")
    t = Target(op, "out", out, x.shape)
    vec, _ = _channel_scratch(c)
    scale = vec[0]
    scale[:] = gamma.astype(np.float64) / np.sqrt(mv)
    _normalize(x.size, _rows(x), contiguous(moving_mean), scale, contiguous(beta),
               _rows(t.buf))
    return t.result()


def batchnorm_backward(dy, x, gamma, mean, var, epsilon=1e-3, need_dx=True, out=None):
    """(dx or None, dgamma, dbeta) as the reference; out=(dx, dgamma, dbeta)."""
    op = "batchnorm_backward"
    m, c = check_bn_x(op, "x", x)
    check_float32(op, "x", x)
    _validate.check_float_array(op, "dy", dy)
    _validate.check_same_shape(op, "x", x, "dy", dy)
    check_float32(op, "dy", dy)
    check_channel_vectors(op, c, x.dtype, gamma=gamma, mean=mean, var=var)
    eps = check_number(op, "epsilon", epsilon, positive=True)
    o_dx, o_dg, o_db = _validate.out_tuple(op, out, 3)
    x, dy = contiguous(x), contiguous(dy)
    tg = Target(op, "out[1]", o_dg, (c,))
    tb = Target(op, "out[2]", o_db, (c,))
    vec, sums = _channel_scratch(c)
    xr, dyr = _rows(x), _rows(dy)
    _sums(x.size, dyr, xr, sums[0], sums[1], True)        # sum(dy), sum(dy * x)
    inv64 = 1.0 / np.sqrt(var.astype(np.float64) + eps)
    dbeta = sums[0]
    dgamma = (sums[1] - mean.astype(np.float64) * sums[0]) * inv64
    tb.buf[:] = dbeta
    tg.buf[:] = dgamma
    if not need_dx:
        return None, tg.result(), tb.result()
    tx = Target(op, "out[0]", o_dx, x.shape)
    inv, a, db_m, dg_m = vec
    inv[:] = inv64
    a[:] = gamma.astype(np.float64) * inv64
    db_m[:] = dbeta / m
    dg_m[:] = dgamma / m
    _grad_x(x.size, dyr, xr, contiguous(mean), inv, a, db_m, dg_m, _rows(tx.buf))
    return tx.result(), tg.result(), tb.result()


def batchnorm_moving_update(moving_mean, moving_variance, mean, var, momentum=0.99):
    """In place: moving = moving * momentum + batch * (1 - momentum), mean and variance."""
    op = "batchnorm_moving_update"
    _validate.check_float_array(op, "moving_mean", moving_mean, 1)
    check_float32(op, "moving_mean", moving_mean)
    c = moving_mean.shape[0]
    check_channel_vectors(op, c, moving_mean.dtype, moving_variance=moving_variance,
                          mean=mean, var=var)
    mom = check_number(op, "momentum", momentum, unit=True)
    for moving, batch in ((moving_mean, mean), (moving_variance, var)):
        moving[...] = moving.astype(np.float64) * mom + batch.astype(np.float64) * (1.0 - mom)
