"""The Numba CPU conv2d kernels against the NumPy reference.

Through kernels.get("cpu"), as the model layer calls them; small shapes only, so
the suite stays fast on 2 cores.
"""
import tracemalloc

import numba
import numpy as np
import pytest

from fastconv.kernels import float64_allowed
from fastconv.kernels import reference as R
from fastconv.testing import assert_matches_reference

from .backends import get_or_skip

F32 = np.float32
RTOL, ATOL = 1e-4, 1e-5

CPU = get_or_skip("cpu")

# (x shape, kernel (KH, KW), C_out, stride, padding): batch 1 and 5, odd sizes,
# C_in 1/3/5, C_out 1/7/32, strides 1, 2 and a pair, 1x1/3x3/5x3 kernels.
CASES = [
    ((1, 13, 11, 1), (3, 3), 7, 1, "valid"),
    ((5, 13, 11, 3), (3, 3), 32, 1, "valid"),
    ((5, 13, 11, 5), (3, 3), 1, 2, "valid"),
    ((1, 13, 11, 3), (5, 3), 7, 1, "same"),
    ((5, 13, 11, 5), (5, 3), 32, 2, "same"),
    ((1, 13, 11, 1), (1, 1), 32, 1, "valid"),
    ((5, 13, 11, 3), (1, 1), 7, 2, "same"),
    ((1, 13, 11, 5), (3, 3), 7, (2, 1), "same"),
    ((5, 12, 11, 3), (5, 3), 7, (1, 2), "valid"),
    ((1, 5, 6, 3), (5, 3), 1, 3, "same"),      # stride larger than some output counts
    ((1, 13, 11, 3), (3, 3), 33, 1, "valid"),  # C_out not a multiple of 4 or 8
    ((2, 12, 17, 4), (3, 3), 64, 2, "same"),   # the 3x3 row kernel, strided, 2 blocks
    ((1, 7, 6, 2), (3, 3), 32, 1, "valid"),    # 3x3, F % 32 == 0, rows under 6 pixels
    ((2, 7, 10, 17), (3, 3), 32, 1, "valid"),  # the 3x3 row kernel, KW*C = 51 > SHORT_K
]
IDS = [f"x{s}-k{k}-f{f}-s{st}-{p}" for s, k, f, st, p in CASES]


