"""Compiled metrics beyond "accuracy", streamed over an epoch as Keras 3's are: each
batch adds to counts, the ratio is taken at the end (result()), so an epoch's value is
the whole epoch's, not a mean of batch values. Keras 3's names and defaults:

    binary_accuracy        elements with (p > 0.5) == (y > 0.5), over all elements
    precision, recall      tp / (tp + fp), tp / (tp + fn) at p > 0.5 (0 when empty)
    auc                    Keras's AUC(): ROC, 200 thresholds [-1e-7, 1/199, ..., 198/199,
                           1 + 1e-7], counts of p > threshold, summation "interpolation":
                           sum over i of (fpr[i] - fpr[i+1]) * (tpr[i] + tpr[i+1]) / 2
    top_k_categorical_accuracy, sparse_top_k_categorical_accuracy (k=5)
                           the true class's score among the k largest (tf.math.in_top_k's
                           tie rule: fewer than k scores strictly greater)

p are the model's probabilities (sigmoid/softmax of the logits, in float64 on the
host); binary_accuracy, precision, recall and auc treat a softmax model's K outputs as
K binary predictions against the one-hot labels, as Keras's do on (N, K) tensors. On
cuda a step compiled with any of these copies its logits to the host (N x K floats, the
one small copy a step makes; none without them).
"""
from __future__ import annotations

import numpy as np

THRESHOLD = 0.5
NUM_THRESHOLDS = 200
EPSILON = 1e-7          # Keras's backend.epsilon(): the end thresholds


def _probs(logits, head):
    z = np.asarray(logits, np.float64)
    if head == "sigmoid":
        return 1.0 / (1.0 + np.exp(-z))
    if head == "softmax":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    return z


def _flat_truth(labels, k):
    """Labels in the loss kernel's format as float (N, K) targets: binary (N, 1) as is,
    class indices one-hot."""
    y = np.asarray(labels)
    if y.ndim == 2:
        return y.astype(np.float64)
    return np.eye(k)[y.astype(np.int64)]


class Stream:
    """One streamed metric: counts added per batch (update), the ratio at the end
    (result). Its counts, in the order of `fields`, are its state: state() as float64
    (exact for counts below 2**53), add_state() adds another stream's (the counts of
    several ranks' slices add up to the whole batch's: fastconv.distributed sums them)."""
    name = ""
    fields = ()

    def __init__(self):
        self.reset()

    def state(self):
        """The counts as one float64 vector, `fields` in order."""
        return np.concatenate([np.atleast_1d(np.asarray(getattr(self, f), np.float64))
                               for f in self.fields]) if self.fields else np.zeros(0)

    def add_state(self, vec):
        """Add counts `vec` (another stream's state(), or a sum of them)."""
        vec = np.asarray(vec, np.float64)
        want = sum(np.size(getattr(self, f)) for f in self.fields)
        if vec.shape != (want,):
            raise ValueError(f"metric {self.name!r}: a state of {vec.size} counts, "
                             f"expected {want}")
        at = 0
        for f in self.fields:
            old = getattr(self, f)
            n = np.size(old)
            part = np.rint(vec[at:at + n]).astype(np.int64)
            setattr(self, f, old + part if isinstance(old, np.ndarray) else int(old) +
                    int(part[0]))
            at += n

    def reset(self):
        raise NotImplementedError

    def update(self, labels, logits, head):
        raise NotImplementedError

    def result(self):
        raise NotImplementedError


class BinaryAccuracy(Stream):
    name = "binary_accuracy"
    fields = ("hits", "total")

    def reset(self):
        self.hits, self.total = 0, 0

    def update(self, labels, logits, head):
        p = _probs(logits, head)
        y = _flat_truth(labels, p.shape[1])
        self.hits += int(np.count_nonzero((p > THRESHOLD) == (y > THRESHOLD)))
        self.total += y.size

    def result(self):
        return self.hits / self.total if self.total else 0.0


