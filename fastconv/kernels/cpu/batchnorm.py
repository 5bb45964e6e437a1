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

The fused BatchNormalization -> ReLU pair (batchnorm_relu_*) runs the same passes: the
forward's y = max(., 0) is written by the normalize pass itself, and the backward reads
dy where y > 0 in both of its passes (the statistics and dx), so neither the relu's
output nor its masked gradient is ever a pass of its own.
"""
import numpy as np
from numba import njit, prange

from .. import _validate
from .._norm_checks import check_bn_x, check_channel_vectors, check_number
from ._common import F32, OPTS, Target, check_float32, contiguous, kernel

NCHUNK = 64     # row blocks of the statistics (enough tasks for 16 threads, fixed)


@njit(inline="always", **OPTS)
def _add_blocks(part, s0, s1):
    """s0, s1 (C,) = the row blocks' partial sums part (blocks, 2, C) added in block
    order (so the same at any thread count)."""
    for ch in range(part.shape[2]):
        s0[ch] = 0.0
        s1[ch] = 0.0
    for k in range(part.shape[0]):
        for ch in range(part.shape[2]):
            s0[ch] += part[k, 0, ch]
            s1[ch] += part[k, 1, ch]


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
    _add_blocks(part, s_a, s_ab)


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


@kernel
def _normalize_relu(x, center, scale, beta, y):
    """y[r, c] = max((x[r, c] - center[c]) * scale[c] + beta[c], 0), by row blocks."""
    m, c = x.shape
    nch = min(NCHUNK, m)
    for k in prange(nch):
        for r in range((m * k) // nch, (m * (k + 1)) // nch):
            for ch in range(c):
                y[r, ch] = max((x[r, ch] - center[ch]) * scale[ch] + beta[ch], F32(0.0))


@kernel
def _masked_sums(dy, y, x, s_g, s_gx):
    """_sums of g = dy where y > 0 (else 0): s_g = sum(g), s_gx = sum(g * x), float64,
    by the same NCHUNK row blocks added in block order."""
    m, c = x.shape
    nch = min(NCHUNK, m)
    part = np.zeros((nch, 2, c))
    for k in prange(nch):
        r0 = (m * k) // nch
        r1 = (m * (k + 1)) // nch
        for r in range(r0, r1):
            for ch in range(c):
                g = np.float64(dy[r, ch]) if y[r, ch] > 0 else 0.0
                part[k, 0, ch] += g
                part[k, 1, ch] += g * np.float64(x[r, ch])
    _add_blocks(part, s_g, s_gx)


@kernel
def _grad_x_relu(dy, y, x, mean, inv, a, db_m, dg_m, dx):
    """_grad_x with dy masked by y > 0."""
    m, c = x.shape
    nch = min(NCHUNK, m)
    for k in prange(nch):
        for r in range((m * k) // nch, (m * (k + 1)) // nch):
            for ch in range(c):
                g = dy[r, ch] if y[r, ch] > 0 else F32(0.0)
                xhat = (x[r, ch] - mean[ch]) * inv[ch]
                dx[r, ch] = a[ch] * (g - db_m[ch] - xhat * dg_m[ch])


def _rows(a):
    return a.reshape(a.size // a.shape[-1], a.shape[-1])


@njit(**OPTS)
def _train_stats(s, ss, m, eps, gamma, mean, var, scale):
    """(C,) vectors from the float64 sums: mean, biased var = ss / M - mean^2 (>= 0),
    scale = gamma / sqrt(var + eps), all computed in float64 and stored as float32."""
    for ch in range(s.shape[0]):
        mu = s[ch] / m
        v = max(ss[ch] / m - mu * mu, 0.0)
        mean[ch] = mu
        var[ch] = v
        scale[ch] = np.float64(gamma[ch]) / np.sqrt(v + eps)


@njit(**OPTS)
def _infer_scale(gamma, moving_var, eps, scale):
    """scale = gamma / sqrt(moving_var + eps) (float64 inside); returns the smallest
    moving_var + eps (the caller refuses one <= 0)."""
    low = np.inf
    for ch in range(gamma.shape[0]):
        v = np.float64(moving_var[ch]) + eps
        low = min(low, v)
        scale[ch] = np.float64(gamma[ch]) / np.sqrt(v) if v > 0 else 0.0
    return low


@njit(**OPTS)
def _grad_stats(s_dy, s_dyx, m, eps, gamma, mean, var, dgamma, dbeta, inv, a, db_m, dg_m):
    """dbeta = sum(dy), dgamma = (sum(dy * x) - mean * sum(dy)) * inv, and the (C,)
    factors of dx (inv, a = gamma * inv, dbeta / M, dgamma / M), float64 inside."""
    for ch in range(s_dy.shape[0]):
        iv = 1.0 / np.sqrt(np.float64(var[ch]) + eps)
        db = s_dy[ch]
        dg = (s_dyx[ch] - np.float64(mean[ch]) * db) * iv
        dbeta[ch] = db
        dgamma[ch] = dg
        inv[ch] = iv
        a[ch] = np.float64(gamma[ch]) * iv
        db_m[ch] = db / m
        dg_m[ch] = dg / m


def _scratch(c):
    """Per-call (C,) vectors: scratch belongs to the call (thread-safe), and C floats
    cost nothing next to the (M, C) passes. (4, C) float32, (2, C) float64."""
    return np.empty((4, c), np.float32), np.empty((2, c), np.float64)


def _train_forward(x, gamma, beta, epsilon, out, normalize):
    """batchnorm_train_forward's checks and statistics, then normalize (_normalize, or
    _normalize_relu for the fused pair) writes y."""
    op = "batchnorm_train_forward"
    m, c = check_bn_x(op, "x", x)
    check_float32(op, "x", x)
    check_channel_vectors(op, c, x.dtype, gamma=gamma, beta=beta)
    eps = check_number(op, "epsilon", epsilon, positive=True)
    o_y, o_mean, o_var = _validate.out_tuple(op, out, 3)
    x, gamma, beta = contiguous(x), contiguous(gamma), contiguous(beta)
    ty = Target(op, "out[0]", o_y, x.shape)
    tm = Target(op, "out[1]", o_mean, (c,))
    tv = Target(op, "out[2]", o_var, (c,))
    vec, sums = _scratch(c)
    xr = _rows(x)
    _sums(x.size, xr, xr, sums[0], sums[1], False)
    _train_stats(sums[0], sums[1], m, eps, gamma, tm.buf, tv.buf, vec[0])
    normalize(x.size, xr, tm.buf, vec[0], beta, _rows(ty.buf))
    return ty.result(), tm.result(), tv.result()


def batchnorm_train_forward(x, gamma, beta, epsilon=1e-3, out=None):
    """(y, mean, var) as the reference: y (x's shape), mean and var (C,) float32.
    out=(y, mean, var), each a buffer or None."""
    return _train_forward(x, gamma, beta, epsilon, out, _normalize)


def batchnorm_relu_train_forward(x, gamma, beta, epsilon=1e-3, out=None):
    """(y, mean, var) as the reference: batchnorm_train_forward with y = max(y, 0) in the
    same pass (two passes over x in all: the statistics, then y). out= as there."""
    return _train_forward(x, gamma, beta, epsilon, out, _normalize_relu)


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
    vec, _ = _scratch(c)
    low = _infer_scale(contiguous(gamma), contiguous(moving_variance), eps, vec[0])
    if not low > 0:
        raise ValueError(f"{op}: moving_variance + epsilon must be > 0, got a minimum of "
                         f"{float(low)!r}")
    t = Target(op, "out", out, x.shape)
    _normalize(x.size, _rows(x), contiguous(moving_mean), vec[0], contiguous(beta),
               _rows(t.buf))
    return t.result()


def _backward(dy, x, gamma, mean, var, epsilon, need_dx, out, y=None):
    """batchnorm_backward's checks and passes; y given (the fused pair): dy counts only
    where y > 0, applied inside both passes (relu_backward's checks first, as the
    reference's composition makes them)."""
    op = "batchnorm_backward"
    if y is not None:
        _validate.check_float_array("relu_backward", "dy", dy)
        _validate.check_float_array("relu_backward", "y", y)
        _validate.check_same_shape("relu_backward", "dy", dy, "y", y)
        check_float32("relu_backward", "y", y)
    m, c = check_bn_x(op, "x", x)
    check_float32(op, "x", x)
    _validate.check_float_array(op, "dy", dy)
    _validate.check_same_shape(op, "x", x, "dy", dy)
    check_float32(op, "dy", dy)
    check_channel_vectors(op, c, x.dtype, gamma=gamma, mean=mean, var=var)
    eps = check_number(op, "epsilon", epsilon, positive=True)
    o_dx, o_dg, o_db = _validate.out_tuple(op, out, 3)
    x, dy, mean = contiguous(x), contiguous(dy), contiguous(mean)
    tg = Target(op, "out[1]", o_dg, (c,))
    tb = Target(op, "out[2]", o_db, (c,))
    vec, sums = _scratch(c)
    xr, dyr = _rows(x), _rows(dy)
    yr = None if y is None else _rows(contiguous(y))
    if yr is None:
        _sums(x.size, dyr, xr, sums[0], sums[1], True)    # sum(dy), sum(dy * x)
    else:
        _masked_sums(x.size, dyr, yr, xr, sums[0], sums[1])
    inv, a, db_m, dg_m = vec
    _grad_stats(sums[0], sums[1], m, eps, contiguous(gamma), mean, contiguous(var), tg.buf,
                tb.buf, inv, a, db_m, dg_m)
    if not need_dx:
        return None, tg.result(), tb.result()
    tx = Target(op, "out[0]", o_dx, x.shape)
    if yr is None:
        _grad_x(x.size, dyr, xr, mean, inv, a, db_m, dg_m, _rows(tx.buf))
    else:
        _grad_x_relu(x.size, dyr, yr, xr, mean, inv, a, db_m, dg_m, _rows(tx.buf))
    return tx.result(), tg.result(), tb.result()


def batchnorm_backward(dy, x, gamma, mean, var, epsilon=1e-3, need_dx=True, out=None):
    """(dx or None, dgamma, dbeta) as the reference; out=(dx, dgamma, dbeta)."""
    return _backward(dy, x, gamma, mean, var, epsilon, need_dx, out)


def batchnorm_relu_backward(dy, y, x, gamma, mean, var, epsilon=1e-3, need_dx=True,
                            out=None):
    """(dx or None, dgamma, dbeta) as the reference: batchnorm_backward of dy masked by
    y > 0 (y the fused forward's output), the mask applied in both of its passes (no
    masked copy of dy is written). out= as batchnorm_backward's."""
    return _backward(dy, x, gamma, mean, var, epsilon, need_dx, out, y)


@njit(**OPTS)
def _fold(kernel, bias, gamma, beta, mm, mv, eps, w, b):
    """w = kernel * s (rows of F), b = (bias - mm) * s + beta, s = gamma / sqrt(mv + eps)
    in float64 kept in b (as float32) meanwhile, so nothing is allocated; returns the
    smallest mv + eps (the caller refuses one <= 0 before writing anything)."""
    f = b.shape[0]
    low = np.inf
    for ch in range(f):
        low = min(low, np.float64(mv[ch]) + eps)
    if not low > 0:
        return low
    for ch in range(f):
        b[ch] = np.float64(gamma[ch]) / np.sqrt(np.float64(mv[ch]) + eps)
    for r in range(kernel.shape[0]):
        for ch in range(f):
            w[r, ch] = kernel[r, ch] * b[ch]
    for ch in range(f):
        b[ch] = (np.float64(bias[ch]) - np.float64(mm[ch])) * np.float64(b[ch]) + beta[ch]
    return low


def batchnorm_fold(kernel, bias, gamma, beta, moving_mean, moving_variance, epsilon=1e-3,
                   out=None):
    """(kernel', bias') as the reference: the BN folded into the conv before it (kernel
    (..., F), the vectors (F,)); out=(kernel', bias'). One serial pass over the kernel
    (a forward reads it N * OH * OW times), nothing allocated with out=."""
    op = "batchnorm_fold"
    _, f = check_bn_x(op, "kernel", kernel)
    check_float32(op, "kernel", kernel)
    check_channel_vectors(op, f, kernel.dtype, of="kernel's output channels", bias=bias,
                          gamma=gamma, beta=beta, moving_mean=moving_mean,
                          moving_variance=moving_variance)
    eps = check_number(op, "epsilon", epsilon, positive=True)
    o_w, o_b = _validate.out_tuple(op, out, 2)
    kernel = contiguous(kernel)
    tw = Target(op, "out[0]", o_w, kernel.shape)
    tb = Target(op, "out[1]", o_b, (f,))
    low = _fold(_rows(kernel), contiguous(bias), contiguous(gamma), contiguous(beta),
                contiguous(moving_mean), contiguous(moving_variance), eps, _rows(tw.buf),
                tb.buf)
    if not low > 0:
        raise ValueError(f"{op}: moving_variance + epsilon must be > 0, got a minimum of "
                         f"{float(low)!r}")
    return tw.result(), tb.result()


@njit(**OPTS)
def _moving(moving, batch, mom):
    for ch in range(moving.shape[0]):
        moving[ch] = np.float64(moving[ch]) * mom + np.float64(batch[ch]) * (1.0 - mom)


def batchnorm_moving_update(moving_mean, moving_variance, mean, var, momentum=0.99):
    """In place: moving = moving * momentum + batch * (1 - momentum), mean and variance
    (float64 inside, as the reference). All (C,) float32; returns None."""
    op = "batchnorm_moving_update"
    _validate.check_float_array(op, "moving_mean", moving_mean, 1)
    check_float32(op, "moving_mean", moving_mean)
    c = moving_mean.shape[0]
    check_channel_vectors(op, c, moving_mean.dtype, moving_variance=moving_variance,
                          mean=mean, var=var)
    mom = check_number(op, "momentum", momentum, unit=True)
    _moving(moving_mean, mean, mom)
    _moving(moving_variance, var, mom)
