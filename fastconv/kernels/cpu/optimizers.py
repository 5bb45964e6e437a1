"""Optimizer updates with Keras 3 formulas, in place, Numba CPU.

Same names, arguments, errors and formulas as
fastconv/kernels/reference/optimizers.py: each updates p and its state arrays
(all float32, one shape) in place and returns None.

The arithmetic is float64 with float32 storage, in the reference's order of
operations and without fastmath, so the updates are bitwise identical to the
reference's (the parameters are 438k numbers: the float64 passes cost well
under a millisecond, and exact agreement keeps cpu and reference training
runs comparable step for step).
"""
import numpy as np
from numba import njit, prange

from .. import _validate
from ._common import check_float32, kernel


@kernel
def _sgd_plain(p, g, lr):
    for i in prange(p.size):
        p[i] = p[i] - lr * np.float64(g[i])


@kernel
def _sgd_momentum(p, g, vel, lr, momentum, nesterov):
    for i in prange(p.size):
        g64 = np.float64(g[i])
        nv = momentum * vel[i] - lr * g64
        vel[i] = nv
        if nesterov:
            p[i] = p[i] + momentum * nv - lr * g64
        else:
            p[i] = p[i] + nv


@kernel
def _rmsprop(p, g, ms, lr, rho, eps):
    for i in prange(p.size):
        g64 = np.float64(g[i])
        m = rho * ms[i] + (1.0 - rho) * g64 * g64
        ms[i] = m
        p[i] = p[i] - lr * g64 / np.sqrt(m + eps)


@kernel
def _adam(p, g, m, vv, alpha, beta1, beta2, eps):
    for i in prange(p.size):
        g64 = np.float64(g[i])
        m64 = m[i] + (g64 - m[i]) * (1.0 - beta1)
        v64 = vv[i] + (g64 * g64 - vv[i]) * (1.0 - beta2)
        m[i] = m64
        vv[i] = v64
        p[i] = p[i] - alpha * m64 / (np.sqrt(v64) + eps)


@kernel
def _scale(g, factor):
    for i in prange(g.size):
        g[i] = np.float64(g[i]) * factor


@kernel
def _clip(g, v):
    for i in prange(g.size):
        gi = g[i]
        if gi > v:
            g[i] = v
        elif gi < -v:
            g[i] = -v


def _run_in_place(fn, arrays, *scalars):
    """fn(size, *flat views, *scalars) on C-contiguous arrays; any other layout is
    updated through a contiguous copy that is written back."""
    work = [a if a.flags.c_contiguous else np.ascontiguousarray(a) for a in arrays]
    fn(arrays[0].size, *[a.reshape(-1) for a in work], *scalars)
    for a, wa in zip(arrays, work):
        if wa is not a:
            a[...] = wa


def sgd_update(p, g, v_, lr, momentum=0.0, nesterov=False):
    """Keras SGD. With momentum m (the velocity v_, may be None when momentum == 0):
    v_ = m * v_ - lr * g;  p += m * v_ - lr * g (nesterov)  or  p += v_.
    Without momentum: p -= lr * g.
    """
    op = "sgd_update"
    lr, momentum = _validate.sgd_args(op, p, g, v_, lr, momentum)
    check_float32(op, "p", p)                # g and the state: p's dtype, checked above
    if momentum == 0:
        _run_in_place(_sgd_plain, (p, g), lr)
    else:
        _run_in_place(_sgd_momentum, (p, g, v_), lr, momentum, bool(nesterov))


def rmsprop_update(p, g, ms, lr, rho=0.9, eps=1e-7):
    """Keras RMSprop (no momentum, not centered):
    ms = rho * ms + (1 - rho) * g^2;  p -= lr * g / sqrt(ms + eps).
    """
    op = "rmsprop_update"
    lr, rho, eps = _validate.rmsprop_args(op, p, g, ms, lr, rho, eps)
    check_float32(op, "p", p)
    _run_in_place(_rmsprop, (p, g, ms), lr, rho, eps)


