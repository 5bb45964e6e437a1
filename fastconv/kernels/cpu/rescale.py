"""Rescaling (Keras layers.Rescaling), Numba CPU: y = x * scale + offset, any shape.

Same names, arguments, errors and out= convention as
fastconv/kernels/reference/rescale.py. float32 arithmetic with scale and offset
rounded to float32 first (what Keras's float32 layer computes); one multiply and
one add, not fused (no FMA), so the result is Keras's to the bit.
"""
import numpy as np
from numba import prange

from .. import _validate
from .._norm_checks import check_number
from ._common import Target, check_float32, contiguous, flat, kernel


@kernel
def _affine(x, s, o, y):
    for i in prange(x.size):
        y[i] = x[i] * s + o


def rescale_forward(x, scale, offset=0.0, out=None):
    """y = x * scale + offset, x float32 of any shape; out= a buffer of x's shape."""
    op = "rescale_forward"
    _validate.check_float_array(op, "x", x)
    check_float32(op, "x", x)
    s = np.float32(check_number(op, "scale", scale))
    o = np.float32(check_number(op, "offset", offset))
    x = contiguous(x)
    t = Target(op, "out", out, x.shape)
    _affine(x.size, flat(x), s, o, flat(t.buf))
    return t.result()


def rescale_backward(dy, scale, out=None):
    """dx = dy * scale, dy float32 of any shape; out= a buffer of dy's shape."""
    op = "rescale_backward"
    _validate.check_float_array(op, "dy", dy)
    check_float32(op, "dy", dy)
    s = np.float32(check_number(op, "scale", scale))
    dy = contiguous(dy)
    t = Target(op, "out", out, dy.shape)
    _affine(dy.size, flat(dy), s, np.float32(0.0), flat(t.buf))
    return t.result()
