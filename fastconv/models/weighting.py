"""Sample and class weights for fit/evaluate/train_on_batch, with Keras 3's meaning.

A weighted batch's loss is Keras 3's default reduction "sum_over_batch_size":
sum_i(w_i * l_i) / N, N the batch size (not sum(w)); the loss ops take the weights
(fastconv/kernels/*/losses.py, sample_weight=). The compiled metric "accuracy" stays
unweighted, as Keras's compile(metrics=...) (its weighted_metrics are the weighted ones).

class_weight maps a class to a weight, turned into per-sample weights from the labels
as Keras's class_weight_to_sample_weights does: the class of a label is its index
(sparse), round(y) (binary) or argmax (one-hot, already indices here); classes the
dict leaves out weigh 1. class_weight="balanced" (scikit-learn's convenience, not
Keras's) is w_c = n_samples / (n_classes * count_c) over the classes present.
"""
from __future__ import annotations

import numpy as np


def check_sample_weight(model, sample_weight, n, what="sample_weight"):
    """sample_weight as C-contiguous float32 (N,), or None; finite and >= 0."""
    if sample_weight is None:
        return None
    w = np.asarray(sample_weight)
    if w.dtype.kind not in "fiub":
        raise TypeError(f"{model.name}: {what} must be numeric, received dtype {w.dtype}")
    if w.shape not in ((n,), (n, 1)):
        raise ValueError(f"{model.name}: {what} has shape {w.shape} but there are {n} "
                         f"samples: expected ({n},) or ({n}, 1), one weight per sample")
    w = np.ascontiguousarray(w.reshape(n), dtype=np.float32)
    if n and (not np.all(np.isfinite(w)) or w.min() < 0):
        raise ValueError(f"{model.name}: {what} must be finite and >= 0, received min "
                         f"{w.min()}, max {w.max()}")
    return w


def classes_of(model, y_prepped):
    """Class indices (N,) of labels in the loss kernel's format (models.batches.prep_labels):
    round(y) for binary labels, the indices themselves else."""
    if model._loss.labels == "binary":
        return np.round(y_prepped.reshape(-1)).astype(np.int64)
    return y_prepped.astype(np.int64)


def n_classes(model):
    return 2 if model._loss.labels == "binary" else int(model.output_shape[1])


def class_weight_vector(model, class_weight, classes=None):
    """float32 (K,) weight per class from class_weight: a {class: weight} dict or
    "balanced" (which needs `classes`, the training labels' class indices). None: None."""
    if class_weight is None:
        return None
    k = n_classes(model)
    vec = np.ones(k, np.float32)
    if isinstance(class_weight, str):
        if class_weight != "balanced":
            raise ValueError(f"{model.name}.fit: class_weight must be a dict {{class: weight}} "
                             f"or 'balanced', received {class_weight!r}")
        if classes is None:
            raise ValueError(f"{model.name}.fit: class_weight='balanced' needs the training "
                             f"labels: pass array y, or a dataset with .labels, or a dict")
        return balanced_class_weight(classes, k)
    if not isinstance(class_weight, dict):
        raise TypeError(f"{model.name}.fit: class_weight must be a dict {{class: weight}} or "
                        f"'balanced', received {type(class_weight).__name__}")
    for c, wc in class_weight.items():
        try:
            ci = int(c)
        except (TypeError, ValueError):
            ci = None
        if ci is None or ci != c or not 0 <= ci < k:
            raise ValueError(f"{model.name}.fit: class_weight key {c!r} is not a class index "
                             f"in [0, {k})")
        try:
            wf = float(wc)
        except (TypeError, ValueError):
            wf = float("nan")
        if not np.isfinite(wf) or wf < 0:
            raise ValueError(f"{model.name}.fit: class_weight[{c!r}] must be a finite number "
                             f">= 0, received {wc!r}")
        vec[ci] = wf
    return vec


def balanced_class_weight(classes, k):
    """float32 (K,): n_samples / (n_classes * count_c) for the classes present in the
    class indices `classes`, 1 for the absent ones (scikit-learn's "balanced")."""
    counts = np.bincount(np.asarray(classes, np.int64).reshape(-1), minlength=k)[:k]
    present = counts > 0
    vec = np.ones(k, np.float32)
    vec[present] = counts.sum() / (present.sum() * counts[present])
    return vec


def sample_weights_from_classes(model, vec, y_prepped):
    """float32 (N,) per-sample weights vec[class of each label]."""
    return np.ascontiguousarray(vec[classes_of(model, y_prepped)], dtype=np.float32)


def combine(model, sample_weight, class_weight, what="fit"):
    if sample_weight is not None and class_weight is not None:
        raise ValueError(f"{model.name}.{what}: pass sample_weight or class_weight, not both "
                         f"(as Keras)")
