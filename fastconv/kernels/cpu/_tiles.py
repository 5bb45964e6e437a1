"""What the cpu conv kernels share (conv2d.py, pointwise.py, fused.py, depthwise.py):
the register tile (PX pixels x FC channels of accumulators on the stack) and each
Python thread's cached workspaces. See conv2d.py for how the kernels use them."""
import threading

import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from ... import _vector_width
from ._common import F32, FMA_OPTS


@intrinsic
def _stack_f32(typingctx, size):
    """A pointer to `size` float32 in the calling function's stack frame.

    size must be a compile-time constant. Accumulators kept here instead of in
    y let LLVM prove they alias nothing, so it holds them in registers across
    the whole tap loop (an NRT array or y itself is re-loaded and re-stored
    every tap): 1.5-2x on the seed's convs.
    """
    if not isinstance(size, types.IntegerLiteral):
        return None
    n = size.literal_value

    def codegen(context, builder, signature, args):
        return cgutils.alloca_once(builder, context.get_value_type(types.float32), size=n)
    return types.CPointer(types.float32)(size), codegen


@intrinsic
def _data_f32(typingctx, arr):
    """The data pointer of a float32 array, as a CPointer: no reference counting, so a
    variable can hold this array's data or a stack tile's (see _add_winner)."""
    if not isinstance(arr, types.Array) or arr.dtype != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return context.make_array(signature.args[0])(context, builder, args[0]).data
    return types.CPointer(types.float32)(arr), codegen


# Register block of the forward: PX output pixels x FC output channels of
# accumulators. With 256-bit vectors (16 registers): 3 x 32 floats = 12
# registers, leaving 4 for the weights and the broadcast input, measured best of
# 2-8 x 8-32 on the seed's convs. With 512-bit vectors (32 registers, see
# fastconv/_vector_width.py): 6 x 32 = 12 zmm, enough independent FMA chains to
# cover the FMA latency on both ports (3 x 32 is only 6 zmm: conv2 ran 1.2x
# slower). The hot loop is written out for PX = 3 and PX = 6 only.
PX = 6 if _vector_width.ENABLED else 3
FC = 32
PX_FC = PX * FC  # a global, so _stack_f32 sees a literal


@njit(inline="always", **FMA_OPTS)
def _bias_tile(acc, bb):
    """acc (PX, FC) = the bias block bb (FC,) in every row: a tile's initial value."""
    for p in range(PX):
        for f in range(FC):
            acc[p, f] = bb[f]


# Each Python thread's own workspaces, {(name, shape, dtype): array}: scratch belongs to
# the thread that calls, never to the module, so concurrent calls cannot overwrite each
# other's padded x or partial sums.
_LOCAL = threading.local()
_MAX_WORKSPACES = 128         # per thread (the keras.io xception trained and run uses ~62)


def _thread_workspaces():
    """This thread's workspace dict (created on its first call)."""
    cache = getattr(_LOCAL, "workspaces", None)
    if cache is None:
        cache = _LOCAL.workspaces = {}
    return cache


def workspace(name, shape, dtype=F32, zero=False):
    """This thread's cached scratch array for (name, shape, dtype); new ones are zeroed
    if asked.

    Contents persist between calls of the same thread: a caller that needs zeros it
    does not rewrite itself must pass zero=True and keep those parts zero.
    """
    cache = _thread_workspaces()
    key = (name, tuple(shape), np.dtype(dtype).str)
    buf = cache.get(key)
    if buf is None:
        if len(cache) >= _MAX_WORKSPACES:
            # Shapes keep changing: drop the oldest (dicts keep insertion order), not
            # all of them, so the workspaces of the calls now running stay cached.
            del cache[next(iter(cache))]
        buf = (np.zeros if zero else np.empty)(key[1], dtype)
        cache[key] = buf
    return buf
