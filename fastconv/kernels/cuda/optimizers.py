"""Optimizer updates on the GPU: Keras 3 formulas (as the reference), in place, elementwise.

Each op updates the parameter p and its state arrays in place and returns None.
p, g and the state share one shape; all are float32, C-contiguous. One
grid-stride kernel per update over the flattened arrays (coalesced; one read of
each array and one write of each updated one per element). Hyperparameters
are passed as float32 (the kernels compute in float32; the reference computes
in float64 and rounds, a difference of a few ulps per step); the step-dependent
Adam factor and 1 - beta are computed on the host in float64 first.

Device arrays are updated where they are. Host NumPy arrays are accepted too:
they are copied to the device, updated there and copied back into the same
arrays (in-place semantics kept, at the cost of two copies per call).
"""
import math

import numpy as np
from numba import cuda, float32, int32

from .. import _validate
from . import _launch
from ._mem import blocks_for, check_float32, checkable, device_in, flat, is_device_array
from ._launch import REDUCE_MAX
from ._reduce import block_sum
from ._spec import KernelSpec
from .losses import BAD as _BAD         # the step accumulator's non-finite flag
from .losses import _reduce_threads

_F1 = float32[::1]


@cuda.jit
def sgd_plain(p, g, lr):
    """p -= lr * g. All (n,)."""
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        p[i] = p[i] - lr * g[i]


@cuda.jit
def sgd_momentum(p, g, vel, lr, momentum, nesterov):
    """vel = momentum * vel - lr * g; p += momentum * vel - lr * g (nesterov != 0) or vel."""
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        step = lr * g[i]
        vi = momentum * vel[i] - step
        vel[i] = vi
        if nesterov != 0:
            p[i] = p[i] + (momentum * vi - step)
        else:
            p[i] = p[i] + vi


@cuda.jit
def rmsprop(p, g, ms, lr, rho, one_minus_rho, eps):
    """ms = rho * ms + (1 - rho) * g^2; p -= lr * g / sqrt(ms + eps). All (n,)."""
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        gi = g[i]
        s = rho * ms[i] + one_minus_rho * gi * gi
        ms[i] = s
        p[i] = p[i] - lr * gi / math.sqrt(s + eps)


@cuda.jit
def adam(p, g, m, vel, alpha, one_minus_beta1, one_minus_beta2, eps):
    """m += (g - m)(1 - beta1); vel += (g^2 - vel)(1 - beta2); p -= alpha m / (sqrt(vel) + eps)."""
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        gi = g[i]
        mi = m[i] + (gi - m[i]) * one_minus_beta1
        vi = vel[i] + (gi * gi - vel[i]) * one_minus_beta2
        m[i] = mi
        vel[i] = vi
        p[i] = p[i] - alpha * mi / (math.sqrt(vi) + eps)


# Guarded variants for fit's device-side step: `stats` is the step accumulator of
# kernels/cuda/losses.py; a non-zero stats[BAD] (this or an earlier step of the epoch had
# a non-finite loss) skips the update on the device. With save != 0 each thread first
# writes the parameter's old value into snap (the weights the last finite-loss step
# started from, which fit restores on a NaN loss), fused into the pass that reads p
# anyway: no separate parameter copy per step. save == 0: snap is not touched (p may be
# passed). All arrays (n,).

@cuda.jit(device=True)
def _skip(stats):
    return stats[_BAD] != np.float32(0.0)


@cuda.jit
def sgd_plain_guarded(p, g, lr, stats, snap, save):
    if _skip(stats):
        return
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        pi = p[i]
        if save != 0:
            snap[i] = pi
        p[i] = pi - lr * g[i]


@cuda.jit
def sgd_momentum_guarded(p, g, vel, lr, momentum, nesterov, stats, snap, save):
    if _skip(stats):
        return
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        pi = p[i]
        if save != 0:
            snap[i] = pi
        step = lr * g[i]
        vi = momentum * vel[i] - step
        vel[i] = vi
        if nesterov != 0:
            p[i] = pi + (momentum * vi - step)
        else:
            p[i] = pi + vi


@cuda.jit
def rmsprop_guarded(p, g, ms, lr, rho, one_minus_rho, eps, stats, snap, save):
    if _skip(stats):
        return
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        pi = p[i]
        if save != 0:
            snap[i] = pi
        gi = g[i]
        s = rho * ms[i] + one_minus_rho * gi * gi
        ms[i] = s
        p[i] = pi - lr * gi / math.sqrt(s + eps)


