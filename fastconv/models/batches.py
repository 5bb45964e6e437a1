"""Batches: what fit, evaluate and predict do with their x and y before a step runs.

Functions of a model, any fastconv model: they use its name, built/build(),
input_shape, output_shape, its first layer (named in shape errors), loss spec, shuffle
generator and _plan(mode, n), never how its layers connect. training.Trainer binds
them as the model's _check_x, _prep_labels, _adapt, _batches and _check_positive
methods, and they call each other through the model, so a subclass or a test can
replace one on the model.
  check_x       an input batch as C-contiguous float32 of the model's input shape
  prep_labels   labels in the loss kernel's format
  adapt         fit/evaluate/predict's (x, y[, sample_weight]) as ('arrays', x, y, w) or
                ('iter', iterable)
  batches       (plan, n) per batch, the plan's input, label and weight buffers filled
"""
from __future__ import annotations

import itertools
import math
import warnings

import numpy as np

from .._args import is_int
from . import weighting


def _all_finite(x):
    """True when float32 `x` holds no NaN or inf, allocating nothing in the common case.
    NaN and inf propagate through a float32 sum (SIMD, ~2x faster than a float64 one),
    so a finite sum proves every value finite; a non-finite sum (NaN or inf in x, or
    large finite values overflowing) is confirmed exactly."""
    if math.isfinite(float(np.add.reduce(x.reshape(-1)))):
        return True
    return bool(np.isfinite(x).all())


def check_positive(model, arg, value, allow_zero=False):
    """`value` as an int when it is one (not a bool) >= 1 (>= 0 with allow_zero)."""
    low = 0 if allow_zero else 1
    if not is_int(value) or value < low:
        raise ValueError(f"{model.name}: `{arg}` must be an int >= {low}, received "
                         f"{arg}={value!r}")
    return int(value)


def check_x(model, x, what="x", finite=False):
    """Input batch `x` as C-contiguous float32 of the model's input shape, building an
    unbuilt model from it; finite (predict): warn once per model about NaN or inf.
    The warning names the line in predict (check_x <- adapt or batches <- predict)."""
    if not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except Exception:
            raise TypeError(f"{model.name}: {what} must be a numpy array, received "
                            f"{type(x).__name__}") from None
    if x.dtype.kind not in "fiub":
        raise TypeError(f"{model.name}: {what} must hold numbers, received dtype {x.dtype}")
    if not model.built and model.layers:
        model.build((None,) + x.shape[1:])
    want = tuple(model.input_shape[1:])
    if x.ndim != len(want) + 1 or tuple(x.shape[1:]) != want:
        first = model.layers[0] if model.layers else None
        who = (f"layer '{first.name}' ({first.__class__.__name__})" if first
               else "the model")
        raise ValueError(
            f"{model.name}: {what} has shape {x.shape} but {who} expects input shape "
            f"{model.input_shape}, i.e. {what} of shape (N,) + {want}")
    if x.dtype != np.float32 or not x.flags.c_contiguous:
        x = np.ascontiguousarray(x, dtype=np.float32)
    # predict only: fit and evaluate see a non-finite input as a NaN loss (fit's guard
    # stops there), and the check would cost a pass over every training batch
    if finite and not model._warned_nonfinite and not _all_finite(x):
        model._warned_nonfinite = True
        warnings.warn(f"{model.name}: {what} holds NaN or inf values; the outputs computed "
                      f"from them are NaN or meaningless (warned once per model)",
                      RuntimeWarning, stacklevel=3)
    return x


def prep_labels(model, y, n, what="y"):
    """Labels in the loss kernel's format: float32 (N, 1) for binary, int32 (N,) else."""
    spec = model._loss
    out = model.output_shape
    y = np.asarray(y)
    if y.dtype.kind not in "fiub":
        raise TypeError(f"{model.name}: labels {what} must be numeric, received dtype "
                        f"{y.dtype}")
    if y.shape[:1] != (n,):
        raise ValueError(f"{model.name}: x has {n} samples but labels {what} have shape "
                         f"{y.shape}")
    if spec.labels == "binary":
        if y.shape not in ((n,), (n, 1)):
            raise ValueError(
                f"{model.name}: labels {what} have shape {y.shape} but the model's output "
                f"is {out} with loss binary_crossentropy: expected ({n},) or ({n}, 1)")
        y = y.reshape(n, 1).astype(np.float32)
        if not np.all(np.isfinite(y)) or y.min(initial=0) < 0 or y.max(initial=0) > 1:
            raise ValueError(f"{model.name}: binary labels {what} must lie in [0, 1]")
        return y
    k = out[1]
    if spec.labels == "onehot":
        if y.shape != (n, k):
            raise ValueError(
                f"{model.name}: labels {what} have shape {y.shape} but the model's output is "
                f"{out} with loss categorical_crossentropy: expected one-hot ({n}, {k})")
        if not (np.all((y == 0) | (y == 1)) and np.all(y.sum(axis=1) == 1)):
            raise ValueError(f"{model.name}: categorical_crossentropy labels {what} must be "
                             f"one-hot rows (soft labels are not supported)")
        return np.ascontiguousarray(np.argmax(y, axis=1).astype(np.int32))
    if y.shape not in ((n,), (n, 1)):
        raise ValueError(
            f"{model.name}: labels {what} have shape {y.shape} but the model's output is "
            f"{out} with loss sparse_categorical_crossentropy: expected class indices "
            f"({n},) or ({n}, 1)")
    y = y.reshape(n)
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise ValueError(f"{model.name}: labels {what} must be integer class indices")
    if n and (y.min() < 0 or y.max() >= k):
        raise ValueError(f"{model.name}: labels {what} must be class indices in [0, {k}), "
                         f"received min {y.min()}, max {y.max()}")
    return y.astype(np.int32)


