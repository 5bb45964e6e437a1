"""Fully connected layer on CUDA: x (N, IN), w (IN, OUT), b (OUT,), y (N, OUT).

A dense layer is a 1x1 convolution of a 1x1 image: x viewed as (N, 1, 1, IN) and w as
the (K=IN, F=OUT) matrix that conv2d's kernels already read. So the tiled matrix
products are conv2d.py's kernels on reshaped views (no copies):
  y  = x @ w + b        conv2d_fwd_tile   (tiles of x rows x OUT columns)
  dx = dy @ w.T         conv2d_dx_tile
  dw = x.T @ dy, db     conv2d_dw_tile + conv2d_dw_sum (two-stage, deterministic)
No kernels of its own, hence an empty KERNELS.
"""
import numpy as np

from .. import _validate
from . import _mem
from . import conv2d as _conv

KERNELS = []

_ONE = (1, 1)


def _image(a):
    """(N, D) viewed as N images of 1x1 pixels with D channels."""
    return a.reshape(a.shape[0], 1, 1, a.shape[1])


def _check(op, x, w):
    _mem.check_float32(op, "x", x, 2)
    _mem.check_float32(op, "w", w, 2)
    _validate.dense_check(op, _mem.checkable(x), _mem.checkable(w))


def dense_forward(x, w, b, out=None):
    """y = x @ w + b: (N, OUT), a new device array or `out` (overwritten).

    x (N, IN), w (IN, OUT), b (OUT,): float32 C-contiguous device arrays (host arrays are
    copied in).
    """
    op = "dense_forward"
    _check(op, x, w)
    _conv.check_bias(op, b, w.shape[1])
    [(y, y_host)] = _mem.out_buffers(op, ("out", out, (x.shape[0], w.shape[1]), np.float32))
    x, w, b = _mem.device_in(op, "x", x), _mem.device_in(op, "w", w), _mem.device_in(op, "b", b)
    _conv.launch_forward(_image(x), w, b, _image(y), 1, 1, 1, _ONE, 0, 0)
    return _mem.finish(y, y_host)


def dense_backward(x, w, dy, need_dx=True, out=None):
    """(dx = dy @ w.T or None, dw = x.T @ dy, db = sum_n dy): new device arrays or the out=
    tuple's buffers (overwritten; an entry may be None). dw/db reduce in two deterministic
    stages through a cached workspace."""
    op = "dense_backward"
    _check(op, x, w)
    _conv.check_dy(op, dy, (x.shape[0], w.shape[1]))
    out = _validate.out_tuple(op, out, 3)
    specs = [("out[1]", out[1], w.shape, np.float32),
             ("out[2]", out[2], (w.shape[1],), np.float32)]
    if need_dx:
        specs.append(("out[0]", out[0], x.shape, np.float32))
    bufs = _mem.out_buffers(op, *specs)
    (dw, dw_host), (db, db_host) = bufs[:2]
    x, w, dy = _mem.device_in(op, "x", x), _mem.device_in(op, "w", w), _mem.device_in(op, "dy", dy)
    _conv.launch_dw(_image(x), _image(dy), dw, db, 1, _ONE, 0, 0)
    dx = None
    if need_dx:
        dx, dx_host = bufs[2]
        _conv.launch_dx(_image(dy), w, _image(dx), 1, 1, _ONE, 0, 0)
        dx = _mem.finish(dx, dx_host)
    return dx, _mem.finish(dw, dw_host), _mem.finish(db, db_host)
