"""Host-side helpers: the memory helpers of the host backends (reference, cpu), and
the dropout mask every backend draws.

Every backend exports `empty`, `zeros`, `to_device` and `to_host`, so the
model layer allocates and moves buffers without knowing where they live; on
the host they are plain NumPy.
"""
import numpy as np


def empty(shape, dtype=np.float32):
    """An uninitialised C-contiguous buffer on this backend."""
    return np.empty(shape, dtype)


def zeros(shape, dtype=np.float32):
    return np.zeros(shape, dtype)


def to_device(a):
    """A C-contiguous copy of the host array `a` on this backend (a copy even on the host,
    so the caller's array is never aliased)."""
    return np.array(a, order="C", copy=True)


def to_host(value):
    """Host NumPy arrays for this backend's arrays; tuples/lists element-wise, others as they are."""
    if isinstance(value, tuple):
        return tuple(to_host(v) for v in value)
    if isinstance(value, list):
        return [to_host(v) for v in value]
    return value


def dropout_mask(shape, rate, rng, dtype=np.float32):
    """The inverted-dropout mask every backend uses: 0 with probability `rate`,
    else 1 / (1 - rate), drawn as rng.random(shape) >= rate.

    Drawing the mask is host work shared by all backends so that the same
    generator state gives the same mask on cpu, cuda and reference.
    """
    keep = rng.random(shape) >= rate
    return (keep / (1.0 - rate)).astype(dtype)
