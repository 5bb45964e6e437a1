"""Fused layer ops, defined as the composition of the unfused reference ops.

Fast backends implement these in one pass (the big pre-pool activation is
never written); the reference spells out what they must equal.

Argmax of the pooled variants follows maxpool2d_forward's convention over the
conv output grid (OH, OW), but is only meaningful where y > 0: where a whole
window is <= 0 after ReLU, y is 0, the gradient is 0, and a fast backend may
pick any index in the window.
"""
import numpy as np

from .. import _validate
from .activations import relu_backward, relu_forward
from .conv2d import conv2d_backward, conv2d_forward
from .pool import maxpool2d_backward, maxpool2d_forward


def conv2d_relu_forward(x, w, b, stride=1, padding="valid"):
    """y = relu(conv2d_forward(x, w, b)), a new (N, OH, OW, F) array."""
    return relu_forward(conv2d_forward(x, w, b, stride, padding))


def conv2d_relu_backward(x, w, dy, y, stride=1, padding="valid", need_dx=True):
    """conv2d_backward with dz = dy where y > 0 (y the fused forward's output)."""
    return conv2d_backward(x, w, relu_backward(dy, y), stride, padding, need_dx)


def conv2d_relu_maxpool_forward(x, w, b, stride=1, padding="valid", pool=2, pool_stride=None,
                                pool_padding="valid"):
    """(y, argmax) = maxpool2d_forward(relu(conv2d_forward(x, w, b)), pool, pool_stride).

    y (N, PH, PW, F); argmax int32 (N, PH, PW, F) of flat indices oh * OW + ow
    into the conv output grid.
    """
    return maxpool2d_forward(conv2d_relu_forward(x, w, b, stride, padding),
                             pool, pool_stride, pool_padding)


def conv2d_relu_maxpool_backward(x, w, dy, y, argmax, stride=1, padding="valid",
                                 need_dx=True):
    """Gradients of conv2d_relu_maxpool_forward given dy (N, PH, PW, F).

    dz (conv output grid) = maxpool2d_backward(dy where y > 0, argmax), then
    conv2d_backward(x, w, dz). Returns (dx or None, dw, db).
    """
    op = "conv2d_relu_maxpool_backward"
    stride_pair, oh, ow, _, _ = _validate.conv2d_geometry(op, x, w, stride, padding)
    dz = maxpool2d_backward(relu_backward(dy, y), argmax, (x.shape[0], oh, ow, w.shape[3]))
    return conv2d_backward(x, w, dz, stride, padding, need_dx)
