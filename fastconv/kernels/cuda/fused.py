"""Fused conv2d + bias + ReLU (+ max-pool) on CUDA, meaning as fastconv/kernels/reference/fused.py.

Forward: one launch of conv2d_fwd_tile (conv2d.py) with the ReLU and the pool window loop
in its epilogue, so the pre-pool activation (N, OH, OW, F) is never written.

Backward: the conv-output gradient dz = pool-backward(dy where y > 0) is formed in a cached
workspace (activations.relu_bwd; or pool.scatter_grad with the mask y > 0: the max-pool
backward's kernel, float atomics because the op is not told the pool geometry), then the
conv backward kernels of conv2d.py read dz. No kernels of their own, hence an empty KERNELS.

Bad arguments raise exactly what the reference's composition raises (see
_validate's fused checks): each check names the unfused op that makes it
(conv2d_forward, relu_backward, maxpool2d_forward/backward), out= is named by the fused
op, and every check runs before anything touches the device.
"""
import numpy as np

from .. import _validate
from . import _launch, _mem
from . import conv2d as _conv
from .activations import elementwise_launch, relu_bwd
from .pool import scatter_grad_launches

KERNELS = []


def _launched(launches, result):
    """Run the launches of a `*_launches` function's result and return what the op returns."""
    _launch.run(launches)
    return result()


def conv2d_relu_forward_launches(x, w, b, stride=1, padding="valid", out=None):
    """conv2d_relu_forward's checks, copies in and launches, not launched: (launches,
    result), result() giving what the op returns once they ran (see _bound.py)."""
    op = "conv2d_relu_forward"
    stride, oh, ow, pt, pl = _conv.check_conv("conv2d_forward", x, w, stride, padding)
    _conv.check_bias("conv2d_forward", b, w.shape[3])
    kh, kw, c, f = w.shape
    [(y, y_host)] = _mem.out_buffers(op, ("out", out, (x.shape[0], oh, ow, f), np.float32))
    x, w, b = _mem.device_in(op, "x", x), _mem.device_in(op, "w", w), _mem.device_in(op, "b", b)
    return (_conv.forward_launches(x, w.reshape(kh * kw * c, f), b, y, kw, oh, ow, stride, pt,
                                   pl, relu=True),
            lambda: _mem.finish(y, y_host))


def conv2d_relu_forward(x, w, b, stride=1, padding="valid", out=None):
    """y = relu(conv2d_forward(x, w, b)): (N, OH, OW, F), a new device array or `out`
    (overwritten). Arguments as conv2d.conv2d_forward; one launch of conv2d_fwd_tile
    (two when conv2d.fwd_split splits it)."""
    return _launched(*conv2d_relu_forward_launches(x, w, b, stride, padding, out))


def conv2d_relu_backward_launches(x, w, dy, y, stride=1, padding="valid", need_dx=True,
                                  out=None):
    """conv2d_relu_backward's checks, copies in and launches, not launched."""
    op = "conv2d_relu_backward"
    _validate.fused_relu_grad(_mem.checkable(dy), _mem.checkable(y))
    stride, oh, ow, pt, pl = _conv.check_conv("conv2d_backward", x, w, stride, padding)
    shape = (x.shape[0], oh, ow, w.shape[3])
    _conv.check_dy("conv2d_backward", dy, shape)
    _mem.check_float32(op, "y", y)
    bufs = _conv.backward_buffers(op, x.shape, w.shape, need_dx, out)
    x, w = _mem.device_in(op, "x", x), _mem.device_in(op, "w", w)
    dy, y = _mem.device_in(op, "dy", dy), _mem.device_in(op, "y", y)
    dz = _mem.workspace("conv2d_dz", shape)
    launches = [elementwise_launch(relu_bwd, int(np.prod(shape)), dy, y, dz)]
    dx = bufs[2][0] if need_dx else None
    launches += _conv.backward_launches(x, w, dz, stride, pt, pl, dx, bufs[0][0], bufs[1][0])
    return launches, _conv.backward_result(bufs, need_dx)


def conv2d_relu_backward(x, w, dy, y, stride=1, padding="valid", need_dx=True, out=None):
    """conv2d_backward with dz = dy where y > 0 (y the fused forward's output):
    (dx or None, dw, db), new device arrays or the out= tuple's buffers (overwritten)."""
    return _launched(*conv2d_relu_backward_launches(x, w, dy, y, stride, padding, need_dx,
                                                    out))


