"""Losses from logits, mean over the batch, the reference.

Training folds the model's final sigmoid/softmax into the loss, so each
returns (loss as a Python float, dlogits of logits' shape and dtype).

sample_weight (optional, N values >= 0) weights each sample's loss as Keras 3 does
with its default reduction "sum_over_batch_size": loss = sum_i(w_i * l_i) / N, N the
batch size (not sum(w)), and dlogits_i = w_i * dl_i/dz_i / N. None means every
w_i = 1 and computes exactly what it did before weights existed.

label_smoothing ls (Keras 3's formulas) replaces the targets: binary y -> y * (1 - ls)
+ 0.5 * ls; categorical onehot(y) -> onehot(y) * (1 - ls) + ls / K. 0 computes exactly
what it did before smoothing existed.
"""
import numpy as np

from .. import _validate


def binary_crossentropy(y_true, logits, sample_weight=None, label_smoothing=0.0):
    """Mean binary cross-entropy of sigmoid(logits) against y_true in [0, 1].

    logits (N,) or (N, 1); y_true the same number of values. Stable form:
    l = max(z, 0) - z * y + log(1 + exp(-|z|)); dl/dz = (sigmoid(z) - y) / N.
    With sample_weight w (N,): loss = sum(w * l) / N, dl/dz = w * (sigmoid(z) - y) / N.
    """
    op = "binary_crossentropy"
    y = _validate.check_binary_labels(op, y_true, logits).astype(np.float64)
    z = logits.astype(np.float64)
    n = z.shape[0]
    w = _validate.check_sample_weight(op, sample_weight, n)
    ls = _validate.check_label_smoothing(op, label_smoothing)
    if ls:
        y = y * (1.0 - ls) + 0.5 * ls
    loss = np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))
    e = np.exp(-np.abs(z))
    sig = np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    if w is None:
        return float(loss.sum() / n), ((sig - y) / n).astype(logits.dtype)
    w = w.astype(np.float64).reshape((n,) + (1,) * (z.ndim - 1))
    return float((w * loss).sum() / n), (w * (sig - y) / n).astype(logits.dtype)


def softmax_crossentropy(y_true_int, logits, sample_weight=None, label_smoothing=0.0):
    """Mean cross-entropy of softmax(logits) (N, K) against class indices (N,).

    l = logsumexp(z) - z[y]; dl/dz = (softmax(z) - onehot(y)) / N. With sample_weight
    w (N,): loss = sum(w * l) / N, dl/dz = w * (softmax(z) - onehot(y)) / N (row-wise).
    With label_smoothing ls the target t = onehot(y) * (1 - ls) + ls / K:
    l = logsumexp(z) - sum_j t_j z_j, dl/dz = softmax(z) - t.
    """
    op = "softmax_crossentropy"
    y = _validate.check_int_labels(op, y_true_int, logits)
    z = logits.astype(np.float64)
    n = z.shape[0]
    w = _validate.check_sample_weight(op, sample_weight, n)
    ls = _validate.check_label_smoothing(op, label_smoothing)
    m = z.max(axis=1, keepdims=True)
    e = np.exp(z - m)
    s = e.sum(axis=1, keepdims=True)
    rows = np.arange(n)
    d = e / s
    if ls:
        k = z.shape[1]
        t = np.full(z.shape, ls / k)
        t[rows, y] += 1.0 - ls
        per = np.log(s[:, 0]) + m[:, 0] - (t * z).sum(axis=1)
        d -= t
    else:
        per = np.log(s[:, 0]) + m[:, 0] - z[rows, y]
        d[rows, y] -= 1.0
    if w is None:
        return float(per.sum() / n), (d / n).astype(logits.dtype)
    w = w.astype(np.float64)
    return float((w * per).sum() / n), (w[:, None] * d / n).astype(logits.dtype)
