"""The 1x1 conv GEMM kernels (fastconv/kernels/cpu/pointwise.py) against the NumPy
reference: through the public conv2d ops where conv2d dispatches to them, and called
directly at shapes under the dispatch thresholds (every ragged edge: rows % PX,
C % PX, F % FC). Small shapes only; tolerances as tests/test_cpu_conv.py."""
import tracemalloc

import numba
import numpy as np
import pytest

from fastconv.kernels import reference as R
from fastconv.testing import assert_matches_reference

from .backends import get_or_skip

F32 = np.float32
RTOL, ATOL = 1e-4, 1e-5

CPU = get_or_skip("cpu")

from fastconv.kernels.cpu import conv2d, pointwise  # noqa: E402  (after the skip)

# (x shape, C_out, stride, padding): batch 1 and 3, odd sizes, channels that are not
# multiples of anything (F 37, 70: the forward's slid column block; C 67, 97: dw's slid
# channel tile), strides 1, 2 and pairs; 'same' and 'valid' (a 1x1 never pads).
CASES = [
    ((1, 7, 5, 67), 37, 1, "valid"),
    ((3, 5, 6, 97), 70, 2, "same"),
    ((1, 9, 4, 67), 33, (1, 2), "same"),
    ((3, 6, 7, 97), 32, (2, 1), "valid"),
    ((1, 3, 3, 70), 64, 1, "same"),            # 9 rows: one slid row tile
    ((2, 5, 5, 33), 41, 2, "valid"),
]
IDS = [f"x{s}-f{f}-s{st}-{p}" for s, f, st, p in CASES]


def make(rng, shape, f, stride, padding):
    x = rng.standard_normal(shape).astype(F32)
    w = (rng.standard_normal((1, 1, shape[3], f)) * 0.3).astype(F32)
    b = rng.standard_normal(f).astype(F32)
    y = R.conv2d_forward(x, w, b, stride, padding)
    dy = rng.standard_normal(y.shape).astype(F32)
    return x, w, b, dy


def geometry(x, w, stride, padding):
    return conv2d.Geometry("t", x, w, stride, padding)