def conv2d_relu_maxpool_forward_launches(x, w, b, stride=1, padding="valid", pool=2,
                                         pool_stride=None, pool_padding="valid", out=None):
    """conv2d_relu_maxpool_forward's checks, copies in and launches, not launched."""
    op = "conv2d_relu_maxpool_forward"
    stride, oh, ow, pt, pl = _conv.check_conv("conv2d_forward", x, w, stride, padding)
    _conv.check_bias("conv2d_forward", b, w.shape[3])
    kh, kw, c, f = w.shape
    pool, pool_stride, ph, pw, ppt, ppl = _validate.fused_pool_geometry(
        oh, ow, pool, pool_stride, pool_padding)
    out = _validate.out_tuple(op, out, 2)
    shape = (x.shape[0], ph, pw, f)
    (y, y_host), (arg, arg_host) = _mem.out_buffers(op, ("out[0]", out[0], shape, np.float32),
                                                    ("out[1]", out[1], shape, np.int32))
    x, w, b = _mem.device_in(op, "x", x), _mem.device_in(op, "w", w), _mem.device_in(op, "b", b)
    launches = _conv.forward_launches(x, w.reshape(kh * kw * c, f), b, y, kw, oh, ow, stride,
                                      pt, pl, relu=True, pool=pool, pool_stride=pool_stride,
                                      ppt=ppt, ppl=ppl, arg=arg)
    return launches, lambda: (_mem.finish(y, y_host), _mem.finish(arg, arg_host))


def conv2d_relu_maxpool_forward(x, w, b, stride=1, padding="valid", pool=2, pool_stride=None,
                                pool_padding="valid", out=None):
    """(y, argmax) = maxpool2d_forward(relu(conv2d_forward(x, w, b)), pool, pool_stride,
    pool_padding) in one launch of conv2d_fwd_tile (two when conv2d.fwd_split splits it);
    the pre-pool activation is never written.

    y (N, PH, PW, F) float32 and argmax (N, PH, PW, F) int32 (flat oh * OW + ow into the
    conv output grid; first maximum in row-major window order), new device arrays or the
    out= tuple's buffers (overwritten).
    """
    return _launched(*conv2d_relu_maxpool_forward_launches(
        x, w, b, stride, padding, pool, pool_stride, pool_padding, out))


def conv2d_relu_maxpool_backward_launches(x, w, dy, y, argmax, stride=1, padding="valid",
                                          need_dx=True, out=None):
    """conv2d_relu_maxpool_backward's checks, copies in and launches, not launched."""
    op = "conv2d_relu_maxpool_backward"
    stride, oh, ow, pt, pl = _conv.check_conv(op, x, w, stride, padding)
    _validate.fused_relu_grad(_mem.checkable(dy), _mem.checkable(y))
    n, f = x.shape[0], w.shape[3]
    _validate.fused_pool_grad(_mem.checkable(dy), argmax, (n, oh, ow, f),
                              is_array=_mem.is_device_array)
    if isinstance(argmax, np.ndarray):
        _validate.check_argmax_range("maxpool2d_backward", argmax, oh * ow)
    _mem.check_float32(op, "dy", dy, 4)
    _mem.check_float32(op, "y", y)
    bufs = _conv.backward_buffers(op, x.shape, w.shape, need_dx, out)
    x, w = _mem.device_in(op, "x", x), _mem.device_in(op, "w", w)
    dy, y = _mem.device_in(op, "dy", dy), _mem.device_in(op, "y", y)
    argmax = _mem.device_in(op, "argmax", argmax, np.int32)
    dz = _mem.workspace("conv2d_dz", (n, oh, ow, f))
    launches = scatter_grad_launches(dy, argmax, dz, mask=y)
    dx = bufs[2][0] if need_dx else None
    launches += _conv.backward_launches(x, w, dz, stride, pt, pl, dx, bufs[0][0], bufs[1][0])
    return launches, _conv.backward_result(bufs, need_dx)


def conv2d_relu_maxpool_backward(x, w, dy, y, argmax, stride=1, padding="valid",
                                 need_dx=True, out=None):
    """Gradients of conv2d_relu_maxpool_forward given dy (N, PH, PW, F): (dx or None, dw, db).

    dz (the conv-grid gradient, a cached workspace) is zeroed, then each pooled output with
    y > 0 adds its dy at its argmax (pool.py's scatter_grad: atomics, see there). The values
    of a device argmax are not read back to the host to be checked: an index outside the
    conv grid routes no gradient (a host argmax is range-checked like the reference's).
    """
    return _launched(*conv2d_relu_maxpool_backward_launches(
        x, w, dy, y, argmax, stride, padding, need_dx, out))