@cuda.jit
def adam_guarded(p, g, m, vel, alpha, one_minus_beta1, one_minus_beta2, eps, stats, snap,
                 save):
    if _skip(stats):
        return
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        pi = p[i]
        if save != 0:
            snap[i] = pi
        gi = g[i]
        mi = m[i] + (gi - m[i]) * one_minus_beta1
        vi = vel[i] + (gi * gi - vel[i]) * one_minus_beta2
        m[i] = mi
        vel[i] = vi
        p[i] = pi - alpha * mi / (math.sqrt(vi) + eps)


# Gradient clipping (Keras's clipnorm / global_clipnorm / clipvalue). The sum of
# squares stays on the device in a (1,) array that the scale kernel reads, so clipping
# needs no host read: one block sums (a fixed order of additions, so the result is the
# same on every run, which bitwise-equal resumed runs rely on), then a grid-stride pass
# scales.

@cuda.jit
def sum_squares_block(x, acc, accumulate):
    """acc[0] = sum(x^2) (+ acc[0] when accumulate != 0). One block; x (n,), acc (1,)."""
    sh = cuda.shared.array(REDUCE_MAX, float32)
    t = cuda.threadIdx.x
    part = np.float32(0.0)
    for i in range(t, x.size, cuda.blockDim.x):
        xi = x[i]
        part += xi * xi
    total = block_sum(sh, part)
    if t == 0:
        if accumulate != 0:
            acc[0] = acc[0] + total
        else:
            acc[0] = total


@cuda.jit
def regularize_block(w, g, has_g, l1, l2, acc, accumulate):
    """acc[0] = l1 * sum(|w|) + l2 * sum(w^2) (+ acc[0] when accumulate != 0);
    g += l1 * sign(w) + 2 * l2 * w when has_g != 0 (else g, any float32 array, is
    unread). One block (a fixed order of additions); w, g (n,), acc (1,)."""
    sh = cuda.shared.array(REDUCE_MAX, float32)
    t = cuda.threadIdx.x
    part = np.float32(0.0)
    two_l2 = np.float32(2.0) * l2
    for i in range(t, w.size, cuda.blockDim.x):
        wi = w[i]
        part += l1 * abs(wi) + l2 * (wi * wi)
        if has_g != 0:
            sign = np.float32(0.0)
            if wi > np.float32(0.0):
                sign = np.float32(1.0)
            elif wi < np.float32(0.0):
                sign = np.float32(-1.0)
            g[i] = g[i] + (l1 * sign + two_l2 * wi)
    total = block_sum(sh, part)
    if t == 0:
        if accumulate != 0:
            acc[0] = acc[0] + total
        else:
            acc[0] = total


@cuda.jit
def clip_norm_scale(g, sumsq, clipnorm):
    """g *= clipnorm / max(sqrt(sumsq[0]), clipnorm), NaN kept (a NaN norm: NaN g)."""
    n = math.sqrt(sumsq[0])
    denom = clipnorm
    if not n <= clipnorm:
        denom = n
    factor = clipnorm / denom
    for i in range(cuda.grid(1), g.size, cuda.gridsize(1)):
        g[i] = g[i] * factor


@cuda.jit
def clip_value(g, v):
    """g = clip(g, -v, v), NaN kept."""
    for i in range(cuda.grid(1), g.size, cuda.gridsize(1)):
        gi = g[i]
        if gi > v:
            g[i] = v
        elif gi < -v:
            g[i] = -v


_GUARD = (_F1, _F1, int32)