def adam_update(p, g, m, v_, t, lr, beta1=0.9, beta2=0.999, eps=1e-7):
    """Keras Adam, step t = 1 for the first update (epsilon-hat placement):
    a = lr * sqrt(1 - beta2^t) / (1 - beta1^t)
    m += (g - m) * (1 - beta1);  v_ += (g^2 - v_) * (1 - beta2)
    p -= a * m / (sqrt(v_) + eps)
    """
    op = "adam_update"
    lr = _validate.adam_args(op, p, g, m, v_, t, lr)
    check_float32(op, "p", p)
    beta1, beta2, eps = float(beta1), float(beta2), float(eps)
    alpha = lr * np.sqrt(1.0 - beta2 ** int(t)) / (1.0 - beta1 ** int(t))
    _run_in_place(_adam, (p, g, m, v_), float(alpha), beta1, beta2, eps)


def sum_squares(x, acc, accumulate=False):
    """acc[0] = sum(x^2) (accumulate=False) or acc[0] += sum(x^2), in float64, stored in
    acc's dtype; acc: shape (1,). NumPy's pairwise float64 sum (the reference's), so the
    result is the reference's bit for bit; one pass over x, no kernel needed."""
    op = "sum_squares"
    accumulate = _validate.sum_squares_args(op, x, acc, accumulate)
    check_float32(op, "x", x)
    x64 = x.astype(np.float64)
    total = float(np.sum(x64 * x64))
    acc[0] = (float(acc[0]) + total) if accumulate else total


@njit(cache=True, nogil=True, error_model="numpy")
def _regularize(w, g, has_g, l1, l2):
    """Returns l1 * sum(|w|) + l2 * sum(w^2) (float64 sums); g += l1 * sign(w) + 2 * l2 * w
    when has_g. One serial pass (weights are few next to activations)."""
    s1 = 0.0
    s2 = 0.0
    for i in range(w.size):
        wi = np.float64(w[i])
        s1 += abs(wi)
        s2 += wi * wi
        if has_g:
            sign = 1.0 if wi > 0.0 else (-1.0 if wi < 0.0 else 0.0)
            g[i] = np.float32(np.float64(g[i]) + l1 * sign + 2.0 * l2 * wi)
    return l1 * s1 + l2 * s2


def regularize(w, g, l1, l2, acc, accumulate=False):
    """Keras 3's L1/L2 weight penalty and its gradient, in place (the reference's
    meaning): acc[0] (+)= l1 * sum(|w|) + l2 * sum(w^2); g += l1 * sign(w) + 2 * l2 * w
    unless g is None. Allocates nothing."""
    op = "regularize"
    l1, l2, accumulate = _validate.regularize_args(op, w, g, l1, l2, acc, accumulate)
    check_float32(op, "w", w)
    if not w.flags.c_contiguous or (g is not None and not g.flags.c_contiguous):
        raise ValueError(f"{op}: w and g must be C-contiguous")
    wf = w.reshape(-1)
    total = _regularize(wf, wf if g is None else g.reshape(-1), g is not None, l1, l2)
    acc[0] = (float(acc[0]) + total) if accumulate else total


def clip_by_norm(g, sumsq, clipnorm):
    """Keras's clip by norm, in place: n = sqrt(sumsq[0]);
    g *= clipnorm / max(n, clipnorm) (unchanged when n <= clipnorm; NaN n gives NaN g).
    The factor is computed once on the host in float64 (sumsq is a host array here)."""
    op = "clip_by_norm"
    clipnorm = _validate.clip_by_norm_args(op, g, sumsq, clipnorm)
    check_float32(op, "g", g)
    n = float(np.sqrt(np.float64(sumsq[0])))
    denom = n if not n <= clipnorm else clipnorm
    _run_in_place(_scale, (g,), clipnorm / denom)


def clip_by_value(g, clipvalue):
    """g = clip(g, -clipvalue, clipvalue), in place (NaN stays NaN)."""
    op = "clip_by_value"
    clipvalue = _validate.clip_by_value_args(op, g, clipvalue)
    check_float32(op, "g", g)
    _run_in_place(_clip, (g,), np.float32(clipvalue))
