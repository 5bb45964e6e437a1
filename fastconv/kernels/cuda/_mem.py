"""Device buffers of the cuda backend, and the argument checks every cuda wrapper shares.

Memory helpers (the model layer's view of a backend, like kernels/_host.py):
empty, zeros, to_device, to_host, synchronize. Buffers are numba device
arrays (DeviceNDArray; FakeCUDAArray under NUMBA_ENABLE_CUDASIM=1).

Argument helpers for the wrappers, so that every cuda op raises the
reference's messages (fastconv/kernels/_validate.py) and follows its out=
convention (its checks are _validate.out_tuple and check_out; these add only
the device's part):
  checkable(a)      what to hand to a _validate check: device arrays become a
                    zero-byte NumPy stand-in with their shape and dtype;
  device_in(...)    the operand as a C-contiguous device array (a host array is
                    copied in: convenient, but a copy per call, not for hot paths);
  out_buffer(...)   the caller's out= buffer, checked, or a new device array;
  finish(...)       copies into a host out= array when the caller gave one.

Workspaces: workspace() (and cached(), under it) give scratch device buffers
(dw partials, the fused backward's conv-grid gradient, the losses' scalars)
allocated once per shape and reused, so a training step allocates nothing. They
belong to the calling Python thread and to the current CUDA context (one cache
per thread and context, the last _MAX_CONTEXTS contexts kept), so threads never
share scratch (two threads' launches interleave on the device's stream: a shared
buffer would be overwritten between one thread's kernels) and a buffer is never
used in a context other than the one that allocated it (e.g. after cuda.close()).

Nothing here needs a GPU to import; numba.cuda is imported on first use.
"""
from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from .. import _validate


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
    _validate.check_float_array(op, name, checkable(a), ndim)
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
        _validate.check_out(op, name, out, shape, dtype, is_device_array)
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
    """ceil(n / per_block), at least 1, uncapped: tile counts and the conv kernels' grids
    (blocks_for is the capped count of the grid-stride kernels)."""
    return max(1, -(-int(n) // int(per_block)))


# -- pinned, double-buffered batch staging (fit's one copy in per step) -----------------

_ALIGN = 256                  # each part of a packed batch starts 256-byte aligned


def _make_upload_stream():
    """A stream for batch uploads that does not wait for the legacy default stream, where
    the kernels run (numba's cuda.stream() does: CU_STREAM_DEFAULT), so an upload can
    overlap the previous batch's kernels; events order the two (BatchStager). Falls back
    to cuda.stream() (ordered correctly, no overlap) under the simulator or when numba's
    driver layer does not offer the flag."""
    cuda = _cuda()
    from numba.cuda import config
    if not config.ENABLE_CUDASIM:
        try:
            from numba.cuda.cudadrv import driver as drv
            flags = drv.binding.CUstream_flags.CU_STREAM_NON_BLOCKING.value
            ctx = cuda.current_context()
            handle = drv.driver.cuStreamCreate(flags)
            return drv.Stream(handle, finalizer=drv._stream_finalizer(ctx.deallocations,
                                                                      handle))
        except Exception:     # a numba-cuda whose driver internals differ: blocking stream
            pass
    return cuda.stream()


def upload_stream():
    """This thread's batch-upload stream in the current context (one, made once)."""
    return cached("upload_stream", _make_upload_stream)


def _event(cuda):
    """An event without timing (cheaper to record); the simulator's takes no arguments."""
    from numba.cuda import config
    return cuda.event() if config.ENABLE_CUDASIM else cuda.event(timing=False)


class _Slot:
    """One staging slot: a pinned host buffer and a device buffer of the same bytes, typed
    views of each part, and the events that order its reuse."""

    def __init__(self, cuda, total, parts):
        self.host = cuda.pinned_array(total, np.uint8)
        self.dev = cuda.device_array(total, np.uint8)
        self.host_views = [self.host[o:o + nb].view(dt).reshape(shape)
                           for o, nb, shape, dt in parts]
        self.dev_views = [self.dev[o:o + nb].view(dt).reshape(shape)
                          for o, nb, shape, dt in parts]
        self.uploaded = _event(cuda)                # recorded on the upload stream
        self.consumed = _event(cuda)                # recorded on the compute stream
        self.in_flight = False                      # an upload out of host may be pending
        self.used = False                           # kernels may still read dev


class BatchStager:
    """A plan's batch inputs (x, labels: `parts` = [(shape, dtype)]) packed into one
    buffer, so a batch is one host->device copy: two slots of pinned host memory and
    device memory, allocated once. A step writes the next slot's host views
    (host_views()), then upload() queues that slot's copy on the upload stream and
    returns its device views; the default stream (the kernels) waits for the copy by an
    event, not the host. A slot is reused two batches later: its host buffer only after
    its earlier copy has left it (host waits on that event, normally long done), its
    device buffer only after the kernels that read it (the upload stream waits on an
    event recorded after them), so batch k + 1 uploads while batch k computes."""

    def __init__(self, parts):
        cuda = _cuda()
        layout, total = [], 0
        for shape, dtype in parts:
            shape = tuple(int(s) for s in shape)
            nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
            layout.append((total, nbytes, shape, np.dtype(dtype)))
            total += -(-nbytes // _ALIGN) * _ALIGN
        total = max(total, _ALIGN)
        self.slots = [_Slot(cuda, total, layout) for _ in range(2)]
        self.stream = upload_stream()
        self.k = 0                                  # the slot the next batch goes to
        self.current = None                         # the slot the last upload filled

    def host_views(self):
        """The next slot's host arrays, one per part, safe to overwrite now."""
        slot = self.slots[self.k]
        if slot.in_flight:
            slot.uploaded.synchronize()
            slot.in_flight = False
        return slot.host_views

    def upload(self):
        """Queue the next slot's copy (asynchronous from pinned memory) and make later
        kernels wait for it; returns the slot's device views, one per part."""
        slot = self.slots[self.k]
        if self.current is not None:                # the previous batch's kernels are
            self.current.consumed.record(0)         # queued: mark where they end
            self.current.used = True
        if slot.used:
            slot.consumed.wait(self.stream)         # its last reader has finished
        slot.dev.copy_to_device(slot.host, stream=self.stream)
        slot.uploaded.record(self.stream)
        slot.in_flight = True
        slot.uploaded.wait(0)                       # the kernels wait for the batch
        self.current = slot
        self.k = 1 - self.k
        return slot.dev_views
