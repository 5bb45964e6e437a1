"""Comparing kernels with their truth: a backend against the reference, an analytic
gradient against finite differences (MismatchError, assert_close,
compare_to_reference, assert_matches_reference, check_gradient).

Installed with the package (not only in tests/) so that `fastconv selftest`
and `fastconv check` can prove the kernels on a user's own machine.
"""
from __future__ import annotations

import copy
import dataclasses
import time
from typing import NamedTuple

import numpy as np

from .. import kernels


class MismatchError(AssertionError):
    """A backend or an analytic gradient disagrees with its truth."""


def error_stats(actual, expected):
    """(max abs error, normwise relative error ||a - e|| / max(||e||, tiny)) in float64."""
    a = np.array(actual, np.float64, ndmin=1)
    e = np.array(expected, np.float64, ndmin=1)
    if a.shape != e.shape:
        raise MismatchError(f"shape {a.shape} != expected {e.shape}")
    if a.size == 0:
        return 0.0, 0.0
    diff = a - e
    bad = ~(np.isfinite(a) & np.isfinite(e))
    if np.any(bad & ~((a == e) | (np.isnan(a) & np.isnan(e)))):
        return float("inf"), float("inf")
    diff[bad] = 0.0
    max_abs = float(np.max(np.abs(diff)))
    rel = float(np.linalg.norm(diff) / max(np.linalg.norm(e), np.finfo(np.float64).tiny))
    return max_abs, rel


def _index(flat, shape):
    return tuple(int(i) for i in np.unravel_index(flat, shape))


def assert_close(actual, expected, rtol, atol, what="value"):
    """Elementwise |a - e| <= atol + rtol * |e|, with a message that says where and how far."""
    a = np.asarray(actual)
    e = np.asarray(expected)
    if a.shape != e.shape:
        raise MismatchError(f"{what}: shape {a.shape} != expected {e.shape}")
    if np.issubdtype(e.dtype, np.integer):
        if not np.array_equal(a, e):
            k = int(np.argmax((a != e).ravel()))
            raise MismatchError(
                f"{what}: {int(np.sum(a != e))} of {e.size} integers differ, first at "
                f"{_index(k, e.shape)}: {a.ravel()[k]} != {e.ravel()[k]}")
        return
    a64, e64 = a.astype(np.float64), e.astype(np.float64)
    ok = np.isclose(a64, e64, rtol=rtol, atol=atol, equal_nan=True)
    if not ok.all():
        max_abs, rel = error_stats(a64, e64)
        k = int(np.argmin(ok.ravel()))
        raise MismatchError(
            f"{what}: {int((~ok).sum())} of {e.size} values outside atol={atol:g} + "
            f"rtol={rtol:g}*|expected|; max abs error {max_abs:.3g}, normwise relative "
            f"error {rel:.3g}; first at {_index(k, e.shape)}: "
            f"{float(a.ravel()[k])!r} != {float(e.ravel()[k])!r}")


def numerical_gradient(f, x, h=1e-6):
    """Central differences of the scalar function f at x (float64), same shape as x."""
    if x.dtype != np.float64:
        raise TypeError(f"numerical_gradient needs float64 x, got {x.dtype}")
    grad = np.empty_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for k in range(flat.size):
        old = flat[k]
        flat[k] = old + h
        up = f()
        flat[k] = old - h
        down = f()
        flat[k] = old
        gflat[k] = (up - down) / (2 * h)
    return grad


def check_gradient(f, x, analytic, what, rtol=1e-6, h=1e-6):
    """Raise MismatchError unless `analytic` matches central differences of f at x.

    f() reads x (float64, perturbed in place) and returns a scalar. The test is
    normwise: ||analytic - numeric|| <= rtol * ||numeric||. Returns the
    relative error.
    """
    numeric = numerical_gradient(f, x, h)
    _, rel = error_stats(analytic, numeric)
    if not rel <= rtol:
        raise MismatchError(
            f"{what}: analytic gradient differs from finite differences: normwise "
            f"relative error {rel:.3g} > rtol {rtol:g}")
    return rel


def _to_backend(backend, value):
    if isinstance(value, np.ndarray) and hasattr(backend, "to_device"):
        return backend.to_device(value)
    return value


def _to_host(backend, value):
    if hasattr(backend, "to_host"):
        return backend.to_host(value)
    return value


def _flatten(value, prefix):
    """Yield (label, leaf) for nested tuples/lists of results."""
    if isinstance(value, (tuple, list)):
        for k, item in enumerate(value):
            yield from _flatten(item, f"{prefix}[{k}]")
    else:
        yield prefix, value


class OutputCheck(NamedTuple):
    label: str          # "out[1]" for the second result, "arg[0]" for an in-place argument
    max_abs: float
    rel: float          # normwise relative error
    passed: bool
    message: str        # why it failed, "" if it passed


