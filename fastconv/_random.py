"""Seeding: one place that makes initialisation, shuffling and dropout reproducible.

`set_seed(n)` reseeds Python's `random`, NumPy's global generator and the
generator fastconv draws model seeds and standalone layer weights from. Each
model then owns three independent streams spawned from its seed (weights,
shuffling, dropout), so predicting or evaluating never shifts the shuffle
order, and the same seed gives the same masks on every backend.
"""
from __future__ import annotations

import random

import numpy as np

from ._args import is_int

_generator = np.random.default_rng()


def set_seed(seed):
    """Make everything random in fastconv reproducible from the integer `seed`.

    Models built after this call draw their seed from it (unless given their
    own `seed=`), so the same program gives bitwise identical weights on cpu.
    """
    global _generator
    if not is_int(seed) or seed < 0:
        raise ValueError(f"set_seed: seed must be an int >= 0, received seed={seed!r}")
    random.seed(int(seed))
    np.random.seed(int(seed) % 2**32)
    _generator = np.random.default_rng(int(seed))


def generator():
    """The global generator (standalone layer initialisation, model seeds)."""
    return _generator


def draw_seed():
    """A fresh model seed from the global generator."""
    return int(_generator.integers(0, 2**63 - 1))


def check_seed(owner, seed):
    if seed is None:
        return None
    if not is_int(seed) or seed < 0:
        raise ValueError(f"{owner}: seed must be None or an int >= 0, received seed={seed!r}")
    return int(seed)


def streams(seed):
    """Three independent generators (init, shuffle, dropout) from one integer seed."""
    init, shuffle, dropout = np.random.SeedSequence(seed).spawn(3)
    return (np.random.default_rng(init), np.random.default_rng(shuffle),
            np.random.default_rng(dropout))
