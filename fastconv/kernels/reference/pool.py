"""2-D max and average pooling (Keras MaxPooling2D, AveragePooling2D), NHWC, the reference.

Geometry (both): a window (ph, pw) at (oh*sh - pt, ow*sw - pl), stride defaulting
to pool; 'valid' floors, 'same' ceils and pads as Keras (_validate.window_geometry).
Average: the mean over the window's real pixels only; with 'same' a window that
overhangs the edge divides by the number of pixels inside it (Keras's rule: the
padding is not counted). Every window holds at least one real pixel.

argmax convention, shared by every backend: an int32 array shaped like y
holding, for each output (n, oh, ow, c), the flat spatial index h * W + w of
the winning input pixel in the unpadded x. The winner is the first maximum in
row-major window order: start from the window's first real pixel, then take
a later pixel only if it is strictly greater. Padding ('same') never wins.
"""
import numpy as np

from .. import _validate


def maxpool2d_forward(x, pool=2, stride=None, padding="valid"):
    """y[n, oh, ow, c] = max over the pool window at (oh*sh - pt, ow*sw - pl).

    x (N, H, W, C) float32; pool and stride int or pair (stride defaults to
    pool); padding 'valid' (floor) or 'same' (ceil). Returns new arrays
    (y (N, OH, OW, C) of x's dtype, argmax (N, OH, OW, C) int32).
    """
    op = "maxpool2d_forward"
    (ph, pw), (sh, sw), oh, ow, pt, pl = _validate.pool2d_geometry(op, x, pool, stride, padding)
    n, h, w, c = x.shape
    best = np.full((n, oh, ow, c), -np.inf, x.dtype)
    arg = np.full((n, oh, ow, c), -1, np.int64)
    rows0 = np.arange(oh) * sh - pt
    cols0 = np.arange(ow) * sw - pl
    for i in range(ph):
        for j in range(pw):
            r, q = rows0 + i, cols0 + j
            real = (r[:, None] >= 0) & (r[:, None] < h) & (q[None, :] >= 0) & (q[None, :] < w)
            rc, qc = np.clip(r, 0, h - 1), np.clip(q, 0, w - 1)
            vals = x[:, rc][:, :, qc]                                   # (N, OH, OW, C)
            flat = (rc[:, None] * w + qc[None, :])[None, :, :, None]    # (1, OH, OW, 1)
            real4 = real[None, :, :, None]
            take = real4 & ((arg < 0) | (vals > best))
            best = np.where(take, vals, best)
            arg = np.where(take, flat, arg)
    return best, arg.astype(np.int32)


def maxpool2d_backward(dy, argmax, x_shape):
    """dx (x_shape, new array) with dx[n, h, w, c] = sum of dy over the outputs whose argmax is (h, w).

    Overlapping windows (stride < pool) may route several outputs to one pixel:
    their gradients add.
    """
    op = "maxpool2d_backward"
    _validate.check_float_array(op, "dy", dy, 4)
    x_shape = _validate.check_pool_grad(op, dy, argmax, x_shape)
    n, h, w, c = x_shape
    if argmax.size and (argmax.min() < 0 or argmax.max() >= h * w):
        raise ValueError(f"{op}: argmax holds indices outside [0, {h * w})")
    dx = np.zeros((n, h * w, c), np.float64)
    nn = np.arange(n)[:, None, None, None]
    cc = np.arange(c)[None, None, None, :]
    np.add.at(dx, (np.broadcast_to(nn, dy.shape), argmax, np.broadcast_to(cc, dy.shape)), dy)
    return dx.reshape(x_shape).astype(dy.dtype)


def _pad_amounts(n_in, n_out, k, s, pad0):
    """(before, after) padding that makes every window of n_out at stride s fit."""
    return pad0, max((n_out - 1) * s + k - n_in - pad0, 0)


def _avgpool_counts(h, w, oh, ow, ph, pw, sh, sw, pt, pl):
    """(OH, OW) float64: how many real pixels each window covers."""
    rows0 = np.arange(oh) * sh - pt
    cols0 = np.arange(ow) * sw - pl
    rows = np.minimum(rows0 + ph, h) - np.maximum(rows0, 0)
    cols = np.minimum(cols0 + pw, w) - np.maximum(cols0, 0)
    return (rows[:, None] * cols[None, :]).astype(np.float64)


def avgpool2d_forward(x, pool=2, stride=None, padding="valid"):
    """y[n, oh, ow, c] = mean of x over the real pixels of the window at
    (oh*sh - pt, ow*sw - pl) (padding is not counted, as Keras's 'same').

    x (N, H, W, C) float32; pool and stride int or pair (stride defaults to pool);
    padding 'valid' or 'same'. Returns a new y (N, OH, OW, C) of x's dtype.
    """
    op = "avgpool2d_forward"
    (ph, pw), (sh, sw), oh, ow, pt, pl = _validate.pool2d_geometry(op, x, pool, stride, padding)
    n, h, w, c = x.shape
    pad_h = _pad_amounts(h, oh, ph, sh, pt)
    pad_w = _pad_amounts(w, ow, pw, sw, pl)
    xp = np.pad(x.astype(np.float64), ((0, 0), pad_h, pad_w, (0, 0)))   # zeros add nothing
    acc = np.zeros((n, oh, ow, c), np.float64)
    for i in range(ph):
        for j in range(pw):
            acc += xp[:, i:i + (oh - 1) * sh + 1:sh, j:j + (ow - 1) * sw + 1:sw]
    counts = _avgpool_counts(h, w, oh, ow, ph, pw, sh, sw, pt, pl)
    return (acc / counts[None, :, :, None]).astype(x.dtype)


def avgpool2d_backward(dy, x_shape, pool=2, stride=None, padding="valid"):
    """dx (x_shape, new array): each window's dy / (its count of real pixels), added to
    every real pixel of the window (overlapping windows add up).

    dy (N, OH, OW, C) float32, the shape avgpool2d_forward gives x_shape under the same
    pool, stride and padding.
    """
    op = "avgpool2d_backward"
    _validate.check_float_array(op, "dy", dy, 4)
    x_shape, (ph, pw), (sh, sw), oh, ow, pt, pl = _validate.avgpool2d_grad_geometry(
        op, dy, x_shape, pool, stride, padding)
    n, h, w, c = x_shape
    pad_h = _pad_amounts(h, oh, ph, sh, pt)
    pad_w = _pad_amounts(w, ow, pw, sw, pl)
    counts = _avgpool_counts(h, w, oh, ow, ph, pw, sh, sw, pt, pl)
    share = dy.astype(np.float64) / counts[None, :, :, None]
    dxp = np.zeros((n, h + sum(pad_h), w + sum(pad_w), c), np.float64)
    for i in range(ph):
        for j in range(pw):
            dxp[:, i:i + (oh - 1) * sh + 1:sh, j:j + (ow - 1) * sw + 1:sw] += share
    return dxp[:, pt:pt + h, pl:pl + w].astype(dy.dtype)