@dataclasses.dataclass
class Comparison:
    """The outcome of one op on one backend against the reference."""
    backend: str
    op: str
    outputs: list
    seconds_backend: float
    seconds_reference: float
    actual: object = dataclasses.field(repr=False, default=None)
    expected: object = dataclasses.field(repr=False, default=None)

    @property
    def passed(self):
        return all(o.passed for o in self.outputs)

    @property
    def message(self):
        return "; ".join(o.message for o in self.outputs if not o.passed)

    @property
    def max_abs(self):
        return max((o.max_abs for o in self.outputs), default=0.0)

    @property
    def rel(self):
        return max((o.rel for o in self.outputs), default=0.0)


def _only_where_live(op, label, a, e, expected):
    """Outputs compared on a subset: a fused pool's argmax is defined only where y > 0."""
    if op == "conv2d_relu_maxpool_forward" and label == "out[1]":
        live = np.asarray(expected[0]) > 0
        return np.asarray(a)[live], np.asarray(e)[live]
    return a, e


def _check_output(where, op, label, a, e, expected, rtol, atol):
    if e is None or a is None:
        if e is None and a is None:
            return OutputCheck(label, 0.0, 0.0, True, "")
        return OutputCheck(label, float("inf"), float("inf"), False,
                           f"{where} {label}: {a!r:.60} where the reference gives {e!r:.60}")
    if isinstance(e, np.ndarray) and isinstance(a, np.ndarray) and a.dtype != e.dtype:
        return OutputCheck(label, float("inf"), float("inf"), False,
                           f"{where} {label}: dtype {a.dtype}, reference {e.dtype}")
    a, e = _only_where_live(op, label, a, e, expected)
    try:
        max_abs, rel = error_stats(a, e)
        assert_close(a, e, rtol, atol, what=f"{where} {label}")
    except MismatchError as exc:
        max_abs, rel = error_stats(a, e) if np.shape(a) == np.shape(e) else (np.inf, np.inf)
        return OutputCheck(label, max_abs, rel, False, str(exc))
    return OutputCheck(label, max_abs, rel, True, "")


def compare_to_reference(backend, op, *args, rtol=1e-4, atol=1e-5, warmup=False, **kwargs):
    """Run `op` on `backend` and on the reference with copies of the same inputs.

    backend: a module from fastconv.kernels.get() or its name. Every output is
    compared elementwise (|a - e| <= atol + rtol * |e|; integers exactly), and
    so are the array arguments after the call, which checks the in-place
    optimizer updates and catches a kernel that writes into its inputs.
    Generators (dropout's rng) are deep-copied so both sides draw the same
    numbers. warmup=True runs the backend once before the timed call (Numba
    compiles on first use). Returns a Comparison; raises nothing on mismatch.
    """
    if isinstance(backend, str):
        backend = kernels.get(backend)
    ref = kernels.get("reference")
    name = getattr(backend, "NAME", str(backend))
    where = f"{name}.{op}"
    sync = getattr(backend, "synchronize", lambda: None)

    def on_backend():
        return ([_to_backend(backend, copy.deepcopy(a)) for a in args],
                {k: _to_backend(backend, copy.deepcopy(a)) for k, a in kwargs.items()})

    if warmup:
        w_args, w_kwargs = on_backend()
        getattr(backend, op)(*w_args, **w_kwargs)
        sync()
    ref_args, ref_kwargs = copy.deepcopy(args), copy.deepcopy(kwargs)
    t0 = time.perf_counter()
    expected = getattr(ref, op)(*ref_args, **ref_kwargs)
    t_ref = time.perf_counter() - t0
    dev_args, dev_kwargs = on_backend()
    sync()
    t0 = time.perf_counter()
    actual = getattr(backend, op)(*dev_args, **dev_kwargs)
    sync()
    t_dev = time.perf_counter() - t0
    actual = _to_host(backend, actual)

    got, want = list(_flatten(actual, "out")), list(_flatten(expected, "out"))
    if len(got) != len(want):
        check = OutputCheck("out", np.inf, np.inf, False,
                            f"{where}: returns {actual!r:.80}, reference {expected!r:.80}")
        return Comparison(name, op, [check], t_dev, t_ref, actual, expected)
    pairs = [(label, a, e) for (label, a), (_, e) in zip(got, want)]
    for k, (dev_a, ref_a) in enumerate(zip(dev_args, ref_args)):
        if isinstance(ref_a, np.ndarray):
            pairs.append((f"arg[{k}]", _to_host(backend, dev_a), ref_a))
    outputs = [_check_output(where, op, label, a, e, expected, rtol, atol)
               for label, a, e in pairs]
    return Comparison(name, op, outputs, t_dev, t_ref, actual, expected)


def assert_matches_reference(backend, op, *args, rtol=1e-4, atol=1e-5, **kwargs):
    """compare_to_reference, raising MismatchError naming the op and the output
    that differs. Returns (backend result, reference result) on the host."""
    result = compare_to_reference(backend, op, *args, rtol=rtol, atol=atol, **kwargs)
    if not result.passed:
        raise MismatchError(result.message)
    return result.actual, result.expected
