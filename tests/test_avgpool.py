"""Average pooling (Keras AveragePooling2D) by hand and against Keras 3 itself. The op
table (tests/test_opinfo.py) checks every backend's avgpool2d_forward and
avgpool2d_backward against the reference on random inputs (odd sizes, batch 1, 33
channels, strides 1, 2 and (2, 3), 'valid' and 'same'), the error messages and out=
buffers; tests/test_reference_gradients.py the reference against finite differences;
tests/test_cuda_sim.py the cuda kernels under the simulator."""
from pathlib import Path

import numpy as np
import pytest

from fastconv import kernels
from fastconv.kernels import reference as R

from .backends import available_backends

BACKENDS, _ = available_backends()
KERAS = Path(__file__).resolve().parent / "keras_vectors" / "avgpool.npz"
N_KERAS = 7


def _host(K, value):
    return K.to_host(value) if hasattr(K, "to_host") else value


def _get(backend):
    K = kernels.get(backend)
    if not hasattr(K, "avgpool2d_forward"):
        pytest.skip(f"{backend} has no avgpool ops yet")
    return K


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_excludes_the_padding_from_the_count(backend):
    """x all ones: every 'same' window averages to exactly 1 (a count that included the
    padding would give 4/9 in the corners). 3x3 stride 1 on 4x5: the corner window holds
    x[0:2, 0:2], whose mean is (0 + 1 + 5 + 6) / 4."""
    K = _get(backend)
    ones = np.ones((1, 4, 5, 2), np.float32)
    y = _host(K, K.avgpool2d_forward(ones, 3, 1, "same"))
    assert y.shape == (1, 4, 5, 2)
    np.testing.assert_array_equal(y, 1.0)
    x = np.arange(20, dtype=np.float32).reshape(1, 4, 5, 1)
    y = _host(K, K.avgpool2d_forward(x, 3, 1, "same"))
    assert y[0, 0, 0, 0] == pytest.approx(3.0)                 # (0 + 1 + 5 + 6) / 4
    assert y[0, 1, 1, 0] == pytest.approx(6.0)                 # a full window: its centre
    assert y[0, 3, 4, 0] == pytest.approx((13 + 14 + 18 + 19) / 4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_backward_spreads_each_window_over_its_real_pixels(backend):
    """dy = 1 at the corner output of 3x3 'same' stride 1 on 3x3: its window has 4 real
    pixels, each gets 1/4; a valid 2x2 stride 2 on 5x5 leaves row and column 4 at zero."""
    K = _get(backend)
    dy = np.zeros((1, 3, 3, 1), np.float32)
    dy[0, 0, 0, 0] = 1.0
    dx = _host(K, K.avgpool2d_backward(dy, (1, 3, 3, 1), 3, 1, "same"))
    want = np.zeros((1, 3, 3, 1), np.float32)
    want[0, :2, :2, 0] = 0.25
    np.testing.assert_allclose(dx, want, rtol=1e-6)
    dx = _host(K, K.avgpool2d_backward(np.ones((1, 2, 2, 3), np.float32), (1, 5, 5, 3), 2))
    np.testing.assert_allclose(dx[0, :4, :4], 0.25, rtol=1e-6)
    assert not dx[0, 4].any() and not dx[0, :, 4].any()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", range(N_KERAS))
def test_avgpool_matches_keras(backend, case):
    """Keras 3's AveragePooling2D (JAX backend; the gradient by JAX's vjp of the layer;
    tests/keras_vectors/make_avgpool.py): 'valid' and 'same', strides 1, 2 and (2, 3),
    odd sizes. rtol 1e-5, atol 1e-6."""
    K = _get(backend)
    d = np.load(KERAS)
    x, dy = d[f"x{case}"], d[f"dy{case}"]
    pool = tuple(int(s) for s in d[f"pool{case}"])
    stride = tuple(int(s) for s in d[f"stride{case}"])
    padding = str(d[f"padding{case}"])
    y = _host(K, K.avgpool2d_forward(x, pool, stride, padding))
    np.testing.assert_allclose(y, d[f"y{case}"], rtol=1e-5, atol=1e-6)
    dx = _host(K, K.avgpool2d_backward(dy, x.shape, pool, stride, padding))
    np.testing.assert_allclose(dx, d[f"dx{case}"], rtol=1e-5, atol=1e-6)


def test_the_keras_vectors_hold_every_case():
    d = np.load(KERAS)
    assert {str(d[f"padding{k}"]) for k in range(N_KERAS)} == {"valid", "same"}
    assert f"x{N_KERAS}" not in d


def test_cpu_backward_is_the_same_at_any_thread_count():
    """The gather backward writes each dx element from one thread: bitwise the same
    with 1 and 2 threads, at a size that takes the parallel build."""
    import numba
    from fastconv.kernels import cpu
    rng = np.random.default_rng(3)
    dy = rng.standard_normal((4, 40, 40, 33)).astype(np.float32)
    x_shape = (4, 80, 79, 33)
    before = numba.get_num_threads()
    runs = []
    try:
        for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(threads)
            runs.append(cpu.avgpool2d_backward(dy, x_shape, 3, 2, "same"))
    finally:
        numba.set_num_threads(before)
    assert np.array_equal(runs[0], runs[1])
    np.testing.assert_allclose(runs[0], R.avgpool2d_backward(dy, x_shape, 3, 2, "same"),
                               rtol=1e-5, atol=1e-6)
