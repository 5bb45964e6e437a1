"""Depthwise 2-D convolution (Keras DepthwiseConv2D), NHWC, the reference.

Every input channel c is convolved with its own M = depth_multiplier kernels, and
output channel c*M + m is kernel m of channel c (Keras's order: its kernel
(KH, KW, C, M) reshaped to (KH, KW, 1, C*M) for a grouped convolution with C groups,
as tf.nn.depthwise_conv2d documents output[..., k * channel_multiplier + q]):

    y[n, oh, ow, c*M + m] = b[c*M + m]
                            + sum_{i, j} xpad[n, oh*sh + i, ow*sw + j, c] * w[i, j, c, m]

Keras's 'valid'/'same' geometry, as conv2d (kernels/_validate.py). SeparableConv2D is
this op followed by a 1x1 conv2d_forward. Written for clarity: one broadcast product
per kernel tap (i, j), in float64. Sizes: x (N, H, W, C), w (KH, KW, C, M),
b (C*M,), y (N, OH, OW, C*M).
"""
import numpy as np

from .. import _validate
from .conv2d import _pad, _tap


def _geometry(op, x, w, stride, padding):
    return _validate.conv2d_geometry(op, x, w, stride, padding,
                                     layout=_validate.DEPTHWISE_LAYOUT)


def depthwise_conv2d_forward(x, w, b, stride=1, padding="valid"):
    """y[n, oh, ow, c*M + m] = b[c*M + m] + sum_{i, j} xpad[n, oh*sh + i, ow*sw + j, c]
    * w[i, j, c, m].

    x (N, H, W, C), w (KH, KW, C, M), b (C*M,) float32; stride int or pair;
    padding 'valid' or 'same'. Returns a new y (N, OH, OW, C*M) of x's dtype.
    """
    op = "depthwise_conv2d_forward"
    stride, oh, ow, pt, pl = _geometry(op, x, w, stride, padding)
    kh, kw, c, m = w.shape
    _validate.check_bias(op, b, c * m, x.dtype)
    xp = _pad(x, oh, ow, kh, kw, stride, pt, pl)
    w64 = w.astype(np.float64)
    y = np.zeros((x.shape[0], oh, ow, c, m), np.float64)
    for i in range(kh):
        for j in range(kw):
            y += _tap(xp, i, j, oh, ow, stride)[..., None] * w64[i, j]
    y = y.reshape(x.shape[0], oh, ow, c * m) + b
    return y.astype(x.dtype)


def depthwise_conv2d_backward(x, w, dy, stride=1, padding="valid", need_dx=True):
    """Gradients of depthwise_conv2d_forward given dy = dL/dy (N, OH, OW, C*M).

    Returns (dx or None, dw, db), new arrays of x's dtype: dx (N, H, W, C),
    dw (KH, KW, C, M), db (C*M,), with
      dw[i, j, c, m] = sum_{n, oh, ow} xpad[n, oh*sh + i, ow*sw + j, c] * dy[n, oh, ow, c*M + m]
      dx[n, h, w, c] = sum over the (oh, ow, i, j) that read pixel (h, w) of
                       sum_m w[i, j, c, m] * dy[n, oh, ow, c*M + m]
      db[k] = sum_{n, oh, ow} dy[n, oh, ow, k].
    need_dx=False skips dx.
    """
    op = "depthwise_conv2d_backward"
    stride, oh, ow, pt, pl = _geometry(op, x, w, stride, padding)
    n, h, wd, c = x.shape
    kh, kw, _, m = w.shape
    _validate.check_dy(op, dy, (n, oh, ow, c * m), x.dtype)
    xp = _pad(x, oh, ow, kh, kw, stride, pt, pl)
    dy64 = dy.astype(np.float64)
    dy5 = dy64.reshape(n, oh, ow, c, m)
    dw = np.empty((kh, kw, c, m), np.float64)
    dxp = np.zeros_like(xp) if need_dx else None
    w64 = w.astype(np.float64)
    for i in range(kh):
        for j in range(kw):
            dw[i, j] = np.einsum("nhwc,nhwcm->cm", _tap(xp, i, j, oh, ow, stride), dy5)
            if need_dx:
                _tap(dxp, i, j, oh, ow, stride)[...] += (dy5 * w64[i, j]).sum(axis=-1)
    db = dy64.sum(axis=(0, 1, 2))
    dx = dxp[:, pt:pt + h, pl:pl + wd, :].astype(x.dtype) if need_dx else None
    return dx, dw.astype(x.dtype), db.astype(x.dtype)
