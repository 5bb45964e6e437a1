"""Global 2-D pooling (Keras GlobalAveragePooling2D, GlobalMaxPooling2D), NHWC, the
reference: x (N, H, W, C) -> y (N, C).

Mean: the sum over the pixels in row-major (h, w) order, in float64, divided by
H * W. Max: argmax int32 (N, C) holds the flat spatial index h * W + w of the
winner, the first maximum in row-major order (a later pixel wins only if strictly
greater), the rule of maxpool2d (reference/pool.py).
"""
import numpy as np

from .. import _validate
from .._globalpool_checks import check_argmax, check_grad, check_x


def global_avgpool2d_forward(x):
    """y[n, c] = mean of x[n, :, :, c]. x (N, H, W, C) float32; y (N, C) of x's dtype."""
    check_x("global_avgpool2d_forward", x)
    n, h, w, c = x.shape
    acc = np.zeros((n, c), np.float64)
    for p in range(h * w):                   # one fixed order, as the fast kernels sum
        acc += x.reshape(n, h * w, c)[:, p]
    return (acc / (h * w)).astype(x.dtype)


def global_avgpool2d_backward(dy, input_shape):
    """dx (input_shape) with dx[n, h, w, c] = dy[n, c] / (H * W). dy (N, C) float32."""
    n, h, w, c = check_grad("global_avgpool2d_backward", dy, input_shape)
    dx = np.broadcast_to((dy.astype(np.float64) / (h * w))[:, None, None, :], (n, h, w, c))
    return np.ascontiguousarray(dx).astype(dy.dtype)


def global_maxpool2d_forward(x):
    """(y, argmax): y[n, c] = max of x[n, :, :, c], argmax[n, c] its flat index h * W + w
    (first maximum wins). x (N, H, W, C) float32; y (N, C) of x's dtype, argmax int32."""
    check_x("global_maxpool2d_forward", x)
    n, h, w, c = x.shape
    flat = x.reshape(n, h * w, c)
    best = flat[:, 0].copy()
    arg = np.zeros((n, c), np.int64)
    for p in range(1, h * w):
        take = flat[:, p] > best
        best = np.where(take, flat[:, p], best)
        arg = np.where(take, p, arg)
    return best, arg.astype(np.int32)


def global_maxpool2d_backward(dy, argmax, input_shape):
    """dx (input_shape): dy[n, c] at the pixel argmax[n, c], zeros elsewhere.
    dy (N, C) float32, argmax int32 (N, C) from global_maxpool2d_forward."""
    op = "global_maxpool2d_backward"
    n, h, w, c = check_grad(op, dy, input_shape)
    check_argmax(op, dy, argmax)
    _validate.check_argmax_range(op, argmax, h * w)
    dx = np.zeros((n, h * w, c), np.float64)
    dx[np.arange(n)[:, None], argmax, np.arange(c)[None, :]] = dy
    return dx.reshape(n, h, w, c).astype(dy.dtype)
