"""Argument helpers of the conv2d/fused/dense wrappers, and their cached workspaces.

The argument helpers come from fastconv/kernels/cuda/_mem.py (checkable,
check_float32, device_in, out_buffers, out_tuple, finish), so every cuda op follows one
policy: the reference's messages from _validate, device arrays used as they are, host
arrays copied in (a convenience, a copy per call), out= device buffers written in place.

workspace() is this file's own: scratch device buffers (dw partials, the fused backward's
conv-grid gradient) allocated once per shape and reused, so a training step allocates
nothing.
"""
from collections import OrderedDict

import numpy as np

from ._mem import (  # noqa: F401  (the cuda package's argument policy)
    check_float32, checkable, device_in, finish, is_device_array, out_buffers, out_tuple)


def check_int32_indexable(op, *shapes):
    """The conv kernels index with int32: refuse tensors of 2**31 elements or more."""
    for shape in shapes:
        size = int(np.prod(shape))
        if size >= 2 ** 31:
            raise ValueError(f"{op}: an operand of shape {tuple(shape)} has {size} elements; "
                             f"the cuda conv kernels index with int32 (< 2**31): use a "
                             f"smaller batch")


_WORKSPACES = OrderedDict()
_MAX_WORKSPACES = 32


def workspace(tag, shape, dtype=np.float32):
    """A cached scratch device array for (tag, shape, dtype), reused by every later call.

    Kernels on one stream run in order, so ops that share a workspace never overlap.
    Least-recently-used entries beyond _MAX_WORKSPACES are dropped (freed by numba).
    """
    from numba import cuda
    key = (tag, tuple(int(s) for s in shape), np.dtype(dtype).str)
    buf = _WORKSPACES.get(key)
    if buf is None:
        buf = cuda.device_array(key[1], dtype)
        _WORKSPACES[key] = buf
        while len(_WORKSPACES) > _MAX_WORKSPACES:
            _WORKSPACES.popitem(last=False)
    else:
        _WORKSPACES.move_to_end(key)
    return buf


def blocks(n, per_block):
    """ceil(n / per_block), at least 1."""
    return max(1, -(-int(n) // int(per_block)))
