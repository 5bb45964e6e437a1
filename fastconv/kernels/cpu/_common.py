"""Shared Numba options and out= plumbing of the cpu engine's kernels.

Every public op validates its arguments with `fastconv.kernels._validate` first
(so errors read exactly like the reference's), then calls an njit kernel that
writes into a caller buffer: `out=` when given (no allocation), else a new
array. The out= convention and its checks are `_validate`'s (out_tuple,
check_out); `Target` adds only what is this engine's: a staging array when the
caller's buffer is not C-contiguous.
"""
import types

import numpy as np
from numba import njit

from .. import _validate

# cache=True: a warm start loads machine code instead of compiling (~0.3 s vs
# ~2.5 s per signature). error_model="numpy": no ZeroDivisionError branches, so
# loops with a division still vectorize. No fastmath: results must not depend on
# how LLVM reassociates (kernels that reduce say where they differ).
OPTS = dict(cache=True, nogil=True, error_model="numpy")
# The conv kernels' options (conv2d.py, fused.py): OPTS plus fastmath={'contract'},
# which lets LLVM fuse a*b + c into one FMA (one rounding instead of two); nothing
# is reassociated, so results stay the same on every run and thread count.
FMA_OPTS = dict(OPTS, fastmath={"contract"})

# Below this many elements a parallel launch (~2 us + wake-up of the workers)
# costs more than the loop itself: the serial twin of the kernel runs instead.
PARALLEL_MIN = 1 << 15

F32 = np.float32              # the float32 scalar type (kernels write F32(0))


class Kernel:
    """One Python loop body compiled twice: serially and with parallel=True.

    The body uses `numba.prange`, which is a plain range in the serial build.
    Both builds compile lazily, so a program that only ever runs small (or only
    large) inputs compiles one. `kernel(work, *args)` picks by `work`, the
    number of elements the call touches.
    """

    def __init__(self, fn, fastmath=False):
        # Numba's on-disk cache keys entries by qualified name and signature, not by
        # options (numba issue #6845): both builds of one function would share a cache
        # slot and the parallel one could load serial code. Distinct names keep them apart.
        self.serial = njit(fastmath=fastmath, **OPTS)(_renamed(fn, "_serial"))
        self.parallel = njit(parallel=True, fastmath=fastmath, **OPTS)(_renamed(fn, "_parallel"))
        self.__doc__ = fn.__doc__
        self.__name__ = fn.__name__

    def __call__(self, work, *args):
        if work >= PARALLEL_MIN:
            return self.parallel(*args)
        return self.serial(*args)


def _renamed(fn, suffix):
    g = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + suffix,
                           fn.__defaults__, fn.__closure__)
    g.__qualname__ = fn.__qualname__ + suffix
    g.__module__ = fn.__module__
    g.__doc__ = fn.__doc__
    return g


def kernel(fn=None, *, fastmath=False):
    """Decorator: a `Kernel` (serial and parallel builds of fn)."""
    if fn is None:
        return lambda f: Kernel(f, fastmath)
    return Kernel(fn, fastmath)


def check_float32(op, name, a):
    """TypeError unless `a` is float32. The shared checks also pass float64 inside
    `kernels.float64_allowed()`, which only the reference honours (it computes in
    float64 anyway); this engine has float32 kernels only, as the conv ops say too."""
    if a.dtype != F32:
        raise TypeError(f"{op}: {name} must be float32, got {a.dtype}")


def contiguous(a):
    """`a` itself when C-contiguous (the contract's layout), else a C-contiguous copy,
    so a stray view gives the right answer rather than a third compiled layout."""
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


class Target:
    """Where a kernel writes one result: the caller's out buffer when it is
    C-contiguous (the normal case: no allocation), else a fresh array that
    `result()` copies into the caller's buffer."""

    __slots__ = ("buf", "out")

    def __init__(self, op, name, out, shape, dtype=np.float32):
        shape = tuple(shape)          # (a generator here would grow tuple freelists: see tests/test_model_alloc.py)
        if out is None:
            self.buf, self.out = np.empty(shape, dtype), None
            return
        _validate.check_out(op, name, out, shape, dtype)
        self.out = out
        self.buf = out if out.flags.c_contiguous else np.empty(shape, dtype)

    def result(self):
        if self.out is None:
            return self.buf
        if self.buf is not self.out:
            self.out[...] = self.buf
        return self.out


def flat(a):
    """A 1-D view of a C-contiguous array (no copy)."""
    return a.reshape(-1)
