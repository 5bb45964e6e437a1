"""Losses from logits, mean over the batch, Numba CPU.

Same names, arguments, errors and out= convention as
fastconv/kernels/reference/losses.py: each returns (loss as a Python float,
dlogits of logits' shape, float32), out=(None, dlogits buffer). The logits of
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
def _softmax_ce(labels, z, dz):
    """l = logsumexp(z) - z[label]; dz = (softmax(z) - onehot(label)) / N, per row."""
    n, k = z.shape
    total = 0.0
    for r in range(n):
        m = np.float64(z[r, 0])
        for j in range(1, k):
            m = max(m, np.float64(z[r, j]))
        s = 0.0
        for j in range(k):
            s += np.exp(z[r, j] - m)
        lab = labels[r]
        total += np.log(s) + m - z[r, lab]
        for j in range(k):
            p = np.exp(z[r, j] - m) / s
            if j == lab:
                p -= 1.0
            dz[r, j] = np.float32(p / n)
    return total / n


def binary_crossentropy(y_true, logits, out=None):
    """Mean binary cross-entropy of sigmoid(logits) against y_true in [0, 1].

    logits (N,) or (N, 1) float32; y_true the same number of values (any
    numeric dtype, read as float32). Returns (loss, dlogits).
    """
    op = "binary_crossentropy"
    y = _validate.check_binary_labels(op, y_true, logits)
    check_float32(op, "logits", logits)
    _, o_dz = _validate.out_tuple(op, out, 2)
    if y.dtype != np.float32:
        y = y.astype(np.float32)     # one compiled signature; labels are few
    y, z = contiguous(y), contiguous(logits)
    t = Target(op, "out[1]", o_dz, z.shape, z.dtype)
    loss = _bce(y.reshape(-1), z.reshape(-1), t.buf.reshape(-1))
    return float(loss), t.result()


def softmax_crossentropy(y_true_int, logits, out=None):
    """Mean cross-entropy of softmax(logits) (N, K) against class indices (N,).

    Returns (loss, dlogits (N, K)).
    """
    op = "softmax_crossentropy"
    y = _validate.check_int_labels(op, y_true_int, logits)
    check_float32(op, "logits", logits)
    _, o_dz = _validate.out_tuple(op, out, 2)
    y, z = contiguous(y), contiguous(logits)
    t = Target(op, "out[1]", o_dz, z.shape, z.dtype)
    loss = _softmax_ce(y, z, t.buf)
    return float(loss), t.result()
