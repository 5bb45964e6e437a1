"""2-D convolution (Keras Conv2D, cross-correlation), NHWC, the reference.

Written for clarity: one matrix product per kernel tap (i, j), in float64.
Sizes: x (N, H, W, C), w (KH, KW, C, F), b (F,), y (N, OH, OW, F).
"""
import numpy as np

from .. import _validate


def _pad(x, oh, ow, kh, kw, stride, pt, pl):
    """x zero-padded so that every window of the output grid lies inside it."""
    n, h, w, c = x.shape
    need_h = (oh - 1) * stride[0] + kh
    need_w = (ow - 1) * stride[1] + kw
    xp = np.zeros((n, max(need_h, pt + h), max(need_w, pl + w), c), np.float64)
    xp[:, pt:pt + h, pl:pl + w, :] = x
    return xp


def _tap(xp, i, j, oh, ow, stride):
    """The input pixels kernel tap (i, j) sees, for every output pixel: (N, OH, OW, C)."""
    sh, sw = stride
    return xp[:, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw, :]


def conv2d_forward(x, w, b, stride=1, padding="valid"):
    """y[n, oh, ow, f] = b[f] + sum_{i, j, c} xpad[n, oh*sh + i, ow*sw + j, c] * w[i, j, c, f].

    x (N, H, W, C), w (KH, KW, C, F), b (F,) float32; stride int or pair;
    padding 'valid' or 'same'. Returns a new y (N, OH, OW, F) of x's dtype.
    """
    op = "conv2d_forward"
    stride, oh, ow, pt, pl = _validate.conv2d_geometry(op, x, w, stride, padding)
    _validate.check_bias(op, b, w.shape[3], x.dtype)
    kh, kw = w.shape[:2]
    xp = _pad(x, oh, ow, kh, kw, stride, pt, pl)
    w64 = w.astype(np.float64)
    y = np.zeros((x.shape[0], oh, ow, w.shape[3]), np.float64)
    for i in range(kh):
        for j in range(kw):
            y += _tap(xp, i, j, oh, ow, stride) @ w64[i, j]
    y += b
    return y.astype(x.dtype)


def conv2d_backward(x, w, dy, stride=1, padding="valid", need_dx=True):
    """Gradients of conv2d_forward given dy = dL/dy (N, OH, OW, F).

    Returns (dx or None, dw, db), new arrays of x's dtype:
      dx (N, H, W, C), dw (KH, KW, C, F), db (F,). need_dx=False skips dx
    (the first layer of a network needs none).
    """
    op = "conv2d_backward"
    stride, oh, ow, pt, pl = _validate.conv2d_geometry(op, x, w, stride, padding)
    n, h, wd, c = x.shape
    kh, kw, _, f = w.shape
    _validate.check_dy(op, dy, (n, oh, ow, f), x.dtype)
    xp = _pad(x, oh, ow, kh, kw, stride, pt, pl)
    dy64 = dy.astype(np.float64)
    dy_rows = dy64.reshape(-1, f)
    dw = np.empty((kh, kw, c, f), np.float64)
    dxp = np.zeros_like(xp) if need_dx else None
    w64 = w.astype(np.float64)
    for i in range(kh):
        for j in range(kw):
            tap = _tap(xp, i, j, oh, ow, stride)
            dw[i, j] = tap.reshape(-1, c).T @ dy_rows
            if need_dx:
                _tap(dxp, i, j, oh, ow, stride)[...] += dy64 @ w64[i, j].T
    db = dy64.sum(axis=(0, 1, 2))
    dx = dxp[:, pt:pt + h, pl:pl + wd, :].astype(x.dtype) if need_dx else None
    return dx, dw.astype(x.dtype), db.astype(x.dtype)
