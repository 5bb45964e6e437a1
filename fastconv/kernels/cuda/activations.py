"""Activations and dropout on the GPU, with the reference's names and meaning.

Wrappers take device arrays (host arrays are copied in), check them with the
reference's messages, write into `out=` device buffers when given (else new
device arrays) and launch:
  relu/sigmoid, dropout: grid-stride kernels over the flattened, C-contiguous
    arrays, one element per thread per stride (consecutive threads touch
    consecutive floats, so every access is coalesced);
  softmax (N, K): one block per row (grid-stride over rows), the row's max and
    sum by a shared-memory tree reduction (fastconv/kernels/cuda/_reduce.py).
All arithmetic is float32 (the reference computes in float64 and rounds; the
difference is a few ulps). Backward ops take the forward output y, as the
reference does.
"""
import math

import numpy as np
from numba import cuda, float32, uint32

from .. import _validate
from .._host import dropout_mask
from . import _launch
from ._launch import ROW_MAX
from ._mem import blocks_for, check_float32, device_in, finish, flat, out_buffer, out_buffers
from ._reduce import block_max, block_sum
from ._spec import KernelSpec

_F1 = float32[::1]
_F2 = float32[:, ::1]


@cuda.jit
def relu_fwd(x, y):
    """y[i] = x[i] if x[i] > 0 else 0 (NaN passes through, as np.maximum). x, y (n,)."""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        xi = x[i]
        y[i] = np.float32(0.0) if xi <= np.float32(0.0) else xi


@cuda.jit
def relu_bwd(dy, y, dx):
    """dx[i] = dy[i] where y[i] > 0, else 0 (the gradient at 0 is 0). All (n,)."""
    for i in range(cuda.grid(1), dy.size, cuda.gridsize(1)):
        dx[i] = dy[i] if y[i] > np.float32(0.0) else np.float32(0.0)


@cuda.jit
def sigmoid_fwd(x, y):
    """y = 1 / (1 + exp(-x)) without overflow: exp of -|x| only. x, y (n,)."""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        xi = x[i]
        e = math.exp(-abs(xi))
        if xi >= np.float32(0.0):
            y[i] = np.float32(1.0) / (np.float32(1.0) + e)
        else:
            y[i] = e / (np.float32(1.0) + e)


@cuda.jit
def sigmoid_bwd(dy, y, dx):
    """dx = dy * y * (1 - y). All (n,)."""
    for i in range(cuda.grid(1), dy.size, cuda.gridsize(1)):
        yi = y[i]
        dx[i] = dy[i] * yi * (np.float32(1.0) - yi)


@cuda.jit
def multiply(a, b, c):
    """c = a * b elementwise (dropout: y = x * mask, dx = dy * mask). All (n,)."""
    for i in range(cuda.grid(1), a.size, cuda.gridsize(1)):
        c[i] = a[i] * b[i]


@cuda.jit
def fill(a, value):
    """a[i] = value for every i (zeroing an accumulator before a scatter). a (n,)."""
    for i in range(cuda.grid(1), a.size, cuda.gridsize(1)):
        a[i] = value


_M32 = np.uint64(0xFFFFFFFF)


@cuda.jit(device=True)
def _mix32(h):
    """Chris Wellons' lowbias32 integer hash of the low 32 bits of the uint64 h (a
    bijection on 32-bit values, avalanche bias ~0.17%), computed in uint64 and masked
    so it means the same compiled and simulated (no 32-bit overflow semantics needed)."""
    h = h & _M32
    h = h ^ (h >> np.uint64(16))
    h = (h * np.uint64(0x7FEB352D)) & _M32
    h = h ^ (h >> np.uint64(15))
    h = (h * np.uint64(0x846CA68B)) & _M32
    return h ^ (h >> np.uint64(16))


@cuda.jit
def dropout_hash_fwd(x, mask, y, seed_lo, seed_hi, rate, scale):
    """Inverted dropout with a counter-based mask: u_i = top 24 bits of
    mix32(mix32(i ^ seed_lo) + seed_hi) / 2^24 in [0, 1); mask[i] = scale where
    u_i >= rate, else 0; y[i] = x[i] * mask[i]. x, mask, y (n,), n < 2^32; overwrites
    mask and y. The mask depends only on (seed, i): no generator state on the device,
    the same for any grid, reproducible from the seed alone."""
    lo = np.uint64(seed_lo)
    hi = np.uint64(seed_hi)
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        h = _mix32((_mix32(np.uint64(i) ^ lo) + hi) & _M32)
        u = np.float32(h >> np.uint64(8)) * np.float32(1.0 / 16777216.0)
        m = scale if u >= rate else np.float32(0.0)
        mask[i] = m
        y[i] = x[i] * m


