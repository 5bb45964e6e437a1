"""Rescaling (Keras layers.Rescaling), the reference: y = x * scale + offset, any shape.

scale and offset are scalars (Python numbers); the product is taken in float64 from
their float32 values (what a float32 layer holds) and rounded once to float32.
"""
import numpy as np

from .. import _validate
from .._norm_checks import check_number


def rescale_forward(x, scale, offset=0.0):
    """y = x * scale + offset (Keras Rescaling). x float32, any shape; a new array."""
    op = "rescale_forward"
    _validate.check_float_array(op, "x", x)
    s = np.float64(np.float32(check_number(op, "scale", scale)))
    o = np.float64(np.float32(check_number(op, "offset", offset)))
    return (x.astype(np.float64) * s + o).astype(x.dtype)


def rescale_backward(dy, scale):
    """dx = dy * scale (the gradient of rescale_forward with respect to x). A new array."""
    op = "rescale_backward"
    _validate.check_float_array(op, "dy", dy)
    s = np.float64(np.float32(check_number(op, "scale", scale)))
    return (dy.astype(np.float64) * s).astype(dy.dtype)
