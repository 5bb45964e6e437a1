"""The fused Numba CPU conv + ReLU (+ max-pool) kernels against the composition of
the unfused reference ops."""
import tracemalloc

import numba
import numpy as np
import pytest

from fastconv.kernels import reference as R
from fastconv.kernels.cpu import fused as Fu
from fastconv.testing import assert_close

F32 = np.float32
RTOL, ATOL = 1e-4, 1e-5

CONVS = [  # (x shape, kernel, C_out, stride, padding)
    ((1, 13, 11, 1), (3, 3), 7, 1, "valid"),
    ((5, 13, 11, 3), (3, 3), 32, 1, "valid"),
    ((2, 13, 11, 5), (5, 3), 7, 2, "same"),
    ((1, 13, 11, 3), (1, 1), 1, (1, 2), "same"),
    ((2, 12, 17, 4), (3, 3), 64, 2, "same"),   # the 3x3 row kernel, strided, 2 blocks
    ((1, 7, 6, 2), (3, 3), 32, 1, "valid"),    # 3x3, F % 32 == 0, rows under 6 pixels
    ((2, 9, 10, 17), (3, 3), 32, 1, "valid"),  # the 3x3 row kernel, KW*C = 51 > SHORT_K
]
# (pool, pool_stride, pool_padding): 13x11 -> 11x9 conv grids leave remainder rows
# and columns for pool 2 and 3; also overlapping windows and 'same' pooling.
POOLS = [(2, None, "valid"), (3, None, "valid"), (3, 2, "valid"), (2, None, "same"),
         ((2, 3), (1, 2), "same")]


def make(rng, shape, k, f):
    x = rng.standard_normal(shape).astype(F32)
    w = (rng.standard_normal(k + (shape[3], f)) * 0.3).astype(F32)
    b = (rng.standard_normal(f) * 0.1).astype(F32)
    if f > 1:
        b[-1] = -20.0  # a dead channel: y == 0 everywhere, argmax undefined there
    return x, w, b


def ref_pooled(x, w, b, stride, padding, pool, pool_stride, pool_padding):
    """The fused op spelled out with unfused reference ops."""
    z = R.relu_forward(R.conv2d_forward(x, w, b, stride, padding))
    return R.maxpool2d_forward(z, pool, pool_stride, pool_padding)


@pytest.mark.parametrize("conv", CONVS, ids=str)
def test_conv_relu_matches_reference_composition(conv, rng):
    shape, k, f, stride, padding = conv
    x, w, b = make(rng, shape, k, f)
    y = Fu.conv2d_relu_forward(x, w, b, stride, padding)
    y_ref = R.relu_forward(R.conv2d_forward(x, w, b, stride, padding))
    assert_close(y, y_ref, RTOL, ATOL, "y")
    assert np.all(y >= 0)
    dy = rng.standard_normal(y.shape).astype(F32)
    for need_dx in (True, False):
        got = Fu.conv2d_relu_backward(x, w, dy, y_ref, stride, padding, need_dx=need_dx)
        want = R.conv2d_backward(x, w, R.relu_backward(dy, y_ref), stride, padding,
                                 need_dx=need_dx)
        for a, e, name in zip(got, want, ("dx", "dw", "db")):
            if e is None:
                assert a is None
            else:
                assert_close(a, e, RTOL, ATOL, name)


@pytest.mark.parametrize("pool", POOLS, ids=str)
@pytest.mark.parametrize("conv", CONVS, ids=str)
def test_conv_relu_maxpool_matches_reference_composition(conv, pool, rng):
    shape, k, f, stride, padding = conv
    x, w, b = make(rng, shape, k, f)
    y_ref, arg_ref = ref_pooled(x, w, b, stride, padding, *pool)
    y, arg = Fu.conv2d_relu_maxpool_forward(x, w, b, stride, padding, *pool)
    assert_close(y, y_ref, RTOL, ATOL, "y")
    live = y_ref > 0
    assert live.any() and (f == 1 or (~live).any())
    assert_close(arg[live], arg_ref[live], 0, 0, "argmax where y > 0")
    # Where y == 0 the index is undefined but must still point into the conv grid.
    oh, ow = R.conv2d_forward(x, w, b, stride, padding).shape[1:3]
    assert arg.dtype == np.int32 and arg.min() >= 0 and arg.max() < oh * ow

    dy = rng.standard_normal(y.shape).astype(F32)
    for argmax in (arg_ref, arg):  # ours differs from the reference's only where y == 0
        for need_dx in (True, False):
            got = Fu.conv2d_relu_maxpool_backward(x, w, dy, y_ref, argmax, stride, padding,
                                                  need_dx=need_dx)
            dz = R.maxpool2d_backward(R.relu_backward(dy, y_ref), arg_ref, (x.shape[0], oh, ow, f))
            want = R.conv2d_backward(x, w, dz, stride, padding, need_dx=need_dx)
            for a, e, name in zip(got, want, ("dx", "dw", "db")):
                if e is None:
                    assert a is None
                else:
                    assert_close(a, e, RTOL, ATOL, name)


def test_overlapping_pools_add_gradients_where_windows_share_a_winner(rng):
    """pool 3 stride 1: one conv output can win several windows; its gradients add."""
    x, w, b = make(rng, (1, 9, 9, 2), (3, 3), 3)
    b[:] = 3.0  # mostly positive, so the same big pixel wins many windows
    y, arg = Fu.conv2d_relu_maxpool_forward(x, w, b, pool=3, pool_stride=1)
    assert len(np.unique(arg[..., 0])) < arg[..., 0].size
    dy = np.ones(y.shape, F32)
    got = Fu.conv2d_relu_maxpool_backward(x, w, dy, y, arg)
    dz = R.maxpool2d_backward(R.relu_backward(dy, y), arg, (1, 7, 7, 3))
    for a, e in zip(got, R.conv2d_backward(x, w, dz)):
        assert_close(a, e, RTOL, ATOL)


