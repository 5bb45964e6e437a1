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

from .. import _validate as v
from . import _devargs as d
from . import conv2d as _conv

KERNELS = []

_ONE = (1, 1)


def _image(a):
    """(N, D) viewed as N images of 1x1 pixels with D channels."""
    return a.reshape(a.shape[0], 1, 1, a.shape[1])


def dense_forward(x, w, b, out=None):
    """y = x @ w + b: (N, OUT), a new device array or `out` (overwritten).

    x (N, IN), w (IN, OUT), b (OUT,): float32 C-contiguous device arrays.
    """
    op = "dense_forward"
    v.dense_check(op, d.meta(op, "x", x), d.meta(op, "w", w))
    v.check_bias(op, d.meta(op, "b", b), w.shape[1], np.float32)
    y = d.out_buffer(op, "out", out, (x.shape[0], w.shape[1]))
    _conv.launch_forward(_image(x), w, b, _image(y), 1, 1, 1, 1, _ONE, 0, 0)
    return y


def dense_backward(x, w, dy, need_dx=True, out=None):
    """(dx = dy @ w.T or None, dw = x.T @ dy, db = sum_n dy): new device arrays or the out=
    tuple's buffers (overwritten; an entry may be None). dw/db reduce in two deterministic
    stages through a cached workspace."""
    op = "dense_backward"
    v.dense_check(op, d.meta(op, "x", x), d.meta(op, "w", w))
    v.check_dy(op, d.meta(op, "dy", dy), (x.shape[0], w.shape[1]), np.float32)
    out_dx, out_dw, out_db = d.split_out(op, out, 3)
    dw = d.out_buffer(op, "out[1]", out_dw, w.shape)
    db = d.out_buffer(op, "out[2]", out_db, (w.shape[1],))
    dx = d.out_buffer(op, "out[0]", out_dx, x.shape) if need_dx else None
    _conv.launch_dw(_image(x), _image(dy), dw, db, 1, 1, _ONE, 0, 0)
    if need_dx:
        _conv.launch_dx(_image(dy), w, _image(dx), 1, 1, _ONE, 0, 0)
    return dx, dw, db
