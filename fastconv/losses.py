"""Losses the model can train with, and how each folds into the backend's kernels.

Training never computes the final sigmoid/softmax: the model ends in it, and
the loss kernel takes the logits before it (stable, and one pass fewer).

    binary_crossentropy               model ends in sigmoid, 1 unit; labels 0/1, (N,) or (N, 1)
    sparse_categorical_crossentropy   model ends in softmax, K units; labels class indices (N,)
    categorical_crossentropy          model ends in softmax, K units; labels one-hot (N, K)
"""
from __future__ import annotations

from typing import NamedTuple


class LossSpec(NamedTuple):
    name: str
    kernel: str          # the backend op: (loss float, dlogits) = K.<kernel>(y, logits)
    head: str            # the activation the model must end in (folded into the loss)
    labels: str          # 'binary', 'sparse' or 'onehot'


LOSSES = {
    "binary_crossentropy": LossSpec("binary_crossentropy", "binary_crossentropy", "sigmoid",
                                    "binary"),
    "sparse_categorical_crossentropy": LossSpec("sparse_categorical_crossentropy",
                                                "softmax_crossentropy", "softmax", "sparse"),
    "categorical_crossentropy": LossSpec("categorical_crossentropy", "softmax_crossentropy",
                                         "softmax", "onehot"),
}


def get(identifier):
    if isinstance(identifier, LossSpec):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in LOSSES:
        return LOSSES[identifier.lower()]
    raise ValueError(f"unknown loss {identifier!r}; use one of {', '.join(LOSSES)}")


__all__ = ["LossSpec", "LOSSES", "get"]