class _Confusion(Stream):
    fields = ("tp", "fp", "fn")

    def reset(self):
        self.tp = self.fp = self.fn = 0

    def update(self, labels, logits, head):
        p = _probs(logits, head)
        y = _flat_truth(labels, p.shape[1]) > THRESHOLD
        pred = p > THRESHOLD
        self.tp += int(np.count_nonzero(pred & y))
        self.fp += int(np.count_nonzero(pred & ~y))
        self.fn += int(np.count_nonzero(~pred & y))


class Precision(_Confusion):
    name = "precision"

    def result(self):
        d = self.tp + self.fp
        return self.tp / d if d else 0.0


class Recall(_Confusion):
    name = "recall"

    def result(self):
        d = self.tp + self.fn
        return self.tp / d if d else 0.0


def auc_thresholds(n=NUM_THRESHOLDS):
    inner = [(i + 1) * 1.0 / (n - 1) for i in range(n - 2)]
    return np.array([0.0 - EPSILON] + inner + [1.0 + EPSILON])


class AUC(Stream):
    name = "auc"
    fields = ("tp", "fp", "tn", "fn")

    def reset(self):
        self.thresholds = auc_thresholds()
        n = self.thresholds.size
        self.tp, self.fp, self.tn, self.fn = (np.zeros(n, np.int64) for _ in range(4))

    def update(self, labels, logits, head):
        p = _probs(logits, head)
        y = (_flat_truth(labels, p.shape[1]) > THRESHOLD).reshape(-1)
        p = p.reshape(-1)
        # per threshold: how many positives / negatives score above it
        pos, neg = np.sort(p[y]), np.sort(p[~y])
        above_pos = pos.size - np.searchsorted(pos, self.thresholds, side="right")
        above_neg = neg.size - np.searchsorted(neg, self.thresholds, side="right")
        self.tp += above_pos
        self.fn += pos.size - above_pos
        self.fp += above_neg
        self.tn += neg.size - above_neg

    def result(self):
        def ratio(a, b):
            with np.errstate(divide="ignore", invalid="ignore"):
                return np.where(b > 0, a / np.maximum(b, 1), 0.0)
        tpr = ratio(self.tp, self.tp + self.fn)
        fpr = ratio(self.fp, self.fp + self.tn)
        heights = (tpr[:-1] + tpr[1:]) / 2.0
        return float(np.sum((fpr[:-1] - fpr[1:]) * heights))


class TopK(Stream):
    fields = ("hits", "total")

    def __init__(self, name, k=5):
        self.name, self.k = name, k
        super().__init__()

    def reset(self):
        self.hits, self.total = 0, 0

    def update(self, labels, logits, head):
        z = np.asarray(logits, np.float64)
        y = np.asarray(labels)
        y = np.argmax(y, axis=1) if y.ndim == 2 else y.astype(np.int64)
        target = z[np.arange(z.shape[0]), y]
        greater = np.count_nonzero(z > target[:, None], axis=1)
        self.hits += int(np.count_nonzero(greater < self.k))
        self.total += z.shape[0]

    def result(self):
        return self.hits / self.total if self.total else 0.0


STREAMED = {
    "binary_accuracy": BinaryAccuracy,
    "precision": Precision,
    "recall": Recall,
    "auc": AUC,
    "top_k_categorical_accuracy": lambda: TopK("top_k_categorical_accuracy"),
    "sparse_top_k_categorical_accuracy": lambda: TopK("sparse_top_k_categorical_accuracy"),
}
ACCURACY = ("accuracy", "acc")
NAMES = ACCURACY + tuple(STREAMED)


def make(names):
    """Fresh Stream objects for the compiled metric names that are streamed."""
    return {n: STREAMED[n]() for n in names if n in STREAMED}


def state_of(streams):
    """The states of `streams` (make's dict) one after another, in its (compile) order."""
    parts = [s.state() for s in streams.values()]
    return np.concatenate(parts) if parts else np.zeros(0)


def add_states(streams, vec):
    """Add state_of-ordered counts `vec` to `streams`."""
    at = 0
    for s in streams.values():
        n = s.state().size
        s.add_state(vec[at:at + n])
        at += n