def test_fused_out_buffers_allocate_nothing(rng):
    x, w, b = make(rng, (2, 13, 11, 3), (3, 3), 8)
    y, arg = np.empty((2, 5, 4, 8), F32), np.empty((2, 5, 4, 8), np.int32)
    dx, dw, db = np.empty_like(x), np.empty_like(w), np.empty_like(b)
    dy = rng.standard_normal(y.shape).astype(F32)
    z, dz_dx = np.empty((2, 11, 9, 8), F32), np.empty_like(x)
    dyz = rng.standard_normal(z.shape).astype(F32)

    def step():
        r1 = Fu.conv2d_relu_maxpool_forward(x, w, b, out=(y, arg))
        r2 = Fu.conv2d_relu_maxpool_backward(x, w, dy, y, arg, out=(dx, dw, db))
        r3 = Fu.conv2d_relu_forward(x, w, b, out=z)
        r4 = Fu.conv2d_relu_backward(x, w, dyz, z, out=(dz_dx, dw, db))
        return r1, r2, r3, r4

    step()
    peaks = []
    for _ in range(3):   # the smallest of 3: other threads' objects can land in one window
        tracemalloc.start()
        try:
            r1, r2, r3, r4 = step()
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    peak = min(peaks)
    assert peak < 4096, f"{peaks} bytes allocated with out= buffers"
    assert r1[0] is y and r1[1] is arg and r3 is z
    assert r2 == (dx, dw, db) or (r2[0] is dx and r2[1] is dw and r2[2] is db)
    assert r4[0] is dz_dx and r4[1] is dw and r4[2] is db


def test_fused_bitwise_identical_across_thread_counts_and_runs(rng):
    x, w, b = make(rng, (6, 17, 15, 4), (3, 3), 16)

    def run():
        y, arg = Fu.conv2d_relu_maxpool_forward(x, w, b, pool=2)
        dy = np.linspace(-1, 1, y.size, dtype=F32).reshape(y.shape)
        grads = Fu.conv2d_relu_maxpool_backward(x, w, dy, y, arg)
        z = Fu.conv2d_relu_forward(x, w, b)
        dz = np.linspace(-1, 1, z.size, dtype=F32).reshape(z.shape)
        return (y, arg) + grads + (z,) + Fu.conv2d_relu_backward(x, w, dz, z)

    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = run()
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        many, again = run(), run()
    finally:
        numba.set_num_threads(before)
    for k, (a, m, g) in enumerate(zip(one, many, again)):
        assert a.tobytes() == m.tobytes(), f"result {k} differs between 1 and many threads"
        assert m.tobytes() == g.tobytes(), f"result {k} differs from run to run"


# Bad input to the fused ops (argmax out of range included) is the op table's:
# fastconv.kernels.opinfo.error_inputs, run on every backend by tests/test_opinfo.py.


@pytest.mark.parametrize("shape, k, f", [
    ((3, 10, 9, 3), (3, 3), 32),    # KW*C = 9: short runs read 16 wide (past the end: exact loop)
    ((2, 10, 9, 1), (5, 3), 7),     # short runs, 5 kernel rows: a block of 3 and 2 single rows
    ((2, 10, 9, 8), (3, 3), 5),     # KW*C = 24: one partial register chunk
    ((2, 10, 9, 32), (3, 3), 4),    # KW*C = 96: one full register chunk
    ((2, 10, 9, 40), (3, 3), 3),    # KW*C = 120: a full chunk and a partial one
])
def test_pooled_backward_takes_any_argmax(shape, k, f, rng):
    """argmax is only an input: winners scattered over the whole grid (no pool made
    them) must still give maxpool2d_backward + conv2d_backward, on every path."""
    x, w, _ = make(rng, shape, k, f)
    oh, ow = shape[1] - k[0] + 1, shape[2] - k[1] + 1
    pooled = (shape[0], 3, 3, f)
    argmax = rng.integers(0, oh * ow, pooled).astype(np.int32)
    argmax[0, 0, 0, :] = argmax[0, 0, 0, 0]  # one window where every channel shares a winner
    y = np.abs(rng.standard_normal(pooled)).astype(F32)
    y.reshape(-1)[::5] = 0                   # dead outputs carry no gradient
    dy = rng.standard_normal(pooled).astype(F32)
    dz = R.maxpool2d_backward(R.relu_backward(dy, y), argmax, (shape[0], oh, ow, f))
    for need_dx in (True, False):
        got = Fu.conv2d_relu_maxpool_backward(x, w, dy, y, argmax, need_dx=need_dx)
        want = R.conv2d_backward(x, w, dz, need_dx=need_dx)
        for a, e, name in zip(got, want, ("dx", "dw", "db")):
            if e is None:
                assert a is None
            else:
                assert_close(a, e, RTOL, ATOL, name)


def test_non_contiguous_operands_give_the_same_results(rng):
    x, w, b = make(rng, (2, 11, 10, 3), (3, 3), 8)
    y, arg = Fu.conv2d_relu_maxpool_forward(x, w, b)
    dy = rng.standard_normal(y.shape).astype(F32)
    want = Fu.conv2d_relu_maxpool_backward(x, w, dy, y, arg)
    f = np.asfortranarray
    got_fwd = Fu.conv2d_relu_maxpool_forward(f(x), f(w), b)
    got = Fu.conv2d_relu_maxpool_backward(f(x), f(w), f(dy), f(y), f(arg))
    for a, e in zip(got_fwd + got, (y, arg) + want):
        assert a.tobytes() == e.tobytes()
