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
from ._mem import blocks_for, checkable, device_in, flat, is_device_array
from ._spec import KernelSpec

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


KERNELS = [
    KernelSpec("sgd_plain", sgd_plain, (_F1, _F1, float32), _launch.ELEMENTWISE),
    KernelSpec("sgd_momentum", sgd_momentum, (_F1, _F1, _F1, float32, float32, int32),
               _launch.ELEMENTWISE),
    KernelSpec("rmsprop", rmsprop, (_F1, _F1, _F1) + (float32,) * 4, _launch.ELEMENTWISE),
    KernelSpec("adam", adam, (_F1,) * 4 + (float32,) * 4, _launch.ELEMENTWISE),
]


def _run(op, kernel, names_arrays, scalars):
    """Launch `kernel` over the arrays (device ones in place; host ones via a device copy
    written back afterwards) followed by the float32/int32 scalars."""
    pairs = [(name, a, device_in(op, name, a)) for name, a in names_arrays]
    n = pairs[0][2].size
    if n:
        threads = _launch.ELEMENTWISE
        kernel[blocks_for(n, threads, _launch.MAX_BLOCKS), threads](
            *(flat(d) for _, _, d in pairs), *scalars)
    for name, a, d in pairs:
        if name != "g" and not is_device_array(a):   # g is read, never written
            d.copy_to_host(a)


def _check_state(op, p, g, *state):
    _validate.check_update(op, checkable(p), checkable(g),
                           *((name, checkable(a)) for name, a in state))
    if p.dtype != np.float32:
        raise TypeError(f"{op}: p must be float32, got {p.dtype}")


def sgd_update(p, g, v_, lr, momentum=0.0, nesterov=False):
    """Keras SGD, in place. With momentum m (the velocity v_, may be None when m == 0):
    v_ = m * v_ - lr * g;  p += m * v_ - lr * g (nesterov)  or  p += v_.
    Without momentum: p -= lr * g. Returns None.
    """
    op = "sgd_update"
    lr, momentum = _validate.sgd_args(op, p, g, v_, lr, momentum, check=_check_state)
    if momentum == 0:
        _run(op, sgd_plain, (("p", p), ("g", g)), (np.float32(lr),))
        return
    _run(op, sgd_momentum, (("p", p), ("g", g), ("v", v_)),
         (np.float32(lr), np.float32(momentum), np.int32(bool(nesterov))))


def rmsprop_update(p, g, ms, lr, rho=0.9, eps=1e-7):
    """Keras RMSprop (no momentum, not centered), in place:
    ms = rho * ms + (1 - rho) * g^2;  p -= lr * g / sqrt(ms + eps). Returns None.
    """
    op = "rmsprop_update"
    lr, rho, eps = _validate.rmsprop_args(op, p, g, ms, lr, rho, eps, check=_check_state)
    _run(op, rmsprop, (("p", p), ("g", g), ("ms", ms)),
         (np.float32(lr), np.float32(rho), np.float32(1.0 - rho), np.float32(eps)))


def adam_update(p, g, m, v_, t, lr, beta1=0.9, beta2=0.999, eps=1e-7):
    """Keras Adam, in place, step t = 1 for the first update (epsilon-hat placement):
    a = lr * sqrt(1 - beta2^t) / (1 - beta1^t)
    m += (g - m) * (1 - beta1);  v_ += (g^2 - v_) * (1 - beta2)
    p -= a * m / (sqrt(v_) + eps). Returns None.
    """
    op = "adam_update"
    lr = _validate.adam_args(op, p, g, m, v_, t, lr, check=_check_state)
    alpha = lr * np.sqrt(1.0 - beta2 ** t) / (1.0 - beta1 ** t)
    _run(op, adam, (("p", p), ("g", g), ("m", m), ("v", v_)),
         (np.float32(alpha), np.float32(1.0 - beta1), np.float32(1.0 - beta2), np.float32(eps)))