def batches(model, data, batch_size, shuffle, training, steps=None, labels=True):
    """Yield (plan, n) with the plan's input (and label, and sample weight) buffers filled.

    data: ('arrays', x, y[, w]) with w None or float32 (N,) sample weights, or
    ('iter', iterable[, class weights]) whose batches are (x, y) or (x, y, w); a float32
    (K,) class-weight vector (weighting.class_weight_vector) weights each batch's
    samples by their labels' classes."""
    mode = "train" if training else "infer"
    if data[0] == "arrays":
        x, y = data[1], data[2]
        w = data[3] if len(data) > 3 else None
        total = x.shape[0]
        perm = model._shuffle_rng.permutation(total) if shuffle else None
        for start in range(0, total, batch_size):
            stop = min(start + batch_size, total)
            plan = model._plan(mode, stop - start)
            if perm is None:
                plan.load_slice(x, y, start, stop, w)
            else:
                plan.load_take(x, y, perm[start:stop], w)
            yield plan, stop - start
        return
    iterable = data[1]
    class_vec = data[2] if len(data) > 2 else None
    if steps is not None:      # a one-shot generator continues where it stopped
        iterable = itertools.islice(iterable, steps)
    for k, batch in enumerate(iterable):
        wb = None
        if isinstance(batch, (tuple, list)) and len(batch) >= 2:
            xb, yb = batch[0], batch[1]
            if len(batch) >= 3:
                wb = batch[2]
        elif isinstance(batch, (tuple, list)) and len(batch) == 1:
            xb, yb = batch[0], None
        else:
            xb, yb = batch, None
        xb = model._check_x(xb, f"x of batch {k}", finite=not labels)
        n = xb.shape[0]
        if n == 0:
            continue
        need_y = labels and model._loss is not None
        if need_y and yb is None:
            raise ValueError(f"{model.name}: batch {k} has no labels; training needs "
                             f"(x, y) batches")
        yp = model._prep_labels(yb, n, f"y of batch {k}") if need_y else None
        if need_y and class_vec is not None:
            if wb is not None:
                raise ValueError(f"{model.name}: batch {k} has sample weights and fit has "
                                 f"class_weight; pass one of them, not both (as Keras)")
            wb = weighting.sample_weights_from_classes(model, class_vec, yp)
        elif need_y and wb is not None:
            wb = weighting.check_sample_weight(model, wb, n, f"sample_weight of batch {k}")
        plan = model._plan(mode, n)
        plan.load_slice(xb, yp, 0, n, wb if need_y else None)
        yield plan, n


def adapt(model, x, y, what, sample_weight=None):
    """('arrays', x, y, w) or ('iter', iterable) from fit/evaluate's arguments; w None or
    the sample weights as float32 (N,)."""
    if isinstance(x, np.ndarray) or (isinstance(x, (list, tuple)) and y is not None):
        x = model._check_x(x, finite=what == "predict")
        if y is None:
            if what == "predict":
                return ("arrays", x, None)
            raise ValueError(f"{model.name}.{what}: labels y are required with array x")
        return ("arrays", x, model._prep_labels(y, x.shape[0]),
                weighting.check_sample_weight(model, sample_weight, x.shape[0]))
    if y is not None:
        raise ValueError(f"{model.name}.{what}: y must be None when x is an iterable of "
                         f"(x, y) batches")
    if sample_weight is not None:
        raise ValueError(f"{model.name}.{what}: sample_weight must be None when x is an "
                         f"iterable; yield (x, y, sample_weight) batches instead")
    if not hasattr(x, "__iter__"):
        raise TypeError(f"{model.name}.{what}: x must be a numpy array or an iterable of "
                        f"(x, y) batches, received {type(x).__name__}")
    return ("iter", x)
