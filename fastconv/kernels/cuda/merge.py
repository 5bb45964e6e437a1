"""The merge ops of the Functional API (Keras Add, Concatenate) on the GPU.

Same names, arguments, errors and out= convention as
fastconv/kernels/reference/merge.py and cpu/merge.py. float32 only; device arrays
in and out (host arrays are copied in, a host out= is filled on return).

  add_forward:     y = xs[0] + xs[1], then y += xs[k] for k = 2, ...: the cpu
                   backend's order, so the sum is bitwise the cpu's (float32, one
                   rounding per addition; within rtol 1e-6 of the float64 reference
                   for a few inputs).
  accumulate_grad: dst += src in place.
  concat_forward / concat_backward: one launch per input (output), copying the
                   flattened (rows, C_k) block into (out of) channels c0:c0 + C_k of
                   the (rows, sum C_k) array.

Every kernel is a grid-stride loop over a flat index in uint32 (32-bit index math,
and unsigned indices skip Numba's negative-index wrap-around; operands are refused
at 2**31 elements, check_int32_indexable), consecutive threads on consecutive floats:
coalesced loads and stores (a concat row of C_k channels is contiguous on both
sides). Memory-bound: one read of each input and one write of the output per element.
Aliasing as on cpu: out= may be xs[0] or xs[1] (each element is read before it is
written); an out= that is one of xs[2:] would be overwritten before it is added.
"""
import numpy as np
from numba import cuda, float32, uint32

from .. import _validate
from . import _launch
from ._mem import (blocks_for, check_float32, check_int32_indexable, checkable, device_in,
                   finish, flat, is_device_array, out_buffer, out_buffers)
from ._spec import KernelSpec

_F1 = float32[::1]


@cuda.jit(device=True, inline="always")
def _start():
    """This thread's first flat index and the grid's stride, as uint32."""
    i = uint32(cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x)
    return i, uint32(cuda.gridDim.x * cuda.blockDim.x)


@cuda.jit
def add2(a, b, y):
    """y[i] = a[i] + b[i]. All (n,), n < 2**31; y may be a or b."""
    i, step = _start()
    n = uint32(y.size)
    while i < n:
        y[i] = a[i] + b[i]
        i = uint32(i + step)


@cuda.jit
def add_into(a, y):
    """y[i] += a[i]. Both (n,), n < 2**31."""
    i, step = _start()
    n = uint32(y.size)
    while i < n:
        y[i] = y[i] + a[i]
        i = uint32(i + step)