KERNELS = [
    KernelSpec("sgd_plain", sgd_plain, (_F1, _F1, float32), _launch.ELEMENTWISE),
    KernelSpec("sgd_momentum", sgd_momentum, (_F1, _F1, _F1, float32, float32, int32),
               _launch.ELEMENTWISE),
    KernelSpec("rmsprop", rmsprop, (_F1, _F1, _F1) + (float32,) * 4, _launch.ELEMENTWISE),
    KernelSpec("adam", adam, (_F1,) * 4 + (float32,) * 4, _launch.ELEMENTWISE),
    KernelSpec("sum_squares_block", sum_squares_block, (_F1, _F1, int32), _launch.REDUCE),
    KernelSpec("regularize_block", regularize_block,
               (_F1, _F1, int32, float32, float32, _F1, int32), _launch.REDUCE),
    KernelSpec("clip_norm_scale", clip_norm_scale, (_F1, _F1, float32), _launch.ELEMENTWISE),
    KernelSpec("clip_value", clip_value, (_F1, float32), _launch.ELEMENTWISE),
    KernelSpec("sgd_plain_guarded", sgd_plain_guarded, (_F1, _F1, float32) + _GUARD,
               _launch.ELEMENTWISE),
    KernelSpec("sgd_momentum_guarded", sgd_momentum_guarded,
               (_F1, _F1, _F1, float32, float32, int32) + _GUARD, _launch.ELEMENTWISE),
    KernelSpec("rmsprop_guarded", rmsprop_guarded, (_F1, _F1, _F1) + (float32,) * 4 + _GUARD,
               _launch.ELEMENTWISE),
    KernelSpec("adam_guarded", adam_guarded, (_F1,) * 4 + (float32,) * 4 + _GUARD,
               _launch.ELEMENTWISE),
]

_GUARDED = ("sgd_plain", "sgd_momentum", "rmsprop", "adam")


def _guarded(kernel):
    """The guarded variant of update kernel `kernel`, looked up by module global name (not
    by object: tests wrap this module's kernels in launch recorders, and the lookup must
    find the wrapped guarded kernel too)."""
    for name in _GUARDED:
        if globals()[name] is kernel:
            return globals()[name + "_guarded"]
    raise KeyError(f"no guarded variant of {kernel!r}")


def _run(op, kernel, names_arrays, scalars, guard=None):
    """Launch `kernel` over the arrays (device ones in place; host ones via a device copy
    written back afterwards) followed by the float32/int32 scalars. guard (fit's device
    step): (stats, snap or None), device arrays; launches the guarded variant, which
    skips the update when stats says the step's loss was not finite and first saves p
    into snap when one is given (snap: p's shape, float32, C-contiguous)."""
    pairs = [(name, a, device_in(op, name, a)) for name, a in names_arrays]
    n = pairs[0][2].size
    extra = ()
    if guard is not None:
        stats, snap = guard
        if not is_device_array(pairs[0][1]):
            raise TypeError(f"{op}: a guarded update needs device arrays")
        save = snap is not None
        if save and (tuple(snap.shape) != tuple(pairs[0][2].shape) or
                     snap.dtype != np.float32 or not snap.is_c_contiguous()):
            raise ValueError(f"{op}: the snapshot buffer must be p's shape, float32, "
                             f"C-contiguous")
        extra = (stats, flat(snap if save else pairs[0][2]), np.int32(save))
        kernel = _guarded(kernel)
    if n:
        threads = _launch.ELEMENTWISE
        kernel[blocks_for(n, threads, _launch.MAX_BLOCKS), threads](
            *(flat(d) for _, _, d in pairs), *scalars, *extra)
    for name, a, d in pairs:
        if name != "g" and not is_device_array(a):   # g is read, never written
            d.copy_to_host(a)


def _check_state(op, p, g, *state):
    _validate.check_update(op, checkable(p), checkable(g),
                           *((name, checkable(a)) for name, a in state))
    if p.dtype != np.float32:
        raise TypeError(f"{op}: p must be float32, got {p.dtype}")


def sgd_update(p, g, v_, lr, momentum=0.0, nesterov=False, guard=None):
    """Keras SGD, in place. With momentum m (the velocity v_, may be None when m == 0):
    v_ = m * v_ - lr * g;  p += m * v_ - lr * g (nesterov)  or  p += v_.
    Without momentum: p -= lr * g. Returns None. guard: see _run (fit's device step).
    """
    op = "sgd_update"
    lr, momentum = _validate.sgd_args(op, p, g, v_, lr, momentum, check=_check_state)
    if momentum == 0:
        _run(op, sgd_plain, (("p", p), ("g", g)), (np.float32(lr),), guard)
        return
    _run(op, sgd_momentum, (("p", p), ("g", g), ("v", v_)),
         (np.float32(lr), np.float32(momentum), np.int32(bool(nesterov))), guard)


