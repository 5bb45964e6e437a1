"""Batch normalization over the last (channel) axis (Keras BatchNormalization,
axis=-1), the reference, in float64.

x (..., C): NHWC after a Conv2D, (N, C) after a Dense; the statistics of channel c
are over the M = x.size / C values x[..., c]. Keras 3's formulas:
  training:   mean = sum(x) / M, var = sum((x - mean)^2) / M (biased),
              y = (x - mean) / sqrt(var + epsilon) * gamma + beta
  inference:  the same y with moving_mean, moving_variance in place of mean, var
  moving:     moving = moving * momentum + batch * (1 - momentum)
Backward (xhat = (x - mean) / sqrt(var + epsilon), the batch statistics):
  dbeta = sum(dy), dgamma = sum(dy * xhat),
  dx = gamma / sqrt(var + epsilon) * (dy - dbeta / M - xhat * dgamma / M).
A layer without scale/center passes gamma = ones, beta = zeros.
The fused BatchNormalization -> ReLU pair (batchnorm_relu_*) is the composition with
relu_forward / relu_backward (activations.py), spelled out at the end.
"""
import numpy as np

from .. import _validate
from .._norm_checks import check_bn_x, check_channel_vectors, check_number
from .activations import relu_backward, relu_forward


def _rows(x):
    return x.reshape(-1, x.shape[-1]).astype(np.float64)      # (M, C)


def batchnorm_train_forward(x, gamma, beta, epsilon=1e-3):
    """(y, mean, var): y of x's shape and dtype normalized with the batch statistics;
    mean and var (C,) (var biased, divided by M), what backward and the moving update
    take."""
    op = "batchnorm_train_forward"
    m, c = check_bn_x(op, "x", x)
    check_channel_vectors(op, c, x.dtype, gamma=gamma, beta=beta)
    eps = check_number(op, "epsilon", epsilon, positive=True)
    r = _rows(x)
    mean = r.sum(axis=0) / m
    var = ((r - mean) ** 2).sum(axis=0) / m
    y = (r - mean) / np.sqrt(var + eps) * gamma.astype(np.float64) + beta
    return y.reshape(x.shape).astype(x.dtype), mean.astype(x.dtype), var.astype(x.dtype)


def batchnorm_infer_forward(x, gamma, beta, moving_mean, moving_variance, epsilon=1e-3):
    """y = (x - moving_mean) / sqrt(moving_variance + epsilon) * gamma + beta, a new
    array of x's shape and dtype."""
    op = "batchnorm_infer_forward"
    _, c = check_bn_x(op, "x", x)
    check_channel_vectors(op, c, x.dtype, gamma=gamma, beta=beta, moving_mean=moving_mean,
                          moving_variance=moving_variance)
    eps = check_number(op, "epsilon", epsilon, positive=True)
    mv = moving_variance.astype(np.float64)
    if (mv + eps <= 0).any():
        raise ValueError(f"{op}: moving_variance + epsilon must be > 0, got a minimum of "
                         f"{float((mv + eps).min())!r}")
    y = (_rows(x) - moving_mean) / np.sqrt(mv + eps) * gamma.astype(np.float64) + beta
    return y.reshape(x.shape).astype(x.dtype)


def batchnorm_backward(dy, x, gamma, mean, var, epsilon=1e-3, need_dx=True):
    """(dx or None, dgamma, dbeta) of batchnorm_train_forward(x, gamma, beta, epsilon)
    given its mean and var: dx of x's shape, dgamma and dbeta (C,)."""
    op = "batchnorm_backward"
    m, c = check_bn_x(op, "x", x)
    _validate.check_float_array(op, "dy", dy)
    _validate.check_same_shape(op, "x", x, "dy", dy)
    check_channel_vectors(op, c, x.dtype, gamma=gamma, mean=mean, var=var)
    eps = check_number(op, "epsilon", epsilon, positive=True)
    r, g = _rows(x), _rows(dy)
    inv = 1.0 / np.sqrt(var.astype(np.float64) + eps)
    xhat = (r - mean) * inv
    dbeta = g.sum(axis=0)
    dgamma = (g * xhat).sum(axis=0)
    dx = None
    if need_dx:
        dx = (gamma * inv) * (g - dbeta / m - xhat * dgamma / m)
        dx = dx.reshape(x.shape).astype(x.dtype)
    return dx, dgamma.astype(x.dtype), dbeta.astype(x.dtype)


def batchnorm_moving_update(moving_mean, moving_variance, mean, var, momentum=0.99):
    """In place: moving = moving * momentum + batch * (1 - momentum) for the mean and
    the variance (Keras's update). All (C,) float32; returns None."""
    op = "batchnorm_moving_update"
    _validate.check_float_array(op, "moving_mean", moving_mean, 1)
    c = moving_mean.shape[0]
    check_channel_vectors(op, c, moving_mean.dtype, moving_variance=moving_variance,
                          mean=mean, var=var)
    mom = check_number(op, "momentum", momentum, unit=True)
    for moving, batch in ((moving_mean, mean), (moving_variance, var)):
        moving[...] = (moving.astype(np.float64) * mom
                       + batch.astype(np.float64) * (1.0 - mom)).astype(moving.dtype)



def batchnorm_fold(kernel, bias, gamma, beta, moving_mean, moving_variance, epsilon=1e-3):
    """(kernel', bias'): a BatchNormalization in inference folded into the convolution
    before it. kernel (..., F) (a Conv2D's (KH, KW, C, F), a pointwise (1, 1, C, F)), the
    conv's bias and the BN's vectors (F,); with s = gamma / sqrt(moving_variance +
    epsilon): kernel' = kernel * s (over the last axis), bias' = (bias - moving_mean) * s
    + beta, so conv(x, kernel') + bias' = BN(conv(x, kernel) + bias). New arrays."""
    op = "batchnorm_fold"
    _, f = check_bn_x(op, "kernel", kernel)
    check_channel_vectors(op, f, kernel.dtype, of="kernel's output channels", bias=bias,
                          gamma=gamma, beta=beta, moving_mean=moving_mean,
                          moving_variance=moving_variance)
    eps = check_number(op, "epsilon", epsilon, positive=True)
    mv = moving_variance.astype(np.float64)
    if (mv + eps <= 0).any():
        raise ValueError(f"{op}: moving_variance + epsilon must be > 0, got a minimum of "
                         f"{float((mv + eps).min())!r}")
    s = gamma.astype(np.float64) / np.sqrt(mv + eps)
    w = kernel.astype(np.float64) * s
    b = (bias.astype(np.float64) - moving_mean) * s + beta
    return w.astype(kernel.dtype), b.astype(kernel.dtype)

# -- BatchNormalization -> ReLU, the fused training pair (kernels.FUSED_KINDS) ----------

def batchnorm_relu_train_forward(x, gamma, beta, epsilon=1e-3):
    """(y, mean, var): y = relu_forward(batchnorm_train_forward(x, gamma, beta)[0]), mean
    and var the batch statistics, as batchnorm_train_forward's."""
    y, mean, var = batchnorm_train_forward(x, gamma, beta, epsilon)
    return relu_forward(y), mean, var


def batchnorm_relu_backward(dy, y, x, gamma, mean, var, epsilon=1e-3, need_dx=True):
    """(dx or None, dgamma, dbeta) of batchnorm_relu_train_forward given dy and its y:
    batchnorm_backward(relu_backward(dy, y), x, gamma, mean, var, epsilon)."""
    return batchnorm_backward(relu_backward(dy, y), x, gamma, mean, var, epsilon, need_dx)
