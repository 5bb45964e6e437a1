"""Global pooling ops by hand: the Keras meaning (mean / max over H and W, NHWC ->
(N, C)), the first-maximum tie rule, and the cpu engine bitwise equal at 1 and 2
threads. The op table (tests/test_opinfo.py) checks every backend against the
reference on random inputs, error messages and out= buffers. The by-hand cases run on
every backend that loads here (cuda on a GPU: bench/gpu_check.sh runs them there; the
simulator runs its kernels in tests/test_cuda_sim.py)."""
import numpy as np
import pytest

from fastconv import kernels

from .backends import available_backends

BACKENDS, _ = available_backends()


def _host(K, value):
    """Results as host arrays (cuda returns device arrays)."""
    return K.to_host(value) if hasattr(K, "to_host") else value


@pytest.mark.parametrize("backend", BACKENDS)
def test_global_avgpool2d_forward_and_backward_by_hand(backend):
    K = kernels.get(backend)
    x = np.arange(2 * 2 * 3 * 2, dtype=np.float32).reshape(2, 2, 3, 2)
    y = _host(K, K.global_avgpool2d_forward(x))
    np.testing.assert_array_equal(y, x.mean(axis=(1, 2)))
    dx = _host(K, K.global_avgpool2d_backward(np.array([[6.0, 12.0], [0.0, -6.0]], np.float32),
                                              x.shape))
    assert dx.shape == x.shape
    np.testing.assert_array_equal(dx[0, :, :, 0], np.ones((2, 3)))
    np.testing.assert_array_equal(dx[1, :, :, 1], -np.ones((2, 3)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_global_maxpool2d_first_maximum_wins(backend):
    K = kernels.get(backend)
    x = np.zeros((1, 2, 2, 2), np.float32)
    x[0, 0, 1, 0] = x[0, 1, 0, 0] = 3.0       # channel 0: a tie at pixels 1 and 2
    x[0, :, :, 1] = -1.0                        # channel 1: all equal
    y, arg = _host(K, K.global_maxpool2d_forward(x))
    np.testing.assert_array_equal(y, [[3.0, -1.0]])
    np.testing.assert_array_equal(arg, [[1, 0]])
    assert arg.dtype == np.int32
    dx = _host(K, K.global_maxpool2d_backward(np.array([[5.0, 7.0]], np.float32), arg, x.shape))
    want = np.zeros_like(x)
    want[0, 0, 1, 0], want[0, 0, 0, 1] = 5.0, 7.0
    np.testing.assert_array_equal(dx, want)


def test_cpu_global_pooling_is_bitwise_equal_at_1_and_2_threads():
    import numba
    from fastconv.kernels.cpu import _common
    K = kernels.get("cpu")
    x = np.random.default_rng(0).standard_normal((4, 33, 35, 9)).astype(np.float32)
    assert x.size >= _common.PARALLEL_MIN        # the parallel build runs
    dy = np.random.default_rng(1).standard_normal((4, 9)).astype(np.float32)
    runs = []
    before = numba.get_num_threads()
    try:
        for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(threads)
            y, arg = K.global_maxpool2d_forward(x)
            runs.append((K.global_avgpool2d_forward(x), K.global_avgpool2d_backward(dy, x.shape),
                         y, arg, K.global_maxpool2d_backward(dy, arg, x.shape)))
    finally:
        numba.set_num_threads(before)
    for a, b in zip(*runs):
        assert np.array_equal(a, b)
