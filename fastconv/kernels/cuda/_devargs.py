"""Argument helpers of the conv2d/fused/dense wrappers, and their cached workspaces.

The argument helpers come from fastconv/kernels/cuda/_mem.py (checkable,
check_float32, device_in, out_buffers, out_tuple, finish), so every cuda op follows one
policy: the reference's messages from _validate, device arrays used as they are, host
arrays copied in (a convenience, a copy per call), out= device buffers written in place.

workspace() is this file's own: scratch device buffers (dw partials, the fused backward's
conv-grid gradient) allocated once per shape and reused, so a training step allocates
nothing. They belong to the calling Python thread and to the current CUDA context
(cached(): one cache per thread and context, the last _MAX_CONTEXTS contexts kept), so
threads never share scratch (two threads' launches interleave on the device's stream:
a shared buffer would be overwritten between one thread's kernels) and a buffer is
never used in a context other than the one that allocated it (e.g. after cuda.close()).
"""
import threading
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


# Per Python thread: [(context, OrderedDict {key: buffer})], most recent context last.
_LOCAL = threading.local()
_MAX_WORKSPACES = 32          # per thread and context
_MAX_CONTEXTS = 4             # per thread (a thread that switches devices keeps each cache)


def _same_context(old, new):
    """True when `old` and `new` are the same CUDA context. On a GPU a context is one
    Context object for its whole life (cuda.close() makes the next one a new object, even
    if the driver reuses the handle), so identity. The simulator hands out a new fake
    context object on every call: its contexts are the same when their device ids are."""
    if getattr(new, "handle", None) is None:
        return getattr(old, "handle", None) is None and old.id == new.id
    return old is new


def cached(key, make, *args):
    """The calling thread's buffer for `key` in the current CUDA context, made by
    make(*args) on first use. Least-recently-used entries beyond _MAX_WORKSPACES are
    dropped (freed by numba once no launch holds them)."""
    from numba import cuda
    ctx = cuda.current_context()
    caches = getattr(_LOCAL, "caches", None)
    if caches is None:
        caches = _LOCAL.caches = []
    for k, (c, bufs) in enumerate(caches):
        if _same_context(c, ctx):
            if k != len(caches) - 1:
                caches.append(caches.pop(k))
            break
    else:
        bufs = OrderedDict()
        caches.append((ctx, bufs))
        if len(caches) > _MAX_CONTEXTS:
            caches.pop(0)
    buf = bufs.get(key)
    if buf is None:
        buf = make(*args)
        bufs[key] = buf
        while len(bufs) > _MAX_WORKSPACES:
            bufs.popitem(last=False)
    else:
        bufs.move_to_end(key)
    return buf


def workspace(tag, shape, dtype=np.float32):
    """A scratch device array for (tag, shape, dtype), reused by this thread's later calls
    in this CUDA context (see cached()).

    One thread's kernels run in order on the stream, so its ops that share a workspace
    never overlap; other threads have their own.
    """
    from numba import cuda
    key = (tag, tuple(int(s) for s in shape), np.dtype(dtype).str)
    return cached(key, cuda.device_array, key[1], dtype)


def blocks(n, per_block):
    """ceil(n / per_block), at least 1."""
    return max(1, -(-int(n) // int(per_block)))