def make(rng, shape, k, f, stride, padding):
    x = rng.standard_normal(shape).astype(F32)
    w = (rng.standard_normal(k + (shape[3], f)) * 0.3).astype(F32)
    b = rng.standard_normal(f).astype(F32)
    y = R.conv2d_forward(x, w, b, stride, padding)
    dy = rng.standard_normal(y.shape).astype(F32)
    return x, w, b, dy


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_forward_matches_reference(case, rng):
    shape, k, f, stride, padding = case
    x, w, b, _ = make(rng, *case)
    assert_matches_reference(CPU, "conv2d_forward", x, w, b, stride=stride, padding=padding,
                             rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("need_dx", [True, False])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_backward_matches_reference(case, need_dx, rng):
    shape, k, f, stride, padding = case
    x, w, _, dy = make(rng, *case)
    got, _ = assert_matches_reference(CPU, "conv2d_backward", x, w, dy, stride=stride,
                                      padding=padding, need_dx=need_dx, rtol=RTOL, atol=ATOL)
    assert (got[0] is None) == (not need_dx)


def test_backward_dx_of_rows_no_window_reads_is_zero(rng):
    """valid, stride 2, 8 rows, kernel 3: the last input row is never read, its dx is 0."""
    x, w, _, dy = make(rng, (2, 8, 8, 3), (3, 3), 4, 2, "valid")
    dx, _, _ = CPU.conv2d_backward(x, w, dy, 2, "valid")
    assert np.all(dx[:, 7] == 0) and np.all(dx[:, :, 7] == 0)
    assert np.any(dx[:, 6] != 0)


def test_out_buffers_are_written_and_returned_without_allocating(rng):
    x, w, b, dy = make(rng, (2, 13, 11, 3), (3, 3), 8, 1, "same")
    y = np.empty(dy.shape, F32)
    dx, dw, db = np.empty_like(x), np.empty_like(w), np.empty_like(b)
    CPU.conv2d_forward(x, w, b, padding="same", out=y)        # warm: compile, workspaces
    CPU.conv2d_backward(x, w, dy, padding="same", out=(dx, dw, db))
    y[...] = np.nan
    dx[...] = np.nan
    tracemalloc.start()
    try:
        assert CPU.conv2d_forward(x, w, b, padding="same", out=y) is y
        got = CPU.conv2d_backward(x, w, dy, padding="same", out=(dx, dw, db))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got[0] is dx and got[1] is dw and got[2] is db
    assert peak < 4096, f"{peak} bytes allocated with out= buffers"
    ref = R.conv2d_backward(x, w, dy, padding="same")
    np.testing.assert_allclose(y, R.conv2d_forward(x, w, b, padding="same"), RTOL, ATOL)
    for a, e in zip((dx, dw, db), ref):
        np.testing.assert_allclose(a, e, RTOL, ATOL)


def test_out_tuple_with_none_entries_and_skipped_dx(rng):
    x, w, _, dy = make(rng, (1, 7, 6, 2), (3, 3), 3, 1, "valid")
    dw = np.empty_like(w)
    dx, dw2, db = CPU.conv2d_backward(x, w, dy, need_dx=False, out=(np.empty_like(x), dw, None))
    assert dx is None and dw2 is dw and isinstance(db, np.ndarray)
    np.testing.assert_allclose(dw, R.conv2d_backward(x, w, dy)[1], RTOL, ATOL)


def test_non_contiguous_inputs_and_out(rng):
    x, w, b, _ = make(rng, (2, 9, 8, 3), (3, 3), 4, 1, "valid")
    xs = np.asfortranarray(x)
    y = np.empty((2, 7, 6, 8), F32)[..., ::2]                 # a strided out view
    CPU.conv2d_forward(xs, w, b, out=y)
    np.testing.assert_allclose(y, R.conv2d_forward(x, w, b), RTOL, ATOL)


def _run_all(x, w, b, dy, stride, padding):
    y = CPU.conv2d_forward(x, w, b, stride, padding)
    return (y,) + CPU.conv2d_backward(x, w, dy, stride, padding)


@pytest.mark.parametrize("stride, padding", [(1, "valid"), (2, "same")])
def test_bitwise_identical_across_thread_counts_and_runs(stride, padding, rng):
    x, w, b, dy = make(rng, (5, 21, 19, 5), (3, 3), 16, stride, padding)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = _run_all(x, w, b, dy, stride, padding)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        many = _run_all(x, w, b, dy, stride, padding)
        again = _run_all(x, w, b, dy, stride, padding)
    finally:
        numba.set_num_threads(before)
    for a, m, g, name in zip(one, many, again, ("y", "dx", "dw", "db")):
        assert a.tobytes() == m.tobytes(), f"{name} differs between 1 and many threads"
        assert m.tobytes() == g.tobytes(), f"{name} differs from run to run"


def z(*shape, dtype=F32):
    return np.zeros(shape, dtype)


BAD = [
    ("conv2d_forward", (z(1, 5, 5, 3), z(3, 3, 3, 2, dtype=np.float64), z(2)), {}),
    ("conv2d_forward", (z(1, 5, 5, 3), z(3, 3, 3, 2), z(2, dtype=np.int32)), {}),
    ("conv2d_forward", (z(1, 5, 5, 3), z(3, 3, 3, 2), z(2)), {"stride": (1, 2, 3)}),
    ("conv2d_forward", (z(0, 5, 5, 3), z(3, 3, 3, 2), z(2)), {}),
    ("conv2d_forward", (z(1, 5, 5, 3), z(3, 3, 3, 2), z(2)), {"out": z(1, 3, 3, 3)}),
    ("conv2d_forward", (z(1, 5, 5, 3), z(3, 3, 3, 2), z(2)), {"out": [0.0]}),
    ("conv2d_backward", (z(1, 5, 5, 3), z(3, 3, 3, 2), z(1, 3, 3, 2, dtype=np.float64)), {}),
    ("conv2d_backward", (z(1, 5, 5, 3), z(3, 3, 3, 2), z(1, 3, 3, 2)),
     {"out": (None, z(3, 3, 3, 3), None)}),
]


@pytest.mark.parametrize("op, args, kwargs", BAD, ids=range(len(BAD)))
def test_bad_input_raises_as_the_reference_does(op, args, kwargs):
    with pytest.raises(Exception) as want:
        getattr(R, op)(*args, **kwargs)
    with pytest.raises(want.type) as got:
        getattr(CPU, op)(*args, **kwargs)
    assert str(got.value) == str(want.value)


def test_float64_is_refused_even_where_the_reference_allows_it():
    with float64_allowed():
        x = z(1, 5, 5, 3, dtype=np.float64)
        R.conv2d_forward(x, z(3, 3, 3, 2, dtype=np.float64), z(2, dtype=np.float64))
        with pytest.raises(TypeError, match="conv2d_forward: x must be float32, got float64"):
            CPU.conv2d_forward(x, z(3, 3, 3, 2, dtype=np.float64), z(2, dtype=np.float64))


def test_cases_run_every_forward_row_kernel():
    """The 3x3 row kernels (Geometry.tiled; with 512-bit vectors its short-row variant
    where Geometry.tap_offsets is not empty) and the general one are all checked above."""
    from fastconv.kernels.cpu.conv2d import PX, Geometry
    geoms = [Geometry("t", np.empty(s, F32), np.empty(k + (s[3], f), F32), st, p)
             for s, k, f, st, p in CASES]
    assert {g.tiled for g in geoms} == {True, False}
    short = {g.tap_offsets().size > 0 for g in geoms if g.tiled}
    assert short == ({True, False} if PX == 6 else {False})