@cuda.jit
def softmax_fwd(x, y):
    """y[r] = exp(x[r] - max x[r]) / sum, per row r of x, y (N, K); a block per row."""
    sh = cuda.shared.array(ROW_MAX, float32)
    t = cuda.threadIdx.x
    nt = cuda.blockDim.x
    n, k = x.shape
    for r in range(cuda.blockIdx.x, n, cuda.gridDim.x):   # uniform per block: syncs are safe
        m = np.float32(-np.inf)
        for j in range(t, k, nt):
            m = max(m, x[r, j])
        m = block_max(sh, m)
        s = np.float32(0.0)
        for j in range(t, k, nt):
            s += math.exp(x[r, j] - m)
        s = block_sum(sh, s)
        for j in range(t, k, nt):
            y[r, j] = math.exp(x[r, j] - m) / s


@cuda.jit
def softmax_bwd(dy, y, dx):
    """dx[r] = y[r] * (dy[r] - sum_k dy[r, k] * y[r, k]), rows of (N, K); a block per row."""
    sh = cuda.shared.array(ROW_MAX, float32)
    t = cuda.threadIdx.x
    nt = cuda.blockDim.x
    n, k = dy.shape
    for r in range(cuda.blockIdx.x, n, cuda.gridDim.x):
        s = np.float32(0.0)
        for j in range(t, k, nt):
            s += dy[r, j] * y[r, j]
        s = block_sum(sh, s)
        for j in range(t, k, nt):
            dx[r, j] = y[r, j] * (dy[r, j] - s)


KERNELS = [
    KernelSpec("relu_fwd", relu_fwd, (_F1, _F1), _launch.ELEMENTWISE),
    KernelSpec("relu_bwd", relu_bwd, (_F1, _F1, _F1), _launch.ELEMENTWISE),
    KernelSpec("sigmoid_fwd", sigmoid_fwd, (_F1, _F1), _launch.ELEMENTWISE),
    KernelSpec("sigmoid_bwd", sigmoid_bwd, (_F1, _F1, _F1), _launch.ELEMENTWISE),
    KernelSpec("multiply", multiply, (_F1, _F1, _F1), _launch.ELEMENTWISE),
    KernelSpec("fill", fill, (_F1, float32), _launch.ELEMENTWISE),
    KernelSpec("dropout_hash_fwd", dropout_hash_fwd,
               (_F1, _F1, _F1, uint32, uint32, float32, float32), _launch.ELEMENTWISE),
    KernelSpec("softmax_fwd", softmax_fwd, (_F2, _F2), _launch.ROW),
    KernelSpec("softmax_bwd", softmax_bwd, (_F2, _F2, _F2), _launch.ROW),
]


def elementwise_launch(kernel, n, *arrays):
    """(kernel, (grid, block), arguments) of a grid-stride elementwise kernel over n items
    of the flattened arrays (a launch list entry: _launch.run)."""
    threads = _launch.ELEMENTWISE
    return (kernel, (blocks_for(n, threads, _launch.MAX_BLOCKS), threads),
            tuple(flat(a) for a in arrays))


def _elementwise(kernel, n, *arrays):
    _launch.run([elementwise_launch(kernel, n, *arrays)])


def zero_launches(a):
    """The launches that set the C-contiguous float32 device array `a` to 0 (none if empty)."""
    if not a.size:
        return []
    threads = _launch.ELEMENTWISE
    return [(fill, (blocks_for(a.size, threads, _launch.MAX_BLOCKS), threads),
             (flat(a), np.float32(0.0)))]


def zero(a):
    """Set the C-contiguous float32 device array `a` to 0 on the device."""
    _launch.run(zero_launches(a))


def _rows(kernel, n_rows, *arrays):
    threads = _launch.ROW
    if threads > ROW_MAX or threads & (threads - 1):
        raise ValueError(f"_launch.ROW must be a power of two <= {ROW_MAX}, got {threads}")
    kernel[max(1, min(int(n_rows), _launch.MAX_BLOCKS)), threads](*arrays)


def _unary(op, kernel, x, out):
    check_float32(op, "x", x)
    y, host = out_buffer(op, "out", out, x.shape)
    x = device_in(op, "x", x)
    if x.size:
        _elementwise(kernel, x.size, x, y)
    return finish(y, host)


def _binary(op, kernel, a, b, out, names=("dy", "y")):
    check_float32(op, names[0], a)
    check_float32(op, names[1], b)
    _validate.check_same_shape(op, names[0], a, names[1], b)
    c, host = out_buffer(op, "out", out, a.shape)
    a = device_in(op, names[0], a)
    b = device_in(op, names[1], b)
    if a.size:
        _elementwise(kernel, a.size, a, b, c)
    return finish(c, host)


def relu_forward(x, out=None):
    """y = max(x, 0). x any shape, float32 C-contiguous; writes out (x's shape) or a new array."""
    return _unary("relu_forward", relu_fwd, x, out)


def relu_backward(dy, y, out=None):
    """dx = dy where y > 0, else 0. dy, y one shape; writes out (that shape) or a new array."""
    return _binary("relu_backward", relu_bwd, dy, y, out)


def sigmoid_forward(x, out=None):
    """y = 1 / (1 + exp(-x)), overflow-free. Writes out (x's shape) or a new array."""
    return _unary("sigmoid_forward", sigmoid_fwd, x, out)


def sigmoid_backward(dy, y, out=None):
    """dx = dy * y * (1 - y). Writes out (dy's shape) or a new array."""
    return _binary("sigmoid_backward", sigmoid_bwd, dy, y, out)


