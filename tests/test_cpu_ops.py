"""The cpu engine's pool, dense, activation, dropout, loss and optimizer kernels
against the NumPy reference (float32: rtol 1e-4, atol 1e-5).

Each kernel has a serial and a parallel build, picked by size; every case runs
in both (the `build` fixture forces one), so small test shapes still exercise
the prange code. Also: out= buffers are filled, returned and not reallocated,
bad input raises the reference's exact error, and results are bitwise the
same with 1 and 2 Numba threads.
"""
import tracemalloc

import numba
import numpy as np
import pytest

from fastconv.kernels import reference as R
from fastconv.kernels.cpu import _common
from fastconv.kernels.cpu import activations as A
from fastconv.kernels.cpu import dense as D
from fastconv.kernels.cpu import losses as L
from fastconv.kernels.cpu import optimizers as O
from fastconv.kernels.cpu import pool as P
from fastconv.testing import assert_matches_reference

import fastconv.kernels.cpu as CPU

F32 = np.float32
RTOL, ATOL = 1e-4, 1e-5


@pytest.fixture(params=["serial", "parallel"])
def build(request, monkeypatch):
    """Force the serial or the parallel build of every kernel, whatever the size."""
    monkeypatch.setattr(_common, "PARALLEL_MIN", 0 if request.param == "parallel" else 1 << 62)
    return request.param


