"""Optimizer updates with Keras 3 formulas, in place, the reference.

Each updates the parameter p and its state arrays in place and returns None.
p, g and every state array share one shape and dtype. The gradient-clipping ops
(sum_squares, clip_by_norm, clip_by_value) work on g in place the same way; the
sum of squares is kept in a (1,) array on the backend so that the clip can use it
without a host read (cuda).
"""
import numpy as np

from .. import _validate


def sgd_update(p, g, v_, lr, momentum=0.0, nesterov=False):
    """Keras SGD. With momentum m (the velocity v_, may be None when momentum == 0):
    v_ = m * v_ - lr * g;  p += m * v_ - lr * g (nesterov)  or  p += v_.
    Without momentum: p -= lr * g.
    """
    lr, momentum = _validate.sgd_args("sgd_update", p, g, v_, lr, momentum)
    g64 = g.astype(np.float64)
    if momentum == 0:
        p[...] = p - lr * g64
        return
    vel = momentum * v_.astype(np.float64) - lr * g64
    v_[...] = vel
    if nesterov:
        p[...] = p + momentum * vel - lr * g64
    else:
        p[...] = p + vel


def rmsprop_update(p, g, ms, lr, rho=0.9, eps=1e-7):
    """Keras RMSprop (no momentum, not centered):
    ms = rho * ms + (1 - rho) * g^2;  p -= lr * g / sqrt(ms + eps).
    """
    lr, rho, eps = _validate.rmsprop_args("rmsprop_update", p, g, ms, lr, rho, eps)
    g64 = g.astype(np.float64)
    ms64 = rho * ms.astype(np.float64) + (1.0 - rho) * g64 * g64
    ms[...] = ms64
    p[...] = p - lr * g64 / np.sqrt(ms64 + eps)


def adam_update(p, g, m, v_, t, lr, beta1=0.9, beta2=0.999, eps=1e-7):
    """Keras Adam, step t = 1 for the first update (epsilon-hat placement):
    a = lr * sqrt(1 - beta2^t) / (1 - beta1^t)
    m += (g - m) * (1 - beta1);  v_ += (g^2 - v_) * (1 - beta2)
    p -= a * m / (sqrt(v_) + eps)
    """
    lr = _validate.adam_args("adam_update", p, g, m, v_, t, lr)
    g64 = g.astype(np.float64)
    alpha = lr * np.sqrt(1.0 - beta2 ** t) / (1.0 - beta1 ** t)
    m64 = m + (g64 - m) * (1.0 - beta1)
    v64 = v_ + (g64 * g64 - v_) * (1.0 - beta2)
    m[...] = m64
    v_[...] = v64
    p[...] = p - alpha * m64 / (np.sqrt(v64) + eps)


def sum_squares(x, acc, accumulate=False):
    """acc[0] = sum(x^2) (accumulate=False) or acc[0] += sum(x^2) (accumulate=True), in
    float64, stored in acc's dtype. acc: shape (1,). A global norm is the sum over
    several arrays: the first call with accumulate=False, the rest True."""
    accumulate = _validate.sum_squares_args("sum_squares", x, acc, accumulate)
    x64 = x.astype(np.float64)
    total = float(np.sum(x64 * x64))
    acc[0] = (float(acc[0]) + total) if accumulate else total


def regularize(w, g, l1, l2, acc, accumulate=False):
    """Keras 3's L1/L2 weight penalty and its gradient, in place, in float64:
    acc[0] = l1 * sum(|w|) + l2 * sum(w^2) (accumulate=True: added to acc[0]);
    g += l1 * sign(w) + 2 * l2 * w (g None: the penalty only). acc: (1,), w's dtype."""
    l1, l2, accumulate = _validate.regularize_args("regularize", w, g, l1, l2, acc,
                                                   accumulate)
    w64 = w.astype(np.float64)
    total = float(l1 * np.sum(np.abs(w64)) + l2 * np.sum(w64 * w64))
    acc[0] = (float(acc[0]) + total) if accumulate else total
    if g is not None:
        g[...] = g + (l1 * np.sign(w64) + 2.0 * l2 * w64)


def clip_by_norm(g, sumsq, clipnorm):
    """Keras's clip by norm, in place: n = sqrt(sumsq[0]);
    g *= clipnorm / max(n, clipnorm) (unchanged when n <= clipnorm, including n = 0;
    a NaN n makes g NaN, as in Keras). sumsq: (1,), the sum of squares of g for
    clipnorm, or of every gradient for global_clipnorm (sum_squares)."""
    clipnorm = _validate.clip_by_norm_args("clip_by_norm", g, sumsq, clipnorm)
    n = np.sqrt(np.float64(sumsq[0]))
    denom = n if not n <= clipnorm else clipnorm     # NaN stays NaN
    g[...] = g.astype(np.float64) * (clipnorm / denom)


def clip_by_value(g, clipvalue):
    """g = clip(g, -clipvalue, clipvalue), in place (NaN stays NaN)."""
    clipvalue = _validate.clip_by_value_args("clip_by_value", g, clipvalue)
    np.clip(g, -clipvalue, clipvalue, out=g)
