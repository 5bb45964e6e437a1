"""Losses from logits, mean over the batch, the reference.

Training folds the model's final sigmoid/softmax into the loss, so each
returns (loss as a Python float, dlogits of logits' shape and dtype).
"""
import numpy as np

from .. import _validate


def binary_crossentropy(y_true, logits):
    """Mean binary cross-entropy of sigmoid(logits) against y_true in [0, 1].

    logits (N,) or (N, 1); y_true the same number of values. Stable form:
    l = max(z, 0) - z * y + log(1 + exp(-|z|)); dl/dz = (sigmoid(z) - y) / N.
    """
    op = "binary_crossentropy"
    y = _validate.check_binary_labels(op, y_true, logits).astype(np.float64)
    z = logits.astype(np.float64)
    n = z.shape[0]
    loss = np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))
    e = np.exp(-np.abs(z))
    sig = np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    return float(loss.sum() / n), ((sig - y) / n).astype(logits.dtype)


def softmax_crossentropy(y_true_int, logits):
    """Mean cross-entropy of softmax(logits) (N, K) against class indices (N,).

    l = logsumexp(z) - z[y]; dl/dz = (softmax(z) - onehot(y)) / N.
    """
    op = "softmax_crossentropy"
    y = _validate.check_int_labels(op, y_true_int, logits)
    z = logits.astype(np.float64)
    n = z.shape[0]
    m = z.max(axis=1, keepdims=True)
    e = np.exp(z - m)
    s = e.sum(axis=1, keepdims=True)
    rows = np.arange(n)
    loss = (np.log(s[:, 0]) + m[:, 0] - z[rows, y]).sum() / n
    d = e / s
    d[rows, y] -= 1.0
    return float(loss), (d / n).astype(logits.dtype)