def f32(rng, shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(F32)


def check(op, *args, rtol=RTOL, atol=ATOL, **kwargs):
    return assert_matches_reference(CPU, op, *args, rtol=rtol, atol=atol, **kwargs)


# -- pooling ---------------------------------------------------------------------------

POOLS = [
    ((1, 13, 11, 7), 2, None, "valid"),     # remainder row and column
    ((5, 12, 9, 3), 3, None, "valid"),
    ((2, 20, 20, 32), 3, None, "valid"),    # the seed's pool 3 (148 = 3 * 49 + 1), small
    ((2, 9, 9, 5), 3, 2, "valid"),          # overlapping windows: gradients add
    ((2, 7, 10, 3), 2, None, "same"),
    ((1, 5, 4, 1), (2, 3), (1, 2), "same"),
    ((3, 6, 7, 2), 1, None, "valid"),
]


@pytest.mark.parametrize("shape,pool,stride,padding", POOLS)
def test_maxpool_matches_reference(build, rng, shape, pool, stride, padding):
    x = f32(rng, shape)
    x.reshape(-1)[::5] = 0.25               # ties: the first maximum must win
    (y, arg), _ = check("maxpool2d_forward", x, pool=pool, stride=stride, padding=padding)
    dy = f32(rng, y.shape)
    check("maxpool2d_backward", dy, arg, x.shape)


def test_maxpool_all_equal_window_picks_its_first_pixel(build):
    x = np.ones((1, 4, 4, 3), F32)
    _, arg = P.maxpool2d_forward(x, 2)
    assert arg[0, :, :, 0].tolist() == [[0, 2], [8, 10]]


def test_maxpool_out_buffers(build, rng):
    x = f32(rng, (2, 9, 9, 4))
    y, arg = np.empty((2, 4, 4, 4), F32), np.empty((2, 4, 4, 4), np.int32)
    got = P.maxpool2d_forward(x, 2, out=(y, arg))
    assert got[0] is y and got[1] is arg
    ry, rarg = R.maxpool2d_forward(x, 2)
    assert np.array_equal(y, ry) and np.array_equal(arg, rarg)
    dx = np.full(x.shape, np.nan, F32)      # backward must overwrite every element
    assert P.maxpool2d_backward(y, arg, x.shape, out=dx) is dx
    np.testing.assert_allclose(dx, R.maxpool2d_backward(y, rarg, x.shape), rtol=RTOL, atol=ATOL)


# -- dense -----------------------------------------------------------------------------

DENSES = [(1, 7, 3), (5, 13, 7), (4, 100, 1), (6, 130, 64), (33, 70, 9)]


@pytest.mark.parametrize("n,d_in,d_out", DENSES)
def test_dense_matches_reference(build, rng, n, d_in, d_out):
    x, w, b = f32(rng, (n, d_in)), f32(rng, (d_in, d_out), 0.1), f32(rng, d_out)
    dy = f32(rng, (n, d_out))
    check("dense_forward", x, w, b)
    for need_dx in (True, False):
        check("dense_backward", x, w, dy, need_dx=need_dx)


def test_dense_out_buffers(build, rng):
    x, w, b = f32(rng, (3, 10)), f32(rng, (10, 4)), f32(rng, 4)
    dy = f32(rng, (3, 4))
    y = np.full((3, 4), np.nan, F32)
    assert D.dense_forward(x, w, b, out=y) is y
    np.testing.assert_allclose(y, R.dense_forward(x, w, b), rtol=RTOL, atol=ATOL)
    dx, dw, db = (np.full(a.shape, np.nan, F32) for a in (x, w, b))
    got = D.dense_backward(x, w, dy, out=(dx, dw, db))
    assert got[0] is dx and got[1] is dw and got[2] is db
    for a, e in zip(got, R.dense_backward(x, w, dy)):
        np.testing.assert_allclose(a, e, rtol=RTOL, atol=ATOL)
    got = D.dense_backward(x, w, dy, need_dx=False, out=(dx, dw, None))
    assert got[0] is None and got[1] is dw and got[2].shape == (4,)


# -- activations and dropout -----------------------------------------------------------

SHAPES = [(3, 7, 5, 6), (1, 1), (9, 64), (2, 33, 17, 32)]


@pytest.mark.parametrize("shape", SHAPES)
def test_elementwise_match_reference(build, rng, shape):
    x = f32(rng, shape, 4)
    x.reshape(-1)[::11] = 0.0               # ReLU's gradient at exactly 0 is 0
    x.reshape(-1)[:1] = -100.0              # sigmoid saturates without overflow
    dy = f32(rng, shape)
    check("relu_forward", x)
    check("relu_backward", dy, R.relu_forward(x))
    check("sigmoid_forward", x)
    check("sigmoid_backward", dy, R.sigmoid_forward(x))
    for rate in (0.0, 0.3, 0.5):
        (_, mask), _ = check("dropout_forward", x, rate, np.random.default_rng(7))
        check("dropout_backward", dy, mask)


@pytest.mark.parametrize("shape", [(1, 3), (7, 10), (64, 129)])
def test_softmax_matches_reference(build, rng, shape):
    z = f32(rng, shape, 3)
    z[0, :] += 80.0                         # a large row: the max shift keeps it finite
    check("softmax_forward", z)
    check("softmax_backward", f32(rng, shape), R.softmax_forward(z))


def test_relu_keeps_nan_like_the_reference():
    x = np.array([np.nan, -1.0, 2.0], F32)
    y = A.relu_forward(x)
    assert np.isnan(y[0]) and y[1] == 0 and y[2] == 2
    assert np.array_equal(np.isnan(R.relu_forward(x)), np.isnan(y))


def test_dropout_is_bitwise_the_reference(build, rng):
    """The mask comes from the same generator draws, so y and mask agree to the bit."""
    x = f32(rng, (4, 64))
    y, mask = A.dropout_forward(x, 0.5, np.random.default_rng(3))
    ry, rmask = R.dropout_forward(x, 0.5, np.random.default_rng(3))
    assert np.array_equal(mask, rmask) and np.array_equal(y, ry)
    y2, m2 = np.empty_like(x), np.empty_like(x)
    got = A.dropout_forward(x, 0.5, np.random.default_rng(3), out=(y2, m2))
    assert got[0] is y2 and got[1] is m2
    assert np.array_equal(y2, ry) and np.array_equal(m2, rmask)


# -- losses ----------------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 5, 32])
def test_binary_crossentropy_matches_reference(rng, n):
    z = f32(rng, (n, 1), 5)
    z[0, 0] = 40.0                          # large logits stay finite
    y = (rng.random((n, 1)) > 0.5).astype(F32)
    (loss, dz), (rloss, _) = check("binary_crossentropy", y, z)
    assert loss == pytest.approx(rloss, rel=1e-6)
    check("binary_crossentropy", y.reshape(-1), z.reshape(-1))    # (N,) logits
    check("binary_crossentropy", y.astype(bool), z)               # other label dtypes
    check("binary_crossentropy", rng.random(n), z)                # soft labels, float64


@pytest.mark.parametrize("n,k", [(1, 2), (9, 5), (32, 10)])
def test_softmax_crossentropy_matches_reference(rng, n, k):
    z = f32(rng, (n, k), 5)
    for labels in (rng.integers(0, k, n), rng.integers(0, k, n).astype(np.int32),
                   rng.integers(0, k, (n, 1)).astype(F32)):
        (loss, _), (rloss, _) = check("softmax_crossentropy", labels, z)
        assert loss == pytest.approx(rloss, rel=1e-6)


def test_loss_out_buffer(rng):
    z = f32(rng, (6, 1))
    y = (rng.random((6, 1)) > 0.5).astype(F32)
    dz = np.empty_like(z)
    loss, got = L.binary_crossentropy(y, z, out=(None, dz))
    assert got is dz and isinstance(loss, float)
    z2 = f32(rng, (6, 4))
    dz2 = np.empty_like(z2)
    assert L.softmax_crossentropy(np.arange(6) % 4, z2, out=(None, dz2))[1] is dz2


# -- optimizers ------------------------------------------------------------------------

UPDATES = [
    ("sgd_update", 0, dict(lr=0.01)),
    ("sgd_update", 1, dict(lr=0.01, momentum=0.9)),
    ("sgd_update", 1, dict(lr=0.01, momentum=0.9, nesterov=True)),
    ("rmsprop_update", 1, dict(lr=1e-3, rho=0.9, eps=1e-7)),
    ("adam_update", 2, dict(t=3, lr=1e-3)),
    ("adam_update", 2, dict(t=1, lr=0.1, beta1=0.5, beta2=0.9, eps=1e-3)),
]


@pytest.mark.parametrize("op,n_state,kwargs", UPDATES, ids=lambda a: str(a))
@pytest.mark.parametrize("shape", [(7,), (3, 3, 5, 7), (6400, 64)])
def test_updates_are_bitwise_the_reference(build, rng, op, n_state, kwargs, shape):
    p, g = f32(rng, shape), f32(rng, shape)
    state = [rng.random(shape).astype(F32) for _ in range(n_state)]
    if op == "sgd_update":
        state = state or [None]
    mine = [a.copy() if a is not None else None for a in [p, g] + state]
    ref = [a.copy() if a is not None else None for a in [p, g] + state]
    for _ in range(2):
        if op == "adam_update":
            getattr(CPU, op)(*mine[:2], *mine[2:], **kwargs)
            getattr(R, op)(*ref[:2], *ref[2:], **kwargs)
        else:
            getattr(CPU, op)(*mine, **kwargs)
            getattr(R, op)(*ref, **kwargs)
    for a, e in zip(mine, ref):
        if e is not None:
            assert np.array_equal(a, e)


def test_updates_on_non_contiguous_views(rng):
    p = f32(rng, (6, 8))
    g, ms = f32(rng, (6, 8)), rng.random((6, 8)).astype(F32)
    rp, rms = p.copy(), ms.copy()
    O.rmsprop_update(p[:, ::2], g[:, ::2], ms[:, ::2], 1e-2)
    R.rmsprop_update(rp[:, ::2], g[:, ::2], rms[:, ::2], 1e-2)
    assert np.array_equal(p, rp) and np.array_equal(ms, rms)


# -- layouts, allocation, errors, determinism ------------------------------------------

def test_non_contiguous_inputs_and_out(rng):
    x = f32(rng, (2, 9, 8, 6))[:, :, ::2, :]        # a strided view
    np.testing.assert_allclose(A.relu_forward(x), R.relu_forward(x))
    out = np.empty((2, 9, 4, 6), F32)[..., ::2]      # a strided out buffer is filled too
    assert A.relu_forward(x[..., :3], out=out) is out
    np.testing.assert_allclose(out, R.relu_forward(x[..., :3]))
    y, arg = P.maxpool2d_forward(x, 2)
    ry, rarg = R.maxpool2d_forward(x, 2)
    assert np.array_equal(y, ry) and np.array_equal(arg, rarg)
    xt = f32(rng, (12, 3)).T                          # (3, 12), F-ordered
    w, b = f32(rng, (12, 5)), f32(rng, 5)
    np.testing.assert_allclose(D.dense_forward(xt, w, b), R.dense_forward(xt, w, b),
                               rtol=RTOL, atol=ATOL)


def _bytes_allocated(fn):
    fn()                                              # compiled and warm
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_out_buffers_allocate_nothing(rng):
    """With out= buffers the ops allocate no array (the smallest buffer here is 32 KiB;
    a few hundred bytes of Python objects per call are allowed)."""
    x = f32(rng, (4, 32, 32, 16))                     # 256 KiB
    y, dx = np.empty_like(x), np.empty_like(x)
    py, parg = np.empty((4, 16, 16, 16), F32), np.empty((4, 16, 16, 16), np.int32)
    xd, w, b = f32(rng, (32, 640)), f32(rng, (640, 64)), f32(rng, 64)
    yd, dyd = np.empty((32, 64), F32), f32(rng, (32, 64))
    dxd, dw, db = np.empty_like(xd), np.empty_like(w), np.empty_like(b)
    z, lab, dz = f32(rng, (32, 1)), (rng.random((32, 1)) > 0.5).astype(F32), np.empty((32, 1), F32)
    ms = rng.random(w.shape).astype(F32)
    calls = {
        "relu_forward": lambda: A.relu_forward(x, out=y),
        "relu_backward": lambda: A.relu_backward(x, y, out=dx),
        "sigmoid_forward": lambda: A.sigmoid_forward(x, out=y),
        "dropout_backward": lambda: A.dropout_backward(x, y, out=dx),
        "maxpool2d_forward": lambda: P.maxpool2d_forward(x, 2, out=(py, parg)),
        "maxpool2d_backward": lambda: P.maxpool2d_backward(py, parg, x.shape, out=dx),
        "dense_forward": lambda: D.dense_forward(xd, w, b, out=yd),
        "dense_backward": lambda: D.dense_backward(xd, w, dyd, out=(dxd, dw, db)),
        "binary_crossentropy": lambda: L.binary_crossentropy(lab, z, out=(None, dz)),
        "rmsprop_update": lambda: O.rmsprop_update(w, dw, ms, 1e-6),
    }
    for name, fn in calls.items():
        assert _bytes_allocated(fn) < 2048, name


def _bad_calls(rng):
    x4 = f32(rng, (2, 6, 6, 3))
    x2 = f32(rng, (4, 5))
    w = f32(rng, (5, 3))
    b = f32(rng, 3)
    dy = f32(rng, (4, 3))
    y, arg = R.maxpool2d_forward(x4, 2)
    p = f32(rng, (3, 4))
    return [
        ("relu_backward", (x4, x4[:1]), {}),
        ("relu_forward", (x4,), dict(out=np.empty((2, 6, 6, 4), F32))),
        ("relu_forward", (x4,), dict(out=np.empty(x4.shape, np.float64))),
        ("sigmoid_backward", (x2, x2.T.copy()), {}),
        ("softmax_forward", (x4,), {}),
        ("softmax_backward", (x2, x2[:2]), {}),
        ("dropout_forward", (x2, 0.5, 0), {}),
        ("dropout_backward", (x2, x2[:, :2]), {}),
        ("maxpool2d_forward", (x4, 7), {}),
        ("maxpool2d_forward", (x2, 2), {}),
        ("maxpool2d_forward", (x4, 2), dict(out=(y, arg.astype(np.int64)))),
        ("maxpool2d_forward", (x4, 2), dict(out=y)),
        ("maxpool2d_backward", (y, arg, (2, 6, 6)), {}),
        ("maxpool2d_backward", (y, arg, (3, 6, 6, 3)), {}),
        ("maxpool2d_backward", (y, arg + 100, x4.shape), {}),
        ("maxpool2d_backward", (y, arg - 100, x4.shape), {}),
        ("dense_forward", (x2, w.T.copy(), b), {}),
        ("dense_forward", (x2, w, f32(rng, 4)), {}),
        ("dense_forward", (x2, w.astype(np.float64), b), {}),
        ("dense_forward", (x4, w, b), {}),
        ("dense_backward", (x2, w, dy[:3]), {}),
        ("dense_backward", (x2, w, dy.astype(np.float64)), {}),
        ("dense_backward", (x2, w, dy), dict(out=(None, None))),
        ("dense_backward", (x2, w, dy), dict(out=(None, np.empty((3, 5), F32), None))),
        ("softmax_crossentropy", (np.array([0, 1, 5, 2]), x2), {}),
        ("softmax_crossentropy", (np.array([0, 1, 2]), x2), {}),
        ("sgd_update", (p, p[:2].copy(), None), dict(lr=0.1)),
        ("rmsprop_update", (p, p.copy(), p.astype(np.float64)), dict(lr=0.1)),
        ("adam_update", (p, p.copy(), p.copy(), p[:1].copy()), dict(t=1, lr=0.1)),
    ]


def test_bad_input_raises_the_reference_errors(rng):
    for op, args, kwargs in _bad_calls(rng):
        with pytest.raises((TypeError, ValueError)) as want:
            getattr(R, op)(*args, **kwargs)
        with pytest.raises(want.type) as got:
            getattr(CPU, op)(*args, **kwargs)
        assert str(got.value) == str(want.value), op


@pytest.fixture
def threads():
    before = numba.get_num_threads()
    yield
    numba.set_num_threads(before)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 Numba threads")
def test_bitwise_identical_with_one_and_two_threads(build, rng, threads):
    x = f32(rng, (3, 17, 16, 8))
    xd, w, dyd = f32(rng, (9, 300)), f32(rng, (300, 20)), f32(rng, (9, 20))
    z = f32(rng, (13, 6))

    def run():
        y, arg = P.maxpool2d_forward(x, 3, 2)
        return [y, arg, P.maxpool2d_backward(y, arg, x.shape),
                D.dense_forward(xd, w, dyd[0]), *D.dense_backward(xd, w, dyd),
                A.softmax_forward(z), A.softmax_backward(z, A.softmax_forward(z)),
                A.sigmoid_forward(x), L.softmax_crossentropy(np.arange(13) % 6, z)[1]]

    numba.set_num_threads(1)
    one = run()
    numba.set_num_threads(2)
    two = run()
    for a, b in zip(one, two):
        assert np.array_equal(a, b)


def test_float64_is_refused_even_where_the_reference_allows_it(rng):
    """Inside float64_allowed() the shared checks pass float64; these kernels are
    float32 only and say so (as the conv ops do), rather than computing in float32."""
    from fastconv.kernels import float64_allowed
    d = lambda *shape: rng.standard_normal(shape)                       # noqa: E731
    x4, x2, p = d(2, 6, 6, 3), d(4, 5), d(3, 4)
    y, arg = R.maxpool2d_forward(x4.astype(F32), 2)
    calls = [
        ("relu_forward", (x4,)), ("relu_backward", (x4.astype(F32), x4)),
        ("sigmoid_forward", (x4,)), ("sigmoid_backward", (x4, x4)),
        ("softmax_forward", (x2,)), ("softmax_backward", (x2, x2)),
        ("dropout_forward", (x2, 0.5, np.random.default_rng(0))),
        ("dropout_backward", (x2.astype(F32), x2)),
        ("maxpool2d_forward", (x4,)), ("maxpool2d_backward", (y.astype(np.float64), arg, x4.shape)),
        ("dense_forward", (x2, d(5, 3), d(3))), ("dense_backward", (x2, d(5, 3), d(4, 3))),
        ("binary_crossentropy", (np.ones(4), d(4, 1))),
        ("softmax_crossentropy", (np.arange(4) % 5, x2)),
        ("sgd_update", (p, p.copy(), None)), ("rmsprop_update", (p, p.copy(), np.abs(p))),
        ("adam_update", (p, p.copy(), p.copy(), np.abs(p), 1)),
    ]
    with float64_allowed():
        for op, args in calls:
            kwargs = {"lr": 0.1} if op.endswith("_update") else {}
            getattr(R, op)(*args, **kwargs)                                   # allowed there
            with pytest.raises(TypeError, match=f"{op}: .* must be float32, got float64"):
                getattr(CPU, op)(*args, **kwargs)
