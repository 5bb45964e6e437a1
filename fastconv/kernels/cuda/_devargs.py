"""Argument helpers of the conv2d/fused/dense wrappers, and their cached workspaces.

The argument helpers are cuda-ops's (fastconv/kernels/cuda/_mem.py: checkable,
check_float32, device_in, out_buffers, out_tuple, finish), so every cuda op follows one
policy: the reference's messages from _validate, device arrays used as they are, host
arrays copied in (a convenience, a copy per call), out= device buffers written in place.
Until that module is merged into this branch, `_Mirror` below stands in with the same
behaviour (TEMP until cuda-ops merges: then delete the fallback).

workspace() is this file's own: scratch device buffers (dw partials, the fused backward's
conv-grid gradient) allocated once per shape and reused, so a training step allocates
nothing.
"""
from collections import OrderedDict

import numpy as np

try:
    from ._mem import (  # noqa: F401
        check_float32, checkable, device_in, finish, is_device_array, out_buffers, out_tuple)
except ImportError:  # TEMP until cuda-ops merges: the same helpers, same messages
    from .. import _validate as _v

    def is_device_array(a):
        return hasattr(a, "copy_to_host") and hasattr(a, "is_c_contiguous")

    def checkable(a):
        if is_device_array(a):
            return np.broadcast_to(np.zeros((), a.dtype), a.shape)
        return a

    def check_float32(op, name, a, ndim=None):
        _v.check_float_array(op, name, checkable(a), ndim)
        if a.dtype != np.float32:
            raise TypeError(f"{op}: {name} must be float32, got {a.dtype}")
        if is_device_array(a) and not a.is_c_contiguous():
            raise ValueError(f"{op}: {name} must be a C-contiguous device array")
        return a

    def device_in(op, name, a, dtype=np.float32):
        from numba import cuda
        if is_device_array(a):
            if a.dtype != dtype:
                raise TypeError(f"{op}: {name} must be {np.dtype(dtype)}, got {a.dtype}")
            if not a.is_c_contiguous():
                raise ValueError(f"{op}: {name} must be a C-contiguous device array")
            return a
        return cuda.to_device(np.ascontiguousarray(a, dtype=dtype))

    def out_buffers(op, *specs):
        from numba import cuda
        specs = [(name, out, tuple(int(s) for s in shape), np.dtype(dtype))
                 for name, out, shape, dtype in specs]
        for name, out, shape, dtype in specs:
            if out is None:
                continue
            if not (is_device_array(out) or isinstance(out, np.ndarray)):
                raise TypeError(f"{op}: {name} must be a numpy.ndarray or a device array, "
                                f"got {type(out).__name__}")
            if tuple(out.shape) != shape or out.dtype != dtype:
                raise ValueError(f"{op}: {name} must be {dtype} of shape {shape}, got "
                                 f"{out.dtype} of shape {tuple(out.shape)}")
            if is_device_array(out) and not out.is_c_contiguous():
                raise ValueError(f"{op}: {name} must be a C-contiguous device array")
        buffers = []
        for name, out, shape, dtype in specs:
            if out is None:
                buffers.append((cuda.device_array(shape, dtype), None))
            elif isinstance(out, np.ndarray):
                buffers.append((cuda.device_array(shape, dtype), out))
            else:
                buffers.append((out, None))
        return buffers

    def out_tuple(op, out, n):
        if out is None:
            return [None] * n
        if not isinstance(out, tuple) or len(out) != n:
            raise TypeError(f"{op}: out must be a tuple of {n} (arrays or None), got "
                            f"{type(out).__name__}")
        return list(out)

    def finish(buf, host):
        if host is None:
            return buf
        buf.copy_to_host(host)
        return host


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