def test_cases_reach_every_pointwise_kernel():
    pays = set()
    for shape, f, stride, padding in CASES:
        g = geometry(np.empty(shape, F32), np.empty((1, 1, shape[3], f), F32), stride,
                     padding)
        p = g.n * g.oh * g.ow
        assert g.pointwise and g.pt == g.pl == 0 and g.direct
        pays |= {name for name, on in (("y", pointwise.forward_pays(p, g.c, g.f)),
                                       ("dw", pointwise.grad_w_pays(p, g.c, g.f)),
                                       ("dx", pointwise.grad_x_pays(p, g.c, g.f))) if on}
    assert pays == {"y", "dw", "dx"}


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_forward_matches_reference(case, rng):
    shape, f, stride, padding = case
    x, w, b, _ = make(rng, *case)
    assert_matches_reference(CPU, "conv2d_forward", x, w, b, stride=stride, padding=padding,
                             rtol=RTOL, atol=ATOL)
    assert_matches_reference(CPU, "conv2d_relu_forward", x, w, b, stride=stride,
                             padding=padding, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("need_dx", [True, False])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_backward_matches_reference(case, need_dx, rng):
    shape, f, stride, padding = case
    x, w, _, dy = make(rng, *case)
    got, _ = assert_matches_reference(CPU, "conv2d_backward", x, w, dy, stride=stride,
                                      padding=padding, need_dx=need_dx, rtol=RTOL, atol=ATOL)
    assert (got[0] is None) == (not need_dx)
    if need_dx and stride != 1:       # the pixels no 1x1 window reads get exactly 0
        s = (stride, stride) if isinstance(stride, int) else stride
        mask = np.ones(x.shape[1:3], bool)
        mask[::s[0], ::s[1]] = False
        assert np.all(got[0][:, mask] == 0)


# Under the dispatch thresholds, the kernels called directly: C from PX (one channel
# tile) up, F from FC, rows from PX; ragged everywhere.
DIRECT = [((1, 2, 3, 6), 32, 1), ((2, 3, 5, 7), 33, 1), ((1, 5, 5, 13), 45, 2),
          ((1, 4, 4, 40), 96, (2, 1))]


@pytest.mark.parametrize("shape, f, stride", DIRECT, ids=[str(d) for d in DIRECT])
@pytest.mark.parametrize("relu", [False, True])
def test_kernels_called_directly_match_the_reference(shape, f, stride, relu, rng):
    x, w, b, dy = make(rng, shape, f, stride, "valid")
    g = geometry(x, w, stride, "valid")
    p = g.n * g.oh * g.ow
    assert pointwise.rows_ok(p, g.f) and pointwise.grad_w_ok(p, g.c, g.f)
    y = np.full(g.y_shape, np.nan, F32)
    pointwise.forward(g, x, w, b, relu, y)
    want = R.conv2d_forward(x, w, b, stride)
    np.testing.assert_allclose(y, np.maximum(want, 0) if relu else want, RTOL, ATOL)
    dw, db = np.full(w.shape, np.nan, F32), np.full(b.shape, np.nan, F32)
    pointwise.grad_w(g, x, dy, dw, db)
    rdx, rdw, rdb = R.conv2d_backward(x, w, dy, stride)
    np.testing.assert_allclose(dw, rdw, RTOL, ATOL)
    np.testing.assert_allclose(db, rdb, RTOL, ATOL)
    if pointwise.rows_ok(p, g.c):
        dx = np.full(x.shape, np.nan, F32)
        pointwise.grad_x(g, w, dy, dx)
        np.testing.assert_allclose(dx, rdx, RTOL, ATOL)


def _run_all(x, w, b, dy, stride):
    y = CPU.conv2d_forward(x, w, b, stride)
    return (y,) + CPU.conv2d_backward(x, w, dy, stride)


@pytest.mark.parametrize("stride", [1, 2])
def test_bitwise_identical_across_thread_counts_and_runs(stride, rng):
    # P = 3*11*11 rows (stride 1): more than one GW_ROWS block; C 97, F 70: 3 tasks of dw
    x, w, b, dy = make(rng, (3, 11, 11, 97), 70, stride, "valid")
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = _run_all(x, w, b, dy, stride)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        many = _run_all(x, w, b, dy, stride)
        again = _run_all(x, w, b, dy, stride)
    finally:
        numba.set_num_threads(before)
    for a, m, g, name in zip(one, many, again, ("y", "dx", "dw", "db")):
        assert a.tobytes() == m.tobytes(), f"{name} differs between 1 and many threads"
        assert m.tobytes() == g.tobytes(), f"{name} differs from run to run"


def test_out_buffers_are_written_without_allocating(rng):
    x, w, b, dy = make(rng, (2, 6, 5, 97), 37, 2, "same")
    y = np.empty(dy.shape, F32)
    dx, dw, db = np.empty_like(x), np.empty_like(w), np.empty_like(b)
    CPU.conv2d_forward(x, w, b, 2, "same", out=y)            # warm: compile, workspaces
    CPU.conv2d_backward(x, w, dy, 2, "same", out=(dx, dw, db))
    tracemalloc.start()
    try:
        assert CPU.conv2d_forward(x, w, b, 2, "same", out=y) is y
        got = CPU.conv2d_backward(x, w, dy, 2, "same", out=(dx, dw, db))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got[0] is dx and got[1] is dw and got[2] is db
    assert peak < 4096, f"{peak} bytes allocated with out= buffers"
    for a, e in zip((dx, dw, db), R.conv2d_backward(x, w, dy, 2, "same")):
        np.testing.assert_allclose(a, e, RTOL, ATOL)


def test_xception_step_workspaces_fit_the_per_thread_cache():
    """A training step and a prediction of the keras.io xception (every 1x1 and
    depthwise path of it) keep their workspaces cached: fewer than the per-thread cap,
    so no step evicts and re-allocates another's."""
    import fastconv
    from fastconv.kernels.cpu import _tiles
    # this thread's cache holds whatever earlier tests left (the suite runs in one
    # process and fills it to the cap): count only this model's workspaces
    _tiles._thread_workspaces().clear()
    model = fastconv.models.keras_io_xception((64, 64, 3), width=0.25, seed=0)
    rng = np.random.default_rng(0)
    x = (255 * rng.random((2, 64, 64, 3))).astype(F32)
    y = np.array([0, 1], F32)
    model.train_on_batch(x, y)
    model.predict_on_batch(x)
    names = {k[0] for k in _tiles._thread_workspaces()}
    assert {"pointwise_pack", "pointwise_dw_x"} <= names      # the GEMMs ran
    assert len(_tiles._thread_workspaces()) < _tiles._MAX_WORKSPACES
