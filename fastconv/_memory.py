"""Moving data into and out of a backend's buffers without allocating.

The model layer only needs the backend's `empty/zeros/to_device/to_host`
(see fastconv.kernels). For copies into buffers it already owns it uses
`numpy.copyto` when the buffer is a NumPy array (reference and cpu), and the
`copy_to_device`/`copy_to_host` methods of device arrays (numba-cuda's
DeviceNDArray) otherwise, so a step moves a batch in without a new buffer.
"""
from __future__ import annotations

import numpy as np


def upload(host, buf):
    """Copy the host array `host` into the backend buffer `buf` (same shape)."""
    if isinstance(buf, np.ndarray):
        np.copyto(buf, host, casting="unsafe")
        return buf
    if hasattr(buf, "copy_to_device"):
        if not (isinstance(host, np.ndarray) and host.dtype == buf.dtype
                and host.flags.c_contiguous):
            host = np.ascontiguousarray(host, dtype=buf.dtype)
        buf.copy_to_device(host)
        return buf
    raise TypeError(f"cannot copy into a buffer of type {type(buf).__name__}: it is "
                    f"neither a numpy.ndarray nor has copy_to_device()")


def download(buf, host):
    """Copy the backend buffer `buf` into the host array `host`; returns `host`,
    or `buf` itself when it already lives on the host."""
    if isinstance(buf, np.ndarray):
        return buf
    if hasattr(buf, "copy_to_host"):
        buf.copy_to_host(host)
        return host
    raise TypeError(f"cannot copy from a buffer of type {type(buf).__name__}")


def copy(src, dst):
    """dst[...] = src for two buffers of one backend."""
    if isinstance(dst, np.ndarray) and isinstance(src, np.ndarray):
        np.copyto(dst, src)
    elif hasattr(dst, "copy_to_device"):
        dst.copy_to_device(src)
    else:
        raise TypeError(f"cannot copy between buffers of type {type(src).__name__} "
                        f"and {type(dst).__name__}")
    return dst


def to_numpy(K, a):
    """A host NumPy copy of the backend array `a` (a new array the caller owns)."""
    return np.array(K.to_host(a), copy=True)
