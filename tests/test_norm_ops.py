"""Rescaling and batch normalization ops by hand: Keras's formulas on numbers worked out
here, and the cpu engine bitwise equal at 1 and 2 threads. The op table
(tests/test_opinfo.py) checks every backend against the reference on random inputs
(rtol 1e-4, atol 1e-5), the error messages and out= buffers; the reference's gradients
are checked against finite differences in tests/test_reference_gradients.py."""
import numpy as np
import pytest

from fastconv import kernels

BACKENDS = ["reference", "cpu"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_rescale_forward_and_backward_by_hand(backend):
    K = kernels.get(backend)
    x = np.array([[0.0, 255.0], [51.0, 127.5]], np.float32)
    np.testing.assert_allclose(K.rescale_forward(x, 1.0 / 127.5, offset=-1.0),
                               [[-1.0, 1.0], [-0.6, 0.0]], atol=1e-6)
    np.testing.assert_array_equal(K.rescale_backward(x, 2.0), 2 * x)


@pytest.mark.parametrize("backend", BACKENDS)
def test_batchnorm_train_forward_uses_the_biased_batch_variance(backend):
    K = kernels.get(backend)
    # channel 0: 1, 3 (mean 2, var 1); channel 1: 10, 10, (mean 10, var 0)
    x = np.array([[1.0, 10.0], [3.0, 10.0]], np.float32)
    gamma = np.array([2.0, 1.0], np.float32)
    beta = np.array([0.5, -1.0], np.float32)
    y, mean, var = K.batchnorm_train_forward(x, gamma, beta, epsilon=1e-3)
    np.testing.assert_array_equal(mean, [2.0, 10.0])
    np.testing.assert_array_equal(var, [1.0, 0.0])
    s = 1.0 / np.sqrt(1.0 + 1e-3)
    np.testing.assert_allclose(y, [[0.5 - 2 * s, -1.0], [0.5 + 2 * s, -1.0]], rtol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_batchnorm_infer_forward_uses_the_moving_statistics(backend):
    K = kernels.get(backend)
    x = np.array([[[[4.0, 0.0]]]], np.float32)                       # (1, 1, 1, 2)
    y = K.batchnorm_infer_forward(x, np.ones(2, np.float32), np.zeros(2, np.float32),
                                  np.array([1.0, 0.0], np.float32),
                                  np.array([9.0 - 1e-3, 1.0], np.float32), epsilon=1e-3)
    np.testing.assert_allclose(y.reshape(-1), [1.0, 0.0], rtol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_batchnorm_backward_by_hand(backend):
    """Two rows, one channel: xhat = -s, +s with s = 1/sqrt(1 + eps) for x = 1, 3;
    dy = (1, 0): dbeta = 1, dgamma = -s, dx = gamma * inv * (dy - 1/2 - xhat * dgamma / 2)."""
    K = kernels.get(backend)
    x = np.array([[1.0], [3.0]], np.float32)
    gamma = np.array([2.0], np.float32)
    _, mean, var = K.batchnorm_train_forward(x, gamma, np.zeros(1, np.float32))
    dx, dgamma, dbeta = K.batchnorm_backward(np.array([[1.0], [0.0]], np.float32), x, gamma,
                                             mean, var)
    s = 1.0 / np.sqrt(1.0 + 1e-3)
    np.testing.assert_allclose(dbeta, [1.0], rtol=1e-6)
    np.testing.assert_allclose(dgamma, [-s], rtol=1e-6)
    want = 2 * s * (np.array([1.0, 0.0]) - 0.5 - np.array([-s, s]) * -s / 2)
    # dx ~1e-3 is a difference of O(1) float32 terms: rtol 1e-4 (about 3e-5 measured on cpu)
    np.testing.assert_allclose(dx.reshape(-1), want, rtol=1e-4)
    none, dgamma2, _ = K.batchnorm_backward(np.array([[1.0], [0.0]], np.float32), x, gamma,
                                            mean, var, need_dx=False)
    assert none is None and np.array_equal(dgamma2, dgamma)


@pytest.mark.parametrize("backend", BACKENDS)
def test_batchnorm_moving_update_is_keras_formula(backend):
    K = kernels.get(backend)
    mm = np.array([0.0, 1.0], np.float32)
    mv = np.array([1.0, 1.0], np.float32)
    K.batchnorm_moving_update(mm, mv, np.array([10.0, 1.0], np.float32),
                              np.array([3.0, 0.0], np.float32), momentum=0.9)
    np.testing.assert_allclose(mm, [1.0, 1.0], rtol=1e-6)          # 0*0.9 + 10*0.1
    np.testing.assert_allclose(mv, [1.2, 0.9], rtol=1e-6)          # 1*0.9 + 3*0.1, 0.9


def test_cpu_batchnorm_is_bitwise_equal_at_1_and_2_threads():
    import numba
    from fastconv.kernels.cpu import _common
    K = kernels.get("cpu")
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((4, 33, 35, 9)) + 2).astype(np.float32)
    assert x.size >= _common.PARALLEL_MIN        # the parallel build runs
    dy = rng.standard_normal(x.shape).astype(np.float32)
    g, b = rng.standard_normal(9).astype(np.float32), rng.standard_normal(9).astype(np.float32)
    runs = []
    before = numba.get_num_threads()
    try:
        for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(threads)
            y, mean, var = K.batchnorm_train_forward(x, g, b)
            yr, mr, vr = K.batchnorm_relu_train_forward(x, g, b)
            runs.append((y, mean, var) + K.batchnorm_backward(dy, x, g, mean, var)
                        + (K.batchnorm_infer_forward(x, g, b, mean, var),
                           K.rescale_forward(x, 0.5, offset=1.0), yr, mr, vr)
                        + K.batchnorm_relu_backward(dy, yr, x, g, mr, vr))
    finally:
        numba.set_num_threads(before)
    for a, c in zip(*runs):
        assert np.array_equal(a, c)


@pytest.mark.parametrize("backend", BACKENDS)
def test_batchnorm_relu_by_hand(backend):
    """One channel, x = 1, 3 (mean 2, var 1), gamma 2, beta 0.5: the pre-relu values are
    0.5 -/+ 2s (s = 1/sqrt(1 + eps)), so the first row is clipped to 0; dy = (1, 1): only
    the second row's gradient counts, dbeta = 1, dgamma = s, and dx is batchnorm_backward's
    with dy = (0, 1)."""
    K = kernels.get(backend)
    x = np.array([[1.0], [3.0]], np.float32)
    gamma, beta = np.array([2.0], np.float32), np.array([0.5], np.float32)
    y, mean, var = K.batchnorm_relu_train_forward(x, gamma, beta, epsilon=1e-3)
    s = 1.0 / np.sqrt(1.0 + 1e-3)
    np.testing.assert_allclose(y.reshape(-1), [0.0, 0.5 + 2 * s], rtol=1e-6)
    assert y[0, 0] == 0.0 and np.array_equal(mean, [2.0]) and np.array_equal(var, [1.0])
    dy = np.array([[1.0], [1.0]], np.float32)
    dx, dgamma, dbeta = K.batchnorm_relu_backward(dy, y, x, gamma, mean, var)
    np.testing.assert_allclose(dbeta, [1.0], rtol=1e-6)
    np.testing.assert_allclose(dgamma, [s], rtol=1e-6)
    want = K.batchnorm_backward(np.array([[0.0], [1.0]], np.float32), x, gamma, mean, var)[0]
    np.testing.assert_allclose(dx, want, rtol=1e-6)


@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (1, 5, 3, 7), (2, 9, 11, 13), (4, 33, 35, 9)])
def test_cpu_batchnorm_relu_is_its_cpu_composition_bit_for_bit(shape):
    """The fused pair applies the mask inside batchnorm's own passes, in the same order:
    batchnorm_relu_train_forward is relu_forward(batchnorm_train_forward) and
    batchnorm_relu_backward is batchnorm_backward(relu_backward(dy, y)), bitwise (shapes
    below and above the parallel threshold)."""
    K = kernels.get("cpu")
    rng = np.random.default_rng(3)
    c = shape[-1]
    x = (rng.standard_normal(shape) * 2 + 1).astype(np.float32)
    g, b = rng.standard_normal(c).astype(np.float32), rng.standard_normal(c).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    y, mean, var = K.batchnorm_relu_train_forward(x, g, b)
    z, mean2, var2 = K.batchnorm_train_forward(x, g, b)
    assert np.array_equal(y, K.relu_forward(z))
    assert np.array_equal(mean, mean2) and np.array_equal(var, var2)
    for need_dx in (True, False):
        got = K.batchnorm_relu_backward(dy, y, x, g, mean, var, need_dx=need_dx)
        want = K.batchnorm_backward(K.relu_backward(dy, y), x, g, mean, var, need_dx=need_dx)
        for a, w in zip(got, want):
            assert (a is None and w is None) or np.array_equal(a, w)