@cuda.jit
def copy_channels(src, dst, c, total, c0):
    """dst (rows * total,) viewed (rows, total): dst[r, c0 + j] = src[r, j] for the
    (rows, c) block src (rows * c,); rows * total < 2**31."""
    i, step = _start()
    n = uint32(src.size)
    while i < n:
        r = uint32(i // c)
        dst[uint32(r * total + c0 + (i - r * c))] = src[i]
        i = uint32(i + step)


@cuda.jit
def take_channels(src, dst, c, total, c0):
    """dst (rows * c,) viewed (rows, c): dst[r, j] = src[r, c0 + j] of src (rows, total)."""
    i, step = _start()
    n = uint32(dst.size)
    while i < n:
        r = uint32(i // c)
        dst[i] = src[uint32(r * total + c0 + (i - r * c))]
        i = uint32(i + step)


_U = (uint32, uint32, uint32)
KERNELS = [
    KernelSpec("add2", add2, (_F1, _F1, _F1), _launch.ELEMENTWISE),
    KernelSpec("add_into", add_into, (_F1, _F1), _launch.ELEMENTWISE),
    KernelSpec("copy_channels", copy_channels, (_F1, _F1) + _U, _launch.ELEMENTWISE),
    KernelSpec("take_channels", take_channels, (_F1, _F1) + _U, _launch.ELEMENTWISE),
]


def _launch_over(kernel, n, *args):
    threads = _launch.ELEMENTWISE
    kernel[blocks_for(n, threads, _launch.MAX_BLOCKS), threads](*args)


def _shape(a):
    """a.shape as a tuple of ints (the simulator's device arrays' shapes take no negative
    index)."""
    return tuple(int(s) for s in a.shape)


def _checked_inputs(op, xs, same):
    """check_merge_inputs on host or device xs (device arrays as checkable stand-ins),
    then each float32 and, on the device, C-contiguous. Returns xs as a tuple."""
    if isinstance(xs, (list, tuple)):
        _validate.check_merge_inputs(op, [checkable(x) for x in xs], same)
        for k, x in enumerate(xs):
            check_float32(op, f"xs[{k}]", x)
        return tuple(xs)
    return _validate.check_merge_inputs(op, xs, same)   # raises its TypeError


def add_forward(xs, out=None):
    """y = xs[0] + xs[1] + ... for n >= 2 float32 arrays of one shape, summed in that
    order. Writes out= (xs[0]'s shape, float32) or a new device array."""
    op = "add_forward"
    xs = _checked_inputs(op, xs, "shape")
    check_int32_indexable(op, xs[0].shape)
    y, host = out_buffer(op, "out", out, xs[0].shape)
    n = int(np.prod(xs[0].shape))
    if n:
        dev = [flat(device_in(op, f"xs[{k}]", x)) for k, x in enumerate(xs)]
        yf = flat(y)
        _launch_over(add2, n, dev[0], dev[1], yf)
        for a in dev[2:]:
            _launch_over(add_into, n, a, yf)
    return finish(y, host)


def accumulate_grad(dst, src):
    """dst += src in place (float32 arrays of one shape); returns None. A host dst is
    copied in, summed on the device and copied back into the same array."""
    op = "accumulate_grad"
    _validate.check_accumulate(op, checkable(dst), checkable(src))
    check_float32(op, "dst", dst)
    check_int32_indexable(op, dst.shape)
    if not dst.size:
        return None
    buf = device_in(op, "dst", dst)
    _launch_over(add_into, dst.size, flat(device_in(op, "src", src)), flat(buf))
    if not is_device_array(dst):
        dst[...] = buf.copy_to_host()
    return None


def concat_forward(xs, out=None):
    """xs (n >= 2 float32 arrays (N, C_k) or (N, H, W, C_k), equal but for C_k) joined
    over the last axis in order. Writes out= ((..., sum C_k), float32) or a new array."""
    op = "concat_forward"
    xs = _checked_inputs(op, xs, "leading")
    shapes = [_shape(x) for x in xs]
    total = sum(sh[-1] for sh in shapes)
    shape = shapes[0][:-1] + (total,)
    check_int32_indexable(op, shape)
    y, host = out_buffer(op, "out", out, shape)
    yf, c0 = flat(y), 0
    for k, (x, sh) in enumerate(zip(xs, shapes)):
        c = sh[-1]
        if y.size:
            _launch_over(copy_channels, x.size, flat(device_in(op, f"xs[{k}]", x)), yf,
                         np.uint32(c), np.uint32(total), np.uint32(c0))
        c0 += c
    return finish(y, host)


def concat_backward(dy, channels, out=None):
    """dy (..., sum(channels)) float32 split over its last axis: a tuple of len(channels)
    arrays (..., channels[k]), written into out= (a tuple of that many arrays or None)
    or new device arrays."""
    op = "concat_backward"
    channels = _validate.check_concat_split(op, checkable(dy), channels)
    check_float32(op, "dy", dy)
    check_int32_indexable(op, dy.shape)
    out = _validate.out_tuple(op, out, len(channels))
    lead = _shape(dy)[:-1]
    bufs = out_buffers(op, *((f"out[{k}]", o, lead + (c,), np.float32)
                             for k, (o, c) in enumerate(zip(out, channels))))
    total = _shape(dy)[-1]
    src = flat(device_in(op, "dy", dy)) if dy.size else None
    grads, c0 = [], 0
    for (buf, host), c in zip(bufs, channels):
        if buf.size:
            _launch_over(take_channels, buf.size, src, flat(buf), np.uint32(c),
                         np.uint32(total), np.uint32(c0))
        grads.append(finish(buf, host))
        c0 += c
    return tuple(grads)
