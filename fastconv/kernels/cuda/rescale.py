"""Rescaling (Keras layers.Rescaling) on the GPU: y = x * scale + offset, any shape.

Same names, arguments, errors and out= convention as
fastconv/kernels/reference/rescale.py. One grid-stride kernel over the flattened,
C-contiguous array (consecutive threads read consecutive floats: coalesced), float32
arithmetic with scale and offset rounded to float32 on the host; the backward
(dx = dy * scale) is the same kernel with offset 0.
"""
import numpy as np
from numba import cuda, float32

from .._norm_checks import check_number
from . import _launch
from ._mem import blocks_for, check_float32, device_in, finish, flat, out_buffer
from ._spec import KernelSpec

_F1 = float32[::1]


@cuda.jit
def affine(x, y, s, o):
    """y[i] = x[i] * s + o. x, y (n,) float32; s, o float32 scalars."""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        y[i] = x[i] * s + o


KERNELS = [KernelSpec("affine", affine, (_F1, _F1, float32, float32), _launch.ELEMENTWISE)]


def _run(op, name, x, s, o, out):
    y, host = out_buffer(op, "out", out, x.shape)
    x = device_in(op, name, x)
    if x.size:
        threads = _launch.ELEMENTWISE
        affine[blocks_for(x.size, threads, _launch.MAX_BLOCKS), threads](
            flat(x), flat(y), s, o)
    return finish(y, host)


def rescale_forward(x, scale, offset=0.0, out=None):
    """y = x * scale + offset (device array, or the out= buffer), x float32 any shape."""
    op = "rescale_forward"
    check_float32(op, "x", x)
    s = np.float32(check_number(op, "scale", scale))
    o = np.float32(check_number(op, "offset", offset))
    return _run(op, "x", x, s, o, out)


def rescale_backward(dy, scale, out=None):
    """dx = dy * scale (device array, or the out= buffer), dy float32 any shape."""
    op = "rescale_backward"
    check_float32(op, "dy", dy)
    s = np.float32(check_number(op, "scale", scale))
    return _run(op, "dy", dy, s, np.float32(0.0), out)
