"""Weight regularizers (Keras 3's keras.regularizers), as fastconv.regularizers.

    Dense(64, kernel_regularizer=regularizers.l2(1e-4), bias_regularizer="l1")

Keras 3's formulas (no 0.5 factor):
    L1(l1=0.01):            penalty = l1 * sum(|w|)            gradient l1 * sign(w)
    L2(l2=0.01):            penalty = l2 * sum(w^2)            gradient 2 * l2 * w
    L1L2(l1=0.0, l2=0.0):   the sum of both
l1, l2 and l1_l2 are the same classes (Keras's aliases); the strings "l1", "l2" and
"l1_l2" give the defaults. The model adds every layer's penalty of its weights (before
the step's update) to the loss that fit, train_on_batch and evaluate report (Keras 3's
model.losses, in the loss of training and evaluation) and its gradient to the weights'
gradients (the `regularize` op of each backend, fastconv/kernels/*/optimizers.py).
"""
from __future__ import annotations

import math


class Regularizer:
    """A penalty l1 * sum(|w|) + l2 * sum(w^2) on a weight (see the module docstring)."""

    def __init__(self, l1=0.0, l2=0.0):
        self.l1 = _factor(type(self).__name__, "l1", l1)
        self.l2 = _factor(type(self).__name__, "l2", l2)

    def __call__(self, w):
        """The penalty of the NumPy array w, in float64 (the formula, for checks)."""
        import numpy as np
        w = np.asarray(w, np.float64)
        return float(self.l1 * np.abs(w).sum() + self.l2 * (w * w).sum())

    def get_config(self):
        return {"l1": self.l1, "l2": self.l2}

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v}' for k, v in self.get_config().items())})"

    def __eq__(self, other):
        return isinstance(other, Regularizer) and (self.l1, self.l2) == (other.l1, other.l2)


class L1(Regularizer):
    def __init__(self, l1=0.01):
        super().__init__(l1=l1)

    def get_config(self):
        return {"l1": self.l1}


class L2(Regularizer):
    def __init__(self, l2=0.01):
        super().__init__(l2=l2)

    def get_config(self):
        return {"l2": self.l2}


class L1L2(Regularizer):
    def __init__(self, l1=0.0, l2=0.0):
        super().__init__(l1=l1, l2=l2)


l1, l2, l1_l2 = L1, L2, L1L2
_BY_NAME = {"l1": L1, "l2": L2, "l1_l2": L1L2, "l1l2": L1L2}
_CLASSES = {"L1": L1, "L2": L2, "L1L2": L1L2}


def _factor(cls, name, value):
    try:
        f = float(value)
    except (TypeError, ValueError):
        f = math.nan
    if isinstance(value, bool) or not (f >= 0 and math.isfinite(f)):
        raise ValueError(f"{cls}: {name} must be a finite number >= 0, received {value!r}")
    return f


def get(identifier, where="regularizer"):
    """None, a Regularizer, a name ('l1', 'l2', 'l1_l2') or a serialized one (serialize)."""
    if identifier is None or isinstance(identifier, Regularizer):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in _BY_NAME:
        return _BY_NAME[identifier.lower()]()
    if isinstance(identifier, dict) and identifier.get("class_name") in _CLASSES:
        return _CLASSES[identifier["class_name"]](**(identifier.get("config") or {}))
    raise ValueError(f"{where} must be None, 'l1', 'l2', 'l1_l2' or a fastconv.regularizers "
                     f"object, received {identifier!r}")


def serialize(reg):
    """None, or Keras 3's {"module", "class_name", "config", "registered_name"}."""
    if reg is None:
        return None
    return {"module": "keras.regularizers", "class_name": type(reg).__name__,
            "config": reg.get_config(), "registered_name": None}


def configs(layer):
    """The layer's get_config entries of its regularizers that are set (a layer without
    any keeps the config it had before regularizers existed)."""
    out = {}
    for key in ("kernel_regularizer", "bias_regularizer"):
        reg = getattr(layer, key, None)
        if reg is not None:
            out[key] = serialize(reg)
    return out


def of_layer(layer):
    """[(weight index, regularizer)] of the layer's set regularizers (kernel 0, bias 1)."""
    regs = [(0, getattr(layer, "kernel_regularizer", None)),
            (1, getattr(layer, "bias_regularizer", None))]
    return [(k, r) for k, r in regs if r is not None and (r.l1 or r.l2)]


__all__ = ["Regularizer", "L1", "L2", "L1L2", "l1", "l2", "l1_l2", "get", "serialize"]