def rmsprop_update(p, g, ms, lr, rho=0.9, eps=1e-7, guard=None):
    """Keras RMSprop (no momentum, not centered), in place:
    ms = rho * ms + (1 - rho) * g^2;  p -= lr * g / sqrt(ms + eps). Returns None.
    guard: see _run (fit's device step).
    """
    op = "rmsprop_update"
    lr, rho, eps = _validate.rmsprop_args(op, p, g, ms, lr, rho, eps, check=_check_state)
    _run(op, rmsprop, (("p", p), ("g", g), ("ms", ms)),
         (np.float32(lr), np.float32(rho), np.float32(1.0 - rho), np.float32(eps)), guard)


def adam_update(p, g, m, v_, t, lr, beta1=0.9, beta2=0.999, eps=1e-7, guard=None):
    """Keras Adam, in place, step t = 1 for the first update (epsilon-hat placement):
    a = lr * sqrt(1 - beta2^t) / (1 - beta1^t)
    m += (g - m) * (1 - beta1);  v_ += (g^2 - v_) * (1 - beta2)
    p -= a * m / (sqrt(v_) + eps). Returns None. guard: see _run (fit's device step).
    """
    op = "adam_update"
    lr = _validate.adam_args(op, p, g, m, v_, t, lr, check=_check_state)
    alpha = lr * np.sqrt(1.0 - beta2 ** t) / (1.0 - beta1 ** t)
    _run(op, adam, (("p", p), ("g", g), ("m", m), ("v", v_)),
         (np.float32(alpha), np.float32(1.0 - beta1), np.float32(1.0 - beta2), np.float32(eps)),
         guard)


def sum_squares(x, acc, accumulate=False):
    """acc[0] = sum(x^2) (accumulate=False) or acc[0] += sum(x^2), in place on the
    device (float32 sums, one block: the same order of additions every run). acc: (1,)
    float32; a device acc is never read back."""
    op = "sum_squares"
    accumulate = _validate.sum_squares_args(op, checkable(x), checkable(acc), accumulate)
    check_float32(op, "x", x)
    check_float32(op, "acc", acc)
    xd = device_in(op, "x", x)
    accd = device_in(op, "acc", acc)
    sum_squares_block[1, _reduce_threads()](flat(xd), accd, np.int32(accumulate))
    if not is_device_array(acc):
        accd.copy_to_host(acc)


def regularize(w, g, l1, l2, acc, accumulate=False):
    """Keras 3's L1/L2 weight penalty and its gradient, in place on the device (the
    reference's meaning, float32 sums in one block): acc[0] (+)= l1 * sum(|w|) +
    l2 * sum(w^2); g += l1 * sign(w) + 2 * l2 * w unless g is None. A device acc is
    never read back (fit's step adds it to the step's loss on the device)."""
    op = "regularize"
    l1, l2, accumulate = _validate.regularize_args(op, checkable(w), checkable(g),
                                                   l1, l2, checkable(acc), accumulate)
    check_float32(op, "w", w)
    check_float32(op, "acc", acc)
    wd = device_in(op, "w", w)
    gd = device_in(op, "g", g) if g is not None else wd
    accd = device_in(op, "acc", acc)
    regularize_block[1, _reduce_threads()](flat(wd), flat(gd), np.int32(g is not None),
                                           np.float32(l1), np.float32(l2), accd,
                                           np.int32(accumulate))
    if not is_device_array(acc):
        accd.copy_to_host(acc)
    if g is not None and not is_device_array(g):
        gd.copy_to_host(g)


def clip_by_norm(g, sumsq, clipnorm):
    """Keras's clip by norm, in place: g *= clipnorm / max(sqrt(sumsq[0]), clipnorm),
    the factor computed on the device from sumsq (sum_squares's (1,) array: g's own sum
    for clipnorm, every gradient's for global_clipnorm); NaN norm: NaN g."""
    op = "clip_by_norm"
    clipnorm = _validate.clip_by_norm_args(op, checkable(g), checkable(sumsq), clipnorm)
    check_float32(op, "g", g)
    check_float32(op, "sumsq", sumsq)
    sd = device_in(op, "sumsq", sumsq)
    _run(op, clip_norm_scale, (("p", g),), (sd, np.float32(clipnorm)))


def clip_by_value(g, clipvalue):
    """g = clip(g, -clipvalue, clipvalue), in place (NaN stays NaN)."""
    op = "clip_by_value"
    clipvalue = _validate.clip_by_value_args(op, checkable(g), clipvalue)
    check_float32(op, "g", g)
    _run(op, clip_value, (("p", g),), (np.float32(clipvalue),))
