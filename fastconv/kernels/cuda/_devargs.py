"""Argument checks, out= buffers and cached workspaces for the CUDA wrappers.

The shared checks in fastconv/kernels/_validate.py want NumPy arrays; here a
device array is first checked for what only a device array can get wrong
(not a device array, wrong dtype, not C-contiguous), then stood in for by a
data-less NumPy view of the same shape and dtype (`meta`), so that every
shape and geometry error is raised by _validate with the reference's exact
message. Nothing here copies to or from the host.
"""
from collections import OrderedDict

import numpy as np
from numba import cuda

_is_device_array = cuda.devicearray.is_cuda_ndarray


def meta(op, name, a, dtype=np.float32):
    """A host stand-in (no data, zero strides) for the device array `a`, after checking that
    `a` is a C-contiguous device array of `dtype` (float32 only: no float64 specialisation)."""
    if not _is_device_array(a):
        raise TypeError(f"{op}: {name} must be a CUDA device array (numba.cuda device_array), "
                        f"got {type(a).__name__}")
    if a.dtype != dtype:
        raise TypeError(f"{op}: {name} must be {np.dtype(dtype).name}, got {a.dtype}")
    if not a.is_c_contiguous():
        raise ValueError(f"{op}: {name} must be C-contiguous, got strides {a.strides}")
    return np.broadcast_to(np.zeros((), dtype), a.shape)


def split_out(op, out, n):
    """The out= argument of an op with n results as an n-tuple (the reference's convention:
    None, or a tuple with a buffer or None per result)."""
    if out is None:
        return (None,) * n
    if not isinstance(out, tuple) or len(out) != n:
        raise TypeError(f"{op}: out must be a tuple of {n} (arrays or None), got "
                        f"{type(out).__name__}")
    return out


def out_buffer(op, name, buf, shape, dtype=np.float32):
    """`buf` checked against the result it will hold, or a new device array when it is None."""
    shape = tuple(int(s) for s in shape)
    dtype = np.dtype(dtype)
    if buf is None:
        return cuda.device_array(shape, dtype)
    if not _is_device_array(buf):
        raise TypeError(f"{op}: {name} must be a CUDA device array, got {type(buf).__name__}")
    if tuple(buf.shape) != shape or buf.dtype != dtype:
        raise ValueError(f"{op}: {name} must be {dtype} of shape {shape}, got "
                         f"{buf.dtype} of shape {tuple(buf.shape)}")
    if not buf.is_c_contiguous():
        raise ValueError(f"{op}: {name} must be C-contiguous, got strides {buf.strides}")
    return buf


_WORKSPACES = OrderedDict()
_MAX_WORKSPACES = 32


def workspace(tag, shape, dtype=np.float32):
    """A cached scratch device array for (tag, shape, dtype), reused by every later call.

    Kernels on one stream run in order, so ops that share a workspace never overlap.
    Least-recently-used entries beyond _MAX_WORKSPACES are dropped (freed by numba).
    """
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
    return max(1, -(-int(n) // int(per_block)))
