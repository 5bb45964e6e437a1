"""Losses from logits, mean over the batch, Numba CPU.

Same names, arguments, errors and out= convention as
fastconv/kernels/reference/losses.py: each returns (loss as a Python float,
dlogits of logits' shape, float32), out=(None, dlogits buffer), and the same
optional sample_weight (loss = sum(w * l) / N, Keras 3's sum_over_batch_size) and
label_smoothing (the targets smoothed as Keras 3 does); with neither, the plain kernels
run, exactly as before weights existed. The logits of
a batch are few (N or N x K values), so the kernels run serially, in float64
like the reference, in the stable forms below.
"""
import numpy as np
from numba import njit

from .. import _validate
from ._common import OPTS, Target, check_float32, contiguous


@njit(**OPTS)
def _bce(y, z, dz):
    """l = max(z, 0) - z * y + log1p(exp(-|z|)); dz = (sigmoid(z) - y) / N."""
    n = z.shape[0]
    total = 0.0
    for i in range(n):
        zi = np.float64(z[i])
        yi = np.float64(y[i])
        e = np.exp(-abs(zi))
        total += max(zi, 0.0) - zi * yi + np.log1p(e)
        sig = 1.0 / (1.0 + e) if zi >= 0.0 else e / (1.0 + e)
        dz[i] = np.float32((sig - yi) / n)
    return total / n


@njit(**OPTS)
def _row_max_sumexp(z, r):
    """(max_j z[r, j], sum_j exp(z[r, j] - max)) in float64: row r's logsumexp parts."""
    k = z.shape[1]
    m = np.float64(z[r, 0])
    for j in range(1, k):
        m = max(m, np.float64(z[r, j]))
    s = 0.0
    for j in range(k):
        s += np.exp(z[r, j] - m)
    return m, s


@njit(**OPTS)
def _softmax_ce(labels, z, dz):
    """l = logsumexp(z) - z[label]; dz = (softmax(z) - onehot(label)) / N, per row."""
    n, k = z.shape
    total = 0.0
    for r in range(n):
        m, s = _row_max_sumexp(z, r)
        lab = labels[r]
        total += np.log(s) + m - z[r, lab]
        for j in range(k):
            p = np.exp(z[r, j] - m) / s
            if j == lab:
                p -= 1.0
            dz[r, j] = np.float32(p / n)
    return total / n


@njit(**OPTS)
def _bce_weighted(y, z, w, ls, dz):
    """_bce with per-sample weights and smoothed targets y' = y * (1 - ls) + 0.5 * ls:
    total = sum(w * l(y')) / N; dz = w * (sigmoid(z) - y') / N."""
    n = z.shape[0]
    total = 0.0
    for i in range(n):
        zi = np.float64(z[i])
        yi = np.float64(y[i]) * (1.0 - ls) + 0.5 * ls
        wi = np.float64(w[i])
        e = np.exp(-abs(zi))
        total += wi * (max(zi, 0.0) - zi * yi + np.log1p(e))
        sig = 1.0 / (1.0 + e) if zi >= 0.0 else e / (1.0 + e)
        dz[i] = np.float32(wi * (sig - yi) / n)
    return total / n


@njit(**OPTS)
def _softmax_ce_weighted(labels, z, w, ls, dz):
    """_softmax_ce with per-sample weights (row r's loss and dz scaled by w[r]) and the
    smoothed target t = onehot * (1 - ls) + ls / K: l = logsumexp(z) - sum_j t_j z_j,
    dz = w * (softmax(z) - t) / N."""
    n, k = z.shape
    total = 0.0
    off = ls / k
    for r in range(n):
        wr = np.float64(w[r])
        m, s = _row_max_sumexp(z, r)
        lab = labels[r]
        tz = 0.0
        for j in range(k):
            tz += (off + (1.0 - ls) if j == lab else off) * z[r, j]
        total += wr * (np.log(s) + m - tz)
        for j in range(k):
            p = np.exp(z[r, j] - m) / s - off
            if j == lab:
                p -= 1.0 - ls
            dz[r, j] = np.float32(wr * p / n)
    return total / n


def _weights(op, sample_weight, label_smoothing, n):
    """(w, ls): sample_weight checked (_validate) as contiguous float32 (N,) and the
    smoothing; w None when the plain kernel serves (no weights, no smoothing), ones
    when only smoothing is asked for (the product with 1 is exact)."""
    w = _validate.check_sample_weight(op, sample_weight, n)
    ls = _validate.check_label_smoothing(op, label_smoothing)
    if w is None:
        return (None, 0.0) if not ls else (np.ones(n, np.float32), ls)
    return np.ascontiguousarray(w, dtype=np.float32), ls


def binary_crossentropy(y_true, logits, out=None, sample_weight=None, label_smoothing=0.0):
    """Mean binary cross-entropy of sigmoid(logits) against y_true in [0, 1].

    logits (N,) or (N, 1) float32; y_true the same number of values (any
    numeric dtype, read as float32); sample_weight None or N weights (read as float32).
    Returns (loss, dlogits).
    """
    op = "binary_crossentropy"
    y = _validate.check_binary_labels(op, y_true, logits)
    check_float32(op, "logits", logits)
    w, ls = _weights(op, sample_weight, label_smoothing, logits.shape[0])
    _, o_dz = _validate.out_tuple(op, out, 2)
    if y.dtype != np.float32:
        y = y.astype(np.float32)     # one compiled signature; labels are few
    y, z = contiguous(y), contiguous(logits)
    t = Target(op, "out[1]", o_dz, z.shape, z.dtype)
    if w is None:
        loss = _bce(y.reshape(-1), z.reshape(-1), t.buf.reshape(-1))
    else:
        loss = _bce_weighted(y.reshape(-1), z.reshape(-1), w, ls, t.buf.reshape(-1))
    return float(loss), t.result()


def softmax_crossentropy(y_true_int, logits, out=None, sample_weight=None,
                         label_smoothing=0.0):
    """Mean cross-entropy of softmax(logits) (N, K) against class indices (N,), each
    row's loss weighted by sample_weight when given.

    Returns (loss, dlogits (N, K)).
    """
    op = "softmax_crossentropy"
    y = _validate.check_int_labels(op, y_true_int, logits)
    check_float32(op, "logits", logits)
    w, ls = _weights(op, sample_weight, label_smoothing, logits.shape[0])
    _, o_dz = _validate.out_tuple(op, out, 2)
    y, z = contiguous(y), contiguous(logits)
    t = Target(op, "out[1]", o_dz, z.shape, z.dtype)
    loss = _softmax_ce(y, z, t.buf) if w is None else _softmax_ce_weighted(y, z, w, ls, t.buf)
    return float(loss), t.result()
