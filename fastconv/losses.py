"""Losses the model can train with, and how each folds into the backend's kernels.

Training never computes the final sigmoid/softmax: the model ends in it, and
the loss kernel takes the logits before it (stable, and one pass fewer).

    binary_crossentropy               model ends in sigmoid, 1 unit; labels 0/1, (N,) or (N, 1)
    sparse_categorical_crossentropy   model ends in softmax, K units; labels class indices (N,)
    categorical_crossentropy          model ends in softmax, K units; labels one-hot (N, K)

compile(loss=...) takes the name or Keras 3's loss object: BinaryCrossentropy,
CategoricalCrossentropy and SparseCategoricalCrossentropy (from_logits=False only: the
model's head is folded in). label_smoothing (Keras 3's formulas, on the targets):
binary y -> y * (1 - ls) + 0.5 * ls; categorical y -> y * (1 - ls) + ls / K.
Keras's SparseCategoricalCrossentropy has no label_smoothing, nor has this one.
"""
from __future__ import annotations

import math
from typing import NamedTuple


class LossSpec(NamedTuple):
    name: str
    kernel: str          # the backend op: (loss float, dlogits) = K.<kernel>(y, logits)
    head: str            # the activation the model must end in (folded into the loss)
    labels: str          # 'binary', 'sparse' or 'onehot'
    label_smoothing: float = 0.0    # passed to the kernel when not 0


LOSSES = {
    "binary_crossentropy": LossSpec("binary_crossentropy", "binary_crossentropy", "sigmoid",
                                    "binary"),
    "sparse_categorical_crossentropy": LossSpec("sparse_categorical_crossentropy",
                                                "softmax_crossentropy", "softmax", "sparse"),
    "categorical_crossentropy": LossSpec("categorical_crossentropy", "softmax_crossentropy",
                                         "softmax", "onehot"),
}


class Loss:
    """A Keras 3 loss object for compile(loss=...): its name and label smoothing."""
    loss_name = None
    smoothing = True

    def __init__(self, from_logits=False, label_smoothing=0.0, name=None):
        cls = type(self).__name__
        if from_logits:
            raise ValueError(f"{cls}: from_logits=True is not supported: the model ends in "
                             f"its sigmoid/softmax, which the loss kernel folds in")
        if label_smoothing and not self.smoothing:
            raise ValueError(f"{cls} has no label_smoothing (as Keras 3's); use "
                             f"CategoricalCrossentropy with one-hot labels")
        try:
            ls = float(label_smoothing)
        except (TypeError, ValueError):
            ls = math.nan
        if not 0.0 <= ls <= 1.0:
            raise ValueError(f"{cls}: label_smoothing must be a number in [0, 1], received "
                             f"{label_smoothing!r}")
        self.from_logits = False
        self.label_smoothing = ls
        self.name = name or self.loss_name

    @property
    def spec(self):
        return LOSSES[self.loss_name]._replace(label_smoothing=self.label_smoothing)

    def get_config(self):
        cfg = {"name": self.name, "from_logits": False}
        if self.smoothing:
            cfg["label_smoothing"] = self.label_smoothing
        return cfg


class BinaryCrossentropy(Loss):
    """Keras 3's BinaryCrossentropy; label_smoothing: y -> y * (1 - ls) + 0.5 * ls."""
    loss_name = "binary_crossentropy"


class CategoricalCrossentropy(Loss):
    """Keras 3's CategoricalCrossentropy (one-hot labels); label_smoothing:
    y -> y * (1 - ls) + ls / K."""
    loss_name = "categorical_crossentropy"


class SparseCategoricalCrossentropy(Loss):
    """Keras 3's SparseCategoricalCrossentropy (class indices); no label_smoothing."""
    loss_name = "sparse_categorical_crossentropy"
    smoothing = False

    def __init__(self, from_logits=False, name=None):
        super().__init__(from_logits=from_logits, name=name)


CLASSES = {c.__name__: c for c in (BinaryCrossentropy, CategoricalCrossentropy,
                                   SparseCategoricalCrossentropy)}


def get(identifier):
    """A LossSpec from a name, a Loss object or its serialized form (serialize)."""
    if isinstance(identifier, LossSpec):
        return identifier
    if isinstance(identifier, Loss):
        return identifier.spec
    if isinstance(identifier, dict) and identifier.get("class_name") in CLASSES:
        cfg = dict(identifier.get("config") or {})
        cfg.pop("name", None)
        cfg.pop("reduction", None)
        return CLASSES[identifier["class_name"]](**cfg).spec
    if isinstance(identifier, str) and identifier.lower() in LOSSES:
        return LOSSES[identifier.lower()]
    raise ValueError(f"unknown loss {identifier!r}; use one of {', '.join(LOSSES)} or "
                     f"{', '.join(CLASSES)}")


def serialize(spec):
    """What a model file stores: the name, or with label smoothing the Keras class and
    its config (get() reads either back)."""
    if not spec.label_smoothing:
        return spec.name
    cls = next(c for c in CLASSES.values() if c.loss_name == spec.name)
    return {"class_name": cls.__name__,
            "config": {"label_smoothing": spec.label_smoothing, "from_logits": False}}


__all__ = ["LossSpec", "LOSSES", "get", "serialize", "Loss", "BinaryCrossentropy",
           "CategoricalCrossentropy", "SparseCategoricalCrossentropy"]
