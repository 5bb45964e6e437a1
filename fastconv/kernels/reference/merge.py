"""The merge ops of the Functional API (Keras Add, Concatenate), the reference.

add_forward's backward is the identity (each input gets dy), so it has no
backward op; a tensor read by two layers sums its gradients with accumulate_grad.
"""
import numpy as np

from .. import _validate


def add_forward(xs):
    """y = xs[0] + xs[1] + ... (n >= 2 arrays of one shape and dtype, summed in
    that order, in float64). A new array of xs[0]'s dtype."""
    xs = _validate.check_merge_inputs("add_forward", xs, same="shape")
    y = xs[0].astype(np.float64)
    for x in xs[1:]:
        y = y + x
    return y.astype(xs[0].dtype)


def concat_forward(xs):
    """xs (n >= 2 arrays (N, C_k) or (N, H, W, C_k), equal but for C_k) joined over
    the last (channel) axis, in order: (..., sum C_k). A new array."""
    xs = _validate.check_merge_inputs("concat_forward", xs, same="leading")
    return np.concatenate(xs, axis=-1)


def concat_backward(dy, channels):
    """dy (..., sum(channels)) split over its last axis into one gradient per input
    of concat_forward: a tuple of len(channels) new arrays (..., channels[k])."""
    channels = _validate.check_concat_split("concat_backward", dy, channels)
    bounds = np.cumsum(channels)[:-1]
    return tuple(np.ascontiguousarray(g) for g in np.split(dy, bounds, axis=-1))


def accumulate_grad(dst, src):
    """dst += src in place (a tensor with two consumers: the second gradient is added
    to the first). dst and src of one shape and dtype; returns None."""
    op = "accumulate_grad"
    _validate.check_accumulate(op, dst, src)
    dst += src