def softmax_forward(x, out=None):
    """Softmax over the last axis of x (N, K), max-shifted. Writes out (N, K) or a new array."""
    op = "softmax_forward"
    check_float32(op, "x", x, 2)
    y, host = out_buffer(op, "out", out, x.shape)
    x = device_in(op, "x", x)
    if x.size:
        _rows(softmax_fwd, x.shape[0], x, y)
    return finish(y, host)


def softmax_backward(dy, y, out=None):
    """dx = y * (dy - sum_k dy * y) per row of (N, K). Writes out (N, K) or a new array."""
    op = "softmax_backward"
    check_float32(op, "dy", dy, 2)
    check_float32(op, "y", y, 2)
    _validate.check_same_shape(op, "dy", dy, "y", y)
    dx, host = out_buffer(op, "out", out, dy.shape)
    dy = device_in(op, "dy", dy)
    y = device_in(op, "y", y)
    if dy.size:
        _rows(softmax_bwd, dy.shape[0], dy, y, dx)
    return finish(dx, host)


def dropout_forward(x, rate, rng, out=None):
    """Inverted dropout (training): returns (y = x * mask, mask), both x's shape.

    The mask is drawn on the host by kernels/_host.py's dropout_mask (same generator
    state, same mask on every backend) and copied to the device: one host draw and
    one upload per call. The model layer draws its masks into buffers it owns and
    calls dropout_backward(x, mask) instead, so its steps allocate nothing.
    out: None or (y, mask) buffers (either may be None).
    """
    op = "dropout_forward"
    check_float32(op, "x", x)
    rate = _validate.check_rate(op, rate)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"{op}: rng must be a numpy.random.Generator, got {type(rng).__name__}")
    out_y, out_mask = _validate.out_tuple(op, out, 2)
    (y, host_y), (mask, host_mask) = out_buffers(
        op, ("out[0]", out_y, x.shape, np.float32), ("out[1]", out_mask, x.shape, np.float32))
    x = device_in(op, "x", x)
    mask_host = dropout_mask(x.shape, rate, rng, np.float32)
    mask.copy_to_device(mask_host)
    if x.size:
        _elementwise(multiply, x.size, x, mask, y)
    return finish(y, host_y), finish(mask, host_mask)


def dropout_mask_ref(shape, rate, seed):
    """NumPy twin of dropout_hash_fwd's mask for `seed` (a 64-bit int): float32 of
    `shape`, 1 / (1 - rate) where kept, else 0 (what the tests check the kernel against)."""
    n = int(np.prod(shape))
    m32 = np.uint64(0xFFFFFFFF)

    def mix(h):
        h = h & m32
        h ^= h >> np.uint64(16)
        h = (h * np.uint64(0x7FEB352D)) & m32
        h ^= h >> np.uint64(15)
        h = (h * np.uint64(0x846CA68B)) & m32
        return h ^ (h >> np.uint64(16))

    lo, hi = np.uint64(seed & 0xFFFFFFFF), np.uint64((seed >> 32) & 0xFFFFFFFF)
    h = mix((mix(np.arange(n, dtype=np.uint64) ^ lo) + hi) & m32)
    u = (h >> np.uint64(8)).astype(np.float32) * np.float32(1.0 / 16777216.0)
    scale = np.float32(1.0 / (1.0 - rate))
    return np.where(u >= np.float32(rate), scale, np.float32(0.0)).astype(np.float32).reshape(shape)


def dropout_forward_seeded(x, rate, seed, out):
    """Inverted dropout with the mask drawn on the device from `seed` (an int in
    [0, 2**64)): writes out = (y, mask) (device buffers of x's shape, or None for new
    ones), y = x * mask, mask 1 / (1 - rate) where kept. The model layer's cuda steps use it (no host draw, no upload); the masks
    are not those of the cpu/reference backends' generator (dropout_forward), only
    reproducible from the same seed. Returns (y, mask)."""
    op = "dropout_forward"
    check_float32(op, "x", x)
    rate = _validate.check_rate(op, rate)
    out_y, out_mask = _validate.out_tuple(op, out, 2)
    (y, host_y), (mask, host_mask) = out_buffers(
        op, ("out[0]", out_y, x.shape, np.float32), ("out[1]", out_mask, x.shape, np.float32))
    if x.size:
        seed = int(seed)
        threads = _launch.ELEMENTWISE
        dropout_hash_fwd[blocks_for(x.size, threads, _launch.MAX_BLOCKS), threads](
            flat(x), flat(mask), flat(y), np.uint32(seed & 0xFFFFFFFF),
            np.uint32((seed >> 32) & 0xFFFFFFFF), np.float32(rate),
            np.float32(1.0 / (1.0 - rate)))
    return finish(y, host_y), finish(mask, host_mask)


def dropout_backward(dy, mask, out=None):
    """dx = dy * mask (also the forward pass given a mask: y = x * mask).
    Writes out (dy's shape) or a new array."""
    return _binary("dropout_backward", multiply, dy, mask, out, names=("dy", "mask"))

