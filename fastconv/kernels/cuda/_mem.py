"""Device buffers of the cuda backend, and the argument checks every cuda wrapper shares.

Memory helpers (the model layer's view of a backend, like kernels/_host.py):
empty, zeros, to_device, to_host, synchronize. Buffers are numba device
arrays (DeviceNDArray; FakeCUDAArray under NUMBA_ENABLE_CUDASIM=1).

Argument helpers for the wrappers, so that every cuda op raises the
reference's messages (fastconv/kernels/_validate.py) and follows its out=
convention:
  checkable(a)      what to hand to a _validate check: device arrays become a
                    zero-byte NumPy stand-in with their shape and dtype;
  device_in(...)    the operand as a C-contiguous device array (a host array is
                    copied in: convenient, but a copy per call, not for hot paths);
  out_buffer(...)   the caller's out= buffer, checked, or a new device array;
  finish(...)       copies into a host out= array when the caller gave one.
Nothing here needs a GPU to import; numba.cuda is imported on first use.
"""
from __future__ import annotations

import numpy as np

from .. import _validate as v


def _cuda():
    from numba import cuda
    return cuda


def is_device_array(a):
    """True for numba device arrays (real or simulated), False for anything else."""
    return hasattr(a, "copy_to_host") and hasattr(a, "is_c_contiguous")


# -- the model layer's memory helpers ---------------------------------------------------

def empty(shape, dtype=np.float32):
    """An uninitialised C-contiguous device array."""
    return _cuda().device_array(shape, dtype)


def zeros(shape, dtype=np.float32):
    """A zero-filled device array (setup time only: it stages zeros on the host)."""
    return _cuda().to_device(np.zeros(shape, dtype))


def to_device(a):
    """A C-contiguous device copy of `a` (a host array or a device array); never an alias."""
    cuda = _cuda()
    if is_device_array(a):
        copy = cuda.device_array(a.shape, a.dtype)
        copy.copy_to_device(a)
        return copy
    return cuda.to_device(np.array(a, order="C", copy=True))


def to_host(value):
    """Host NumPy arrays for device arrays; tuples/lists element-wise; others as they are."""
    if isinstance(value, tuple):
        return tuple(to_host(x) for x in value)
    if isinstance(value, list):
        return [to_host(x) for x in value]
    if is_device_array(value):
        return value.copy_to_host()
    return value


def synchronize():
    """Wait for every launched kernel (timings and host reads need it)."""
    _cuda().synchronize()


# -- argument checks for the wrappers ---------------------------------------------------

def checkable(a):
    """`a` as something the _validate checks accept: a device array becomes a read-only
    NumPy array of its shape and dtype that owns no memory; anything else is returned
    as it is, so a wrong type gets _validate's own message."""
    if is_device_array(a):
        return np.broadcast_to(np.zeros((), a.dtype), a.shape)
    return a


def check_float32(op, name, a, ndim=None):
    """_validate.check_float_array for host or device `a`, float32 only (the cuda kernels
    are compiled for float32; _validate.float64_allowed() is for the reference)."""
    v.check_float_array(op, name, checkable(a), ndim)
    if a.dtype != np.float32:
        raise TypeError(f"{op}: {name} must be float32, got {a.dtype}")
    if is_device_array(a) and not a.is_c_contiguous():
        raise ValueError(f"{op}: {name} must be a C-contiguous device array")
    return a


def device_in(op, name, a, dtype=np.float32):
    """`a` as a C-contiguous device array of `dtype`. A host array is copied to the device
    (cast to `dtype`); a device array must already be C-contiguous and of `dtype`."""
    if is_device_array(a):
        if a.dtype != dtype:
            raise TypeError(f"{op}: {name} must be {np.dtype(dtype)}, got {a.dtype}")
        if not a.is_c_contiguous():
            raise ValueError(f"{op}: {name} must be a C-contiguous device array")
        return a
    return _cuda().to_device(np.ascontiguousarray(a, dtype=dtype))


def out_buffer(op, name, out, shape, dtype=np.float32):
    """The buffer a kernel writes: (device array, host array to copy into or None).

    out None: a new device array. out a device array or a host ndarray: it must be
    exactly `dtype` of `shape` (the reference's message otherwise); a host one gets a
    device staging buffer and finish() copies into it.
    """
    return out_buffers(op, (name, out, shape, dtype))[0]


def out_buffers(op, *specs):
    """out_buffer for several (name, out, shape, dtype): all are checked before any
    device memory is allocated, so a bad one raises without touching the device."""
    specs = [(name, out, tuple(int(s) for s in shape), np.dtype(dtype))
             for name, out, shape, dtype in specs]
    for name, out, shape, dtype in specs:
        if out is None:
            continue
        if not (is_device_array(out) or isinstance(out, np.ndarray)):
            raise TypeError(f"{op}: {name} must be a numpy.ndarray or a device array, got "
                            f"{type(out).__name__}")
        if tuple(out.shape) != shape or out.dtype != dtype:
            raise ValueError(f"{op}: {name} must be {dtype} of shape {shape}, got "
                             f"{out.dtype} of shape {tuple(out.shape)}")
        if is_device_array(out) and not out.is_c_contiguous():
            raise ValueError(f"{op}: {name} must be a C-contiguous device array")
    buffers = []
    for name, out, shape, dtype in specs:
        if out is None:
            buffers.append((_cuda().device_array(shape, dtype), None))
        elif isinstance(out, np.ndarray):
            buffers.append((_cuda().device_array(shape, dtype), out))
        else:
            buffers.append((out, None))
    return buffers


def out_tuple(op, out, n):
    """The out= tuple of an op with `n` results, as a list of n entries (None: allocate)."""
    if out is None:
        return [None] * n
    if not isinstance(out, tuple) or len(out) != n:
        raise TypeError(f"{op}: out must be a tuple of {n} (arrays or None), got "
                        f"{type(out).__name__}")
    return list(out)


def finish(buf, host):
    """What the op returns for one output: `host` filled from `buf`, or `buf` itself."""
    if host is None:
        return buf
    buf.copy_to_host(host)
    return host


def flat(a):
    """A 1-D view of the C-contiguous device array `a` (for elementwise kernels)."""
    return a.reshape(a.size)


def blocks_for(n, threads, max_blocks=65535):
    """Blocks of `threads` covering n items, capped: the kernels loop with a grid stride."""
    return max(1, min(max_blocks, -(-int(n) // int(threads))))
